//! Products run by the device's BLAS library instead of a generated kernel ([`Gemm`]): cuBLAS
//! on a GPU, where it is faster than saturn's tiles at prefill sizes (BENCHMARKS.md: 5.8x in
//! bf16, 2.1x in f32 at 4096 x 7168 -> 2048 on an H100), and a reference loop on the emulator.
//!
//! Both devices run the same column-major call ([`BlasGemm`]), which [`Gemm::blas`] derives
//! from the row-major product, so the emulator checks that mapping (transposes, leading
//! dimensions) against the interpreter; only the library call itself is the GPU's.

use serde::Serialize;

use super::extent::Extent;

/// How a product's operand is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmType {
    F32,
    Bf16,
}

impl GemmType {
    pub fn size_bytes(self) -> usize {
        match self {
            GemmType::F32 => 4,
            GemmType::Bf16 => 2,
        }
    }
}

/// `c [M, N] = a [M, K] b [N, K]^T`, row-major and dense, accumulated in f32; `c` is f32. The
/// operands are both f32 (an f32 product, no TF32) or both bf16 (on tensor cores).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gemm {
    pub m: Extent,
    pub n: Extent,
    pub k: Extent,
    pub operands: GemmType,
}

/// One column-major BLAS product `C = op(A) op(B)` (`op` transposes where `trans_*` says), as
/// cuBLAS's `cublasGemmEx` takes it, with `alpha = 1` and `beta = 0`: `C` is `m x n` with
/// leading dimension `ldc`, `op(A)` is `m x k`, `op(B)` is `k x n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlasGemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub operands: GemmType,
}

impl Gemm {
    /// The column-major call at the symbols' `values`, and which of the program's operands it
    /// takes as `A` and `B`: `[A, B]` indexes into `[a, b]`. `None` when a size does not
    /// evaluate.
    ///
    /// Row-major `c = a b^T` is column-major `c^T = b a^T`: BLAS's `A` is the weight rows
    /// (`b`, `K x N` column-major, transposed), its `B` is `a` (`K x M`), its `C` is `c^T`
    /// (`N x M`, leading dimension `N`).
    pub fn blas(&self, symbols: &[String], values: &[u64]) -> Option<(BlasGemm, [usize; 2])> {
        let eval = |e: &Extent| e.eval(symbols, values).and_then(|v| usize::try_from(v).ok());
        let (m, n, k) = (eval(&self.m)?, eval(&self.n)?, eval(&self.k)?);
        let call = BlasGemm {
            trans_a: true,
            trans_b: false,
            m: n,
            n: m,
            k,
            lda: k.max(1),
            ldb: k.max(1),
            ldc: n.max(1),
            operands: self.operands,
        };
        Some((call, [1, 0]))
    }
}

impl BlasGemm {
    /// The elements each operand spans (`A`, `B`, `C`), for bounds checks.
    pub fn spans(&self) -> [usize; 3] {
        let span = |rows: usize, cols: usize, ld: usize| {
            if rows == 0 || cols == 0 { 0 } else { (cols - 1) * ld + rows }
        };
        let (ar, ac) = if self.trans_a { (self.k, self.m) } else { (self.m, self.k) };
        let (br, bc) = if self.trans_b { (self.n, self.k) } else { (self.k, self.n) };
        [span(ar, ac, self.lda), span(br, bc, self.ldb), span(self.m, self.n, self.ldc)]
    }

    /// The product on the host, by the BLAS definition: each result a sum over `k` in order,
    /// in f64, rounded once to f32.
    ///
    /// # Safety
    /// `a`, `b` and `c` must point at [`BlasGemm::spans`] elements each (of the operands' type;
    /// `c` f32), `c` not overlapping the others.
    pub unsafe fn run_host(&self, a: *const u8, b: *const u8, c: *mut u8) {
        let read = |p: *const u8, i: usize| -> f64 {
            // SAFETY: the caller guarantees the span; unaligned reads need no alignment.
            unsafe {
                match self.operands {
                    GemmType::F32 => f64::from((p as *const f32).add(i).read_unaligned()),
                    GemmType::Bf16 => {
                        let bits = (p as *const u16).add(i).read_unaligned();
                        f64::from(f32::from_bits(u32::from(bits) << 16))
                    }
                }
            }
        };
        let at = |i: usize, p: usize| if self.trans_a { p + i * self.lda } else { i + p * self.lda };
        let bt = |p: usize, j: usize| if self.trans_b { j + p * self.ldb } else { p + j * self.ldb };
        for j in 0..self.n {
            for i in 0..self.m {
                let sum: f64 = (0..self.k).map(|p| read(a, at(i, p)) * read(b, bt(p, j))).sum();
                // SAFETY: as above.
                unsafe { (c as *mut f32).add(i + j * self.ldc).write_unaligned(sum as f32) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived call computes `c = a b^T` (row-major) on the host.
    #[test]
    fn row_major_product() {
        let (m, n, k) = (3, 5, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let g = Gemm {
            m: Extent::one().times(m as u64),
            n: Extent::one().times(n as u64),
            k: Extent::one().times(k as u64),
            operands: GemmType::F32,
        };
        let (call, [first, second]) = g.blas(&[], &[]).unwrap();
        let ops = [a.as_ptr() as *const u8, b.as_ptr() as *const u8];
        assert_eq!(call.spans(), [n * k, m * k, m * n]);
        let mut c = vec![f32::NAN; m * n];
        // SAFETY: the spans match the vectors.
        unsafe { call.run_host(ops[first], ops[second], c.as_mut_ptr() as *mut u8) };
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                assert_eq!(c[i * n + j], want, "c[{i}, {j}]");
            }
        }
    }
}
