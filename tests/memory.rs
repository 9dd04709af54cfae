//! `saturn memory`: weights and KV-cache sizes.

mod common;

use common::{saturn, stderr, stdout};
use serde_json::Value;

fn memory_json(args: &[&str]) -> Value {
    let mut all = vec!["memory"];
    all.extend(args);
    all.push("--json");
    let run = saturn(&all);
    assert!(run.status.success(), "{}", stderr(&run));
    serde_json::from_str(&stdout(&run)).unwrap()
}

fn bytes(v: &Value, dtype: &str) -> u64 {
    v.as_array().unwrap().iter().find(|e| e[0] == dtype).unwrap()[1].as_u64().unwrap()
}

#[test]
fn deepseek_v3_671b_cache_holds_the_latent_and_the_rope_key() {
    let r = memory_json(&[
        "tests/fixtures/configs/hf-deepseek-v3-671b.config.json",
        "--context",
        "4096",
        "--batch",
        "8",
    ]);
    assert_eq!(r["cache_elements_per_token_per_layer"], 576);
    assert_eq!(r["expanded_kv_elements_per_token_per_layer"], 40_960);
    assert_eq!(r["cache_elements_per_token"], 576 * 61);
    assert_eq!(r["cache_elements_total"], 576 * 61 * 4096 * 8);
    assert_eq!(bytes(&r["cache_bytes_per_token_per_layer"], "bf16"), 1152);
    assert_eq!(bytes(&r["cache_bytes_total"], "fp8"), 576 * 61 * 4096 * 8);
    // 671B parameters without the multi-token-prediction layer, as DeepSeek reports.
    let params = r["parameters"].as_u64().unwrap();
    assert!((671_000_000_000..672_000_000_000).contains(&params), "{params}");
    assert_eq!(bytes(&r["weight_bytes"], "bf16"), 2 * params);
    assert!(r["stored_weight_bytes"].is_null());
}

#[test]
fn a_checkpoint_reports_its_stored_bytes() {
    let r = memory_json(&["models/deepseek-v3-tiny"]);
    let params = r["parameters"].as_u64().unwrap();
    let file =
        std::fs::metadata(common::root().join("models/deepseek-v3-tiny/model.safetensors")).unwrap().len();
    assert_eq!(r["stored_weight_bytes"].as_u64().unwrap(), 4 * params);
    assert!(4 * params < file && file < 4 * params + 64 * 1024, "the header is small");
}

#[test]
fn the_table_names_every_dtype() {
    let run = saturn(&["memory", "models/deepseek-v2-lite-tiny", "--context", "64"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    for needle in [
        "deepseek_v2 with 3 layers",
        "latent 12 + k_pe 4 = 16 elements",
        "f32",
        "bf16",
        "fp8",
        "per token per layer",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}
