//! Checkpoint layouts: sharded checkpoints with an index, and tensors transformers also skips.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Values, read_safetensors, saturn, stderr, write_safetensors};
use safetensors::Dtype;

const MODEL: &str = "models/deepseek-v3-tiny";

fn weights() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    read_safetensors(&common::root().join(MODEL).join("model.safetensors"))
        .into_iter()
        .map(|(k, (s, v))| match v {
            Values::F32(d) => (k, (s, d)),
            Values::I64(_) => panic!("i64 weight"),
        })
        .collect()
}

fn eval_logits(model: &Path) -> Vec<f32> {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("logits.safetensors");
    let run =
        saturn(&["eval", model.to_str().unwrap(), "--ids", "5,0,127,9", "--out", path.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    match read_safetensors(&path).remove("logits").unwrap().1 {
        Values::F32(v) => v,
        Values::I64(_) => panic!("i64 logits"),
    }
}

#[test]
fn sharded_checkpoint_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::root().join(MODEL).join("config.json"), dir.path().join("config.json")).unwrap();
    let all = weights();
    let (mut first, mut second) = (BTreeMap::new(), BTreeMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        let (shard, file) =
            if i % 2 == 0 { (&mut first, "a.safetensors") } else { (&mut second, "b.safetensors") };
        weight_map.insert(name.clone(), file.into());
        shard.insert(name, t);
    }
    write_safetensors(&dir.path().join("a.safetensors"), &first, Dtype::F32);
    write_safetensors(&dir.path().join("b.safetensors"), &second, Dtype::F32);
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(eval_logits(dir.path()), eval_logits(&common::root().join(MODEL)));
}

#[test]
fn multi_token_prediction_layers_and_rotary_tables_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(common::root().join(MODEL).join("config.json")).unwrap();
    let config = config.replace("\"num_nextn_predict_layers\": 0", "\"num_nextn_predict_layers\": 1");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let mut all = weights();
    all.insert("model.layers.3.eh_proj.weight".into(), (vec![2, 2], vec![0.0; 4]));
    all.insert("model.layers.0.self_attn.rotary_emb.inv_freq".into(), (vec![2], vec![1.0, 0.01]));
    write_safetensors(&dir.path().join("model.safetensors"), &all, Dtype::F32);
    assert_eq!(eval_logits(dir.path()), eval_logits(&common::root().join(MODEL)));

    // Without the config's MTP layer, the same tensor is an error.
    std::fs::copy(common::root().join(MODEL).join("config.json"), dir.path().join("config.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = saturn(&[
        "eval",
        dir.path().to_str().unwrap(),
        "--ids",
        "1",
        "--out",
        out.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("tensor `model.layers.3.eh_proj.weight` is not a weight of this model"));
}

#[test]
fn bf16_weights_are_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::root().join(MODEL).join("config.json"), dir.path().join("config.json")).unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &weights(), Dtype::BF16);
    let bf16 = eval_logits(dir.path());
    let f32 = eval_logits(&common::root().join(MODEL));
    let max_err = bf16.iter().zip(&f32).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let max_abs = f32.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    // bf16 keeps 8 bits of mantissa: logits move, but only by a few percent of their range.
    assert!(max_err > 0.0 && max_err < 0.1 * max_abs, "max error {max_err} of {max_abs}");
}
