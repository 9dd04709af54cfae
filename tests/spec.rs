//! saturn's model specs (`models/*.toml`): each shipped spec means the same model as its Hugging
//! Face config, runs like its checkpoint, and bad specs fail cleanly, naming the line and column
//! or the spec field.

mod common;

use common::{root, saturn, stderr, stdout};
use saturn_frontend::{StorageDtype, WeightsSource, load_model};

const MINI: &str = "models/deepseek-v3-mini.toml";

fn dump(path: &str) -> String {
    let out = saturn(&["dump", path]);
    assert!(out.status.success(), "dump {path}: {}", stderr(&out));
    stdout(&out)
}

/// Runs `saturn eval` and returns the bytes of the logits file it wrote.
fn eval(model: &str, ids: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.safetensors");
    let run = saturn(&["eval", model, "--ids", ids, "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "eval {model}: {}", stderr(&run));
    std::fs::read(out).unwrap()
}

#[test]
fn full_size_specs_dump_like_their_hugging_face_configs() {
    for (spec, hf) in [
        ("models/deepseek-v3-671b.toml", "tests/fixtures/configs/hf-deepseek-v3-671b.config.json"),
        ("models/deepseek-v2-lite.toml", "tests/fixtures/configs/hf-deepseek-v2-lite-16b.config.json"),
    ] {
        assert!(dump(spec) == dump(hf), "{spec} and {hf} dump differently");
    }
}

/// Stronger than the dumps: every field, including those a prefill graph does not show (token
/// ids, context length, multi-token-prediction layers).
#[test]
fn specs_read_to_the_same_config_as_their_hugging_face_configs() {
    for (spec, hf) in [
        ("models/deepseek-v3-671b.toml", "tests/fixtures/configs/hf-deepseek-v3-671b.config.json"),
        ("models/deepseek-v2-lite.toml", "tests/fixtures/configs/hf-deepseek-v2-lite-16b.config.json"),
        ("models/deepseek-v3-tiny.toml", "models/deepseek-v3-tiny"),
    ] {
        let from_spec = load_model(&root().join(spec)).unwrap();
        let from_hf = load_model(&root().join(hf)).unwrap();
        assert_eq!(from_spec.config, from_hf.config, "{spec} vs {hf}");
        assert_eq!(from_spec.config_path, root().join(spec));
    }
}

#[test]
fn spec_weights_sources() {
    let tiny = load_model(&root().join("models/deepseek-v3-tiny.toml")).unwrap();
    assert_eq!(tiny.weights, WeightsSource::Checkpoint(root().join("models/deepseek-v3-tiny")));
    assert_eq!(tiny.storage_dtype, Some(StorageDtype::F32));
    let big = load_model(&root().join("models/deepseek-v3-671b.toml")).unwrap();
    assert_eq!(big.weights, WeightsSource::Random { seed: 0, std: 0.02 });
    assert_eq!(big.storage_dtype, Some(StorageDtype::Fp8));
    let hf = load_model(&root().join("models/deepseek-v3-tiny")).unwrap();
    assert_eq!(hf.storage_dtype, None);
}

#[test]
fn tiny_spec_evaluates_like_its_checkpoint_folder() {
    let ids = "3,17,42,0,127,5";
    assert_eq!(eval("models/deepseek-v3-tiny.toml", ids), eval("models/deepseek-v3-tiny", ids));
}

#[test]
fn mini_spec_runs_deterministically() {
    let first = eval(MINI, "1,2,3");
    assert_eq!(first, eval(MINI, "1,2,3"), "two runs of the random-weights spec differ");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logits.safetensors");
    std::fs::write(&path, &first).unwrap();
    let (shape, values) = common::read_safetensors(&path).remove("logits").unwrap();
    assert_eq!(shape, [3, 512]);
    let common::Values::F32(values) = values else { panic!("logits are not f32") };
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0));
}

#[test]
fn mini_spec_dump() {
    insta::assert_snapshot!("deepseek_v3_mini_prefill", dump(MINI));
}

/// The mini spec with `from` replaced by `to` (which must occur exactly once).
fn edited_mini(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(root().join(MINI)).unwrap();
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once in {MINI}");
    text.replacen(from, to, 1)
}

