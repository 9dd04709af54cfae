//! Weights packed in column strips, and `x w^T` over them: the layout of the products' weights
//! (see `program::build::strip_plan` for which).
//!
//! A weight `w [n, k]` (one row per output column) is stored as `n / STRIP` strips of
//! [`STRIP`] columns, each strip `[k][STRIP]`: the strip's weights for input element 0, then
//! for element 1, and so on. A product then runs as outer products: for each `k`, one
//! contiguous row of the strip (two 512-bit vectors) meets a broadcast element of each of up
//! to [`ROWS`] rows of `x`, into `ROWS x 2` accumulators that become the outputs directly.
//!
//! Why this layout, for prefill's expert products (about 12 tokens per expert): every weight is
//! read from memory once, in one pass that serves all the rows, and the pass reads each strip
//! front to back, one stream the prefetchers follow. Dot products over rows of `w` (the loaded
//! layout, `row_blocks`) need 16 lanes of several weight rows per step against every row of
//! `x`: a 12-row block of `x` does not fit L1 beside the weights, so they ran as two 6-row
//! passes, the second from L2 while memory idled. With strips, the mid-size model's experts run
//! at the machine's read bandwidth (BENCHMARKS.md). Each output sums its products in input
//! order, one multiply-add at a time.
//!
//! Without AVX-512, AVX2 and FMA run the same outer products in 256-bit vectors, tiles of up to
//! 3 rows (the same multiply-adds in the same order, so the same results); CPUs without those
//! run a portable loop of the same sums with separate multiplies and adds.

/// Columns per strip: two 512-bit vectors.
pub const STRIP: usize = 32;
/// Rows of `x` per pass over a strip: `ROWS x 2` accumulators, two weight vectors and a
/// broadcast fit the 32 AVX-512 registers.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 12;
/// Rows per pass where `x`'s rows are a multiple of 4 KiB apart ([`rows_alias`]).
#[cfg(target_arch = "x86_64")]
const ROWS_ALIASED: usize = 8;

/// Whether rows of `k` floats put the element each row of a tile reads into the same L1 set:
/// rows a multiple of 4 KiB apart (64 sets of 64 bytes) land in one set, and a tile reads one
/// element of every row per step. Twelve such lines cycling through an 8-way set (Zen 4's L1)
/// miss on every step: a 96 x 1024 x 512 product on one core ran at 66-89 GFLOP/s in 12-row
/// passes, 101-107 in 8-row passes, and 109-113 with rows 1040 apart (BENCHMARKS.md).
#[cfg(target_arch = "x86_64")]
fn rows_alias(k: usize) -> bool {
    k > 0 && (k * size_of::<f32>()).is_multiple_of(4096)
}

/// Elements of `w [n, k]` packed ([`pack`]): whole strips, the last one zero-padded.
pub fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(STRIP) * STRIP * k
}

/// The left operand `x [m, k]` of a product over strips: row `r` starts at
/// `data[r * stride]`, `stride >= k`. A gathered operand ([`pad_stride`]) keeps its rows apart
/// by more than `k` so that they do not alias in L1 ([`linear_strips`]).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

impl<'a> Rows<'a> {
    /// Rows of `k` elements, one after the other.
    pub fn contiguous(data: &'a [f32], k: usize) -> Self {
        Rows { data, stride: k }
    }

    /// The rows from row `r` on.
    pub fn from(self, r: usize) -> Self {
        Rows { data: &self.data[(r * self.stride).min(self.data.len())..], ..self }
    }

    /// Whether `m` rows of `k` elements are inside `data`.
    pub fn holds(&self, m: usize, k: usize) -> bool {
        m == 0 || (self.stride >= k && self.data.len() >= (m - 1) * self.stride + k)
    }
}

/// The row stride to gather rows of `k` elements at, for products over strips: `k`, or `k`
/// plus a cache line where rows `k` apart would alias in L1.
pub fn pad_stride(k: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if rows_alias(k) {
        return k + 64 / size_of::<f32>();
    }
    k
}

