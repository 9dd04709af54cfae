//! `x w^T` for a few rows of `x` with AVX-512: blocks of [`ROWS`] rows of `x` against
//! [`WEIGHTS`] rows of `w`, 24 dot products accumulated at once along `k` in 512-bit registers.
//!
//! This is the shape of attention projections over a short prompt (the experts, whose weights
//! are loaded packed, use `packed`). A packing GEMM spends as long packing the weight
//! as multiplying there; these dot products read the weights in place, a group of blocks that
//! fits L2 at a time: the first tile of `x` rows streams the group from memory, the others
//! meet it in L2, and each tile's rows stay in L1 across the group (for 12 rows of a 1024-wide
//! `x`, 48 KiB, they would not stay in L1 beside a block streaming past every tile). On CPUs
//! whose 512-bit FMA runs at full rate this doubles the multiply-add throughput of 256-bit
//! code.

use std::ops::Range;

/// Rows of `x` and of `w` per block: 6 x 4 = 24 accumulators, plus the 10 vectors loaded per
/// step, fit the 32 AVX-512 registers.
const ROWS: usize = 6;
const WEIGHTS: usize = 4;
/// Rows of `x` per pass over the weights: 48 rows of a 1024-wide `x` (192 KiB) stay in L2
/// while every weight row streams past them once.
const CHUNK: usize = 48;
/// Weight bytes per group of blocks that every tile of rows meets in turn: a quarter of a
/// 1 MiB L2, so a group read from memory by the first tile is still there for the others.
const GROUP_BYTES: usize = 256 * 1024;

/// Whether this CPU runs [`linear_rows`].
pub fn available() -> bool {
    super::avx512()
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
    debug_assert!(x.len() >= m * k && w.len() >= n1 * k && n1 <= n);
    if m == 0 || n0 >= n1 || k == 0 {
        return;
    }
    // Whole blocks are read in place, so every block has the same shape (one base pointer and
    // a stride). The rows left over take a block shifted back to end at `n1`, writing only its
    // last columns (the others belong to earlier blocks or to another caller's range), or, in
    // a weight of fewer rows than a block, zero-padded copies of them.
    let whole = n0 + (n1 - n0) / WEIGHTS * WEIGHTS;
    let tail = n1 - whole;
    let padded = (tail > 0 && n1 < WEIGHTS).then(|| {
        let mut rows = vec![0f32; WEIGHTS * k];
        rows[..tail * k].copy_from_slice(&w[whole * k..n1 * k]);
        rows
    });
    // Whole blocks go in groups that stay in L2 ([`GROUP_BYTES`]): the first tile of rows
    // streams a group from memory, the others read it from L2, and each tile's rows of `x`
    // stay in L1 while they meet the whole group.
    let group = (GROUP_BYTES / (WEIGHTS * k * 4)).max(1) * WEIGHTS;
    for chunk in (0..m).step_by(CHUNK) {
        let x = &x[chunk * k..(m.min(chunk + CHUNK)) * k];
        // SAFETY: the chunk's output rows are inside `out`, as the caller's are.
        let out = unsafe { out.add(chunk * n) };
        for g0 in (n0..whole).step_by(group) {
            let g1 = whole.min(g0 + group);
            for_tiles(x, k, |r, rows, xr| {
                for j in (g0..g1).step_by(WEIGHTS) {
                    // SAFETY: weight rows j..j + WEIGHTS are inside `w` (j + WEIGHTS <= whole
                    // <= n1); output columns j..j + WEIGHTS of rows r.. are this call's.
                    unsafe {
                        tile_of(rows, r == 0, xr, w[j * k..].as_ptr(), k, out.add(r * n + j), n, 0..WEIGHTS)
                    }
                }
            });
        }
        match &padded {
            // SAFETY: `rows` holds WEIGHTS rows of k; only columns whole..n1 are written.
            Some(rows) => unsafe { block(x, rows.as_ptr(), k, out.add(whole), n, 0..tail) },
            // SAFETY: rows n1 - WEIGHTS..n1 are inside `w` (n1 >= WEIGHTS); only columns
            // whole..n1 of the block's are written.
            None if tail > 0 => unsafe {
                let start = n1 - WEIGHTS;
                block(x, w[start * k..].as_ptr(), k, out.add(start), n, WEIGHTS - tail..WEIGHTS)
            },
            None => {}
        }
    }
}

/// Calls `each(r, rows, x_r)` for the tiles of up to [`ROWS`] rows of `x` (row stride `k`):
/// `r` the first row, `x_r` a pointer to it.
fn for_tiles(x: &[f32], k: usize, mut each: impl FnMut(usize, usize, *const f32)) {
    let m = x.len() / k;
    let mut r = 0;
    while r < m {
        let rows = (m - r).min(ROWS);
        each(r, rows, x[r * k..].as_ptr());
        r += rows;
    }
}

