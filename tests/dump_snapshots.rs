//! Snapshots of `saturn dump` for the tiny fixtures and the full-size reference configs
//! (`tests/fixtures/configs`, dump only: they have no weights). A change in lowering shows up
//! here as a reviewed diff.

mod common;

use common::{saturn, stderr, stdout};

fn dump(path: &str) -> String {
    let out = saturn(&["dump", path]);
    assert!(out.status.success(), "dump {path}: {}", stderr(&out));
    stdout(&out)
}

macro_rules! dump_snapshot {
    ($test:ident, $path:expr) => {
        #[test]
        fn $test() {
            insta::assert_snapshot!(stringify!($test), dump($path));
        }
    };
}

dump_snapshot!(deepseek_v3_tiny_prefill, "models/deepseek-v3-tiny");
dump_snapshot!(deepseek_v2_lite_tiny_prefill, "models/deepseek-v2-lite-tiny");
dump_snapshot!(hf_deepseek_v3_671b_prefill, "tests/fixtures/configs/hf-deepseek-v3-671b.config.json");
dump_snapshot!(hf_deepseek_v2_lite_16b_prefill, "tests/fixtures/configs/hf-deepseek-v2-lite-16b.config.json");
dump_snapshot!(hub_style_deepseek_v3_prefill, "tests/fixtures/configs/hub-style-deepseek-v3.config.json");
dump_snapshot!(inference_16b_prefill, "tests/fixtures/configs/deepseek-v3-inference-config_16B.json");
dump_snapshot!(inference_236b_prefill, "tests/fixtures/configs/deepseek-v3-inference-config_236B.json");
dump_snapshot!(inference_671b_prefill, "tests/fixtures/configs/deepseek-v3-inference-config_671B.json");

/// The same input gives byte-identical dumps.
#[test]
fn dumps_are_deterministic() {
    let a = dump("tests/fixtures/configs/hf-deepseek-v3-671b.config.json");
    let b = dump("tests/fixtures/configs/hf-deepseek-v3-671b.config.json");
    assert_eq!(a, b);
}

/// The 4.x config schema (`rope_scaling` + `rope_theta`, `topk_method`, `scoring_func`) of the
/// hub's V3 lowers to the same graph as the 5.x schema of the same model.
#[test]
fn hub_and_transformers_5_schemas_agree() {
    assert_eq!(
        dump("tests/fixtures/configs/hub-style-deepseek-v3.config.json"),
        dump("tests/fixtures/configs/hf-deepseek-v3-671b.config.json")
    );
}

/// DESIGN.md: the 671B dump prints all 61 layers.
#[test]
fn v3_671b_dump_has_61_layers() {
    let text = dump("tests/fixtures/configs/hf-deepseek-v3-671b.config.json");
    assert!(text.contains("%l60.ffn_residual = "));
    assert!(!text.contains("%l61."));
    assert!(
        text.contains("key=\"model.layers.60.mlp.experts.{e}.down_proj.weight\"} : f32[256, 7168, 2048]")
    );
}