/// Packs `w [n, k]` (row-major) into `out` (at least [`packed_len`] elements), strips across
/// threads (an LM head is a hundred megabytes and more, written into memory the system clears
/// as it is first touched).
pub fn pack(w: &[f32], (n, k): (usize, usize), out: &mut [f32]) {
    use rayon::prelude::*;
    let out = &mut out[..packed_len(n, k)];
    out.par_chunks_exact_mut((STRIP * k).max(1)).enumerate().for_each(|(s, strip)| {
        for (c, column) in (s * STRIP..(s + 1) * STRIP).enumerate() {
            if column < n {
                for (i, &v) in w[column * k..(column + 1) * k].iter().enumerate() {
                    strip[i * STRIP + c] = v;
                }
            } else {
                (0..k).for_each(|i| strip[i * STRIP + c] = 0.0);
            }
        }
    });
}

/// Packs `b [k, n]` (row-major: the right operand of `a b`, column `c` being `w`'s row `c`)
/// into `out` (at least [`packed_len`]`(n, k)` elements): the strips of `b^T`.
pub fn pack_columns(b: &[f32], (k, n): (usize, usize), out: &mut [f32]) {
    use rayon::prelude::*;
    let out = &mut out[..packed_len(n, k)];
    out.par_chunks_exact_mut((STRIP * k).max(1)).enumerate().for_each(|(s, strip)| {
        let (c0, c1) = (s * STRIP, ((s + 1) * STRIP).min(n));
        for (i, row) in strip.chunks_exact_mut(STRIP).enumerate() {
            row[..c1 - c0].copy_from_slice(&b[i * n + c0..i * n + c1]);
            row[c1 - c0..].fill(0.0);
        }
    });
}

/// Packs each matrix of `data` (consecutive `w [n, k]`, or with `from_columns` consecutive
/// `b [k, n] = w^T`) into `out`, [`packed_len`]`(n, k)` elements apart, one matrix per task.
pub fn pack_matrices(data: &[f32], (n, k): (usize, usize), from_columns: bool, out: &mut [f32]) {
    let size = (n * k).max(1);
    pack_matrices_from(|i| &data[i * size..(i + 1) * size], (n, k), from_columns, out);
}

/// [`pack_matrices`] of matrices that need not be consecutive: `matrix(i)` is matrix `i`, for
/// as many as `out` holds.
pub fn pack_matrices_from<'a>(
    matrix: impl Fn(usize) -> &'a [f32] + Sync,
    (n, k): (usize, usize),
    from_columns: bool,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    out.par_chunks_exact_mut(packed_len(n, k).max(1)).enumerate().for_each(|(i, dst)| match from_columns {
        false => pack(matrix(i), (n, k), dst),
        true => pack_columns(matrix(i), (k, n), dst),
    });
}

