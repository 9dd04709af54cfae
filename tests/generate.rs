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

/// The cpu backend (compiled programs) computes the interpreter's logits, to float rounding.
#[test]
fn cpu_and_interp_backends_agree() {
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
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_saturn"))
            .args(args)
            .env("SATURN_LOG", "info")
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let log = String::from_utf8_lossy(&r.stderr).to_string();
        let bytes = std::fs::read(out).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let floats = |name: &str| -> Vec<f32> {
            let t = tensors.tensor(name).unwrap();
            t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        (floats("logits"), floats("decode_logits"), log)
    };
    let (cpu, interp) = (run("cpu"), run("interp"));
    assert!(cpu.2.contains("compiled the cpu programs"), "the cpu backend did not compile: {}", cpu.2);
    assert!(!interp.2.contains("compiled the cpu programs"));
    for (got, want) in [(&cpu.0, &interp.0), (&cpu.1, &interp.1)] {
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "cpu {a} vs interp {b}");
        }
    }
    let r = saturn(&["generate", MODEL, "--ids", "1", "--backend", "gpu"]);
    assert_eq!(r.status.code(), Some(2));
}
