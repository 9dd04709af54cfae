//! MLA absorption is a cost-model decision, not a flag: the same e-graph gives the absorbed
//! form for decode (one new token, a long cache) and the naive form for prefill, and the choice
//! flips once as the number of new tokens grows.

use saturn_frontend::{AttentionForm, CACHED, Phase, TOKENS, attention_form, load_model, phase_graph};
use saturn_ir::SymBindings;
use saturn_passes::{OptimizeOptions, optimize};

fn form_for(model: &str, target: &str, tokens: u64, cached: u64) -> AttentionForm {
    let model = load_model(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(model)).unwrap();
    let graph = phase_graph(&model.config, Phase::Chunked).unwrap();
    let mut options = OptimizeOptions::for_target(target).unwrap();
    options.symbols = SymBindings::from([(TOKENS.to_string(), tokens), (CACHED.to_string(), cached)]);
    let optimized = optimize(&graph, &options).unwrap();
    saturn_ir::verify(&optimized.graph).unwrap();
    attention_form(&optimized.graph).unwrap()
}

#[test]
fn deepseek_v3_decode_is_absorbed_and_prefill_naive() {
    assert_eq!(form_for("models/deepseek-v3-671b.toml", "h100", 1, 4096), AttentionForm::Absorbed);
    assert_eq!(form_for("models/deepseek-v3-671b.toml", "h100", 2048, 0), AttentionForm::Naive);
    assert_eq!(form_for("models/deepseek-v2-lite.toml", "h100", 1, 4096), AttentionForm::Absorbed);
    assert_eq!(form_for("models/deepseek-v2-lite.toml", "h100", 2048, 0), AttentionForm::Naive);
}

/// With 4096 cached positions, the form flips from absorbed to naive once as `S` grows; the
/// flip point is printed (see BENCHMARKS.md).
#[test]
fn the_choice_flips_once_as_new_tokens_grow() {
    let sizes: Vec<u64> = (0..=12).map(|i| 1 << i).collect();
    let forms: Vec<AttentionForm> =
        sizes.iter().map(|&s| form_for("models/deepseek-v3-671b.toml", "h100", s, 4096)).collect();
    let flip = forms.iter().position(|f| *f == AttentionForm::Naive).expect("naive for large S");
    eprintln!("V3 on h100 with P=4096: absorbed up to S={}, naive from S={}", sizes[flip - 1], sizes[flip]);
    assert!(flip > 0, "decode (S=1) must be absorbed");
    assert!(forms[flip..].iter().all(|f| *f == AttentionForm::Naive), "{forms:?}");
    assert!(forms[..flip].iter().all(|f| *f != AttentionForm::Naive), "{forms:?}");
}