/// `out[r, c] = x[r, :] . w[c, :]` for rows `r < m` and the columns of strips `s0..s1`, with
/// `wp` the [`pack`]ed `w [n, k]`; `out` is `[m, n]` row-major. With `left_lower`, `x` is
/// lower triangular (a causal softmax's probabilities: row `r` is zero past column
/// `r + k - m`), and each tile of rows sums only up to the last column its last row reaches,
/// which is the same sum for finite `w` (what is skipped are products with zeros).
///
/// # Safety
/// `x` holds `m` rows of `k`, `wp` [`packed_len`]`(n, k)` elements, `out` points at `m * n`
/// writable elements; `s1 <= n.div_ceil(STRIP)`. Calls over disjoint strip ranges may run at
/// once on the same `out`.
pub unsafe fn linear_strips(
    x: Rows,
    wp: &[f32],
    (m, k, n): (usize, usize, usize),
    (s0, s1): (usize, usize),
    left_lower: bool,
    out: *mut f32,
) {
    debug_assert!(x.holds(m, k) && wp.len() >= packed_len(n, k) && s1 <= n.div_ceil(STRIP));
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512() {
            // SAFETY: the caller's contract; the CPU has AVX-512.
            unsafe { strips_avx512(x, wp, (m, k, n), (s0, s1), left_lower, out) };
            return;
        }
        if super::avx2_fma() {
            // SAFETY: the caller's contract; the CPU has AVX2 and FMA.
            unsafe { strips_avx2(x, wp, (m, k, n), (s0, s1), left_lower, out) };
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { strips_portable(x, wp, (m, k, n), (s0, s1), left_lower, out) }
}

/// [`linear_strips`] with AVX2 and FMA (CPUs without AVX-512): each strip against tiles of up
/// to [`ROWS_AVX2`] rows, the same multiply-adds in the same order as [`strips_avx512`], so
/// the same results.
///
/// # Safety
/// As for [`linear_strips`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn strips_avx2(
    x: Rows,
    wp: &[f32],
    (m, k, n): (usize, usize, usize),
    (s0, s1): (usize, usize),
    left_lower: bool,
    out: *mut f32,
) {
    // SAFETY: the caller's contract; each tile gets pointers at its first row and strip.
    unsafe {
        let (stride, fetch) = (x.stride, m > HARDWARE_FETCH_ROWS);
        for_tiles(x, wp, (m, k, n), (s0, s1), left_lower, out, ROWS_AVX2, |rows, x, strip, len, out, cols| {
            match rows {
                1 => tile_avx2::<1>(x, strip, (stride, len, fetch), out, n, cols),
                2 => tile_avx2::<2>(x, strip, (stride, len, fetch), out, n, cols),
                _ => tile_avx2::<ROWS_AVX2>(x, strip, (stride, len, fetch), out, n, cols),
            }
        })
    }
}

/// Rows of `x` per pass over a strip with AVX2: `ROWS_AVX2 x 4` accumulators, the rows'
/// broadcasts and one weight vector fill the 16 registers.
#[cfg(target_arch = "x86_64")]
const ROWS_AVX2: usize = 3;

/// [`tile`] in 256-bit vectors: `R x 4` accumulators; per input element, `R` broadcasts meet
/// the strip's four vectors one at a time.
///
/// # Safety
/// As for [`tile`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(
    x: *const f32,
    strip: *const f32,
    (stride, len, fetch): (usize, usize, bool),
    out: *mut f32,
    n: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4 * ROWS_AVX2];
    for i in 0..len {
        // SAFETY: as in `tile`.
        unsafe {
            let w = strip.add(i * STRIP);
            if fetch {
                fetch_ahead(w);
            }
            let xs: [__m256; R] = std::array::from_fn(|r| _mm256_broadcast_ss(&*x.add(r * stride + i)));
            for j in 0..4 {
                let wj = _mm256_loadu_ps(w.add(8 * j));
                for (r, &xr) in xs.iter().enumerate() {
                    acc[4 * r + j] = _mm256_fmadd_ps(xr, wj, acc[4 * r + j]);
                }
            }
        }
    }
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (at, &v) in acc.iter().enumerate().take(4 * R) {
        let (r, j) = (at / 4, at % 4);
        let keep = cols.saturating_sub(8 * j).min(8) as i32;
        // SAFETY: row r of out has `cols` writable columns; masked lanes write nothing.
        unsafe {
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(keep), lanes);
            _mm256_maskstore_ps(out.add(r * n + 8 * j), mask, v);
        }
    }
}

