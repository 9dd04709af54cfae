//! Bad input: each case gives a clear error naming the field, tensor or id, exit code 2, no
//! panic, and no output file.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{read_safetensors, saturn, stderr, write_safetensors};
use safetensors::Dtype;
use serde_json::Value;

const MODEL: &str = "models/deepseek-v3-tiny";

/// A writable copy of the tiny V3 checkpoint.
fn copy_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(common::root().join(MODEL).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// The checkpoint's tensors as f32.
fn tensors(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    read_safetensors(&dir.join("model.safetensors"))
        .into_iter()
        .map(|(k, (shape, v))| match v {
            common::Values::F32(d) => (k, (shape, d)),
            common::Values::I64(_) => panic!("unexpected i64 weight"),
        })
        .collect()
}

/// Runs `saturn eval` on `model` and asserts a clean failure whose message contains `expect`.
fn eval_fails(model: &Path, ids: &str, expect: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let out: PathBuf = out_dir.path().join("logits.safetensors");
    let run = saturn(&["eval", model.to_str().unwrap(), "--ids", ids, "--out", out.to_str().unwrap()]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "expected exit code 2, stderr: {err}");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!out.exists(), "an output file was written despite the error");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "leftover files");
}

#[test]
fn unknown_model_type() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.insert("model_type".into(), "llama".into());
    });
    eval_fails(dir.path(), "1,2", "unknown model_type `llama`");
}

#[test]
fn missing_config_field() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.remove("hidden_size");
    });
    eval_fails(dir.path(), "1,2", "field `hidden_size`: missing");
}

#[test]
fn wrongly_typed_config_field() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.insert("num_attention_heads".into(), "four".into());
    });
    eval_fails(dir.path(), "1,2", "field `num_attention_heads`: must be a non-negative integer");
}

#[test]
fn inconsistent_expert_groups() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.insert("n_group".into(), 3.into());
    });
    eval_fails(dir.path(), "1,2", "field `n_group`: must divide n_routed_experts (16), got 3");
}

#[test]
fn inconsistent_top_k() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.insert("num_experts_per_tok".into(), 9.into());
    });
    eval_fails(
        dir.path(),
        "1,2",
        "field `num_experts_per_tok`: 9 experts cannot be chosen from 2 groups of 4",
    );
}

#[test]
fn inconsistent_key_value_heads() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.insert("num_key_value_heads".into(), 2.into());
    });
    eval_fails(dir.path(), "1,2", "field `num_key_value_heads`");
}

#[test]
fn odd_rope_dim() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c.insert("qk_rope_head_dim".into(), 3.into());
    });
    eval_fails(dir.path(), "1,2", "field `qk_rope_head_dim`: must be even");
}

#[test]
fn unsupported_rope_type() {
    let dir = copy_model();
    edit_config(dir.path(), |c| {
        c["rope_parameters"]["rope_type"] = "llama3".into();
    });
    eval_fails(dir.path(), "1,2", "field `rope_parameters.rope_type`: `llama3` is not supported");
}

#[test]
fn malformed_config_json() {
    let dir = copy_model();
    std::fs::write(dir.path().join("config.json"), "{ \"model_type\": ").unwrap();
    eval_fails(dir.path(), "1,2", "config.json: not valid JSON");
}

#[test]
fn missing_config_file() {
    let dir = copy_model();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    eval_fails(dir.path(), "1,2", "config.json: No such file");
}

#[test]
fn missing_weight() {
    let dir = copy_model();
    let mut t = tensors(dir.path());
    t.remove("model.layers.1.mlp.experts.7.up_proj.weight");
    write_safetensors(&dir.path().join("model.safetensors"), &t, Dtype::F32);
    eval_fails(dir.path(), "1,2", "weight `model.layers.1.mlp.experts.7.up_proj.weight` is missing");
}

#[test]
fn extra_weight() {
    let dir = copy_model();
    let mut t = tensors(dir.path());
    t.insert("model.layers.0.mlp.mystery.weight".into(), (vec![2], vec![0.0, 1.0]));
    write_safetensors(&dir.path().join("model.safetensors"), &t, Dtype::F32);
    eval_fails(dir.path(), "1,2", "tensor `model.layers.0.mlp.mystery.weight` is not a weight of this model");
}

#[test]
fn weight_of_wrong_shape() {
    let dir = copy_model();
    let mut t = tensors(dir.path());
    t.insert("lm_head.weight".into(), (vec![64, 128], vec![0.0; 64 * 128]));
    write_safetensors(&dir.path().join("model.safetensors"), &t, Dtype::F32);
    eval_fails(dir.path(), "1,2", "weight `lm_head.weight` has shape [64, 128], expected [128, 64]");
}

