//! `router_topk` compiled with Cranelift, one kernel per router configuration
//! ([`RouterKernel`]); its IR is in `router_ir.rs`.

use rayon::prelude::*;
use saturn_ir::Router;

use super::CodegenError;
use super::jit::JitCode;
use super::router_ir::emit_router;
use super::rows_ir::Jit;

/// `(logits, bias, out, floats, marks, tokens, e)`, see `router_ir::emit_router`.
type RouterFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut f32, *mut u8, usize, usize);

/// A `router_topk` of one configuration, with or without a bias, compiled; it chooses the
/// interpreter's experts with the interpreter's weights, bit for bit. Running it reads only its
/// arguments, so it may be shared between threads.
pub struct RouterKernel {
    router: Router,
    has_bias: bool,
    function: RouterFn,
    _code: JitCode,
}

/// Reusable scratch of [`RouterKernel::run`] on one thread.
#[derive(Default)]
pub struct RouterScratch {
    floats: Vec<f32>,
    marks: Vec<u8>,
}

/// Tokens below which the router runs on the calling thread (a microsecond or so each).
const PARALLEL_MIN_TOKENS: usize = 16;

impl RouterKernel {
    /// Compiles `router` (reading a bias operand if `has_bias`); errors name `node`.
    pub fn compile(node: &str, router: &Router, has_bias: bool) -> Result<RouterKernel, CodegenError> {
        let named = |err: CodegenError| match err {
            CodegenError::Compile { msg, .. } => CodegenError::Compile { kernel: node.to_string(), msg },
            other => other,
        };
        let mut jit = Jit::new().map_err(named)?;
        let p = jit.pointer_type();
        let id = jit
            .define("router_topk", [p; 7], |e, args| emit_router(e, router, has_bias, args))
            .map_err(named)?;
        let module = jit.finish().map_err(named)?;
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the function finalized just above from a signature of seven
        // pointer-sized arguments and no result, in the platform's C convention, and it lives
        // as long as `_code`.
        let function = unsafe { std::mem::transmute::<*const u8, RouterFn>(code) };
        Ok(RouterKernel { router: *router, has_bias, function, _code: JitCode::new(module) })
    }

    /// Routes each row of `logits [t, e]` into `out [t, e]` (the chosen experts' weights, zeros
    /// elsewhere); `bias [e]` is given exactly when the kernel was compiled with one. Sixteen
    /// tokens or more are split across threads, each part with its own scratch (prefill only;
    /// one token runs here with `scratch`, allocating nothing once it has grown).
    pub fn run(
        &self,
        logits: &[f32],
        bias: Option<&[f32]>,
        e: usize,
        scratch: &mut RouterScratch,
        out: &mut [f32],
    ) {
        debug_assert!(
            bias.is_some() == self.has_bias && bias.is_none_or(|b| b.len() >= e),
            "router_topk: a bias of {:?} for a kernel compiled with{} one",
            bias.map(<[f32]>::len),
            if self.has_bias { "" } else { "out" }
        );
        if e == 0 || bias.is_some() != self.has_bias || bias.is_some_and(|b| b.len() < e) {
            return;
        }
        let t = logits.len().min(out.len()) / e;
        let threads = rayon::current_num_threads();
        if t < PARALLEL_MIN_TOKENS || threads < 2 {
            self.run_rows(&logits[..t * e], bias, e, scratch, &mut out[..t * e]);
            return;
        }
        let per = t.div_ceil(threads) * e;
        logits[..t * e]
            .par_chunks(per)
            .zip(out[..t * e].par_chunks_mut(per))
            .for_each(|(logits, out)| self.run_rows(logits, bias, e, &mut RouterScratch::default(), out));
    }