/// The loop of the vector paths: every strip of `s0..s1` against the rows of `x` in
/// [`balanced`] tiles of at most `max` rows;
/// `tile(rows, x, strip, len, out, cols)` computes one, with `x` and `out` at its first row
/// and `out` at the strip's first column, `cols` of which are written, each sum over the first
/// `len` input elements (all `k`, or with `left_lower` those the tile's last row reaches).
///
/// # Safety
/// As for [`linear_strips`]; `tile` may be called with pointers so placed.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn for_tiles(
    x: Rows,
    wp: &[f32],
    (m, k, n): (usize, usize, usize),
    (s0, s1): (usize, usize),
    left_lower: bool,
    out: *mut f32,
    max: usize,
    tile: impl Fn(usize, *const f32, *const f32, usize, *mut f32, usize),
) {
    for s in s0..s1 {
        let strip = wp[s * STRIP * k..].as_ptr();
        let cols = (n - s * STRIP).min(STRIP);
        let mut r = 0;
        for rows in balanced(m, max) {
            // SAFETY: rows r..r + rows of out are inside its m x n (the caller's contract).
            let out = unsafe { out.add(r * n + s * STRIP) };
            let len = if left_lower { reach(r + rows, m, k) } else { k };
            tile(rows, x.from(r).data.as_ptr(), strip, len, out, cols);
            r += rows;
        }
    }
}

/// The sizes of `n` split into the fewest parts of at most `max`, as even as they can be,
/// larger first: 13 in parts of 12 are 7 + 6, not 12 + 1.
pub fn balanced(n: usize, max: usize) -> impl Iterator<Item = usize> {
    let count = n.div_ceil(max.max(1));
    (0..count).map(move |i| n / count + usize::from(i < n % count))
}

/// How many input elements rows `..rows` of a lower-triangular `x [m, k]` reach: row `r`'s
/// last non-zero is column `r + k - m`.
fn reach(rows: usize, m: usize, k: usize) -> usize {
    (rows + k).saturating_sub(m).min(k)
}

/// [`linear_strips`] without AVX-512 or AVX2: each output a sum in input order of separate
/// multiplies and adds.
///
/// # Safety
/// As for [`linear_strips`].
unsafe fn strips_portable(
    x: Rows,
    wp: &[f32],
    (m, k, n): (usize, usize, usize),
    (s0, s1): (usize, usize),
    left_lower: bool,
    out: *mut f32,
) {
    for s in s0..s1 {
        let strip = &wp[s * STRIP * k..(s + 1) * STRIP * k];
        let cols = (n - s * STRIP).min(STRIP);
        for r in 0..m {
            let mut acc = [0f32; STRIP];
            let len = if left_lower { reach(r + 1, m, k) } else { k };
            for (&xv, w) in x.from(r).data[..len].iter().zip(strip.chunks_exact(STRIP)) {
                for (a, &wv) in acc.iter_mut().zip(w) {
                    *a += xv * wv;
                }
            }
            for (c, &a) in acc.iter().enumerate().take(cols) {
                // SAFETY: (r, s * STRIP + c) is inside the m x n output (c < cols).
                unsafe { *out.add(r * n + s * STRIP + c) = a };
            }
        }
    }
}

/// [`linear_strips`] with AVX-512: each strip against tiles of up to [`ROWS`] rows
/// ([`ROWS_ALIASED`] where the rows alias in L1).
///
/// # Safety
/// As for [`linear_strips`]; the CPU has AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn strips_avx512(
    x: Rows,
    wp: &[f32],
    (m, k, n): (usize, usize, usize),
    (s0, s1): (usize, usize),
    left_lower: bool,
    out: *mut f32,
) {
    // SAFETY: the caller's contract; each tile gets pointers at its first row and strip.
    unsafe {
        let (stride, fetch) = (x.stride, m > HARDWARE_FETCH_ROWS);
        let max = if rows_alias(stride) { ROWS_ALIASED } else { ROWS };
        for_tiles(x, wp, (m, k, n), (s0, s1), left_lower, out, max, |rows, x, strip, len, out, cols| {
            macro_rules! by_rows {
                ($($r:literal)*) => {
                    match rows {
                        $($r => tile::<$r>(x, strip, (stride, len, fetch), out, n, cols),)*
                        _ => tile::<ROWS>(x, strip, (stride, len, fetch), out, n, cols),
                    }
                };
            }
            by_rows!(1 2 3 4 5 6 7 8 9 10 11)
        })
    }
}

