//! Elementwise kernels: an [`ElementwiseExpr`] compiled into one loop over the output.
//!
//! The kernel has the C signature `fn(inputs: *const *const f32, strides: *const u64,
//! out: *mut f32, n: u64)`: element `i` of operand `k` is `inputs[k][i * strides[k]]`, so along
//! the output's last axis an operand runs (stride 1) or is one value broadcast (stride 0);
//! [`ElementwiseKernel::run`] walks the other axes. Math
//! is exactly the interpreter's: `exp`, `ln` and `tanh` call the same Rust functions, and
//! `sigmoid`, `silu`, `max` and `min` use the same formulas (`UnaryOp::apply`,
//! `BinaryOp::apply`), so results are bit-identical.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, UserFuncName, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use rayon::prelude::*;
use saturn_ir::{BinaryOp, ElementwiseExpr, UnaryOp};

use super::jit::JitCode;
use super::{CodegenError, PARALLEL_MIN_ELEMENTS};

/// The most operands and axes a kernel call takes (the buffers of a call are fixed arrays).
const MAX_OPERANDS: usize = 8;
const MAX_RANK: usize = 8;

type KernelFn = unsafe extern "C" fn(*const *const f32, *const u64, *mut f32, u64);

/// A compiled elementwise kernel (it owns its code, so the code lives as long as it). Running it
/// reads only its arguments, so it may be shared between threads.
pub struct ElementwiseKernel {
    name: String,
    inputs: usize,
    function: KernelFn,
    _code: JitCode,
}

/// Compiles `expr` over `inputs` operands into a kernel named `name` (for error messages).
pub fn compile_elementwise(
    name: &str,
    expr: &ElementwiseExpr,
    inputs: usize,
) -> Result<ElementwiseKernel, CodegenError> {
    let err = |msg: String| CodegenError::Compile { kernel: name.to_string(), msg };
    if expr.max_input().is_some_and(|i| i >= inputs) {
        return Err(err(format!("the expression `{expr}` uses more than {inputs} operands")));
    }
    let mut module = super::jit::host_module(name)?;

    let ptr = module.target_config().pointer_type();
    let mut unary = module.make_signature();
    unary.params.push(AbiParam::new(types::F32));
    unary.returns.push(AbiParam::new(types::F32));
    let mut declare = |symbol: &str, sig: &Signature| {
        module.declare_function(symbol, Linkage::Import, sig).map_err(|e| err(e.to_string()))
    };
    let libm = Libm {
        exp: declare(super::jit::EXP, &unary)?,
        log: declare(super::jit::LOG, &unary)?,
        tanh: declare(super::jit::TANH, &unary)?,
    };

    let mut sig = module.make_signature();
    for _ in 0..3 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.params.push(AbiParam::new(types::I64));
    let kernel = module.declare_function(name, Linkage::Local, &sig).map_err(|e| err(e.to_string()))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, kernel.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let funcs = Funcs {
            exp: module.declare_func_in_func(libm.exp, b.func),
            log: module.declare_func_in_func(libm.log, b.func),
            tanh: module.declare_func_in_func(libm.tanh, b.func),
        };
        let entry = b.create_block();
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.append_block_param(header, types::I64);
        b.switch_to_block(entry);
        let [inputs_ptr, strides_ptr, out_ptr, n] = b.block_params(entry)[..] else {
            return Err(err("the entry block lost its parameters".into()));
        };
        let flags = MemFlagsData::trusted();
        let operands: Vec<(Value, Value)> = (0..inputs)
            .map(|k| {
                let base = b.ins().load(ptr, flags, inputs_ptr, (k * 8) as i32);
                let stride = b.ins().load(types::I64, flags, strides_ptr, (k * 8) as i32);
                (base, stride)
            })
            .collect();
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().jump(header, &[zero.into()]);

        b.switch_to_block(header);
        let i = b.block_params(header)[0];
        let more = b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan, i, n);
        b.ins().brif(more, body, &[], exit, &[]);

        b.switch_to_block(body);
        let values: Vec<Value> = operands
            .iter()
            .map(|&(base, stride)| {
                let index = b.ins().imul(i, stride);
                let offset = b.ins().ishl_imm_u(index, 2);
                let address = b.ins().iadd(base, offset);
                b.ins().load(types::F32, flags, address, 0)
            })
            .collect();
        let result = emit(&mut b, &funcs, expr, &values);
        let offset = b.ins().ishl_imm_u(i, 2);
        let address = b.ins().iadd(out_ptr, offset);
        b.ins().store(flags, result, address, 0);
        let next = b.ins().iadd_imm_u(i, 1);
        b.ins().jump(header, &[next.into()]);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        let frontend_config = module.target_config();
        b.finalize(frontend_config);
    }
    module.define_function(kernel, &mut ctx).map_err(|e| err(format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| err(e.to_string()))?;
    let code = module.get_finalized_function(kernel);
    // SAFETY: `code` was compiled just above from a function with exactly `KernelFn`'s
    // signature (three pointers and a u64, no result) and lives as long as `module`.
    let function = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
    Ok(ElementwiseKernel { name: name.to_string(), inputs, function, _code: JitCode::new(module) })
}

