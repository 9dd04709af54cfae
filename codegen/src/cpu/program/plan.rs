//! The memory plan: symbolic shapes made cheap to evaluate, and arena offsets from lifetimes.
//!
//! Shapes hold symbols (`S` new tokens, `P` cached positions), so sizes are known only per run.
//! A [`Plan`] is made for capacities (an upper bound per symbol): every arena value gets a byte
//! offset such that values alive at the same step never overlap. A run whose symbol values fit
//! the capacities reuses the plan, so steps allocate nothing; a larger run plans again with
//! doubled capacities (amortised: a decode loop replans a logarithmic number of times).

use saturn_ir::Dim;

pub(super) use crate::arena::{assign_offsets, grow_caps};

/// A dim as `constant + sum(coef * symbol)`, symbols by index into the program's symbol list.
#[derive(Clone, Debug)]
pub(super) struct LinDim {
    constant: i64,
    terms: Vec<(usize, i64)>,
}

impl LinDim {
    pub(super) fn new(dim: &Dim, symbols: &[String]) -> LinDim {
        let terms = dim
            .terms()
            .map(|(s, c)| (symbols.iter().position(|x| x == s).expect("symbols come from the graph"), c))
            .collect();
        LinDim { constant: dim.constant_part(), terms }
    }

    pub(super) fn zero() -> LinDim {
        LinDim { constant: 0, terms: Vec::new() }
    }

    /// `self * k`.
    pub(super) fn scaled(&self, k: i64) -> LinDim {
        LinDim { constant: self.constant * k, terms: self.terms.iter().map(|&(s, c)| (s, c * k)).collect() }
    }

    /// `self + other`.
    pub(super) fn plus(&self, other: &LinDim) -> LinDim {
        let mut terms = self.terms.clone();
        for &(s, c) in &other.terms {
            match terms.iter_mut().find(|(t, _)| *t == s) {
                Some((_, tc)) => *tc += c,
                None => terms.push((s, c)),
            }
        }
        LinDim { constant: self.constant + other.constant, terms }
    }

    /// The value under `values` (by symbol index); `None` when negative.
    pub(super) fn eval(&self, values: &[u64]) -> Option<usize> {
        let mut v = i128::from(self.constant);
        for &(s, c) in &self.terms {
            v += i128::from(c) * i128::from(values[s]);
        }
        usize::try_from(v).ok()
    }
}

/// Where a value's elements live.
#[derive(Clone, Debug)]
pub(super) enum Storage {
    /// Loaded or computed when the program is built: `consts[index]`.
    Const(usize),
    /// Planned in the arena.
    Arena,
    /// The elements of another value from element `offset` on (reshapes, contiguous slices).
    Alias { of: usize, offset: LinDim },
    /// A carried buffer (the KV cache), rows `0..shape[0]`.
    Carried(usize),
    /// Computed inside the kernel of its only user and never stored (the scale and causal mask
    /// of a softmax, see `build::causal_softmaxes`): no memory, never read.
    Fused,
}

/// Byte offsets of the arena values for given symbol capacities.
pub(super) struct Plan {
    pub(super) caps: Vec<u64>,
    pub(super) offsets: Vec<usize>,
    /// The planned byte size of each arena value (0 for others), checked on every run.
    pub(super) sizes: Vec<usize>,
    pub(super) arena_bytes: usize,
}
