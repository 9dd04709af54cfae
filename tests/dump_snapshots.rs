//! Snapshots of `saturn dump` for the tiny fixtures and the full-size reference configs
//! (`tests/fixtures/configs`, dump only: they have no weights). A change in lowering shows up
//! here as a reviewed diff.

mod common;

use common::{saturn, stderr, stdout};

fn dump(path: &str) -> String {
    dump_phase(path, "prefill")
}

fn dump_phase(path: &str, phase: &str) -> String {
    let out = saturn(&["dump", path, "--phase", phase]);
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

macro_rules! decode_snapshot {
    ($test:ident, $path:expr) => {
        #[test]
        fn $test() {
            insta::assert_snapshot!(stringify!($test), dump_phase($path, "decode"));
        }
    };
}

decode_snapshot!(deepseek_v3_tiny_decode, "models/deepseek-v3-tiny");
decode_snapshot!(deepseek_v2_lite_tiny_decode, "models/deepseek-v2-lite-tiny");
decode_snapshot!(hf_deepseek_v3_671b_decode, "tests/fixtures/configs/hf-deepseek-v3-671b.config.json");

/// The chunked (unspecialised) graph keeps both symbols; prefill and decode bind one each.
#[test]
fn phases_bind_their_symbols() {
    let chunked = dump_phase("models/deepseek-v3-tiny", "chunked");
    assert!(chunked.contains("%input_ids = input() : i64[S]"));
    assert!(chunked.contains("%cache.l0.latent = input() : f32[P, 16]"));
    assert!(
        chunked
            .contains("%l0.cache_latent = concat(%cache.l0.latent, %l0.latent_norm) {axis=0} : f32[P+S, 16]")
    );
    let prefill = dump("models/deepseek-v3-tiny");
    assert!(prefill.contains("%cache.l0.latent = input() : f32[0, 16]"));
    assert!(!prefill.contains("P"), "prefill binds P = 0");
    let decode = dump_phase("models/deepseek-v3-tiny", "decode");
    assert!(decode.contains("%input_ids = input() : i64[1]"));
    assert!(decode.contains("output cache.l2.k_pe = %l2.cache_k_pe"));
    assert!(decode.contains(": f32[4, 1, P+1]"), "decode scores are [H, 1, P+1]");
}

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
