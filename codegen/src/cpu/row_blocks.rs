//! `x w^T` for a few rows of `x` with AVX-512: blocks of [`ROWS`] rows of `x` against
//! [`WEIGHTS`] rows of `w`, 24 dot products accumulated at once along `k` in 512-bit registers.
//!
//! This is the shape of prefill's expert products (about 12 tokens per expert) and of
//! attention projections over a short prompt. A packing GEMM spends as long packing the weight
//! as multiplying there; these dot products read each weight row once per weight block, in
//! place, while the block of `x` rows stays in L1. On CPUs whose 512-bit FMA runs at full rate
//! this doubles the multiply-add throughput of 256-bit code.

/// Rows of `x` and of `w` per block: 6 x 4 = 24 accumulators, plus the 10 vectors loaded per
/// step, fit the 32 AVX-512 registers.
const ROWS: usize = 6;
const WEIGHTS: usize = 4;
/// Rows of `x` per pass over the weights: 48 rows of a 1024-wide `x` (192 KiB) stay in L2
/// while every weight row streams past them once.
const CHUNK: usize = 48;

/// Whether this CPU runs [`linear_rows`].
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `out[r, j] = x[r, :] . w[j, :]` for every row `r < m` and weight rows `j` in `n0..n1`;
/// `out` is `[m, n]` row-major. Needs [`available`].
///
/// # Safety
/// `x` holds `m * k` elements, `w` at least `n1 * k`, `out` at least `m * n`; `n1 <= n`. The
/// caller may run disjoint `n0..n1` ranges on several threads over the same `out`.
#[target_feature(enable = "avx512f")]
pub unsafe fn linear_rows(
    x: &[f32],
    w: &[f32],
    (m, k, n): (usize, usize, usize),
    (n0, n1): (usize, usize),
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() >= m * k && w.len() >= n1 * k && n1 <= n);
    if m == 0 || n0 >= n1 {
        return;
    }
    let full = k / 16 * 16;
    let tail: __mmask16 = ((1u32 << (k - full)) - 1) as __mmask16;
    for chunk in (0..m).step_by(CHUNK) {
        let rows = (m - chunk).min(CHUNK);
        // SAFETY: the chunk's rows are inside `x` and `out`, as the caller's are.
        unsafe { chunk_rows(&x[chunk * k..], w, (rows, k, n), (n0, n1), (full, tail), out.add(chunk * n)) };
    }
}

/// [`linear_rows`] for at most [`CHUNK`] rows.
#[target_feature(enable = "avx512f")]
unsafe fn chunk_rows(
    x: &[f32],
    w: &[f32],
    (m, k, n): (usize, usize, usize),
    (n0, n1): (usize, usize),
    (full, tail): (usize, std::arch::x86_64::__mmask16),
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut j = n0;
    while j < n1 {
        // Fewer weight rows than a block repeat the last (their results are dropped).
        let wrows: [*const f32; WEIGHTS] = std::array::from_fn(|i| w[(j + i).min(n1 - 1) * k..].as_ptr());
        let mut r = 0;
        while r < m {
            let xrows: [*const f32; ROWS] = std::array::from_fn(|i| x[(r + i).min(m - 1) * k..].as_ptr());
            let mut acc = [_mm512_setzero_ps(); ROWS * WEIGHTS];
            let mut c = 0;
            while c < k {
                // SAFETY: every row has k elements; c + 16 <= k, or the load is masked to the
                // `k - full` elements left.
                unsafe {
                    let load = |p: *const f32| {
                        if c < full {
                            _mm512_loadu_ps(p.add(c))
                        } else {
                            _mm512_maskz_loadu_ps(tail, p.add(c))
                        }
                    };
                    let wv: [__m512; WEIGHTS] = std::array::from_fn(|i| load(wrows[i]));
                    for (xi, &xp) in xrows.iter().enumerate() {
                        let xv = load(xp);
                        for (wi, &wvi) in wv.iter().enumerate() {
                            acc[xi * WEIGHTS + wi] = _mm512_fmadd_ps(xv, wvi, acc[xi * WEIGHTS + wi]);
                        }
                    }
                }
                c += 16;
            }
            for xi in 0..ROWS.min(m - r) {
                for wi in 0..WEIGHTS.min(n1 - j) {
                    // SAFETY: (r + xi, j + wi) is inside the m x n output, in this call's columns.
                    unsafe { *out.add((r + xi) * n + j + wi) = _mm512_reduce_add_ps(acc[xi * WEIGHTS + wi]) };
                }
            }
            r += ROWS;
        }
        j += WEIGHTS;
    }
}