struct Libm {
    exp: FuncId,
    log: FuncId,
    tanh: FuncId,
}

struct Funcs {
    exp: cranelift_codegen::ir::FuncRef,
    log: cranelift_codegen::ir::FuncRef,
    tanh: cranelift_codegen::ir::FuncRef,
}

fn call(b: &mut FunctionBuilder, f: cranelift_codegen::ir::FuncRef, x: Value) -> Value {
    let inst = b.ins().call(f, &[x]);
    b.inst_results(inst)[0]
}

/// Emits `expr` over the operand values.
fn emit(b: &mut FunctionBuilder, funcs: &Funcs, expr: &ElementwiseExpr, operands: &[Value]) -> Value {
    match expr {
        ElementwiseExpr::Input(k) => operands[*k],
        ElementwiseExpr::Const(c) => b.ins().f32const(*c as f32),
        ElementwiseExpr::Unary(op, a) => {
            let x = emit(b, funcs, a, operands);
            let one = b.ins().f32const(1.0);
            match op {
                UnaryOp::Neg => b.ins().fneg(x),
                UnaryOp::Exp => call(b, funcs.exp, x),
                UnaryOp::Log => call(b, funcs.log, x),
                UnaryOp::Tanh => call(b, funcs.tanh, x),
                UnaryOp::Sqrt => b.ins().sqrt(x),
                UnaryOp::Rsqrt => {
                    let s = b.ins().sqrt(x);
                    b.ins().fdiv(one, s)
                }
                UnaryOp::Recip => b.ins().fdiv(one, x),
                UnaryOp::Sigmoid | UnaryOp::Silu => {
                    // 1 / (1 + exp(-x)) and x / (1 + exp(-x)), as `UnaryOp::apply`.
                    let minus = b.ins().fneg(x);
                    let e = call(b, funcs.exp, minus);
                    let denominator = b.ins().fadd(one, e);
                    let numerator = if *op == UnaryOp::Silu { x } else { one };
                    b.ins().fdiv(numerator, denominator)
                }
            }
        }
        ElementwiseExpr::Binary(op, l, r) => {
            let x = emit(b, funcs, l, operands);
            let y = emit(b, funcs, r, operands);
            match op {
                BinaryOp::Add => b.ins().fadd(x, y),
                BinaryOp::Sub => b.ins().fsub(x, y),
                BinaryOp::Mul => b.ins().fmul(x, y),
                BinaryOp::Div => b.ins().fdiv(x, y),
                BinaryOp::Max | BinaryOp::Min => {
                    // `x` if it is NaN or wins the comparison, else `y` (torch.maximum/minimum).
                    let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
                    let cc = if *op == BinaryOp::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
                    let wins = b.ins().fcmp(cc, x, y);
                    let take_x = b.ins().bor(nan, wins);
                    b.ins().select(take_x, x, y)
                }
            }
        }
    }
}