/// Writes `text` as `spec.toml` in a fresh folder, runs `saturn dump` on it, and asserts a clean
/// failure (exit code 2, no panic, nothing on stdout) whose message contains `expect`.
fn spec_fails(text: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, text).unwrap();
    let run = saturn(&["dump", spec.to_str().unwrap()]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "expected exit code 2, stderr: {err}");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(stdout(&run).is_empty(), "a failed dump printed something");
}

/// The 1-based number of the line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines().position(|l| l.starts_with(start)).unwrap() + 1
}

#[test]
fn malformed_toml_names_line_and_column() {
    let text = edited_mini("heads = 4\n", "heads = = 4\n");
    let line = line_of(&text, "heads = = 4");
    spec_fails(&text, &format!("spec.toml:{line}:9: "));
}

#[test]
fn unknown_field_names_line_and_column() {
    let text = edited_mini("groups = 4 ", "grups = 4 ");
    let line = line_of(&text, "grups");
    spec_fails(&text, &format!("spec.toml:{line}:1: unknown field `grups`, expected one of"));
}

#[test]
fn wrongly_typed_field_names_line_and_column() {
    let text = edited_mini("heads = 4\n", "heads = \"four\"\n");
    let line = line_of(&text, "heads =");
    spec_fails(&text, &format!("spec.toml:{line}:9: invalid type: string \"four\", expected u64"));
    spec_fails(&edited_mini("layers = 3\n", "layers = 3.5\n"), "invalid type: floating point `3.5`");
    spec_fails(&edited_mini("dtype = \"f32\"", "dtype = \"int4\""), "unknown variant `int4`");
}

#[test]
fn missing_field() {
    spec_fails(&edited_mini("family = \"deepseek_v3\"\n", ""), "missing field `family`");
    spec_fails(&edited_mini("kv_lora_rank = 32\n", ""), "missing field `kv_lora_rank`");
}

#[test]
fn inconsistent_dims_name_the_spec_field() {
    spec_fails(
        &edited_mini("groups = 4 ", "groups = 3 "),
        "field `moe.groups`: must divide moe.routed_experts (16), got 3",
    );
    spec_fails(
        &edited_mini("qk_rope_head_dim = 8", "qk_rope_head_dim = 7"),
        "field `attention.qk_rope_head_dim`: must be even for RoPE, got 7",
    );
    spec_fails(
        &edited_mini("dense_layers = 1", "dense_layers = 4"),
        "field `model.dense_layers`: must be at most model.layers (3), got 4",
    );
    spec_fails(
        &edited_mini("experts_per_token = 4", "experts_per_token = 9"),
        "field `moe.experts_per_token`: 9 experts cannot be chosen from 2 groups of 4",
    );
    spec_fails(&edited_mini("dense_intermediate_size = 256\n", ""), "field `model.dense_intermediate_size`");
}

#[test]
fn family_rules() {
    spec_fails(
        &edited_mini("groups = 4 ", "routing = \"greedy\"\ngroups = 4 "),
        "field `moe.routing`: deepseek_v3 supports `noaux_tc`, got `greedy`",
    );
    let v2 = std::fs::read_to_string(root().join("models/deepseek-v2-lite.toml")).unwrap();
    spec_fails(
        &v2.replacen("scaling = 1.0", "scaling = 1.0\nnormalize_weights = true", 1),
        "field `moe.normalize_weights`: deepseek_v2 never normalises",
    );
    spec_fails(
        &v2.replacen("routing = \"greedy\"", "routing = \"greedy\"\ngroups = 8", 1),
        "field `moe.groups`: only the group routings use groups",
    );
}

#[test]
fn bad_weights_table() {
    spec_fails(
        &edited_mini("seed = 0\nstd = 0.02\n", "checkpoint = \"no-such-folder\"\n"),
        "field `weights.checkpoint`: no checkpoint folder at ",
    );
    spec_fails(
        &edited_mini("seed = 0\n", "checkpoint = \"../models\"\nseed = 0\n"),
        "field `weights.checkpoint`: give either a checkpoint or random weights",
    );
}
