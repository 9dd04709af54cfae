//! [`CpuKernels`]: the compiled kernels the interpreter hands nodes to (`saturn_ir::Kernels`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use saturn_ir::{ElementwiseExpr, Kernels, Node, Tensor};

use super::{ElementwiseKernel, compile_elementwise};

/// Elementwise kernels compiled on first use and kept for the next, by expression and arity.
#[derive(Default)]
pub struct CpuKernels {
    compiled: RefCell<HashMap<(String, usize), Rc<ElementwiseKernel>>>,
}

impl CpuKernels {
    pub fn new() -> CpuKernels {
        CpuKernels::default()
    }

    /// How many distinct kernels have been compiled.
    pub fn len(&self) -> usize {
        self.compiled.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kernel(
        &self,
        node: &Node,
        expr: &ElementwiseExpr,
        arity: usize,
    ) -> Result<Rc<ElementwiseKernel>, String> {
        let key = (expr.to_string(), arity);
        if let Some(k) = self.compiled.borrow().get(&key) {
            return Ok(k.clone());
        }
        let kernel = Rc::new(compile_elementwise(&node.name, expr, arity).map_err(|e| e.to_string())?);
        self.compiled.borrow_mut().insert(key, kernel.clone());
        Ok(kernel)
    }
}

impl Kernels for CpuKernels {
    fn elementwise(
        &self,
        node: &Node,
        expr: &ElementwiseExpr,
        args: &[&Tensor],
        shape: &[usize],
    ) -> Option<Result<Tensor, String>> {
        let data: Option<Vec<&[f32]>> = args.iter().map(|t| t.as_f32()).collect();
        let data = data?;
        Some((|| {
            let kernel = self.kernel(node, expr, args.len())?;
            let operands: Vec<(&[f32], &[usize])> =
                data.iter().zip(args).map(|(d, t)| (*d, t.shape.as_slice())).collect();
            let mut out = vec![0f32; shape.iter().product()];
            kernel.run(&operands, shape, &mut out).map_err(|e| e.to_string())?;
            Ok(Tensor::f32(shape.to_vec(), out))
        })())
    }
}
