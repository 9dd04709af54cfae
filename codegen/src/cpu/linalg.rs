//! Matrix products for the CPU program: `linear` (`x w^T`) and batched `matmul`.
//!
//! Decode multiplies one row by a large weight: that reads every weight once and is bound by
//! memory bandwidth, so one row takes a dot-product loop over weight rows, split across threads.
//! A few rows (short prompts), up to [`ROW_BLOCKS_MAX_ROWS`], take AVX-512 dot-product blocks
//! where the CPU has AVX-512 ([`super::row_blocks`]), else the dot-product loop (AVX2+FMA) up
//! to [`GEMV_MAX_ROWS`]. More rows pack the weight into strips for [`linear_packed`] where the
//! CPU has AVX-512, else go to `matrixmultiply`'s packed GEMM, split across threads by output
//! columns so each thread packs only its part of the weight. Every output element is computed
//! by one thread in a fixed order, so results do not depend on the thread count's scheduling.
//! Weights stored in strips (constant weights: see `program::build::strip_plan`) take
//! [`linear_packed`], whose one-row case streams each strip front to back in the same way.

use rayon::prelude::*;

use super::packed::Rows;

/// Up to this many rows, a product is computed as dot products (each weight row is read once
/// and stays in cache while it meets every row, four rows at a time): no packing, which for
/// few rows costs as much as the product.
const GEMV_MAX_ROWS: usize = 12;
/// Up to this many rows, AVX-512 dot-product blocks are used instead of `matrixmultiply`'s
/// packed GEMM, whose packing costs as much as the product for prefill's ~12-row expert blocks
/// (with them the mid-size model's prefill went from about 350 to 420 tokens/s, BENCHMARKS.md).
const ROW_BLOCKS_MAX_ROWS: usize = 128;
/// Work (multiply-adds) below which a product runs on the calling thread: a dispatch costs
/// microseconds (tens of them from outside the pool), more than a small product. Dot products
/// are bound by memory (this is 256 KiB of weights); a GEMM computes far faster per
/// multiply-add, so it splits only above [`PARALLEL_MIN_GEMM`].
const PARALLEL_MIN_WORK: usize = 1 << 16;
const PARALLEL_MIN_GEMM: usize = 1 << 22;

/// A raw pointer that may cross threads: each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
pub struct SharedOut(pub *mut f32);
// SAFETY: tasks write disjoint elements (see each use) and the pointee outlives the parallel
// region (rayon joins before returning).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `out [m, n] = x [m, k] w [n, k]^T` (all row-major, contiguous).
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "linear operands too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m > 1 && m <= ROW_BLOCKS_MAX_ROWS && super::row_blocks::available() {
        let dst = SharedOut(out.as_mut_ptr());
        // Chunks of whole weight blocks, so threads never share one.
        let blocks = n.div_ceil(4);
        let part = |b0: usize, b1: usize| {
            let cols = (4 * b0, (4 * b1).min(n));
            // SAFETY: x is m x k, w is n x k, out is m x n (asserted above); this task writes
            // only columns cols.0..cols.1, disjoint from the other tasks'; the CPU has AVX-512.
            unsafe { super::row_blocks::linear_rows(x, w, (m, k, n), cols, { dst }.0) };
        };
        // Compute-bound like a GEMM: split only work that pays for a dispatch.
        if m * n * k < PARALLEL_MIN_GEMM {
            part(0, blocks)
        } else {
            par_ranges(blocks, m * n * k, part)
        }
        return;
    }
    if m <= GEMV_MAX_ROWS {
        gemv_rows(x, w, m, k, n, out);
    } else if super::avx512() {
        // Many rows: one pass packing the weight into strips costs little beside the product
        // (allocated per call: only prefill has this many rows).
        let mut strips = vec![0f32; super::packed::packed_len(n, k)];
        super::packed::pack(w, (n, k), &mut strips);
        linear_packed(Rows::contiguous(x, k), &strips, (m, k, n), out);
    } else {
        gemm(m, k, n, Operand { data: x, rs: k, cs: 1 }, Operand { data: w, rs: 1, cs: k }, out);
    }
}

