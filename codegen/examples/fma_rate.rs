//! How many f32 multiply-adds one core retires per second with 256-bit (AVX2) and with 512-bit
//! (AVX-512) FMAs: 12 independent accumulator chains, enough to cover the FMA latency. The
//! ratio says whether AVX-512 kernels (`cpu/row_blocks.rs`) can double the compute rate.
//!
//! `cargo run --release -p saturn-codegen --example fma_rate`

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::arch::x86_64::*;
    use std::time::Instant;

    #[target_feature(enable = "avx2,fma")]
    fn chains_256(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (a, b) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(0.999_999));
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm256_fmadd_ps(*r, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|&r| {
                // SAFETY: `lanes` holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }

    #[target_feature(enable = "avx512f")]
    fn chains_512(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (a, b) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999));
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(*r, a, b);
            }
        }
        acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
    }

    let iters = 100_000_000;
    let rate = |lanes: usize, run: &dyn Fn() -> f32| {
        let t = Instant::now();
        std::hint::black_box(run());
        (iters * 12 * lanes * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        println!("256-bit FMA: {:.1} GFLOP/s on one core", rate(8, &|| unsafe { chains_256(iters) }));
    }
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        println!("512-bit FMA: {:.1} GFLOP/s on one core", rate(16, &|| unsafe { chains_512(iters) }));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("this measures x86-64 FMA units only");
}
