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

/// How a product's right operand is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmRight {
    /// `b [N, K]` rows: `c = a b^T` (`linear`'s weights).
    Rows,
    /// `b [K, N]`: `c = a b` (`matmul`).
    Cols,
}

/// `batch` products `c [M, N] = a [M, K] b` (`b` as [`GemmRight`] says), row-major and dense,
/// accumulated in f32; `c` is f32. The operands are both f32 (an f32 product, no TF32) or both
/// bf16 (on tensor cores). Each operand's matrices lie `strides` elements apart (`a`, `b`, `c`;
/// 0: one matrix shared by the whole batch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gemm {
    pub m: Extent,
    pub n: Extent,
    pub k: Extent,
    pub right: GemmRight,
    pub batch: Extent,
    pub strides: [Extent; 3],
    pub operands: GemmType,
}

/// Column-major BLAS products `C = op(A) op(B)` (`op` transposes where `trans_*` says), as
/// cuBLAS's `cublasGemmStridedBatchedEx` takes them, with `alpha = 1` and `beta = 0`: `C` is
/// `m x n` with leading dimension `ldc`, `op(A)` is `m x k`, `op(B)` is `k x n`; `batch` of
/// them, each operand's `stride_*` elements after the last.
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
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub operands: GemmType,
}

impl Gemm {
    /// Which of the product's operands `[a, b, c]` the column-major call ([`Gemm::blas`]) takes
    /// as its `[A, B, C]`.
    pub const BLAS_OPERANDS: [usize; 3] = [1, 0, 2];

    /// Every size the product has, for telling two runs' calls apart.
    pub fn extents(&self) -> impl Iterator<Item = &Extent> {
        [&self.m, &self.n, &self.k, &self.batch].into_iter().chain(&self.strides)
    }

    /// The column-major call at the symbols' `values`; `None` when a size does not evaluate.
    ///
    /// Row-major `c = a b'` is column-major `c^T = b'^T a^T`, and a row-major matrix is its
    /// transpose column-major: BLAS's `A` is `b` (`[N, K]` rows transposed, or `[K, N]` as it
    /// is), its `B` is `a` (`K x M`), its `C` is `c^T` (`N x M`, leading dimension `N`): the
    /// order [`Gemm::BLAS_OPERANDS`] gives.
    pub fn blas(&self, symbols: &[String], values: &[u64]) -> Option<BlasGemm> {
        let eval = |e: &Extent| e.eval(symbols, values).and_then(|v| usize::try_from(v).ok());
        let (m, n, k) = (eval(&self.m)?, eval(&self.n)?, eval(&self.k)?);
        let [sa, sb, sc] = [eval(&self.strides[0])?, eval(&self.strides[1])?, eval(&self.strides[2])?];
        let (trans_a, lda) = match self.right {
            GemmRight::Rows => (true, k),
            GemmRight::Cols => (false, n),
        };
        let call = BlasGemm {
            trans_a,
            trans_b: false,
            m: n,
            n: m,
            k,
            lda: lda.max(1),
            ldb: k.max(1),
            ldc: n.max(1),
            batch: eval(&self.batch)?,
            stride_a: sb,
            stride_b: sa,
            stride_c: sc,
            operands: self.operands,
        };
        Some(call)
    }
}

impl BlasGemm {
    /// The elements each operand spans over the batch (`A`, `B`, `C`), for bounds checks.
    pub fn spans(&self) -> [usize; 3] {
        let span = |rows: usize, cols: usize, ld: usize, stride: usize| match rows == 0
            || cols == 0
            || self.batch == 0
        {
            true => 0,
            false => (self.batch - 1) * stride + (cols - 1) * ld + rows,
        };
        let (ar, ac) = if self.trans_a { (self.k, self.m) } else { (self.m, self.k) };
        let (br, bc) = if self.trans_b { (self.n, self.k) } else { (self.k, self.n) };
        [
            span(ar, ac, self.lda, self.stride_a),
            span(br, bc, self.ldb, self.stride_b),
            span(self.m, self.n, self.ldc, self.stride_c),
        ]
    }

    /// The products on the host, by the BLAS definition: each result a sum over `k` in order,
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
        for z in 0..self.batch {
            let (za, zb, zc) = (z * self.stride_a, z * self.stride_b, z * self.stride_c);
            for j in 0..self.n {
                for i in 0..self.m {
                    let sum: f64 = (0..self.k).map(|p| read(a, za + at(i, p)) * read(b, zb + bt(p, j))).sum();
                    // SAFETY: as above.
                    unsafe { (c as *mut f32).add(zc + i + j * self.ldc).write_unaligned(sum as f32) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(v: usize) -> Extent {
        Extent::one().times(v as u64)
    }

    /// The derived calls compute `c = a b^T` and `c = a b` (row-major) on the host, over a
    /// batch whose `a` is shared (stride 0).
    #[test]
    fn row_major_products() {
        let (batch, m, n, k) = (2, 3, 5, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..batch * n * k).map(|i| (i % 7) as f32 - 3.0).collect();
        for right in [GemmRight::Rows, GemmRight::Cols] {
            let g = Gemm {
                m: constant(m),
                n: constant(n),
                k: constant(k),
                right,
                batch: constant(batch),
                strides: [constant(0), constant(n * k), constant(m * n)],
                operands: GemmType::F32,
            };
            let call = g.blas(&[], &[]).unwrap();
            let mut c = vec![f32::NAN; batch * m * n];
            let ops = [a.as_ptr() as *const u8, b.as_ptr() as *const u8, c.as_mut_ptr() as *const u8];
            let [first, second, out] = Gemm::BLAS_OPERANDS.map(|i| ops[i]);
            assert_eq!(call.spans(), [batch * n * k, m * k, batch * m * n]);
            // SAFETY: the spans match the vectors.
            unsafe { call.run_host(first, second, out as *mut u8) };
            for z in 0..batch {
                let bz = &b[z * n * k..];
                for i in 0..m {
                    for j in 0..n {
                        let w =
                            |p: usize| if right == GemmRight::Rows { bz[j * k + p] } else { bz[p * n + j] };
                        let want: f32 = (0..k).map(|p| a[i * k + p] * w(p)).sum();
                        assert_eq!(c[z * m * n + i * n + j], want, "{right:?} c[{z}, {i}, {j}]");
                    }
                }
            }
        }
    }
}