/// Every row of `x` (row stride `k`) against one block of [`WEIGHTS`] weight rows at `w`
/// (row stride `k`), writing columns `cols` of the block's output.
///
/// # Safety
/// `w` points at [`WEIGHTS`] rows of `k`; `out` has `x.len() / k` rows of stride `n` whose
/// elements `cols` are writable.
#[target_feature(enable = "avx512f")]
unsafe fn block(x: &[f32], w: *const f32, k: usize, out: *mut f32, n: usize, cols: Range<usize>) {
    for_tiles(x, k, |r, rows, xr| {
        // SAFETY: rows r..r + rows of the output exist (the caller's contract).
        unsafe { tile_of(rows, r == 0, xr, w, k, out.add(r * n), n, cols.clone()) }
    });
}

/// [`tile`] for `rows` (at most [`ROWS`]) rows of `x`; `first` (the first tile against a
/// block) also fetches the next block's weight rows (for the last block, addresses past the
/// weights: a prefetch never faults).
///
/// # Safety
/// As for [`tile`] with `R = rows`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile_of(
    rows: usize,
    first: bool,
    x: *const f32,
    w: *const f32,
    k: usize,
    out: *mut f32,
    n: usize,
    cols: Range<usize>,
) {
    macro_rules! by_rows {
        ($fetch:literal) => {
            match rows {
                1 => tile::<1, $fetch>(x, w, k, out, n, cols),
                2 => tile::<2, $fetch>(x, w, k, out, n, cols),
                3 => tile::<3, $fetch>(x, w, k, out, n, cols),
                4 => tile::<4, $fetch>(x, w, k, out, n, cols),
                5 => tile::<5, $fetch>(x, w, k, out, n, cols),
                _ => tile::<ROWS, $fetch>(x, w, k, out, n, cols),
            }
        };
    }
    // SAFETY: the caller's contract, with R = rows.
    unsafe { if first { by_rows!(true) } else { by_rows!(false) } }
}

/// `R` rows of `x` against [`WEIGHTS`] weight rows: `R x 4` dot products in registers, `R`
/// x-vectors and 4 weight vectors loaded per 16 elements of `k`. With `FETCH`, the next
/// [`WEIGHTS`] weight rows are prefetched alongside: one core's demand loads alone stream a
/// few rows from memory at well under its share of the bandwidth (about half, measured).
///
/// Written with one base pointer per operand and fixed-size accumulators, so that LLVM keeps
/// all 24 accumulators in registers (check the inner loop's assembly for stack traffic after
/// changing it: spilled accumulators halve the rate).
///
/// # Safety
/// `x` points at `R` rows of `k`, `w` at [`WEIGHTS`] rows of `k`; `out` has `R` rows of
/// stride `n` whose elements `cols` are writable.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const FETCH: bool>(
    x: *const f32,
    w: *const f32,
    k: usize,
    out: *mut f32,
    n: usize,
    cols: Range<usize>,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); ROWS * WEIGHTS];
    // One step of 16 elements at `c`, loading through `$load`.
    macro_rules! step {
        ($c:expr, $load:ident $(, $mask:expr)?) => {{
            let c = $c;
            let w0 = $load($($mask,)? w.add(c));
            let w1 = $load($($mask,)? w.add(k + c));
            let w2 = $load($($mask,)? w.add(2 * k + c));
            let w3 = $load($($mask,)? w.add(3 * k + c));
            for r in 0..R {
                let xv = $load($($mask,)? x.add(r * k + c));
                acc[r * WEIGHTS] = _mm512_fmadd_ps(xv, w0, acc[r * WEIGHTS]);
                acc[r * WEIGHTS + 1] = _mm512_fmadd_ps(xv, w1, acc[r * WEIGHTS + 1]);
                acc[r * WEIGHTS + 2] = _mm512_fmadd_ps(xv, w2, acc[r * WEIGHTS + 2]);
                acc[r * WEIGHTS + 3] = _mm512_fmadd_ps(xv, w3, acc[r * WEIGHTS + 3]);
            }
        }};
    }
    let mut c = 0;
    // SAFETY: whole vectors end at or before k; the tail's masked loads read only the
    // `k - c` elements left of each row.
    unsafe {
        while c + 16 <= k {
            if FETCH {
                for i in WEIGHTS..2 * WEIGHTS {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(i * k + c) as *const i8);
                }
            }
            step!(c, _mm512_loadu_ps);
            c += 16;
        }
        if c < k {
            let mask: __mmask16 = ((1u32 << (k - c)) - 1) as __mmask16;
            step!(c, _mm512_maskz_loadu_ps, mask);
        }
        // The sums go through memory (`black_box`): reduced straight into strided stores,
        // LLVM packs them with VEX-only shuffles, which confines the accumulators to 16
        // registers and spills the rest inside the loop above.
        let mut sums = [0f32; ROWS * WEIGHTS];
        for (s, &a) in sums.iter_mut().zip(&acc) {
            *s = _mm512_reduce_add_ps(a);
        }
        let sums = std::hint::black_box(sums);
        for r in 0..R {
            for i in cols.clone() {
                *out.add(r * n + i) = sums[r * WEIGHTS + i];
            }
        }
    }
}

