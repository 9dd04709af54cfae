//! The frontend must not assume the fixtures' dims: random small DeepSeek V2/V3 configs (every
//! variant the configs allow), each written as a checkpoint with random weights, must lower to
//! graphs that verify, round-trip through the text form, and run to finite logits; and running
//! with the KV cache (chunked prefill, then decode steps) must equal recomputing everything.

mod common;

use std::collections::BTreeMap;

use common::{Rng, write_safetensors};
use proptest::prelude::*;
use safetensors::Dtype;
use saturn_frontend::{Logits, Phase, phase_graph};
use saturn_runtime::{Backend, CpuPrograms, Executor, Limits, PhaseGraphs, Session};
use serde_json::{Value, json};

/// A random config in either the transformers 5.x or the 4.x (hub) schema.
fn random_config(rng: &mut Rng) -> Value {
    let v3 = rng.range(0, 1) == 1;
    let heads = rng.range(1, 4);
    let experts_per_group = rng.range(if v3 { 2 } else { 1 }, 4);
    let n_group = rng.range(1, 4);
    let experts = experts_per_group * n_group;
    let topk_group = rng.range(1, n_group);
    let top_k = rng.range(1, topk_group * experts_per_group);
    let layers = rng.range(1, 3);
    let max_pos = rng.range(32, 128);
    let scaling = [1.0, 2.5, 16.0][rng.range(0, 2) as usize];
    let mut c = json!({
        "model_type": if v3 { "deepseek_v3" } else { "deepseek_v2" },
        "vocab_size": rng.range(8, 48),
        "hidden_size": rng.range(4, 24),
        "intermediate_size": rng.range(4, 24),
        "moe_intermediate_size": rng.range(2, 12),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "q_lora_rank": if rng.range(0, 1) == 1 { Value::Null } else { rng.range(2, 12).into() },
        "kv_lora_rank": rng.range(2, 12),
        "qk_nope_head_dim": rng.range(1, 8),
        "qk_rope_head_dim": 2 * rng.range(1, 4),
        "v_head_dim": rng.range(1, 8),
        "n_routed_experts": experts,
        "n_shared_experts": rng.range(0, 2),
        "num_experts_per_tok": top_k,
        "first_k_dense_replace": rng.range(0, layers),
        "norm_topk_prob": rng.range(0, 1) == 1,
        "routed_scaling_factor": scaling,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": max_pos,
        "tie_word_embeddings": rng.range(0, 3) == 0,
        "attention_bias": rng.range(0, 3) == 0,
        "hidden_act": "silu",
    });
    let o = c.as_object_mut().unwrap();
    if v3 {
        o.insert("n_group".into(), n_group.into());
        o.insert("topk_group".into(), topk_group.into());
        o.insert("rope_interleave".into(), (rng.range(0, 1) == 1).into());
    } else if rng.range(0, 1) == 1 {
        o.insert("topk_method".into(), "group_limited_greedy".into());
        o.insert("n_group".into(), n_group.into());
        o.insert("topk_group".into(), topk_group.into());
    } else {
        o.insert("topk_method".into(), "greedy".into());
    }
    let theta = [10000.0, 50000.0][rng.range(0, 1) as usize];
    let mut rope = if rng.range(0, 1) == 1 {
        let m = [1.0, 0.707][rng.range(0, 1) as usize];
        let factor = [2.0, 4.0, 40.0][rng.range(0, 2) as usize];
        json!({ "rope_type": "yarn", "factor": factor,
                "original_max_position_embeddings": max_pos / 2, "beta_fast": 32, "beta_slow": 1,
                "mscale": m, "mscale_all_dim": m })
    } else {
        json!({ "rope_type": "default" })
    };
    if rng.range(0, 1) == 1 {
        rope["rope_theta"] = theta.into();
        o.insert("rope_parameters".into(), rope);
    } else {
        // The 4.x schema: `type` inside `rope_scaling`, theta at the top level.
        if let Some(t) = rope.as_object_mut().unwrap().remove("rope_type")
            && t != "default"
        {
            rope["type"] = t;
            o.insert("rope_scaling".into(), rope);
        }
        o.insert("rope_theta".into(), theta.into());
    }
    c
}

