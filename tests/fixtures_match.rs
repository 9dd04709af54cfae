//! `saturn eval` against what Hugging Face transformers computed for the tiny fixtures
//! (`tests/fixtures/*/reference.safetensors`): the logits of every prompt position.

mod common;

use common::{Values, read_safetensors, saturn, stderr};

const TOLERANCE: f32 = 1e-4;

fn check_prefill(model: &str) {
    let reference =
        read_safetensors(&common::root().join(format!("tests/fixtures/{model}/reference.safetensors")));
    let (ids_shape, Values::I64(ids)) = &reference["input_ids"] else { panic!("input_ids") };
    let (logits_shape, Values::F32(logits)) = &reference["logits"] else { panic!("logits") };
    let (rows, s, vocab) = (ids_shape[0], ids_shape[1], logits_shape[2]);
    let dir = tempfile::tempdir().unwrap();
    for row in 0..rows {
        let row_ids: Vec<String> = ids[row * s..(row + 1) * s].iter().map(i64::to_string).collect();
        let out = dir.path().join(format!("row{row}.safetensors"));
        let run = saturn(&[
            "eval",
            &format!("models/{model}"),
            "--ids",
            &row_ids.join(","),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{model} row {row}: {}", stderr(&run));
        let got = read_safetensors(&out);
        let (shape, Values::F32(got)) = &got["logits"] else { panic!("logits missing") };
        assert_eq!(shape, &vec![s, vocab]);
        let want = &logits[row * s * vocab..(row + 1) * s * vocab];
        let max_err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{model} row {row}: max abs error {max_err:e}");
        assert!(max_err <= TOLERANCE, "{model} row {row}: max abs error {max_err} > {TOLERANCE}");
    }
}

#[test]
fn deepseek_v3_tiny_prefill_matches_transformers() {
    check_prefill("deepseek-v3-tiny");
}

#[test]
fn deepseek_v2_lite_tiny_prefill_matches_transformers() {
    check_prefill("deepseek-v2-lite-tiny");
}