impl ElementwiseKernel {
    /// Runs the kernel over `out_shape` with numpy broadcasting: each operand is `(data,
    /// shape)`, its shape right-aligned with the output's and of size 1 where it broadcasts.
    /// The last axis runs in the compiled loop; the others are walked here.
    pub fn run(
        &self,
        inputs: &[(&[f32], &[usize])],
        out_shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), CodegenError> {
        let bad = |msg: String| CodegenError::Call { kernel: self.name.clone(), msg };
        if inputs.len() != self.inputs {
            return Err(bad(format!("expects {} operands, got {}", self.inputs, inputs.len())));
        }
        let rank = out_shape.len();
        let total: usize = out_shape.iter().product();
        if out.len() != total {
            return Err(bad(format!(
                "the output holds {} elements, its shape {out_shape:?} needs {total}",
                out.len()
            )));
        }
        if inputs.len() > MAX_OPERANDS || rank > MAX_RANK {
            return Err(bad(format!("at most {MAX_OPERANDS} operands of rank {MAX_RANK} are supported")));
        }
        // Per operand: element strides aligned to the output's axes (0 where it broadcasts).
        // Fixed-size arrays: a call allocates nothing.
        let mut strides = [[0usize; MAX_RANK]; MAX_OPERANDS];
        for (k, (data, shape)) in inputs.iter().enumerate() {
            let fits = shape.len() <= rank
                && shape.iter().rev().zip(out_shape.iter().rev()).all(|(&d, &o)| d == o || d == 1)
                && data.len() == shape.iter().product::<usize>();
            if !fits {
                return Err(bad(format!(
                    "operand {k} of shape {shape:?} does not broadcast to {out_shape:?}"
                )));
            }
            let mut step = 1;
            for (axis, &d) in shape.iter().enumerate().rev() {
                let out_axis = axis + rank - shape.len();
                strides[k][out_axis] = if d == 1 { 0 } else { step };
                step *= d;
            }
        }
        if total == 0 {
            return Ok(());
        }
        let inner = if rank == 0 { 1 } else { out_shape[rank - 1] };
        let rows = total / inner;
        let mut inner_stride = [0u64; MAX_OPERANDS];
        for (k, st) in inner_stride.iter_mut().zip(&strides) {
            *k = if rank == 0 { 0 } else { st[rank - 1].min(1) as u64 };
        }
        let outer = rank.saturating_sub(1);
        // Rows `first..` into `dst` (whole rows): the output index of the first row, then the
        // compiled loop per row, stepping the index along the outer axes.
        let run_rows = |first: usize, dst: &mut [f32]| {
            let mut index = [0usize; MAX_RANK];
            let mut rest = first;
            for axis in (0..outer).rev() {
                index[axis] = rest % out_shape[axis];
                rest /= out_shape[axis];
            }
            let mut pointers = [std::ptr::null::<f32>(); MAX_OPERANDS];
            for dst in dst.chunks_exact_mut(inner) {
                for (k, (data, _)) in inputs.iter().enumerate() {
                    let base: usize = index[..outer].iter().zip(&strides[k]).map(|(i, s)| i * s).sum();
                    // SAFETY: `base` plus the row's reads stay inside the operand (checked shapes).
                    pointers[k] = unsafe { data.as_ptr().add(base) };
                }
                // SAFETY: operand `k` is read at `pointers[k] + i * inner_stride[k]` for
                // `i < inner`, in bounds by construction, and `dst` has `inner` elements.
                unsafe {
                    (self.function)(pointers.as_ptr(), inner_stride.as_ptr(), dst.as_mut_ptr(), inner as u64)
                };
                for axis in (0..outer).rev() {
                    index[axis] += 1;
                    if index[axis] < out_shape[axis] {
                        break;
                    }
                    index[axis] = 0;
                }
            }
        };
        let threads = rayon::current_num_threads();
        if total < PARALLEL_MIN_ELEMENTS || rows < 2 || threads < 2 {
            run_rows(0, out);
        } else {
            // Contiguous runs of whole rows, one per thread: each element is computed the
            // same way wherever it runs.
            let per = rows.div_ceil(threads);
            out.par_chunks_mut(per * inner).enumerate().for_each(|(part, dst)| run_rows(part * per, dst));
        }
        Ok(())
    }
}