/// A weight `w [n, k]` of `x w^T`: as loaded (row-major) or [`packed`](super::packed) in strips.
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    Rows(&'a [f32]),
    Strips(&'a [f32]),
}

/// `out [m, n] = x [m, k] w [n, k]^T` for either layout of `w`.
pub fn product(x: &[f32], w: Weight, (m, k, n): (usize, usize, usize), out: &mut [f32]) {
    match w {
        Weight::Rows(w) => linear(x, w, m, k, n, out),
        Weight::Strips(w) => linear_packed(Rows::contiguous(x, k), w, (m, k, n), out),
    }
}

/// `out [m, n] = x [m, k] w [n, k]^T` with `w` [`packed`](super::packed), split across threads
/// by strips when the work pays for it: a few rows are bound by memory like dot products, more
/// compute like a GEMM.
pub fn linear_packed(x: Rows, wp: &[f32], dims: (usize, usize, usize), out: &mut [f32]) {
    packed_product(x, wp, dims, (Triangle::Full, true), out);
}

/// [`linear_packed`] on the calling thread alone, for callers that already run one product per
/// thread.
pub fn linear_packed_serial(x: Rows, wp: &[f32], dims: (usize, usize, usize), out: &mut [f32]) {
    packed_product(x, wp, dims, (Triangle::Full, false), out);
}

/// What a causal softmax around a product lets it skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Triangle {
    /// Nothing: every output is a full sum.
    Full,
    /// Only the lower triangle of `out [m, n]` is read (a causal softmax's scores): row `r`
    /// needs columns up to `r + n - m`, so a strip is multiplied only with the rows that reach
    /// it, and the rest of `out` is left as it was.
    OutputLower,
    /// The left operand `x [m, k]` is lower triangular (a causal softmax's probabilities: row
    /// `r` is zero past column `r + k - m`), so sums stop where a tile's rows do: the same sums
    /// wherever `w` is finite (a NaN or infinity of a later position would have reached an
    /// earlier one only through `0 * inf`).
    LeftLower,
}

/// [`linear_packed`], skipping what `triangle` allows, split across threads where `split`
/// and the work pays for it; what is written is what [`linear_packed`] writes.
fn packed_product(
    x: Rows,
    wp: &[f32],
    (m, k, n): (usize, usize, usize),
    (triangle, split): (Triangle, bool),
    out: &mut [f32],
) {
    assert!(
        x.holds(m, k) && wp.len() >= super::packed::packed_len(n, k) && out.len() >= m * n,
        "packed product operands too short"
    );
    let dst = SharedOut(out.as_mut_ptr());
    let part = |s0: usize, s1: usize| {
        if triangle != Triangle::OutputLower {
            let left_lower = triangle == Triangle::LeftLower;
            // SAFETY: the operands have the sizes asserted above; this task writes only the
            // columns of strips s0..s1.
            unsafe { super::packed::linear_strips(x, wp, (m, k, n), (s0, s1), left_lower, { dst }.0) };
            return;
        }
        for s in s0..s1 {
            // The first row whose last column reaches strip s.
            let r0 = (s * super::packed::STRIP + m).saturating_sub(n).min(m);
            // SAFETY: rows r0..m of x and out are inside them (asserted above); this task
            // writes only strip s's columns of those rows.
            unsafe {
                super::packed::linear_strips(
                    x.from(r0),
                    wp,
                    (m - r0, k, n),
                    (s, s + 1),
                    false,
                    { dst }.0.add(r0 * n),
                )
            };
        }
    };
    let strips = n.div_ceil(super::packed::STRIP);
    // A triangle is about half the work.
    let work = if triangle == Triangle::Full { m * n * k } else { m * n * k / 2 };
    let least = if m <= GEMV_MAX_ROWS { PARALLEL_MIN_WORK } else { PARALLEL_MIN_GEMM };
    if !split || work < least {
        part(0, strips);
    } else {
        par_ranges(strips, work, part);
    }
}

/// `out [m, n] = silu(x w_gate^T) * (x w_up^T)`, with `up` as scratch of the same size.
pub fn gated(
    x: &[f32],
    (w_gate, w_up): (Weight, Weight),
    (m, k, n): (usize, usize, usize),
    up: &mut [f32],
    out: &mut [f32],
) {
    product(x, w_gate, (m, k, n), out);
    product(x, w_up, (m, k, n), up);
    super::expf::silu_times(&mut out[..m * n], &up[..m * n]);
}

