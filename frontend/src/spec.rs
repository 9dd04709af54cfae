//! saturn's own model spec: a TOML file (`models/*.toml`) that defines a DeepSeek V2/V3 model
//! with readable names grouped in tables, and says where its weights come from.
//!
//! ```toml
//! family = "deepseek_v3"
//! name = "my-model"            # optional label
//!
//! [model]
//! vocab_size = 512
//! hidden_size = 128
//! layers = 3
//! dense_layers = 1
//! dense_intermediate_size = 256
//! max_positions = 1024
//!
//! [attention]
//! heads = 4
//! q_lora_rank = 64             # omit for no query compression
//! kv_lora_rank = 32
//! qk_nope_head_dim = 16
//! qk_rope_head_dim = 8
//! v_head_dim = 16
//!
//! [rope.yarn]                  # omit for plain RoPE
//! factor = 4.0
//! original_max_positions = 256
//!
//! [moe]
//! routed_experts = 16
//! shared_experts = 1
//! experts_per_token = 4
//! intermediate_size = 32
//! groups = 4
//! groups_per_token = 2
//!
//! [weights]                    # omit for random weights, seed 0, std 0.02
//! checkpoint = "my-model"      # a Hugging Face checkpoint folder, relative to this file
//! ```
//!
//! The structs below are the schema: each field's doc comment is its reference, and an unknown
//! field is an error. A spec means what a Hugging Face `config.json` of the same family means
//! (`config.rs`: routing, RoPE layout, softmax scale, YaRN attention factor) and passes the same
//! validation; errors name the spec's fields (`moe.groups`), or the line and column for TOML
//! that does not parse or does not fit the schema.

use std::path::{Path, PathBuf};

use saturn_ir::{RopeLayout, Yarn};
use serde::Deserialize;

use crate::WeightsSource;
use crate::config::{
    ConfigSchema, DeepseekConfig, Family, MoeConfig, RopeConfig, Routing, softmax_scale,
    yarn_attention_factor,
};
use crate::error::{FrontendError, Result};

/// A whole spec file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// `"deepseek_v3"` or `"deepseek_v2"`: fixes the routing and RoPE conventions, as a Hugging
    /// Face `model_type` does.
    #[serde(with = "FamilyName")]
    family: Family,
    /// A label for people and logs; saturn does not interpret it.
    name: Option<String>,
    model: ModelTable,
    attention: AttentionTable,
    #[serde(default)]
    rope: RopeTable,
    moe: MoeTable,
    #[serde(default)]
    weights: WeightsTable,
}

/// `family`, as a spec spells it.
#[derive(Deserialize)]
#[serde(remote = "Family", rename_all = "snake_case")]
enum FamilyName {
    DeepseekV2,
    DeepseekV3,
}

/// `[model]`: the transformer's overall shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    /// Rows of the embedding and of the output head.
    vocab_size: u64,
    /// Width of the residual stream.
    hidden_size: u64,
    /// Decoder layers.
    layers: u64,
    /// The first `dense_layers` layers use a dense gated MLP, the rest MoE (HF
    /// `first_k_dense_replace`). Default 0.
    #[serde(default)]
    dense_layers: u64,
    /// The dense MLP's intermediate size; required when `dense_layers > 0`.
    dense_intermediate_size: Option<u64>,
    /// Epsilon of every RMSNorm. Default 1e-6.
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    /// The longest context the model supports (HF `max_position_embeddings`).
    max_positions: u64,
    /// Whether the output head reuses the embedding matrix. Default false.
    #[serde(default)]
    tie_embeddings: bool,
    /// Beginning-of-sequence token id. Optional.
    bos_token_id: Option<u64>,
    /// End-of-sequence token id. Optional.
    eos_token_id: Option<u64>,
    /// Multi-token-prediction layers a checkpoint stores after the last layer (DeepSeek-V3 has
    /// 1); their weights are ignored. Default 0.
    #[serde(default)]
    mtp_layers: u64,
}

/// `[attention]`: multi-head latent attention (MLA).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttentionTable {
    /// Attention heads (each with its own keys and values, as MLA has).
    heads: u64,
    /// Rank of the query compression; omit it for full-rank queries (DeepSeek-V2-Lite).
    q_lora_rank: Option<u64>,
    /// Rank of the compressed key/value latent.
    kv_lora_rank: u64,
    /// Per-head query/key dimension without RoPE.
    qk_nope_head_dim: u64,
    /// Per-head query/key dimension with RoPE (even; the key part is shared by all heads).
    qk_rope_head_dim: u64,
    /// Per-head value dimension.
    v_head_dim: u64,
    /// Biases on the attention projections. Default false.
    #[serde(default)]
    bias: bool,
}

