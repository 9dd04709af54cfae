//! How many bytes a run reads from memory that no cache holds: weights and carried buffers.
//! Decode is bound by this traffic, so it gives the memory-bandwidth limit of a decode step.

use std::collections::HashSet;

use super::CpuProgram;
use super::exec::Kernel;
use super::plan::Storage;
use crate::CodegenError;

impl CpuProgram {
    /// Bytes of weights and carried buffers a run at `symbols` reads: each operand once, a
    /// gathered table only at the gathered rows, an expert stack only for the experts the
    /// tokens can use (`k` per token), carried buffers at their rows.
    pub fn bytes_read(&self, symbols: &[(&str, u64)]) -> Result<u64, CodegenError> {
        let mut syms = Vec::new();
        self.symbol_values(symbols, &mut syms)?;
        let numel = |v: usize| -> f64 {
            self.values[v].shape.iter().map(|d| d.eval(&syms).unwrap_or(0) as f64).product()
        };
        let bytes = |v: usize| numel(v) * self.values[v].elem.size() as f64;
        let mut seen = HashSet::new();
        let mut total = 0f64;
        for step in &self.steps {
            for (i, &a) in step.args.iter().enumerate() {
                if !self.is_memory(a) || !seen.insert(a) {
                    continue;
                }
                total += match (&step.kernel, i) {
                    (Kernel::Gather, 0) => {
                        let rows =
                            self.values[a].shape.first().and_then(|d| d.eval(&syms)).unwrap_or(1).max(1);
                        bytes(a) / rows as f64 * numel(step.args[1])
                    }
                    (Kernel::GroupedExperts { k, .. }, 2..=4) => {
                        let experts = self.values[a].shape[0].eval(&syms).unwrap_or(1).max(1) as f64;
                        let tokens = self.values[step.args[0]].shape[0].eval(&syms).unwrap_or(1) as f64;
                        bytes(a) * ((*k as f64 * tokens).min(experts) / experts)
                    }
                    _ => bytes(a),
                };
            }
        }
        Ok(total as u64)
    }

    /// Whether `v` lives in weights or carried buffers (through aliases).
    fn is_memory(&self, mut v: usize) -> bool {
        loop {
            match &self.values[v].storage {
                Storage::Alias { of, .. } => v = *of,
                Storage::Const(_) | Storage::Carried(_) => return true,
                Storage::Arena | Storage::Fused => return false,
            }
        }
    }
}