/// `out [m, n] = a [m, k] b [k, n]`, all row-major and contiguous (a product with a cache of
/// rows, like attention's `p latent`), allocating nothing: AVX-512 strips of 64 columns of
/// `b` against broadcast elements of `a` where the CPU has AVX-512, split across threads by
/// strips when the work pays for it; else each output row as scaled rows of `b` added in order.
pub fn matmul_row_major(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), out: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n, "matmul operands too short");
    if m * n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::row_blocks::available() {
        let dst = SharedOut(out.as_mut_ptr());
        let part = |s0: usize, s1: usize| {
            // SAFETY: a is m x k, b is k x n, out is m x n (asserted above); this task writes
            // only its strips' columns; the CPU has AVX-512.
            unsafe { super::row_blocks::matmul_rows(a, b, (m, k, n), (s0, s1), { dst }.0) };
        };
        let strips = super::row_blocks::strips(n);
        if m * n * k < PARALLEL_MIN_GEMM {
            part(0, strips);
        } else {
            par_ranges(strips, m * n * k, part);
        }
        return;
    }
    scaled_rows(a, b, (m, k, n), out);
}

/// [`matmul_row_major`] without AVX-512: each output row as the rows of `b` scaled by the row
/// of `a` and added in order.
fn scaled_rows(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), out: &mut [f32]) {
    for (i, o) in out.chunks_exact_mut(n).take(m).enumerate() {
        o.fill(0.0);
        for (&s, brow) in a[i * k..(i + 1) * k].iter().zip(b.chunks_exact(n)) {
            for (dst, &v) in o.iter_mut().zip(brow) {
                *dst += s * v;
            }
        }
    }
}

/// One strided matrix operand: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// `out [m, n] = a [m, k] b [k, n]` for strided operands, `out` row-major contiguous.
pub fn gemm(m: usize, k: usize, n: usize, a: Operand, b: Operand, out: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let parts = if m * n * k < PARALLEL_MIN_GEMM { 1 } else { threads.min(n.div_ceil(16)) };
    let per = n.div_ceil(parts);
    let dst = SharedOut(out.as_mut_ptr());
    let part = |p: usize| {
        let (n0, n1) = (p * per, ((p + 1) * per).min(n));
        if n0 >= n1 {
            return;
        }
        // SAFETY: A is m x k and B's columns n0..n1 are k x (n1-n0) inside their slices (the
        // callers' shapes); part p writes only columns n0..n1 of the m x n output, disjoint
        // from the other parts.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n1 - n0,
                1.0,
                a.data.as_ptr(),
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr().add(n0 * b.cs),
                b.rs as isize,
                b.cs as isize,
                0.0,
                { dst }.0.add(n0),
                n as isize,
                1,
            );
        }
    };
    if parts == 1 {
        part(0);
    } else {
        (0..parts).into_par_iter().for_each(part);
    }
}

/// `out [m, n] = x [m, k] w [n, k]^T` as dot products of rows, split by weight rows.
fn gemv_rows(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    let dst = SharedOut(out.as_mut_ptr());
    let rows = |n0: usize, n1: usize| {
        for j in n0..n1 {
            let wj = &w[j * k..(j + 1) * k];
            let mut r = 0;
            while r < m {
                let take = (m - r).min(4);
                // Fewer than four rows repeat the last: one four-row pass beats several single
                // ones (the extra results are dropped).
                let mut xs = [&x[..0]; 4];
                for (i, xr) in xs.iter_mut().enumerate() {
                    let row = r + i.min(take - 1);
                    *xr = &x[row * k..(row + 1) * k];
                }
                let d = if m == 1 { [dot_fetching(xs[0], wj, row(w, j + 1, k)); 4] } else { dots(&xs, wj) };
                for (i, &v) in d.iter().enumerate().take(take) {
                    // SAFETY: (r + i, j) is inside the m x n output and only this task writes
                    // column j.
                    unsafe { *{ dst }.0.add((r + i) * n + j) = v };
                }
                r += take;
            }
        }
    };
    par_ranges(n, n * k * m, rows);
}

/// Runs `f` over `0..n` in chunks, split across threads when `work` (multiply-adds) pays for
/// the dispatch; a few chunks per thread balance uneven progress.
pub fn par_ranges(n: usize, work: usize, f: impl Fn(usize, usize) + Sync) {
    let threads = rayon::current_num_threads().max(1);
    if work < PARALLEL_MIN_WORK || threads == 1 || n < 2 {
        f(0, n);
        return;
    }
    let chunk = n.div_ceil(threads * 4).max(1);
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| f(c * chunk, ((c + 1) * chunk).min(n)));
}