    /// Routes whole rows on this thread.
    fn run_rows(
        &self,
        logits: &[f32],
        bias: Option<&[f32]>,
        e: usize,
        s: &mut RouterScratch,
        out: &mut [f32],
    ) {
        let groups = if self.router.n_group > 1 { self.router.n_group as usize } else { 0 };
        s.floats.resize(2 * e + groups, 0.0);
        s.marks.resize(e + groups, 0);
        let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: the kernel reads `logits` and writes `out` below `t * e` (both whole rows of
        // `e`), reads `bias` below `e` where compiled with one (checked in `run`), and uses
        // `2 e + groups` floats and `e + groups` marks of scratch, sized just above.
        unsafe {
            (self.function)(
                logits.as_ptr(),
                bias,
                out.as_mut_ptr(),
                s.floats.as_mut_ptr(),
                s.marks.as_mut_ptr(),
                logits.len() / e,
                e,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use saturn_ir::{Bindings, DType, Graph, GroupScore, Op, RouterScoring, Tensor, TensorType, evaluate};

    use super::*;

    /// The interpreter's `router_topk` of `logits [t, e]` (and `bias [e]`).
    fn interpret(router: Router, logits: &[f32], bias: Option<&[f32]>, (t, e): (usize, usize)) -> Vec<f32> {
        let mut g = Graph::new("router");
        let mut inputs = vec![("logits", Tensor::f32(vec![t, e], logits.to_vec()))];
        if let Some(b) = bias {
            inputs.push(("bias", Tensor::f32(vec![e], b.to_vec())));
        }
        let args: Vec<_> = inputs
            .iter()
            .map(|(name, x)| {
                g.add(*name, Op::Input, &[], Some(TensorType::new(DType::F32, x.shape.clone()))).unwrap()
            })
            .collect();
        let y = g.add("y", Op::RouterTopK(router), &args, None).unwrap();
        g.set_output("y", y).unwrap();
        let params = HashMap::new();
        let inputs = inputs.into_iter().map(|(name, x)| (name.to_string(), x)).collect();
        let bindings = Bindings { symbols: Default::default(), inputs, params: &params };
        evaluate(&g, &bindings).unwrap().remove("y").unwrap().as_f32().unwrap().to_vec()
    }

    /// NaN logits (which the program tests cannot draw: their outputs may be NaN) rank as the
    /// interpreter ranks them, in the scores, the group scores and the final choice: every
    /// configuration kind on rows with NaN, `-inf` and ties, compared bit for bit (NaN meeting
    /// any NaN).
    #[test]
    fn nan_logits_rank_as_in_the_interpreter() {
        let (t, e) = (24, 8);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let logits: Vec<f32> = (0..t * e)
            .map(|_| match next() % 10 {
                0 | 1 => f32::NAN,
                2 => f32::NEG_INFINITY,
                r => (r as f32 - 6.0) / 4.0,
            })
            .collect();
        let bias: Vec<f32> = (0..e).map(|i| (i % 3) as f32 / 8.0).collect();
        for scoring in [RouterScoring::Sigmoid, RouterScoring::Softmax] {
            for (n_group, topk_group, group_score) in
                [(1, 1, GroupScore::Max), (4, 2, GroupScore::Max), (4, 2, GroupScore::SumTop2)]
            {
                for (has_bias, normalize, weights_from_candidates) in
                    [(false, false, false), (true, false, true), (true, true, false)]
                {
                    let router = Router {
                        scoring,
                        k: 3,
                        n_group,
                        topk_group,
                        group_score,
                        masked_fill: 0.0,
                        weights_from_candidates,
                        normalize,
                        scale: 2.5,
                    };
                    let bias = has_bias.then_some(&bias[..]);
                    let want = interpret(router, &logits, bias, (t, e));
                    let kernel = RouterKernel::compile("router", &router, has_bias).unwrap();
                    let mut got = vec![f32::NAN; t * e];
                    kernel.run(&logits, bias, e, &mut RouterScratch::default(), &mut got);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                            "{router:?} bias {has_bias}, element {i}: kernel {a} vs interpreter {b}"
                        );
                    }
                    // Not every weight is NaN: the NaN logits ranked somewhere.
                    assert!(
                        want.iter().any(|w| *w != 0.0 && !w.is_nan()),
                        "{router:?}: no weight to compare"
                    );
                }
            }
        }
    }
}