/// Writes `config` and random weights for it into `dir`; returns the number of tensors.
fn write_checkpoint(dir: &std::path::Path, config: &Value, rng: &mut Rng) -> usize {
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
    let model = saturn_frontend::load_model(dir).unwrap();
    let graph = saturn_frontend::forward_graph(&model.config).unwrap();
    let mut tensors = BTreeMap::new();
    for (name, shape) in saturn_frontend::expected_weights(&graph) {
        let n: usize = shape.iter().product();
        let norm = name.ends_with("norm.weight");
        let data = (0..n).map(|_| if norm { 1.0 + rng.normal(0.1) } else { rng.normal(0.15) }).collect();
        tensors.insert(name, (shape, data));
    }
    let dtype = [Dtype::F32, Dtype::BF16, Dtype::F16][rng.range(0, 2) as usize];
    write_safetensors(&dir.join("model.safetensors"), &tensors, dtype);
    tensors.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_configs_lower_verify_and_run(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let config = random_config(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), &config, &mut rng);

        let model = saturn_frontend::load_model(dir.path()).unwrap();
        for phase in [Phase::Prefill, Phase::Decode, Phase::Chunked] {
            let graph = phase_graph(&model.config, phase).unwrap();
            saturn_ir::verify(&graph).unwrap();
            let text = saturn_ir::text::print(&graph);
            prop_assert_eq!(&saturn_ir::text::parse(&text).unwrap(), &graph);
        }

        let graph = phase_graph(&model.config, Phase::Chunked).unwrap();
        let weights = model.open_weights(&graph).unwrap();
        let s = rng.range(1, 6) as usize;
        let ids: Vec<u64> = (0..s).map(|_| rng.range(0, model.config.vocab_size - 1)).collect();
        let mut session = interpreted(&graph, weights.as_ref(), &model);
        let logits = session.prefill(&ids).unwrap();
        prop_assert_eq!(&logits.shape, &vec![s, model.config.vocab_size as usize]);
        let data = logits.as_f32().unwrap();
        prop_assert!(data.iter().all(|x| x.is_finite()), "non-finite logits for config {}", config);

        // The graph generation runs computes the last position's logits alone: the same row.
        let last = saturn_frontend::phase_graph_with(&model.config, Phase::Chunked, Logits::Last).unwrap();
        saturn_ir::verify(&last).unwrap();
        let mut session = interpreted(&last, weights.as_ref(), &model);
        let row = session.prefill(&ids).unwrap();
        let vocab = model.config.vocab_size as usize;
        prop_assert_eq!(&row.shape, &vec![1, vocab]);
        prop_assert_eq!(row.as_f32().unwrap(), &data[(s - 1) * vocab..]);
    }

    #[test]
    fn cached_decode_equals_full_recomputation(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let config = random_config(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), &config, &mut rng);
        let model = saturn_frontend::load_model(dir.path()).unwrap();
        let graph = phase_graph(&model.config, Phase::Chunked).unwrap();
        let weights = model.open_weights(&graph).unwrap();
        let vocab = model.config.vocab_size as usize;

        let n = rng.range(2, 9) as usize;
        let ids: Vec<u64> = (0..n).map(|_| rng.range(0, model.config.vocab_size - 1)).collect();
        let mut full = interpreted(&graph, weights.as_ref(), &model);
        let want = full.prefill(&ids).unwrap();
        let want = want.as_f32().unwrap();

        // A prefill, a chunk of several tokens after the cache, then single-token decode steps.
        let first = rng.range(1, n as u64 - 1) as usize;
        let chunk_end = rng.range(first as u64, n as u64 - 1) as usize;
        let mut cached = interpreted(&graph, weights.as_ref(), &model);
        let mut got = cached.prefill(&ids[..first]).unwrap().as_f32().unwrap().to_vec();
        if chunk_end > first {
            got.extend(cached.extend(&ids[first..chunk_end]).unwrap().as_f32().unwrap());
        }
        for &id in &ids[chunk_end..] {
            got.extend(cached.extend(&[id]).unwrap().as_f32().unwrap());
        }
        prop_assert_eq!(cached.position(), n as u64);
        prop_assert_eq!(got.len(), n * vocab);
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            let tolerance = 1e-4 * b.abs().max(1.0);
            prop_assert!((a - b).abs() <= tolerance,
                "position {} id {}: cached {} vs full {} (prefill {}, chunk to {}) for {}",
                i / vocab, i % vocab, a, b, first, chunk_end, config);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The optimiser keeps meaning on any config: prefill, chunked and decode through the graphs
    /// optimised for their phases (fused router, experts, norms, absorbed MLA, fused decode
    /// attention) give the logits of the lowered graph.
    #[test]
    fn optimised_graphs_compute_what_lowered_graphs_compute(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let config = random_config(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), &config, &mut rng);
        let model = saturn_frontend::load_model(dir.path()).unwrap();
        let lowered = phase_graph(&model.config, Phase::Chunked).unwrap();
        let weights = model.open_weights(&lowered).unwrap();
        let target = ["cpu", "h100"][rng.range(0, 1) as usize];
        let optimise = |phase: Phase, syms: &[(&str, u64)]| {
            let mut options = saturn_passes::OptimizeOptions::for_target(target).unwrap();
            options.symbols = syms.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            saturn_passes::optimize(&phase_graph(&model.config, phase).unwrap(), &options).unwrap().graph
        };
        let forward = optimise(Phase::Chunked, &[("S", 1), ("P", 4096)]);
        let prefill = optimise(Phase::Prefill, &[("S", 512)]);
        let decode = optimise(Phase::Decode, &[("P", 4096)]);
        let n = rng.range(3, 8) as usize;
        let ids: Vec<u64> = (0..n).map(|_| rng.range(0, model.config.vocab_size - 1)).collect();
        let split = rng.range(1, n as u64 - 2) as usize;
        let run = |session: &mut Session| {
            let mut out = session.prefill(&ids[..split]).unwrap().as_f32().unwrap().to_vec();
            out.extend(session.extend(&ids[split..n - 1]).unwrap().as_f32().unwrap());
            out.extend(session.extend(&ids[n - 1..]).unwrap().as_f32().unwrap());
            out
        };
        let want = run(&mut interpreted(&lowered, weights.as_ref(), &model));
        let phases = PhaseGraphs { prefill: Some(&prefill), decode: Some(&decode) };
        let optimised = Executor { graph: &forward, phases, backend: Backend::Interp };
        let got = run(&mut optimised.session(weights.as_ref(), limits(&model)).unwrap());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            prop_assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "logit {}: optimised {} vs lowered {} for {}", i, a, b, config);
        }
        // The cpu backend, on the lowered and on the optimised graphs, computes the same.
        for (graph, phases) in [(&lowered, PhaseGraphs::default()), (&forward, phases)] {
            let programs = CpuPrograms::compile(graph, phases, weights.as_ref()).unwrap();
            let compiled = Executor { graph, phases, backend: Backend::Cpu(&programs) };
            let got = run(&mut compiled.session(weights.as_ref(), limits(&model)).unwrap());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                prop_assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "logit {}: cpu on {} {} vs interpreted {} for {}", i, graph.name, a, b, config);
            }
        }
    }
}

/// A session of the interpreter on `graph` alone.
fn interpreted<'a>(
    graph: &'a saturn_ir::Graph,
    weights: &'a dyn saturn_ir::ParamSource,
    model: &saturn_frontend::Model,
) -> Session<'a> {
    let executor = Executor { graph, phases: PhaseGraphs::default(), backend: Backend::Interp };
    executor.session(weights, limits(model)).unwrap()
}

fn limits(model: &saturn_frontend::Model) -> Limits {
    Limits { vocab_size: model.config.vocab_size, max_positions: model.config.max_position_embeddings }
}
