//! `saturn generate`: batches of prompts, sampling determinism, the end-of-sequence token.

mod common;

use common::{saturn, stderr, stdout};

const MODEL: &str = "models/deepseek-v3-tiny";

fn generate(args: &[&str]) -> Vec<String> {
    let mut all = vec!["generate", MODEL];
    all.extend(args);
    let run = saturn(&all);
    assert!(run.status.success(), "{all:?}: {}", stderr(&run));
    stdout(&run).lines().map(str::to_string).collect()
}

#[test]
fn a_batch_of_prompts_of_different_lengths_equals_running_each_alone() {
    let batch = generate(&["--ids", "5,6,7,8,9", "--ids", "42", "--ids", "3,17", "--max-new-tokens", "6"]);
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[0], generate(&["--ids", "5,6,7,8,9", "--max-new-tokens", "6"])[0]);
    assert_eq!(batch[1], generate(&["--ids", "42", "--max-new-tokens", "6"])[0]);
    assert_eq!(batch[2], generate(&["--ids", "3,17", "--max-new-tokens", "6"])[0]);
}

#[test]
fn sampling_is_reproducible_and_depends_on_the_seed() {
    let args = ["--ids", "3,17,42", "--max-new-tokens", "12", "--temperature", "1.5", "--top-k", "50"];
    let a = generate(&[&args[..], &["--seed", "1"]].concat());
    let b = generate(&[&args[..], &["--seed", "1"]].concat());
    assert_eq!(a, b);
    let others: Vec<Vec<String>> =
        (2..6).map(|s| generate(&[&args[..], &["--seed", &s.to_string()]].concat())).collect();
    assert!(others.iter().any(|o| *o != a), "five seeds gave the same 12 tokens");
    let greedy = generate(&["--ids", "3,17,42", "--max-new-tokens", "12"]);
    assert!(others.iter().chain([&a]).any(|o| *o != greedy), "sampling never left the greedy path");
}

#[test]
fn generation_stops_after_the_end_of_sequence_token() {
    // After prompt `11` the tiny V3 model's greedy continuation reaches its eos token (1).
    let long = generate(&["--ids", "11", "--max-new-tokens", "20", "--ignore-eos"]);
    let ids: Vec<&str> = long[0].split(',').collect();
    assert_eq!(ids.len(), 20);
    let eos = ids.iter().position(|&t| t == "1").expect("the greedy continuation of 11 reaches eos");
    let stopped = generate(&["--ids", "11", "--max-new-tokens", "20"]);
    assert_eq!(stopped[0], ids[..=eos].join(","));
}

/// The cpu backend's compiled elementwise kernels are bit-identical to the interpreter's.
#[test]
fn cpu_and_interp_backends_agree_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let run = |backend: &str| {
        let out = dir.path().join(format!("{backend}.safetensors"));
        let args = [
            "eval",
            MODEL,
            "--ids",
            "8,24,67,103",
            "--decode-ids",
            "5,9",
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ];
        let r = saturn(&args);
        assert!(r.status.success(), "{}", stderr(&r));
        std::fs::read(out).unwrap()
    };
    assert_eq!(run("cpu"), run("interp"));
    // ... and they did run: the residual adds at least are compiled.
    let out = dir.path().join("logged.safetensors");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_saturn"))
        .args(["eval", MODEL, "--ids", "8,24", "--out", out.to_str().unwrap()])
        .env("SATURN_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&r.stderr);
    let compiled: usize = log
        .split("compiled_kernels=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(compiled > 0, "no compiled kernel ran: {log}");
    let r = saturn(&["generate", MODEL, "--ids", "1", "--backend", "gpu"]);
    assert_eq!(r.status.code(), Some(2));
}