#[test]
fn weight_of_wrong_dtype() {
    let dir = copy_model();
    let mut t = tensors(dir.path());
    // Every weight stays f32 except `model.norm.weight`, stored as i32.
    let (shape, _) = t.remove("model.norm.weight").unwrap();
    let bytes = vec![0u8; shape.iter().product::<usize>() * 4];
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = vec![(
        "model.norm.weight".to_string(),
        safetensors::tensor::TensorView::new(Dtype::I32, shape.clone(), &bytes).unwrap(),
    )];
    let others: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(k, (s, d))| (k.clone(), s.clone(), d.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    for (k, s, b) in &others {
        views.push((k.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()));
    }
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    eval_fails(dir.path(), "1,2", "weight `model.norm.weight` has dtype I32");
}

#[test]
fn truncated_safetensors() {
    let dir = copy_model();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    eval_fails(dir.path(), "1,2", "corrupt or truncated safetensors file");
}

#[test]
fn garbage_safetensors() {
    let dir = copy_model();
    std::fs::write(dir.path().join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
        .unwrap();
    eval_fails(dir.path(), "1,2", "model.safetensors: corrupt or truncated safetensors file");
}

#[test]
fn missing_safetensors() {
    let dir = copy_model();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    eval_fails(dir.path(), "1,2", "model.safetensors: No such file");
}

#[test]
fn token_id_outside_vocabulary() {
    eval_fails(
        &common::root().join(MODEL),
        "3,128,5",
        "token id 128 at position 1 is outside the vocabulary (0..128)",
    );
}

#[test]
fn empty_id_list() {
    eval_fails(&common::root().join(MODEL), "", "the id list is empty");
    eval_fails(&common::root().join(MODEL), " , ", "the id list is empty");
}

#[test]
fn malformed_id() {
    eval_fails(&common::root().join(MODEL), "3,x7", "`x7` is not a token id");
}

#[test]
fn eval_of_a_bare_config() {
    eval_fails(&common::root().join(MODEL).join("config.json"), "1,2", "this is a bare config");
}

#[test]
fn context_beyond_max_position_embeddings() {
    // The tiny V3 model has max_position_embeddings 256.
    let ids: Vec<String> = (0..257).map(|i| (i % 100).to_string()).collect();
    eval_fails(
        &common::root().join(MODEL),
        &ids.join(","),
        "257 positions, beyond the model's max_position_embeddings (256)",
    );
    let run = saturn(&["generate", MODEL, "--ids", "1,2,3", "--max-new-tokens", "300", "--ignore-eos"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("302 positions, beyond the model's max_position_embeddings (256)"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn decode_id_outside_vocabulary_fails_before_running() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("l.safetensors");
    let run =
        saturn(&["eval", MODEL, "--ids", "1,2", "--decode-ids", "3,999", "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("token id 999 at position 3 is outside the vocabulary"),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists());
}

#[test]
fn generate_bad_options() {
    for (args, expect) in [
        (vec!["--ids", ""], "the id list is empty"),
        (vec!["--ids", "1", "--temperature", "0"], "temperature must be positive"),
        (vec!["--ids", "1", "--top-p", "1.5"], "top-p must be in (0, 1]"),
        (vec!["--ids", "1", "--top-k", "0"], "top-k must be at least 1"),
        (vec!["--ids", "1", "--ids", "1,500"], "token id 500 at position 1"),
    ] {
        let mut all = vec!["generate", MODEL];
        all.extend(args);
        let run = saturn(&all);
        assert_eq!(run.status.code(), Some(2), "{all:?}");
        assert!(stderr(&run).contains(expect), "{all:?}: {}", stderr(&run));
        assert!(!stderr(&run).contains("panicked"));
    }
}

#[test]
fn memory_bad_options() {
    for (args, expect) in [
        (vec!["--context", "0"], "--context and --batch must be at least 1"),
        (vec!["--context", "1000"], "--context 1000 is beyond the model's max_position_embeddings (256)"),
    ] {
        let mut all = vec!["memory", MODEL];
        all.extend(args);
        let run = saturn(&all);
        assert_eq!(run.status.code(), Some(2), "{all:?}");
        assert!(stderr(&run).contains(expect), "{all:?}: {}", stderr(&run));
    }
}

#[test]
fn decode_without_a_prefill() {
    let model = saturn_frontend::load_model(&common::root().join(MODEL)).unwrap();
    let graph = saturn_frontend::phase_graph(&model.config, saturn_frontend::Phase::Chunked).unwrap();
    let weights = model.open_weights(&graph).unwrap();
    let limits = saturn_runtime::Limits { vocab_size: 128, max_positions: 256 };
    for backend in ["interp", "cpu"] {
        let programs;
        let backend = match backend {
            "cpu" => {
                let phases = saturn_runtime::PhaseGraphs::default();
                programs = saturn_runtime::CpuPrograms::compile(&graph, phases, weights.as_ref()).unwrap();
                saturn_runtime::Backend::Cpu(&programs)
            }
            _ => saturn_runtime::Backend::Interp,
        };
        let executor = saturn_runtime::Executor { graph: &graph, phases: Default::default(), backend };
        let session = executor.session(weights.as_ref(), limits).unwrap();
        decode_without_a_prefill_on(session);
    }
}

fn decode_without_a_prefill_on(mut session: saturn_runtime::Session) {
    let err = session.extend(&[5]).unwrap_err();
    assert_eq!(err.to_string(), "decode needs a cache: run a prefill first");
    // A failed step leaves the session usable.
    session.prefill(&[1, 2]).unwrap();
    assert!(session.extend(&[500]).is_err());
    assert_eq!(session.position(), 2);
    session.extend(&[3]).unwrap();
    assert_eq!(session.position(), 3);
}

#[test]
fn dump_of_a_missing_file() {
    let run = saturn(&["dump", "no/such/config.json"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("no/such/config.json"), "{}", stderr(&run));
}

#[test]
fn sharded_checkpoint_with_a_bad_index() {
    let dir = copy_model();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../../etc/passwd"}}"#,
    )
    .unwrap();
    eval_fails(dir.path(), "1,2", "field `weight_map.a`: must be a file name in the checkpoint folder");
}