/// Rows of a product up to which its tiles leave prefetching to the hardware. With little to
/// compute per row of a strip, the hardware prefetchers keep memory busy on their own (the
/// strips are in huge pages, `weight_memory`, so a stream does not stop every 4 KiB), and
/// software prefetches only take load slots: prefill's experts of 2-6 rows took 220-258 us per
/// item without them against 298-343 us with them, and a decode token (one-row products)
/// 0.96-0.97x the time (BENCHMARKS.md).
#[cfg(target_arch = "x86_64")]
const HARDWARE_FETCH_ROWS: usize = 6;

/// Bytes ahead of the multiply-adds that a tile of a larger product prefetches its strip, into
/// L2. Such a tile computes for about as long as memory takes to deliver its strip, so the
/// stream must start well ahead: against 4 KiB into L1, `saturn bench-op grouped-experts` at
/// 128 tokens took 0.930x the time (BENCHMARKS.md, paired rounds), and 9-12-row experts took
/// up to 1.6x the time with no software prefetch.
#[cfg(target_arch = "x86_64")]
const FETCH_AHEAD: usize = 16384;

/// Prefetches the strip row [`FETCH_AHEAD`] bytes ahead of `w` (its two cache lines) into L2.
/// A prefetch past the strip's end never faults.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn fetch_ahead(w: *const f32) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    let ahead = (w as *const i8).wrapping_add(FETCH_AHEAD);
    // SAFETY: prefetches never fault, whatever the address.
    unsafe {
        _mm_prefetch::<_MM_HINT_T1>(ahead);
        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
    }
}