/// The dot products of up to four rows `xs` with `w`.
pub fn dots(xs: &[&[f32]], w: &[f32]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { dots_avx2(xs, w) };
    }
    dots_lanes::<false>(xs, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(xs: &[&[f32]], w: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut out = [0f32; 4];
    if xs.len() != 4 {
        for (o, x) in out.iter_mut().zip(xs) {
            *o = dot_lanes::<true>(x, w, &[]);
        }
        return out;
    }
    let n = w.len();
    let rows = [&xs[0][..n], &xs[1][..n], &xs[2][..n], &xs[3][..n]];
    let full = n / 16 * 16;
    // Two accumulators per row hide the FMA latency; each weight chunk is loaded once.
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut c = 0;
    while c < full {
        // SAFETY: c + 16 <= n, and every row has n elements.
        unsafe {
            let (w0, w1) = (_mm256_loadu_ps(w.as_ptr().add(c)), _mm256_loadu_ps(w.as_ptr().add(c + 8)));
            for (r, x) in rows.iter().enumerate() {
                let p = x.as_ptr().add(c);
                acc[2 * r] = _mm256_fmadd_ps(_mm256_loadu_ps(p), w0, acc[2 * r]);
                acc[2 * r + 1] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), w1, acc[2 * r + 1]);
            }
        }
        c += 16;
    }
    for (r, x) in rows.iter().enumerate() {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[2 * r], acc[2 * r + 1])) };
        let tail: f32 = (full..n).map(|i| x[i] * w[i]).sum();
        out[r] = lanes.iter().sum::<f32>() + tail;
    }
    out
}

/// Up to four rows against one weight row, portably (one dot product each).
#[inline(always)]
fn dots_lanes<const FMA: bool>(xs: &[&[f32]], w: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (o, x) in out.iter_mut().zip(xs) {
        *o = dot_lanes::<FMA>(x, w, &[]);
    }
    out
}

/// The sum of 16 lanes as a halving tree (the order [`dot`] uses).
#[inline(always)]
fn reduce_lanes(acc: &mut [f32; 16]) -> f32 {
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// Row `i` of a row-major matrix with rows of `len` elements (empty past the end): the `next`
/// of [`dot_fetching`].
pub fn row(w: &[f32], i: usize, len: usize) -> &[f32] {
    w.get(i * len..(i + 1) * len).unwrap_or(&[])
}

/// `sum(a[i] * b[i])` over `a.len()` elements, prefetching `next` (the row read after `b`, or
/// nothing) line by line alongside: rows of a page or so each start a new stream, which the
/// hardware prefetcher would pick up only after a few misses (decode's one-row products ran
/// 6-8% faster with it, BENCHMARKS.md).
pub fn dot_fetching(a: &[f32], b: &[f32], next: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { dot_fetching_avx2(a, b, next) };
    }
    dot_lanes::<false>(a, b, next)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fetching_avx2(a: &[f32], b: &[f32], next: &[f32]) -> f32 {
    dot_lanes::<true>(a, b, next)
}

/// A dot product over 16 independent accumulators (which the compiler keeps in vector
/// registers), prefetching a line of `next` per 16 elements; `FMA` fuses each multiply-add,
/// which only pays where the CPU has FMA.
#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[f32], b: &[f32], next: &[f32]) -> f32 {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (i, (xa, xb)) in ca.zip(cb).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if let Some(line) = next.get(i * LANES) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: a prefetch reads nothing (the address is inside `next`); SSE, which it
            // needs, is part of every x86_64 CPU.
            unsafe { _mm_prefetch::<_MM_HINT_T0>((line as *const f32).cast()) };
        }
        for l in 0..LANES {
            acc[l] = if FMA { xa[l].mul_add(xb[l], acc[l]) } else { acc[l] + xa[l] * xb[l] };
        }
    }
    let mut tail = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y;
    }
    reduce_lanes(&mut acc) + tail
}

