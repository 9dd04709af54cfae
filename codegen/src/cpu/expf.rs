//! `exp` of f32 lanes, 16 at a time with AVX-512, bit-identical to `f32::exp`.
//!
//! The interpreter (the oracle) computes `exp` with Rust's `f32::exp`, which is glibc's `expf`.
//! Its algorithm works in f64: `k = round(x 32 / ln 2)`, `r = x 32 / ln 2 - k`,
//! `2^(k/32) = T[k mod 32] << k / 32`, then a cubic in `r`, rounded once to f32. On CPUs with
//! FMA (every CPU with AVX-512) glibc runs a build of it whose products are fused into
//! multiply-adds; [`exp16`] repeats that build's operations one for one on 8 f64 lanes per
//! half, so each lane rounds exactly as the scalar call does. Inputs outside the plain range
//! (`|x| >= 88`, infinities, NaN) take the scalar call, lane by lane, except `-inf` (exactly
//! `+0`, what masked attention scores meet).
//!
//! On the development machine (glibc 2.36, AVX-512) it was compared with `f32::exp` on all 2^32
//! inputs: identical everywhere (NaN for NaN). Because another libm (or a future glibc) could
//! compute differently, the vector path is used only after it agreed with `f32::exp` on a
//! sample of inputs on the running machine ([`vector_ok`]); otherwise every call is scalar.

use std::sync::OnceLock;

/// `v[i] = exp(v[i])` for every element.
pub fn exp_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if vector_ok() {
        // SAFETY: `vector_ok` holds only where AVX-512F is available.
        unsafe { exp_avx512(v) };
        return;
    }
    v.iter_mut().for_each(|x| *x = x.exp());
}

/// `g[i] = silu(g[i]) * u[i]` with the interpreter's `silu`: `x / (1 + exp(-x))`, in f32.
pub fn silu_times(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if vector_ok() {
        // SAFETY: `vector_ok` holds only where AVX-512F is available.
        unsafe { silu_times_avx512(g, u) };
        return;
    }
    g.iter_mut().zip(u).for_each(|(g, &u)| *g = saturn_ir::UnaryOp::Silu.apply(*g) * u);
}

/// Whether [`exp16`] agrees with `f32::exp` here (checked once, on every 65521st f32 bit
/// pattern, the edge cases and the FMA-sensitive inputs: about 65,000 inputs, under a
/// millisecond, as a program's first run pays for it).
fn vector_ok() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if super::avx512() {
            // SAFETY: AVX-512F is available (checked above).
            return unsafe { agrees_with_scalar((0..=u32::MAX).step_by(65521)) };
        }
        false
    })
}

/// Whether [`exp16`] gives `f32::exp`'s bits for every input among `bits` and the edge cases
/// (any NaN meeting any NaN).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn agrees_with_scalar(bits: impl Iterator<Item = u32>) -> bool {
    // The two inputs (of all 2^32) at which computing `r` without a fused multiply-add changes
    // the result: a libm built without FMA differs there.
    let hard = [f32::from_bits(0x4202422f), f32::from_bits(0xc27c65d9)];
    let edges =
        [0.0f32, -0.0, 88.0, 88.72283, 88.72284, -87.33655, -103.97207, -103.97208, -104.0, 1e-30, -1e-30]
            .into_iter()
            .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, f32::MAX, f32::MIN])
            .chain(hard);
    let mut inputs: Vec<f32> = edges.chain(bits.map(f32::from_bits)).collect();
    let want: Vec<f32> = inputs.iter().map(|x| x.exp()).collect();
    // SAFETY: the caller's contract.
    unsafe { exp_avx512(&mut inputs) };
    inputs.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
}

/// 2^(i/32) as f64 bits, minus `i << 47` (so that adding `k << 47` for `k = 32 q + i` scales it
/// by 2^q): the table of glibc's `expf`.
#[cfg(target_arch = "x86_64")]
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// 32 / ln 2.
#[cfg(target_arch = "x86_64")]
const INV_LN2_N: f64 = f64::from_bits(0x40471547652b82fe);
/// 1.5 * 2^52: adding it rounds to an integer, held in the low bits.
#[cfg(target_arch = "x86_64")]
const SHIFT: f64 = f64::from_bits(0x4338000000000000);
/// The cubic's coefficients, scaled for `r` in units of 1/32.
#[cfg(target_arch = "x86_64")]
const C: [f64; 3] = [
    f64::from_bits(0x3ebc6af84b912394),
    f64::from_bits(0x3f2ebfce50fac4f3),
    f64::from_bits(0x3f962e42ff0c52d6),
];
/// The top 12 bits of `|x|` from which glibc leaves the plain path (`|x| >= 88`, inf, NaN).
#[cfg(target_arch = "x86_64")]
const SPECIAL_TOP: i32 = 0x42b;

