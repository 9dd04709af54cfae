//! `saturn bench-op`: each op at small shapes on the cpu backend and the CUDA emulator, checked
//! against its reference (`--check`), with the report's work figures; bad sizes are errors.

mod common;

use common::{saturn, stderr, stdout};

/// Runs `saturn bench-op ARGS --json --check --repeat 2` and returns the report.
fn report(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench-op"];
    all.extend_from_slice(args);
    all.extend(["--json", "--check", "--repeat", "2"]);
    let out = saturn(&all);
    assert!(out.status.success(), "saturn {all:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// A small grouped-experts problem: 5 tokens, hidden 64, 8 experts of 32 (top-2), shared 16.
const EXPERTS: [&str; 12] =
    ["--tokens", "5", "--hidden", "64", "--inner", "32", "--experts", "8", "--top-k", "2", "--shared", "16"];

fn number(r: &serde_json::Value, key: &str) -> f64 {
    r[key].as_f64().unwrap_or_else(|| panic!("`{key}` missing in {r}"))
}

#[test]
fn mla_decode_reports_its_traffic_and_matches_the_interpreter() {
    let shape = [
        "--batch",
        "2",
        "--context",
        "300",
        "--queries",
        "3",
        "--heads",
        "4",
        "--latent",
        "32",
        "--rope",
        "8",
    ];
    for backend in ["cpu", "cuda-emulator"] {
        let mut args = vec!["mla-decode", "--backend", backend];
        args.extend(shape);
        let r = report(&args);
        assert!(number(&r, "check_relative_error") <= 1e-4, "{r}");
        // Inputs read once, output written once: q (latent + rope), the caches, y.
        let (b, h, s, t, c, rope) = (2.0, 4.0, 3.0, 300.0, 32.0, 8.0);
        let bytes = 4.0 * (b * h * s * (c + rope) + b * t * (c + rope) + b * h * s * c);
        assert_eq!(number(&r, "bytes"), bytes);
        assert_eq!(r["seconds"].as_array().map(Vec::len), Some(2));
        let median = number(&r, "seconds_median");
        assert!((number(&r, "bandwidth_bytes_per_s") * median - bytes).abs() < 1e-6 * bytes);
        // Only devices (the emulator here) have a copy bandwidth to compare with.
        assert_eq!(r["copy_bandwidth_fraction"].is_number(), backend == "cuda-emulator", "{r}");
    }
}

#[test]
fn grouped_experts_report_their_work_and_match_the_reference() {
    for backend in ["cpu", "cuda-emulator"] {
        let mut args = vec!["grouped-experts", "--backend", backend];
        args.extend(EXPERTS);
        let r = report(&args);
        assert!(number(&r, "check_relative_error") <= 1e-4, "{r}");
        // 5 tokens x 2 experts of 3 products (64 x 32), and the shared expert (64 x 16).
        assert_eq!(number(&r, "flops"), 2.0 * 3.0 * 5.0 * 64.0 * (2.0 * 32.0 + 16.0));
        // Tokens 0..5 use experts (2t + j) mod 8: all 8 of them.
        let weights = 3.0 * 64.0 * 32.0 * 8.0 + 3.0 * 64.0 * 16.0;
        assert_eq!(number(&r, "bytes"), 4.0 * (weights + 2.0 * 5.0 * 64.0 + 5.0 * 8.0));
    }
}

/// bf16 weights: the CUDA emulator stores them as bf16 (half the weight bytes) and matches the
/// cpu backend computing with the same rounded weights, to 1e-4; on tensor cores, to bf16's
/// tolerance (and far from exactly: the rounding shows). The cpu backend reads f32 still.
#[test]
fn bf16_weights_halve_the_expert_bytes_on_a_cuda_device() {
    let weights = 3.0 * 64.0 * 32.0 * 8.0 + 3.0 * 64.0 * 16.0;
    let rest = 2.0 * 5.0 * 64.0 + 5.0 * 8.0;
    for (backend, tensor_cores, per_weight) in
        [("cuda-emulator", false, 2.0), ("cuda-emulator", true, 2.0), ("cpu", false, 4.0)]
    {
        let mut args = vec!["grouped-experts", "--backend", backend, "--weights-dtype", "bf16"];
        args.extend(EXPERTS);
        if tensor_cores {
            args.push("--tensor-cores");
        }
        let r = report(&args);
        assert_eq!(r["weights_dtype"], "bf16");
        assert_eq!(r["tensor_cores"], tensor_cores);
        let e = number(&r, "check_relative_error");
        assert!(if tensor_cores { e > 1e-5 && e <= 1.6e-2 } else { e <= 1e-4 }, "{r}");
        assert_eq!(number(&r, "bytes"), per_weight * weights + 4.0 * rest, "{backend}");
    }
}

/// `mla-decode` on the CUDA emulator with --tensor-cores (bf16 queries, cache and
/// probabilities): --check holds it to bf16's tolerance; the cache bytes are f32.
#[test]
fn mla_decode_on_tensor_cores_is_within_bf16_tolerance() {
    let mut args =
        vec!["mla-decode", "--backend", "cuda-emulator", "--weights-dtype", "bf16", "--tensor-cores"];
    args.extend(["--batch", "2", "--context", "40", "--heads", "20", "--latent", "24", "--rope", "8"]);
    let r = report(&args);
    let e = number(&r, "check_relative_error");
    // Far from exact (bf16 rounding shows), far within the bound.
    assert!(e > 1e-5 && e <= 1.6e-2, "{r}");
}

/// `linear` at a size that takes the tiled kernels (more than 8 rows, partial tiles): f32 on
/// the cpu backend and the emulator, and bf16 weights on the emulator, to 1e-4; on tensor
/// cores to bf16's tolerance; bf16 weight bytes halved.
#[test]
fn linear_reports_its_work_and_matches_the_reference() {
    let shape = ["--tokens", "70", "--input", "40", "--output", "130"];
    let (t, k, n) = (70.0, 40.0, 130.0);
    for (backend, dtype, tensor_cores, tolerance, per_weight) in [
        ("cpu", "f32", false, 1e-4, 4.0),
        ("cuda-emulator", "f32", false, 1e-4, 4.0),
        ("cuda-emulator", "bf16", false, 1e-4, 2.0),
        ("cuda-emulator", "bf16", true, 1.6e-2, 2.0),
    ] {
        let mut args = vec!["linear", "--backend", backend, "--weights-dtype", dtype];
        args.extend(shape);
        if tensor_cores {
            args.push("--tensor-cores");
        }
        let r = report(&args);
        assert!(number(&r, "check_relative_error") <= tolerance, "{r}");
        assert_eq!(number(&r, "flops"), 2.0 * t * k * n);
        assert_eq!(number(&r, "bytes"), 4.0 * (t * k + t * n) + per_weight * n * k, "{r}");
    }
}

/// `matmul` (a batch of activation products) on the cpu backend, the emulator's tiles, and
/// its library products (`--cublas`), to 1e-4, reporting what it must do and whether cuBLAS
/// ran (the cpu backend ignores the flag).
#[test]
fn matmul_reports_its_work_and_matches_the_reference() {
    let shape = ["--batch", "3", "--rows", "70", "--inner", "33", "--cols", "50"];
    let (b, m, k, n) = (3.0, 70.0, 33.0, 50.0);
    for (backend, asked, used) in
        [("cpu", true, false), ("cuda-emulator", false, false), ("cuda-emulator", true, true)]
    {
        let mut args = vec!["matmul", "--backend", backend];
        args.extend(shape);
        if asked {
            args.push("--cublas");
        }
        let r = report(&args);
        assert!(number(&r, "check_relative_error") <= 1e-4, "{r}");
        assert_eq!(r["cublas"], used, "{r}");
        assert_eq!(number(&r, "flops"), 2.0 * b * m * k * n);
        assert_eq!(number(&r, "bytes"), 4.0 * b * (m * k + k * n + m * n), "{r}");
    }
}

#[test]
fn impossible_sizes_are_clear_errors() {
    for (args, want) in [
        (
            &["grouped-experts", "--experts", "8", "--top-k", "9"][..],
            "--top-k (9) cannot exceed --experts (8)",
        ),
        (&["mla-decode", "--batch", "0"][..], "--batch must be at least 1"),
        (&["linear", "--output", "0"][..], "--output must be at least 1"),
        (&["matmul", "--inner", "0"][..], "--inner must be at least 1"),
        (&["linear", "--tensor-cores"][..], "--tensor-cores needs --weights-dtype bf16"),
        (&["mla-decode", "--context", "4", "--queries", "5"][..], "cannot exceed --context"),
        (
            &["mla-decode", "--batch", "1", "--context", "8", "--repeat", "0"][..],
            "--repeat must be at least 1",
        ),
    ] {
        let mut all = vec!["bench-op"];
        all.extend_from_slice(args);
        let out = saturn(&all);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(stderr(&out).contains(want), "{all:?}: {}", stderr(&out));
    }
}