/// `R` rows of `x` (`stride` apart) against one strip, each sum over the first `len <= k`
/// elements: `R x 2` accumulators, the strip's row for element `i` (two vectors) against `R`
/// broadcast elements per step; with `fetch`, prefetching the strip ahead ([`fetch_ahead`]).
///
/// # Safety
/// `x` points at `R` rows of `k`, `stride` apart, `strip` at `k * STRIP` elements, `out` at `R`
/// rows of stride `n` with `cols <= STRIP` writable columns; `len <= k`.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(
    x: *const f32,
    strip: *const f32,
    (stride, len, fetch): (usize, usize, bool),
    out: *mut f32,
    n: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 2 * ROWS];
    for i in 0..len {
        // SAFETY: row i of the strip and element i of each row are inside the operands; a
        // prefetch past the strip's end never faults.
        unsafe {
            let w = strip.add(i * STRIP);
            if fetch {
                fetch_ahead(w);
            }
            let (w0, w1) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)));
            for r in 0..R {
                let xv = _mm512_set1_ps(*x.add(r * stride + i));
                acc[2 * r] = _mm512_fmadd_ps(xv, w0, acc[2 * r]);
                acc[2 * r + 1] = _mm512_fmadd_ps(xv, w1, acc[2 * r + 1]);
            }
        }
    }
    let lanes = |from: usize| ((1u32 << cols.saturating_sub(from).min(16)) - 1) as __mmask16;
    let (low, high) = (lanes(0), lanes(16));
    for r in 0..R {
        // SAFETY: row r of out has `cols` writable columns; masked lanes write nothing.
        unsafe {
            _mm512_mask_storeu_ps(out.add(r * n), low, acc[2 * r]);
            _mm512_mask_storeu_ps(out.add(r * n + 16), high, acc[2 * r + 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts cover `n`, none over `max`, as few as can be, differing by at most one, larger
    /// first.
    #[test]
    fn balanced_parts() {
        assert_eq!(balanced(13, 12).collect::<Vec<_>>(), [7, 6]);
        assert_eq!(balanced(0, 12).count(), 0);
        for n in 0..200 {
            for max in 1..30 {
                let parts: Vec<_> = balanced(n, max).collect();
                assert_eq!(parts.iter().sum::<usize>(), n);
                assert_eq!(parts.len(), n.div_ceil(max));
                assert!(parts.iter().all(|&p| p <= max && p + 1 >= parts[0] && p <= parts[0]));
                assert!(parts.windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    /// Every row and strip shape (tiles of 1 to 12 rows, balanced tiles above, the 8-row tiles
    /// of rows 4 KiB apart, a partial last strip) against a naive product, through every path,
    /// with rows one after the other and rows padded apart (NaN between them, which a tile
    /// reading past its row would spread); and with `left_lower`, of a lower-triangular `x`
    /// (more columns than rows, fewer, as many): a tile that stopped short of a column one of
    /// its rows reaches would miss its product.
    #[test]
    fn strips_match_a_naive_product() {
        let shapes = [
            (1, 1, 1),
            (1, 64, 32),
            (3, 17, 40),
            (12, 100, 64),
            (13, 33, 96),
            (29, 8, 70),
            (2, 0, 5),
            (21, 1024, 40),
        ];
        let lower = [(30, 40, 33), (40, 30, 64), (25, 25, 20), (7, 7, 5), (19, 1024, 33)];
        let cases = shapes.iter().map(|&s| (s, false)).chain(lower.iter().map(|&s| (s, true)));
        for ((m, k, n), left_lower) in cases {
            let reaches = |r: usize, i: usize| !left_lower || i + m < r + 1 + k;
            let x: Vec<f32> = (0..m * k)
                .map(|i| {
                    if reaches(i / k.max(1), i % k.max(1)) { ((i * 7 % 13) as f32 - 6.0) / 7.0 } else { 0.0 }
                })
                .collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) / 9.0).collect();
            let mut wp = vec![f32::NAN; packed_len(n, k)];
            pack(&w, (n, k), &mut wp);
            // The same strips from `w^T` stored as `[k, n]`.
            let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let mut from_columns = vec![f32::NAN; packed_len(n, k)];
            pack_columns(&wt, (k, n), &mut from_columns);
            assert!(
                wp.iter().zip(&from_columns).all(|(a, b)| a.to_bits() == b.to_bits()),
                "pack_columns {k}x{n}"
            );
            let strips = n.div_ceil(STRIP);
            type Path = unsafe fn(Rows, &[f32], (usize, usize, usize), (usize, usize), bool, *mut f32);
            let mut paths = vec![("linear_strips", linear_strips as Path), ("portable", strips_portable)];
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::avx2_fma() {
                paths.push(("avx2", strips_avx2));
            }
            let stride = pad_stride(k).max(k + 3);
            let mut padded = vec![f32::NAN; m * stride];
            for (dst, src) in padded.chunks_mut(stride).zip(x.chunks(k.max(1))) {
                dst[..k].copy_from_slice(&src[..k]);
            }
            let layouts = [("", Rows::contiguous(&x, k)), (" padded", Rows { data: &padded, stride })];
            for ((name, path), (layout, rows)) in paths.into_iter().flat_map(|p| layouts.map(|l| (p, l))) {
                let mut out = vec![f32::NAN; m * n];
                // Two calls over disjoint strip ranges, as threads make them.
                // SAFETY: the operands have the sizes the contract asks for.
                unsafe {
                    path(rows, &wp, (m, k, n), (0, strips / 2), left_lower, out.as_mut_ptr());
                    path(rows, &wp, (m, k, n), (strips / 2, strips), left_lower, out.as_mut_ptr());
                }
                for r in 0..m {
                    for c in 0..n {
                        let want: f64 =
                            (0..k).map(|i| f64::from(x[r * k + i]) * f64::from(w[c * k + i])).sum();
                        let got = out[r * n + c];
                        assert!(
                            (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{name}{layout} {m}x{k}x{n} [{r}, {c}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