/// exp of 8 f64 lanes (f32 inputs widened), as glibc's FMA build computes it, rounded to f32.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn exp8(xd: std::arch::x86_64::__m512d) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let kd = _mm512_fmadd_pd(_mm512_set1_pd(INV_LN2_N), xd, _mm512_set1_pd(SHIFT));
    let ki = _mm512_castpd_si512(kd);
    let kd = _mm512_sub_pd(kd, _mm512_set1_pd(SHIFT));
    let r = _mm512_fmsub_pd(_mm512_set1_pd(INV_LN2_N), xd, kd);
    // TABLE[ki % 32] from registers (a gather from memory is several times slower): each
    // half of the table is one two-register permute, bit 4 of the index picks the half.
    // SAFETY: TABLE holds 32 entries, four vectors of 8.
    let part = |i: usize| unsafe { _mm512_loadu_si512(TABLE[8 * i..].as_ptr() as *const _) };
    let low = _mm512_permutex2var_epi64(part(0), ki, part(1));
    let high = _mm512_permutex2var_epi64(part(2), ki, part(3));
    let t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), low, high);
    let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
    let z = _mm512_fmadd_pd(_mm512_set1_pd(C[0]), r, _mm512_set1_pd(C[1]));
    let r2 = _mm512_mul_pd(r, r);
    let y = _mm512_fmadd_pd(_mm512_set1_pd(C[2]), r, _mm512_set1_pd(1.0));
    let y = _mm512_fmadd_pd(z, r2, y);
    _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
}

/// exp of 16 f32 lanes, bit-identical to `f32::exp` per lane (see the module docs).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let low = exp8(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
    let high = exp8(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)))));
    let y = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castps_pd(_mm512_castps256_ps512(low)),
        _mm256_castps_pd(high),
    ));
    let top = _mm512_and_si512(_mm512_srli_epi32::<20>(_mm512_castps_si512(x)), _mm512_set1_epi32(0x7ff));
    let special = _mm512_cmpge_epi32_mask(top, _mm512_set1_epi32(SPECIAL_TOP));
    if special == 0 {
        return y;
    }
    let minus_inf = _mm512_cmpeq_epi32_mask(
        _mm512_castps_si512(x),
        _mm512_set1_epi32(f32::NEG_INFINITY.to_bits() as i32),
    );
    let y = _mm512_mask_blend_ps(minus_inf, y, _mm512_setzero_ps());
    let rest = special & !minus_inf;
    if rest == 0 {
        return y;
    }
    let (mut xs, mut ys) = ([0f32; 16], [0f32; 16]);
    // SAFETY: both arrays hold 16 lanes.
    unsafe {
        _mm512_storeu_ps(xs.as_mut_ptr(), x);
        _mm512_storeu_ps(ys.as_mut_ptr(), y);
    }
    for lane in (0..16).filter(|l| rest >> l & 1 == 1) {
        ys[lane] = xs[lane].exp();
    }
    // SAFETY: 16 lanes.
    unsafe { _mm512_loadu_ps(ys.as_ptr()) }
}

/// [`exp_in_place`] with AVX-512: whole vectors, then the tail through a masked load/store.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_avx512(v: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = v.chunks_exact_mut(16);
    for c in &mut chunks {
        // SAFETY: the chunk holds 16 lanes.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), exp16(_mm512_loadu_ps(c.as_ptr()))) };
    }
    let tail = chunks.into_remainder();
    let mask = ((1u32 << tail.len()) - 1) as __mmask16;
    // SAFETY: the masked lanes are the tail's; the others are neither read nor written.
    unsafe {
        let x = _mm512_maskz_loadu_ps(mask, tail.as_ptr());
        _mm512_mask_storeu_ps(tail.as_mut_ptr(), mask, exp16(x));
    }
}

/// [`silu_times`] with AVX-512: `x / (1 + exp(-x)) * u`, each operation the scalar one.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_times_avx512(g: &mut [f32], u: &[f32]) {
    use std::arch::x86_64::*;
    let n = g.len().min(u.len());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let mask = ((1u32 << (n - i).min(16)) - 1) as __mmask16;
        // SAFETY: the masked lanes are inside both slices.
        unsafe {
            let x = _mm512_maskz_loadu_ps(mask, g.as_ptr().add(i));
            let uv = _mm512_maskz_loadu_ps(mask, u.as_ptr().add(i));
            let minus_x =
                _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN)));
            let e = exp16(minus_x);
            let y = _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), uv);
            _mm512_mask_storeu_ps(g.as_mut_ptr().add(i), mask, y);
        }
        i += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the CPU has AVX-512, the vector path agrees with `f32::exp` on another sample of
    /// inputs than the one checked at first use, and `silu_times` with the scalar silu.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_exp_matches_the_scalar_one() {
        if !crate::cpu::avx512() {
            return;
        }
        // SAFETY: AVX-512F is available.
        assert!(unsafe { agrees_with_scalar((7..=u32::MAX).step_by(10007)) });
        assert!(vector_ok());
        let g: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 7.0).collect();
        let u: Vec<f32> = (0..1000).map(|i| 1.0 + i as f32 / 100.0).collect();
        let mut got = g.clone();
        silu_times(&mut got, &u);
        for ((a, &x), &v) in got.iter().zip(&g).zip(&u) {
            assert_eq!(a.to_bits(), (saturn_ir::UnaryOp::Silu.apply(x) * v).to_bits(), "silu({x}) * {v}");
        }
    }
}
