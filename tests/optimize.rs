//! `saturn compile` and `saturn explain`: the optimised IR and the report, snapshot-tested; the
//! optimised graphs still compute what Hugging Face computes.

mod common;

use common::{saturn, stderr, stdout};
use serde_json::Value;

fn compile(model: &str, phase: &str) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let run = saturn(&[
        "compile",
        model,
        "--target",
        "h100",
        "--phase",
        phase,
        "--emit",
        "ir",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let ir = std::fs::read_to_string(dir.path().join("optimized.ir")).unwrap();
    let lowered = std::fs::read_to_string(dir.path().join("lowered.ir")).unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    // The optimised IR parses back, and the lowered one is what `dump` prints.
    saturn_ir::text::parse(&ir).unwrap();
    assert_eq!(lowered, stdout(&saturn(&["dump", model, "--phase", phase])));
    (ir, report)
}

macro_rules! optimized_snapshot {
    ($test:ident, $model:expr, $phase:expr) => {
        #[test]
        fn $test() {
            let (ir, report) = compile($model, $phase);
            insta::assert_snapshot!(concat!(stringify!($test), "_ir"), ir);
            insta::assert_json_snapshot!(concat!(stringify!($test), "_report"), report, {
                ".seconds" => "[seconds]",
                ".templates[].saturation.seconds" => "[seconds]",
                ".templates[].saturation.rules.*.search_seconds" => "[seconds]",
            });
        }
    };
}

optimized_snapshot!(deepseek_v3_tiny_decode_h100, "models/deepseek-v3-tiny", "decode");
optimized_snapshot!(deepseek_v2_lite_tiny_decode_h100, "models/deepseek-v2-lite-tiny", "decode");
optimized_snapshot!(deepseek_v3_tiny_prefill_h100, "models/deepseek-v3-tiny", "prefill");

#[test]
fn the_optimised_graph_is_cheaper_and_fused() {
    let (ir, report) = compile("models/deepseek-v3-tiny", "decode");
    let before = report["cost_before"]["seconds"].as_f64().unwrap();
    let after = report["cost_after"]["seconds"].as_f64().unwrap();
    assert!(after < before, "{after} >= {before}");
    for op in
        ["rms_norm_linear(", "gated_linear(", "router_topk(", "grouped_experts(", "mla_decode_attention("]
    {
        assert!(ir.contains(op), "no {op} in the optimised graph");
    }
}

#[test]
fn compilation_is_deterministic() {
    assert_eq!(
        compile("models/deepseek-v3-tiny", "decode").0,
        compile("models/deepseek-v3-tiny", "decode").0
    );
}

/// 61 layers of two shapes are optimised as two templates, not 61 times.
#[test]
fn repeated_layers_are_optimised_once() {
    let run = saturn(&[
        "explain",
        "tests/fixtures/configs/hf-deepseek-v3-671b.config.json",
        "--phase",
        "decode",
        "--json",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: Value = serde_json::from_str(&stdout(&run)).unwrap();
    let layers: Vec<&Value> =
        report["templates"].as_array().unwrap().iter().filter(|t| !t["layer"].is_null()).collect();
    assert_eq!(layers.len(), 2, "one template for the 3 dense layers, one for the 58 MoE layers");
    let instances: u64 = layers.iter().map(|t| t["instances"].as_u64().unwrap()).sum();
    assert_eq!(instances, 61);
}

#[test]
fn explain_names_rules_costs_and_stop_reasons() {
    let run = saturn(&["explain", "models/deepseek-v3-tiny", "--target", "h100", "--phase", "decode"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    for needle in [
        "rms-norm-into-linear",
        "silu-mul-into-linears",
        "fuse-elementwise",
        "seconds",
        "launches",
        "stopped: saturated",
        "search time per family",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

#[test]
fn a_hit_limit_still_gives_a_valid_graph() {
    let dir = tempfile::tempdir().unwrap();
    let run = saturn(&[
        "compile",
        "models/deepseek-v3-tiny",
        "--iteration-limit",
        "1",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let reasons: Vec<&str> = report["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["saturation"]["stop_reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"iteration_limit"), "{reasons:?}");
    assert!(report["cost_after"]["seconds"].as_f64() <= report["cost_before"]["seconds"].as_f64());
    saturn_ir::text::parse(&std::fs::read_to_string(dir.path().join("optimized.ir")).unwrap()).unwrap();
}

#[test]
fn opt_level_zero_and_one_agree_with_transformers() {
    // The fixture tests run the optimised graph (the default); the lowered one gives the same ids.
    let args = [
        "generate",
        "models/deepseek-v3-tiny",
        "--ids",
        "8,24,67,103,87,79,48,10,94,52,98,53",
        "--max-new-tokens",
        "8",
    ];
    let optimized = saturn(&args);
    let lowered = saturn(&[&args[..], &["--opt-level", "0"]].concat());
    assert!(
        optimized.status.success() && lowered.status.success(),
        "{}{}",
        stderr(&optimized),
        stderr(&lowered)
    );
    assert_eq!(stdout(&optimized).trim(), "90,29,12,33,8,22,91,15");
    assert_eq!(stdout(&lowered), stdout(&optimized));
}

#[test]
fn bad_optimiser_input() {
    for (args, expect) in [
        (vec!["explain", "models/deepseek-v3-tiny", "--target", "tpu"], "unknown target `tpu`"),
        (
            vec!["compile", "models/deepseek-v3-tiny", "--emit", "sass", "-o", "target/x"],
            "--emit sass: unknown (supported: ir, cuda, ptx)",
        ),
        (
            vec![
                "eval",
                "models/deepseek-v3-tiny",
                "--ids",
                "1",
                "--out",
                "target/x.safetensors",
                "--opt-level",
                "3",
            ],
            "opt-level",
        ),
    ] {
        let run = saturn(&args);
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        assert!(stderr(&run).contains(expect), "{args:?}: {}", stderr(&run));
    }
}

#[test]
fn exact_extraction_is_never_worse_than_greedy() {
    let cost = |extract: &str| {
        let run = saturn(&[
            "explain",
            "models/deepseek-v3-tiny",
            "--phase",
            "decode",
            "--extract",
            extract,
            "--json",
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        let r: Value = serde_json::from_str(&stdout(&run)).unwrap();
        let exact_templates =
            r["templates"].as_array().unwrap().iter().filter(|t| t["exact"] == true).count();
        (r["cost_after"]["seconds"].as_f64().unwrap(), exact_templates)
    };
    let (greedy, none) = cost("greedy");
    let (exact, some) = cost("exact");
    assert_eq!(none, 0);
    assert!(some > 0, "no segment was small enough for exact extraction");
    assert!(exact <= greedy * (1.0 + 1e-12), "exact {exact} > greedy {greedy}");
}

#[test]
fn a_malformed_targets_file_is_an_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.toml");
    std::fs::write(&path, "[h100]\nmemory_bandwidth = \"fast\"\n").unwrap();
    let run = saturn(&["explain", "models/deepseek-v3-tiny", "--targets", path.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = stderr(&run);
    assert!(err.contains("targets.toml:2:"), "{err}");
}

#[test]
fn bind_sets_symbol_values_for_costing() {
    let run =
        saturn(&["explain", "models/deepseek-v3-tiny", "--phase", "decode", "--bind", "P=100", "--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(r["symbols"]["P"], 100);
    let run = saturn(&["explain", "models/deepseek-v3-tiny", "--bind", "P"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("--bind P: expected SYMBOL=VALUE"), "{}", stderr(&run));
}

/// `eval` and `generate` run decode steps on the decode graph optimised for the cpu target, so
/// the fixture tests (`fixtures_match.rs`, decode logits within 1e-4 and greedy ids exact)
/// exercise every fused op of that graph.
#[test]
fn the_cpu_decode_graph_that_eval_runs_uses_the_fused_ops() {
    for model in ["models/deepseek-v3-tiny", "models/deepseek-v2-lite-tiny"] {
        let dir = tempfile::tempdir().unwrap();
        let run = saturn(&[
            "compile",
            model,
            "--target",
            "cpu",
            "--phase",
            "decode",
            "-o",
            dir.path().to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        let ir = std::fs::read_to_string(dir.path().join("optimized.ir")).unwrap();
        for op in
            ["mla_decode_attention(", "router_topk(", "grouped_experts(", "rms_norm_linear(", "gated_linear("]
        {
            assert!(ir.contains(op), "{model}: no {op}");
        }
    }
}

/// On DeepSeek-V3 671B decode, the MoE and MLA families both fire, within the time budget.
#[test]
fn v3_671b_explain_shows_the_moe_and_mla_families_firing() {
    let start = std::time::Instant::now();
    let run = saturn(&[
        "explain",
        "models/deepseek-v3-671b.toml",
        "--target",
        "h100",
        "--phase",
        "decode",
        "--json",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r: Value = serde_json::from_str(&stdout(&run)).unwrap();
    let mut applied: std::collections::BTreeMap<String, u64> = Default::default();
    for t in r["templates"].as_array().unwrap() {
        for (rule, s) in t["saturation"]["rules"].as_object().unwrap() {
            *applied.entry(rule.clone()).or_default() += s["applied"].as_u64().unwrap();
        }
    }
    for rule in [
        "router-topk",
        "router-normalize",
        "router-scale",
        "grouped-experts",
        "shared-expert-into-grouped",
        "linear-head-split",
        "matmul-split-contraction",
        "mla-decode-attention",
    ] {
        assert!(applied[rule] > 0, "{rule} did not fire: {applied:?}");
    }
    assert_eq!(r["forms_by_phase"][0]["attention"], "absorbed");
    assert_eq!(r["forms_by_phase"][1]["attention"], "naive");
    // A debug build on a loaded machine: generous, still far below a hang.
    assert!(start.elapsed().as_secs() < 60);
}