/// `[rope]`: rotary embedding of the `qk_rope_head_dim` part. The table and each of its fields
/// are optional.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RopeTable {
    /// Base of the frequencies, greater than 1. Default 10000.
    theta: f64,
    /// Rotate pairs `(x[2j], x[2j+1])` (true, DeepSeek's layout) or `(x[j], x[j+d/2])` (false;
    /// deepseek_v3 only). Default true.
    interleaved: bool,
    /// `[rope.yarn]`: YaRN context extension; omit it for plain RoPE.
    yarn: Option<YarnTable>,
}

impl Default for RopeTable {
    fn default() -> RopeTable {
        RopeTable { theta: 10000.0, interleaved: true, yarn: None }
    }
}

/// `[rope.yarn]`, with transformers' meaning and defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YarnTable {
    /// Context extension factor, positive.
    factor: f64,
    /// The context length the model was trained at before extension, positive.
    original_max_positions: u64,
    /// Upper bound of the frequency ramp, in rotations over the original context. Default 32.
    #[serde(default = "default_beta_fast")]
    beta_fast: f64,
    /// Lower bound of the frequency ramp. Default 1.
    #[serde(default = "default_beta_slow")]
    beta_slow: f64,
    /// With `mscale_all_dim`, sets the factor on cos and sin: `get_mscale(factor, mscale) /
    /// get_mscale(factor, mscale_all_dim)` when both are nonzero, else `get_mscale(factor, 1)`,
    /// where `get_mscale(f, m) = 0.1 m ln(f) + 1`. Default 0, as in transformers.
    #[serde(default)]
    mscale: f64,
    /// When nonzero, also multiplies the softmax scale by `get_mscale(factor, mscale_all_dim)^2`.
    /// Default 0.
    #[serde(default)]
    mscale_all_dim: f64,
}

/// `[moe]`: DeepSeekMoE layers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoeTable {
    /// Routed experts per MoE layer.
    routed_experts: u64,
    /// Experts every token goes through (0 for none).
    shared_experts: u64,
    /// Routed experts chosen per token (top-k).
    experts_per_token: u64,
    /// Each expert's intermediate size.
    intermediate_size: u64,
    /// `"noaux_tc"` (deepseek_v3, the default there), `"greedy"` (deepseek_v2's default) or
    /// `"group_limited_greedy"` (deepseek_v2).
    routing: Option<RoutingName>,
    /// Expert groups (must divide `routed_experts`); required by the group routings, not
    /// allowed with `greedy`.
    groups: Option<u64>,
    /// How many groups a token's experts may come from; as `groups`.
    groups_per_token: Option<u64>,
    /// Divide the chosen weights by their sum. deepseek_v3 only; default true there.
    normalize_weights: Option<bool>,
    /// Multiplies the routed experts' output (HF `routed_scaling_factor`). Default 1.
    #[serde(default = "default_one")]
    scaling: f64,
}

/// `moe.routing`, as a spec spells it.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RoutingName {
    Greedy,
    GroupLimitedGreedy,
    NoauxTc,
}

impl RoutingName {
    /// The name as a spec spells it.
    fn name(self) -> &'static str {
        match self {
            RoutingName::Greedy => "greedy",
            RoutingName::GroupLimitedGreedy => "group_limited_greedy",
            RoutingName::NoauxTc => "noaux_tc",
        }
    }
}

/// `[weights]`: either `checkpoint`, or `seed` / `std`. Omitted: random weights, seed 0.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsTable {
    /// A Hugging Face checkpoint folder (safetensors), relative to the spec file.
    checkpoint: Option<PathBuf>,
    /// Seed of random weights, normal with standard deviation `std` (norm weights are 1).
    /// Default 0.
    seed: Option<u64>,
    /// Standard deviation of random weights. Default 0.02.
    std: Option<f64>,
    /// The storage dtype memory reports should assume. Default `"bf16"`.
    #[serde(default)]
    dtype: StorageDtype,
}

/// The dtype a model's weights are stored in: `"bf16"`, `"f16"`, `"f32"` or `"fp8"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDtype {
    #[default]
    Bf16,
    F16,
    F32,
    Fp8,
}

