//! Times the Cranelift row kernels at the mid-size model's prefill shapes: RMSNorm of 128 rows
//! of 1024, and a softmax over 16 heads x 128 x 128 causally masked scores (half of them
//! `-inf`), as a softmax of masked scores and as the causal softmax that folds the mask in.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p saturn-codegen --example row_kernels` (one core;
//! without it, both).

use saturn_codegen::RowKernels;

fn main() {
    let kernels = RowKernels::compile().expect("the row kernels compile");
    let (rows, d) = (128, 1024);
    let x: Vec<f32> = (0..rows * d).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
    let w: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 * 1e-3).collect();
    let mut out = vec![0f32; rows * d];
    println!("rms_norm 128 x 1024: {:.1} us", per_call(|| kernels.rms_norm(&x, &w, 1e-6, &mut out)));
    let (heads, n) = (16, 128);
    let scores: Vec<f32> = (0..heads * n * n)
        .map(|i| if i % n > (i / n) % n { f32::NEG_INFINITY } else { ((i * 7 % 13) as f32 - 6.0) / 7.0 })
        .collect();
    let mut probs = vec![0f32; scores.len()];
    let us = per_call(|| kernels.softmax(&scores, heads * n, n, 1, &mut probs));
    println!("softmax of masked scores 16 x 128 x 128: {us:.1} us");
    let us = per_call(|| kernels.causal_softmax(&scores, (heads * n, n, n), 0.125, &mut probs));
    println!("causal softmax (scale and mask folded in) 16 x 128 x 128: {us:.1} us");
}

/// Microseconds per call of `f`: the median of 9 rounds of 50 calls, after 10 warm-up calls.
fn per_call(mut f: impl FnMut()) -> f64 {
    (0..10).for_each(|_| f());
    let mut rounds: Vec<f64> = (0..9)
        .map(|_| {
            let start = std::time::Instant::now();
            (0..50).for_each(|_| f());
            start.elapsed().as_secs_f64() / 50.0 * 1e6
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[4]
}