/// `out[b] = a (m x k) times w (k x n)` for each `(a offset, w offset)` pair of blocks, the
/// outputs contiguous: `w` row-major, or with `packed`, its blocks stored as strips of `w^T`
/// ([`super::packed::pack_columns`], each block `packed_len(n, k)` long). One row against a
/// row-major matrix is [`matmul_row_major`] (no packing); batches split across threads when the
/// work pays for it. The products through strips skip what `triangle` allows.
pub fn matmul_batched(
    a: &[f32],
    w: &[f32],
    (packed, triangle): (bool, Triangle),
    pairs: &[(usize, usize)],
    (m, k, n): (usize, usize, usize),
    out: &mut [f32],
) {
    let strips = |x: &[f32], wp: &[f32], o: &mut [f32]| {
        packed_product(Rows::contiguous(x, k), wp, (m, k, n), (triangle, true), o)
    };
    if m * n == 0 {
        return;
    }
    let one = |(&(ao, wo), o): (&(usize, usize), &mut [f32])| {
        let (ab, wb) = (&a[ao..], &w[wo..]);
        if packed {
            strips(ab, wb, o);
        } else if m == 1 {
            matmul_row_major(ab, wb, (1, k, n), o);
        } else if super::avx512() {
            // Several rows meet each element of `b`: its strips are worth one pass over it
            // (allocated per call: only prefill has several rows).
            let mut packed_b = vec![0f32; super::packed::packed_len(n, k)];
            super::packed::pack_columns(wb, (k, n), &mut packed_b);
            strips(ab, &packed_b, o);
        } else {
            gemm(m, k, n, Operand { data: ab, rs: k, cs: 1 }, Operand { data: wb, rs: n, cs: 1 }, o);
        }
    };
    let out = &mut out[..pairs.len() * m * n];
    if pairs.len() > 1 && pairs.len() * m * n * k >= PARALLEL_MIN_WORK {
        pairs.par_iter().zip(out.par_chunks_mut(m * n)).for_each(one);
    } else {
        pairs.iter().zip(out.chunks_mut(m * n)).for_each(one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                out[r * n + j] =
                    (0..k).map(|i| f64::from(x[r * k + i]) * f64::from(w[j * k + i])).sum::<f64>() as f32;
            }
        }
        out
    }

    /// Row-major products of every shape class: strips of 64 columns and a partial one, row
    /// blocks of 6 and fewer, large enough to split across threads.
    #[test]
    fn matmul_row_major_matches_a_naive_product() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 5, 64),
            (7, 33, 65),
            (16, 160, 256),
            (13, 300, 130),
            (128, 200, 512),
            (3, 0, 5),
            (1, 0, 3),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 9.0).collect();
            // naive() takes w as [n, k]: transpose b.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let want = naive(&a, &bt, m, k, n);
            // Both paths: AVX-512 strips where the CPU has them, and the scaled rows of CPUs
            // without.
            type Product = fn(&[f32], &[f32], (usize, usize, usize), &mut [f32]);
            for (path, product) in
                [("matmul_row_major", matmul_row_major as Product), ("scaled_rows", scaled_rows)]
            {
                let mut out = vec![f32::NAN; m * n];
                product(&a, &b, (m, k, n), &mut out);
                for (i, (x, y)) in out.iter().zip(&want).enumerate() {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{path} {m}x{k}x{n} [{i}]: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn linear_matches_a_naive_product_for_gemv_and_gemm_sizes() {
        let sizes = [
            (1, 3, 5),
            (1, 300, 513),
            (3, 64, 1100),
            (7, 33, 17),
            (40, 128, 300),
            (1, 0, 4),
            (2, 16, 4),
            (13, 17, 7),
            (50, 1030, 9),
            (128, 64, 33),
            (129, 40, 21),
            // Fewer weight rows than a block.
            (3, 20, 3),
            // Split across threads, with a last block of one weight row.
            (64, 256, 301),
            // Several groups of weight blocks (64 rows at k = 1024), a partial last group and
            // a shifted tail block.
            (13, 1024, 150),
            (2, 2048, 70),
        ];
        for &(m, k, n) in &sizes {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) / 9.0).collect();
            let want = naive(&x, &w, m, k, n);
            let check = |out: &[f32], path: &str| {
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{path} {m}x{k}x{n}: {a} vs {b}");
                }
            };
            let mut out = vec![f32::NAN; m * n];
            linear(&x, &w, m, k, n, &mut out);
            check(&out, "linear");
            // The dot-product path, which CPUs without AVX-512 take for a few rows (with
            // AVX-512, `linear` takes the row blocks).
            if m <= GEMV_MAX_ROWS {
                out.fill(f32::NAN);
                gemv_rows(&x, &w, m, k, n, &mut out);
                check(&out, "gemv_rows");
            }
        }
    }
}