impl StorageDtype {
    /// Bytes per stored element.
    pub fn size_bytes(self) -> u64 {
        match self {
            StorageDtype::F32 => 4,
            StorageDtype::Bf16 | StorageDtype::F16 => 2,
            StorageDtype::Fp8 => 1,
        }
    }
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_beta_fast() -> f64 {
    32.0
}
fn default_beta_slow() -> f64 {
    1.0
}
fn default_one() -> f64 {
    1.0
}

/// Reads and validates a spec: its config, where its weights come from (a checkpoint folder
/// resolved against the spec's folder), and their storage dtype.
pub(crate) fn read_spec(path: &Path) -> Result<(DeepseekConfig, WeightsSource, StorageDtype)> {
    let text =
        std::fs::read_to_string(path).map_err(|source| FrontendError::Io { path: path.into(), source })?;
    let spec: Spec = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    tracing::info!(path = %path.display(), name = spec.name.as_deref().unwrap_or(""), "read model spec");
    let config = spec_config(&spec, path)?;
    config.validate(path, spec_field_name)?;
    let weights = weights_source(&spec.weights, path)?;
    Ok((config, weights, spec.weights.dtype))
}

/// A TOML error with the line and column (1-based, in characters) where it starts.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> FrontendError {
    let before = e.span().and_then(|s| text.get(..s.start)).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    FrontendError::Toml { path: path.into(), line, column, msg: e.message().trim_end().to_string() }
}

/// The spec's name for each Hugging Face field that [`DeepseekConfig::validate`] reports.
fn spec_field_name(hf_name: &'static str) -> &'static str {
    match hf_name {
        "vocab_size" => "model.vocab_size",
        "hidden_size" => "model.hidden_size",
        "num_hidden_layers" => "model.layers",
        "intermediate_size" => "model.dense_intermediate_size",
        "rms_norm_eps" => "model.rms_norm_eps",
        "num_attention_heads" => "attention.heads",
        "q_lora_rank" => "attention.q_lora_rank",
        "kv_lora_rank" => "attention.kv_lora_rank",
        "qk_nope_head_dim" => "attention.qk_nope_head_dim",
        "qk_rope_head_dim" => "attention.qk_rope_head_dim",
        "v_head_dim" => "attention.v_head_dim",
        "n_routed_experts" => "moe.routed_experts",
        "moe_intermediate_size" => "moe.intermediate_size",
        "num_experts_per_tok" => "moe.experts_per_token",
        "n_group" => "moe.groups",
        "topk_group" => "moe.groups_per_token",
        other => other,
    }
}

/// A `ConfigField` error about a spec field.
fn field_error(path: &Path, field: &str, msg: impl Into<String>) -> FrontendError {
    FrontendError::ConfigField { path: path.into(), field: field.into(), msg: msg.into() }
}

/// Checks that `value` is a positive, finite number.
fn check_positive(path: &Path, field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(field_error(path, field, format!("must be a positive number, got {value}")))
    }
}

/// The config a spec describes, after the family rules and the spec's own checks; the checks
/// shared with Hugging Face configs are left to [`DeepseekConfig::validate`].
fn spec_config(spec: &Spec, path: &Path) -> Result<DeepseekConfig> {
    let (m, a) = (&spec.model, &spec.attention);
    if m.dense_layers > m.layers {
        let msg = format!("must be at most model.layers ({}), got {}", m.layers, m.dense_layers);
        return Err(field_error(path, "model.dense_layers", msg));
    }
    if m.dense_layers > 0 && m.dense_intermediate_size.is_none() {
        return Err(field_error(
            path,
            "model.dense_intermediate_size",
            "missing (the model has dense layers)",
        ));
    }
    let (rope, yarn_mscale_all_dim) = spec_rope(&spec.rope, spec.family, path)?;
    Ok(DeepseekConfig {
        family: spec.family,
        schema: ConfigSchema::HuggingFace,
        vocab_size: m.vocab_size,
        hidden_size: m.hidden_size,
        intermediate_size: m.dense_intermediate_size.unwrap_or(0),
        num_hidden_layers: m.layers,
        num_attention_heads: a.heads,
        q_lora_rank: a.q_lora_rank,
        kv_lora_rank: a.kv_lora_rank,
        qk_nope_head_dim: a.qk_nope_head_dim,
        qk_rope_head_dim: a.qk_rope_head_dim,
        v_head_dim: a.v_head_dim,
        rms_norm_eps: m.rms_norm_eps,
        first_k_dense_replace: m.dense_layers,
        moe: spec_moe(&spec.moe, spec.family, path)?,
        rope,
        softmax_scale: softmax_scale(a.qk_nope_head_dim + a.qk_rope_head_dim, yarn_mscale_all_dim),
        attention_bias: a.bias,
        tie_word_embeddings: m.tie_embeddings,
        max_position_embeddings: m.max_positions,
        num_nextn_predict_layers: m.mtp_layers,
        bos_token_id: m.bos_token_id,
        eos_token_id: m.eos_token_id,
    })
}