/// Columns of `b` per strip of [`matmul_rows`]: four 512-bit vectors.
const STRIP: usize = 64;

/// `out [m, n] = a [m, k] b [k, n]` with `b` row-major (as a cache of rows is), for the column
/// strips `s0..s1` of [`STRIP`] columns: each row of `b` is read once per block of six rows of
/// `a`, 64 columns at a time against broadcast elements of `a`, with no packing or transposing
/// (so nothing is allocated). Needs [`available`].
///
/// # Safety
/// `a` holds `m * k` elements, `b` `k * n`, `out` at least `m * n`; the caller may run disjoint
/// strip ranges on several threads over the same `out`.
#[target_feature(enable = "avx512f")]
pub unsafe fn matmul_rows(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    (s0, s1): (usize, usize),
    out: *mut f32,
) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n);
    for strip in s0..s1 {
        let col = strip * STRIP;
        let width = (n - col).min(STRIP);
        let mut r = 0;
        while r < m {
            let rows = (m - r).min(ROWS);
            // SAFETY: rows r..r + rows of a and out, columns col..col + width, are inside the
            // operands (the caller's contract).
            unsafe {
                let (a, out) = (a[r * k..].as_ptr(), out.add(r * n + col));
                let b = b[col..].as_ptr();
                match rows {
                    1 => strip_tile::<1>(a, b, (k, n), width, out),
                    2 => strip_tile::<2>(a, b, (k, n), width, out),
                    3 => strip_tile::<3>(a, b, (k, n), width, out),
                    4 => strip_tile::<4>(a, b, (k, n), width, out),
                    5 => strip_tile::<5>(a, b, (k, n), width, out),
                    _ => strip_tile::<ROWS>(a, b, (k, n), width, out),
                }
            }
            r += rows;
        }
    }
}

/// The column strips [`matmul_rows`] splits `n` columns into.
pub fn strips(n: usize) -> usize {
    n.div_ceil(STRIP)
}

/// `R` rows of `a` (row stride `k`) against `width <= 64` columns of `b` (row stride `n`): 4 x
/// `R` accumulators, 4 vectors of `b` and one broadcast of `a` per row of `b`.
///
/// # Safety
/// `a` points at `R` rows of `k`; `b` at `k` rows of stride `n` with `width` readable columns;
/// `out` at `R` rows of stride `n` with `width` writable columns.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn strip_tile<const R: usize>(
    a: *const f32,
    b: *const f32,
    (k, n): (usize, usize),
    width: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    // The lanes of each of the four vectors that are inside the strip.
    let masks: [__mmask16; 4] = std::array::from_fn(|i| {
        let lanes = width.saturating_sub(16 * i).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    });
    let mut acc = [_mm512_setzero_ps(); ROWS * 4];
    for kk in 0..k {
        // SAFETY: row kk of b has `width` columns from here; masked lanes read nothing.
        unsafe {
            let row = b.add(kk * n);
            let b0 = _mm512_maskz_loadu_ps(masks[0], row);
            let b1 = _mm512_maskz_loadu_ps(masks[1], row.add(16));
            let b2 = _mm512_maskz_loadu_ps(masks[2], row.add(32));
            let b3 = _mm512_maskz_loadu_ps(masks[3], row.add(48));
            for r in 0..R {
                let x = _mm512_set1_ps(*a.add(r * k + kk));
                acc[r * 4] = _mm512_fmadd_ps(x, b0, acc[r * 4]);
                acc[r * 4 + 1] = _mm512_fmadd_ps(x, b1, acc[r * 4 + 1]);
                acc[r * 4 + 2] = _mm512_fmadd_ps(x, b2, acc[r * 4 + 2]);
                acc[r * 4 + 3] = _mm512_fmadd_ps(x, b3, acc[r * 4 + 3]);
            }
        }
    }
    for r in 0..R {
        for (i, &mask) in masks.iter().enumerate() {
            // SAFETY: row r of out has `width` columns from here; masked lanes write nothing.
            unsafe { _mm512_mask_storeu_ps(out.add(r * n + 16 * i), mask, acc[r * 4 + i]) };
        }
    }
}