/// `[rope]` as a [`RopeConfig`], and YaRN's `(factor, mscale_all_dim)` for the softmax scale.
fn spec_rope(r: &RopeTable, family: Family, path: &Path) -> Result<(RopeConfig, Option<(f64, f64)>)> {
    if family == Family::DeepseekV2 && !r.interleaved {
        return Err(field_error(path, "rope.interleaved", "deepseek_v2 always uses the interleaved layout"));
    }
    if !(r.theta.is_finite() && r.theta > 1.0) {
        return Err(field_error(path, "rope.theta", format!("must be greater than 1, got {}", r.theta)));
    }
    let layout = if r.interleaved { RopeLayout::Interleaved } else { RopeLayout::HalfSplit };
    let Some(y) = &r.yarn else {
        return Ok((RopeConfig { theta: r.theta, layout, yarn: None, attention_factor: 1.0 }, None));
    };
    check_positive(path, "rope.yarn.factor", y.factor)?;
    check_positive(path, "rope.yarn.beta_fast", y.beta_fast)?;
    check_positive(path, "rope.yarn.beta_slow", y.beta_slow)?;
    if y.original_max_positions == 0 {
        return Err(field_error(path, "rope.yarn.original_max_positions", "must be positive"));
    }
    let yarn = Yarn {
        factor: y.factor,
        original_max_position: y.original_max_positions,
        beta_fast: y.beta_fast,
        beta_slow: y.beta_slow,
    };
    let attention_factor = yarn_attention_factor(y.factor, y.mscale, y.mscale_all_dim);
    let rope = RopeConfig { theta: r.theta, layout, yarn: Some(yarn), attention_factor };
    Ok((rope, Some((y.factor, y.mscale_all_dim))))
}

/// `[moe]` as a [`MoeConfig`], with the family's routing rules.
fn spec_moe(moe: &MoeTable, family: Family, path: &Path) -> Result<MoeConfig> {
    let v3 = family == Family::DeepseekV3;
    let routing = moe.routing.unwrap_or(if v3 { RoutingName::NoauxTc } else { RoutingName::Greedy });
    if v3 != (routing == RoutingName::NoauxTc) {
        let (family, allowed) = if v3 {
            ("deepseek_v3", "`noaux_tc`")
        } else {
            ("deepseek_v2", "`greedy` and `group_limited_greedy`")
        };
        return Err(field_error(
            path,
            "moe.routing",
            format!("{family} supports {allowed}, got `{}`", routing.name()),
        ));
    }
    let groups = |field: &str, value: Option<u64>| match (routing, value) {
        (RoutingName::Greedy, Some(_)) => {
            Err(field_error(path, field, "only the group routings use groups (routing is `greedy`)"))
        }
        (RoutingName::Greedy, None) => Ok(0),
        (_, Some(v)) => Ok(v),
        (_, None) => Err(field_error(
            path,
            field,
            format!("missing (routing `{}` chooses experts in groups)", routing.name()),
        )),
    };
    let n_group = groups("moe.groups", moe.groups)?;
    let topk_group = groups("moe.groups_per_token", moe.groups_per_token)?;
    if !v3 && moe.normalize_weights == Some(true) {
        return Err(field_error(
            path,
            "moe.normalize_weights",
            "deepseek_v2 never normalises the top-k weights",
        ));
    }
    Ok(MoeConfig {
        n_routed_experts: moe.routed_experts,
        n_shared_experts: moe.shared_experts,
        num_experts_per_tok: moe.experts_per_token,
        moe_intermediate_size: moe.intermediate_size,
        routing: match routing {
            RoutingName::Greedy => Routing::Greedy,
            RoutingName::GroupLimitedGreedy => Routing::GroupLimitedGreedy { n_group, topk_group },
            RoutingName::NoauxTc => Routing::NoauxTc { n_group, topk_group },
        },
        norm_topk_prob: v3 && moe.normalize_weights.unwrap_or(true),
        routed_scaling_factor: moe.scaling,
    })
}

/// `[weights]` as a [`WeightsSource`]; a checkpoint folder is resolved against the spec's folder
/// and must exist.
fn weights_source(w: &WeightsTable, path: &Path) -> Result<WeightsSource> {
    let Some(checkpoint) = &w.checkpoint else {
        let std = w.std.unwrap_or(0.02);
        check_positive(path, "weights.std", std)?;
        return Ok(WeightsSource::Random { seed: w.seed.unwrap_or(0), std });
    };
    if w.seed.is_some() || w.std.is_some() {
        return Err(field_error(
            path,
            "weights.checkpoint",
            "give either a checkpoint or random weights (seed, std), not both",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("")).join(checkpoint);
    if !dir.is_dir() {
        return Err(field_error(
            path,
            "weights.checkpoint",
            format!("no checkpoint folder at {}", dir.display()),
        ));
    }
    Ok(WeightsSource::Checkpoint(dir))
}
