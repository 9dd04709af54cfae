//! DeepSeek V2/V3 hyper-parameters, read from a Hugging Face `config.json` (the transformers 5.x
//! `rope_parameters` schema and the 4.x `rope_scaling` + `rope_theta` schema) or from DeepSeek's
//! own inference config (`dim`, `n_layers`, ...), and normalised into one [`DeepseekConfig`].
//!
//! Semantics follow Hugging Face transformers 5.23 (DESIGN.md §6): V2 always scores experts with
//! softmax and never normalises top-k weights; V3 always uses sigmoid scores with a correction
//! bias, groups scored by their top-2 sum. Missing secondary fields take transformers' defaults;
//! missing dimensions are errors.

use std::path::{Path, PathBuf};

use saturn_ir::{RopeLayout, Yarn};
use serde_json::{Map, Value};

use crate::error::{FrontendError, Result};

/// The model family, which fixes the routing and RoPE conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    DeepseekV2,
    DeepseekV3,
}

/// How experts are scored and chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Routing {
    /// V2 `greedy`: top-k of the softmax scores.
    Greedy,
    /// V2 `group_limited_greedy`: groups scored by their max; the best `topk_group` groups kept,
    /// the rest masked to 0 before the top-k.
    GroupLimitedGreedy { n_group: u64, topk_group: u64 },
    /// V3 `noaux_tc`: sigmoid scores plus a correction bias choose; groups scored by the sum of
    /// their top 2; the rest masked to `-inf`; weights are the unbiased scores.
    NoauxTc { n_group: u64, topk_group: u64 },
}

/// Mixture-of-experts hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub n_routed_experts: u64,
    pub n_shared_experts: u64,
    pub num_experts_per_tok: u64,
    pub moe_intermediate_size: u64,
    pub routing: Routing,
    /// Divide the chosen weights by their sum (+1e-20). Only V3 honours it.
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f64,
}

/// Rotary embedding of the `qk_rope_head_dim` part of queries and keys.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub layout: RopeLayout,
    pub yarn: Option<Yarn>,
    /// Multiplies cos and sin (YaRN's `get_mscale(f, mscale) / get_mscale(f, mscale_all_dim)`).
    pub attention_factor: f64,
}

/// Where a config came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSchema {
    /// A Hugging Face `config.json`.
    HuggingFace,
    /// DeepSeek's `inference/configs/*.json` (`dim`, `n_layers`, ...): dumps only, its
    /// checkpoints use other tensor names.
    DeepseekInference,
}

/// The normalised hyper-parameters of a DeepSeek V2/V3 model.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepseekConfig {
    pub family: Family,
    pub schema: ConfigSchema,
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
    pub rms_norm_eps: f64,
    /// Layers `0..first_k_dense_replace` use the dense MLP, the rest MoE.
    pub first_k_dense_replace: u64,
    pub moe: MoeConfig,
    pub rope: RopeConfig,
    /// Attention scale: `qk_head_dim^-0.5`, times `mscale^2` under YaRN.
    pub softmax_scale: f64,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: u64,
    /// Multi-token-prediction layers stored after the last layer (ignored when reading weights).
    pub num_nextn_predict_layers: u64,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
}

impl DeepseekConfig {
    pub fn qk_head_dim(&self) -> u64 {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    pub fn is_moe_layer(&self, layer: u64) -> bool {
        layer >= self.first_k_dense_replace
    }

    /// The family's name as Hugging Face spells `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self.family {
            Family::DeepseekV2 => "deepseek_v2",
            Family::DeepseekV3 => "deepseek_v3",
        }
    }

    /// Reads and validates a config file of either schema.
    pub fn from_file(path: &Path) -> Result<DeepseekConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| FrontendError::Io { path: path.into(), source })?;
        Self::from_json_str(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<DeepseekConfig> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| FrontendError::Json { path: path.into(), msg: e.to_string() })?;
        let Value::Object(obj) = value else {
            return Err(FrontendError::Json {
                path: path.into(),
                msg: "the top level must be an object".into(),
            });
        };
        let f = Fields { obj: &obj, path };
        let config = if obj.contains_key("model_type") {
            from_hf(&f)?
        } else if obj.contains_key("dim") && obj.contains_key("n_layers") {
            from_inference(&f)?
        } else {
            return Err(
                f.err("model_type", "missing (not a Hugging Face config, nor a DeepSeek inference config)")
            );
        };
        config.validate(path, |hf_name| hf_name)?;
        Ok(config)
    }

    /// Checks the relations between fields that the lowering relies on. Errors spell each field
    /// as `names` maps its Hugging Face name.
    pub(crate) fn validate(&self, path: &Path, names: FieldNames) -> Result<()> {
        let err = |field: &'static str, msg: String| FrontendError::ConfigField {
            path: path.into(),
            field: names(field).into(),
            msg,
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
        ] {
            if v == 0 {
                return Err(err(field, "must be positive".into()));
            }
        }
        if self.q_lora_rank == Some(0) {
            return Err(err("q_lora_rank", "must be positive or null".into()));
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return Err(err(
                "qk_rope_head_dim",
                format!("must be even for RoPE, got {}", self.qk_rope_head_dim),
            ));
        }
        if self.rms_norm_eps < 0.0 {
            return Err(err("rms_norm_eps", format!("must be non-negative, got {}", self.rms_norm_eps)));
        }
        if self.first_k_dense_replace > 0 && self.intermediate_size == 0 {
            return Err(err("intermediate_size", "must be positive (the model has dense layers)".into()));
        }
        if self.first_k_dense_replace >= self.num_hidden_layers {
            return Ok(());
        }
        let m = &self.moe;
        let n_routed_experts = names("n_routed_experts");
        if m.n_routed_experts == 0 {
            return Err(err("n_routed_experts", "must be positive (the model has MoE layers)".into()));
        }
        if m.moe_intermediate_size == 0 {
            return Err(err("moe_intermediate_size", "must be positive (the model has MoE layers)".into()));
        }
        if m.num_experts_per_tok == 0 || m.num_experts_per_tok > m.n_routed_experts {
            return Err(err(
                "num_experts_per_tok",
                format!(
                    "must be between 1 and {n_routed_experts} ({}), got {}",
                    m.n_routed_experts, m.num_experts_per_tok
                ),
            ));
        }
        if let Routing::GroupLimitedGreedy { n_group, topk_group }
        | Routing::NoauxTc { n_group, topk_group } = m.routing
        {
            if n_group == 0 || !m.n_routed_experts.is_multiple_of(n_group) {
                return Err(err(
                    "n_group",
                    format!("must divide {n_routed_experts} ({}), got {n_group}", m.n_routed_experts),
                ));
            }
            let per_group = m.n_routed_experts / n_group;
            if matches!(m.routing, Routing::NoauxTc { .. }) && per_group < 2 {
                return Err(err(
                    "n_group",
                    format!(
                        "groups are scored by their top 2 experts, but {n_group} groups hold {per_group} each"
                    ),
                ));
            }
            if topk_group == 0 || topk_group > n_group {
                return Err(err(
                    "topk_group",
                    format!("must be between 1 and {} ({n_group}), got {topk_group}", names("n_group")),
                ));
            }
            if m.num_experts_per_tok > topk_group * per_group {
                return Err(err(
                    "num_experts_per_tok",
                    format!(
                        "{} experts cannot be chosen from {topk_group} groups of {per_group}",
                        m.num_experts_per_tok
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Field access on a JSON object with errors that name the file and field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> FrontendError {
        FrontendError::ConfigField { path: PathBuf::from(self.path), field: field.into(), msg: msg.into() }
    }

    /// A present, non-null value.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn uint(&self, field: &str) -> Result<u64> {
        self.opt_uint(field)?.ok_or_else(|| self.err(field, "missing"))
    }

    fn opt_uint(&self, field: &str) -> Result<Option<u64>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("must be a non-negative integer, got {v}"))),
        }
    }

    fn uint_or(&self, field: &str, default: u64) -> Result<u64> {
        Ok(self.opt_uint(field)?.unwrap_or(default))
    }

    fn float_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(field, format!("must be a number, got {v}"))),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, format!("must be true or false, got {v}"))),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&str>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => {
                v.as_str().map(Some).ok_or_else(|| self.err(field, format!("must be a string, got {v}")))
            }
        }
    }

    /// A nested object, or `None` when absent or null.
    fn opt_object(&self, field: &str) -> Result<Option<Fields<'_>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(Fields { obj: o, path: self.path })),
            Some(v) => Err(self.err(field, format!("must be an object, got {v}"))),
        }
    }

    /// A token id field that may also be a list (the first id is used).
    fn token_id(&self, field: &str) -> Result<Option<u64>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => match a.first() {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| self.err(field, format!("must hold token ids, got {v}"))),
            },
            Some(v) => {
                v.as_u64().map(Some).ok_or_else(|| self.err(field, format!("must be a token id, got {v}")))
            }
        }
    }
}

/// Maps a Hugging Face field name to the name an error should show (see
/// [`DeepseekConfig::validate`]).
pub(crate) type FieldNames = fn(&'static str) -> &'static str;

/// `0.1 * m * ln(scale) + 1` for `scale > 1`, else 1 (transformers' `yarn_get_mscale`).
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 { 1.0 } else { 0.1 * mscale * scale.ln() + 1.0 }
}

/// YaRN's factor on cos and sin when no `attention_factor` is given (transformers'
/// `_compute_yarn_parameters`): `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)`
/// when both are nonzero, else `get_mscale(factor, 1)`.
pub(crate) fn yarn_attention_factor(factor: f64, mscale: f64, mscale_all_dim: f64) -> f64 {
    if mscale != 0.0 && mscale_all_dim != 0.0 {
        yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
    } else {
        yarn_get_mscale(factor, 1.0)
    }
}

/// The attention scale: `qk_head_dim^-0.5`, times `get_mscale(factor, mscale)^2` when `yarn`
/// holds YaRN's `(factor, mscale)` with a nonzero `mscale` (for Hugging Face configs that is
/// `mscale_all_dim`).
pub(crate) fn softmax_scale(qk_head_dim: u64, yarn: Option<(f64, f64)>) -> f64 {
    let mut scale = (qk_head_dim as f64).powf(-0.5);
    if let Some((factor, mscale)) = yarn
        && mscale != 0.0
    {
        let m = yarn_get_mscale(factor, mscale);
        scale *= m * m;
    }
    scale
}

fn from_hf(f: &Fields) -> Result<DeepseekConfig> {
    let model_type = f.opt_str("model_type")?.unwrap_or_default();
    let family = match model_type {
        "deepseek_v2" => Family::DeepseekV2,
        "deepseek_v3" => Family::DeepseekV3,
        other => return Err(FrontendError::UnknownModelType { path: f.path.into(), found: other.into() }),
    };
    let v3 = family == Family::DeepseekV3;
    if let Some(act) = f.opt_str("hidden_act")?
        && act != "silu"
    {
        return Err(f.err("hidden_act", format!("only `silu` is supported, got `{act}`")));
    }
    if f.bool_or("mlp_bias", false)? {
        return Err(f.err("mlp_bias", "MLP biases are not supported"));
    }
    let num_attention_heads = f.uint("num_attention_heads")?;
    if let Some(kv) = f.opt_uint("num_key_value_heads")?
        && kv != num_attention_heads
    {
        return Err(f.err(
            "num_key_value_heads",
            format!("MLA needs one key/value head per query head ({num_attention_heads}), got {kv}"),
        ));
    }
    if !f.obj.contains_key("q_lora_rank") {
        return Err(f.err("q_lora_rank", "missing (use null for a model without query compression)"));
    }
    let max_position_embeddings = f.uint_or("max_position_embeddings", if v3 { 4096 } else { 2048 })?;

    let scoring = f.opt_str("scoring_func")?;
    let expected_scoring = if v3 { "sigmoid" } else { "softmax" };
    if let Some(s) = scoring
        && s != expected_scoring
    {
        return Err(
            f.err("scoring_func", format!("{model_type} scores experts with {expected_scoring}, got `{s}`"))
        );
    }
    let topk_method = f.opt_str("topk_method")?;
    let routing = if v3 {
        if let Some(m) = topk_method
            && m != "noaux_tc"
        {
            return Err(f.err("topk_method", format!("deepseek_v3 routes with `noaux_tc`, got `{m}`")));
        }
        Routing::NoauxTc { n_group: f.uint_or("n_group", 8)?, topk_group: f.uint_or("topk_group", 4)? }
    } else {
        match topk_method.unwrap_or("greedy") {
            "greedy" => Routing::Greedy,
            "group_limited_greedy" => {
                Routing::GroupLimitedGreedy { n_group: f.uint("n_group")?, topk_group: f.uint("topk_group")? }
            }
            m => {
                return Err(f.err(
                    "topk_method",
                    format!("deepseek_v2 supports `greedy` and `group_limited_greedy`, got `{m}`"),
                ));
            }
        }
    };
    let moe = MoeConfig {
        n_routed_experts: f.uint("n_routed_experts")?,
        n_shared_experts: f.uint_or("n_shared_experts", if v3 { 1 } else { 2 })?,
        num_experts_per_tok: f.uint("num_experts_per_tok")?,
        moe_intermediate_size: f.uint("moe_intermediate_size")?,
        routing,
        norm_topk_prob: v3 && f.bool_or("norm_topk_prob", true)?,
        routed_scaling_factor: f.float_or("routed_scaling_factor", if v3 { 2.5 } else { 1.0 })?,
    };

    let qk_nope_head_dim = f.uint("qk_nope_head_dim")?;
    let qk_rope_head_dim = f.uint("qk_rope_head_dim")?;
    let layout = if v3 && !f.bool_or("rope_interleave", true)? {
        RopeLayout::HalfSplit
    } else {
        RopeLayout::Interleaved
    };
    let (rope, mscale_all_dim) = hf_rope(f, layout, max_position_embeddings)?;
    let yarn_mscale_all_dim = rope.yarn.zip(mscale_all_dim).map(|(y, m)| (y.factor, m));
    let softmax_scale = softmax_scale(qk_nope_head_dim + qk_rope_head_dim, yarn_mscale_all_dim);

    Ok(DeepseekConfig {
        family,
        schema: ConfigSchema::HuggingFace,
        vocab_size: f.uint("vocab_size")?,
        hidden_size: f.uint("hidden_size")?,
        intermediate_size: f.uint("intermediate_size")?,
        num_hidden_layers: f.uint("num_hidden_layers")?,
        num_attention_heads,
        q_lora_rank: f.opt_uint("q_lora_rank")?,
        kv_lora_rank: f.uint("kv_lora_rank")?,
        qk_nope_head_dim,
        qk_rope_head_dim,
        v_head_dim: f.uint("v_head_dim")?,
        rms_norm_eps: f.float_or("rms_norm_eps", 1e-6)?,
        first_k_dense_replace: f.uint_or("first_k_dense_replace", if v3 { 3 } else { 0 })?,
        moe,
        rope,
        softmax_scale,
        attention_bias: f.bool_or("attention_bias", false)?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        max_position_embeddings,
        num_nextn_predict_layers: f.uint_or("num_nextn_predict_layers", 0)?,
        bos_token_id: f.token_id("bos_token_id")?,
        eos_token_id: f.token_id("eos_token_id")?,
    })
}

/// RoPE from `rope_parameters` (transformers 5.x) or `rope_scaling` + `rope_theta` (4.x), as
/// transformers' `standardize_rope_params` reads them. Also returns `mscale_all_dim`, which
/// scales attention.
fn hf_rope(f: &Fields, layout: RopeLayout, max_pos: u64) -> Result<(RopeConfig, Option<f64>)> {
    let (params, prefix, top_theta) = match f.opt_object("rope_parameters")? {
        Some(p) => (Some(p), "rope_parameters", None),
        None => (f.opt_object("rope_scaling")?, "rope_scaling", Some(f.float_or("rope_theta", 10000.0)?)),
    };
    let Some(p) = params else {
        let theta = top_theta.unwrap_or(10000.0);
        return Ok((RopeConfig { theta, layout, yarn: None, attention_factor: 1.0 }, None));
    };
    let field = |k: &str| format!("{prefix}.{k}");
    let wrap = |e: FrontendError, k: &str| match e {
        FrontendError::ConfigField { path, msg, .. } => {
            FrontendError::ConfigField { path, field: field(k), msg }
        }
        other => other,
    };
    let theta = match top_theta {
        Some(t) => p.float_or("rope_theta", t).map_err(|e| wrap(e, "rope_theta"))?,
        None => p.float_or("rope_theta", 10000.0).map_err(|e| wrap(e, "rope_theta"))?,
    };
    if theta <= 1.0 {
        return Err(f.err(&field("rope_theta"), format!("must be greater than 1, got {theta}")));
    }
    let rope_type = match p.opt_str("rope_type").map_err(|e| wrap(e, "rope_type"))? {
        Some(t) => t,
        None => p.opt_str("type").map_err(|e| wrap(e, "type"))?.unwrap_or("default"),
    };
    match rope_type {
        "default" => Ok((RopeConfig { theta, layout, yarn: None, attention_factor: 1.0 }, None)),
        "yarn" => {
            let original = p
                .uint_or("original_max_position_embeddings", max_pos)
                .map_err(|e| wrap(e, "original_max_position_embeddings"))?;
            if original == 0 {
                return Err(f.err(&field("original_max_position_embeddings"), "must be positive"));
            }
            let factor =
                p.float_or("factor", max_pos as f64 / original as f64).map_err(|e| wrap(e, "factor"))?;
            if factor <= 0.0 {
                return Err(f.err(&field("factor"), format!("must be positive, got {factor}")));
            }
            // transformers: `beta_fast = get("beta_fast") or 32`, so 0 also means the default.
            let nonzero_or = |k: &str, d: f64| -> Result<f64> {
                let v = p.float_or(k, d).map_err(|e| wrap(e, k))?;
                Ok(if v == 0.0 { d } else { v })
            };
            let beta_fast = nonzero_or("beta_fast", 32.0)?;
            let beta_slow = nonzero_or("beta_slow", 1.0)?;
            let mscale = p.float_or("mscale", 0.0).map_err(|e| wrap(e, "mscale"))?;
            let mscale_all_dim = p.float_or("mscale_all_dim", 0.0).map_err(|e| wrap(e, "mscale_all_dim"))?;
            let attention_factor = match p.get("attention_factor") {
                Some(_) => p.float_or("attention_factor", 1.0).map_err(|e| wrap(e, "attention_factor"))?,
                None => yarn_attention_factor(factor, mscale, mscale_all_dim),
            };
            let yarn = Yarn { factor, original_max_position: original, beta_fast, beta_slow };
            Ok((RopeConfig { theta, layout, yarn: Some(yarn), attention_factor }, Some(mscale_all_dim)))
        }
        other => Err(f.err(
            &field("rope_type"),
            format!("`{other}` is not supported (saturn reads `default` and `yarn`)"),
        )),
    }
}

/// DeepSeek's own inference config (`inference/model.py` `ModelArgs`, defaults included). Its
/// routing maps onto the HF families: sigmoid scoring is V3's `noaux_tc`, softmax with groups is
/// V2's `group_limited_greedy`, softmax without groups V2's `greedy`. YaRN applies when
/// `max_seq_len > original_seq_len`, as in that code.
fn from_inference(f: &Fields) -> Result<DeepseekConfig> {
    let n_group = f.uint_or("n_expert_groups", 1)?;
    let topk_group = f.uint_or("n_limited_groups", 1)?;
    let (family, routing) = match f.opt_str("score_func")?.unwrap_or("softmax") {
        "sigmoid" => (Family::DeepseekV3, Routing::NoauxTc { n_group, topk_group }),
        "softmax" if n_group > 1 => (Family::DeepseekV2, Routing::GroupLimitedGreedy { n_group, topk_group }),
        "softmax" => (Family::DeepseekV2, Routing::Greedy),
        other => return Err(f.err("score_func", format!("must be `softmax` or `sigmoid`, got `{other}`"))),
    };
    let qk_nope_head_dim = f.uint_or("qk_nope_head_dim", 128)?;
    let qk_rope_head_dim = f.uint_or("qk_rope_head_dim", 64)?;
    let max_seq_len = f.uint_or("max_seq_len", 4096 * 4)?;
    let original_seq_len = f.uint_or("original_seq_len", 4096)?;
    let factor = f.float_or("rope_factor", 40.0)?;
    let mscale = f.float_or("mscale", 1.0)?;
    let yarn = (max_seq_len > original_seq_len).then_some(Yarn {
        factor,
        original_max_position: original_seq_len,
        beta_fast: f.float_or("beta_fast", 32.0)?,
        beta_slow: f.float_or("beta_slow", 1.0)?,
    });
    let softmax_scale = softmax_scale(qk_nope_head_dim + qk_rope_head_dim, yarn.map(|_| (factor, mscale)));
    let q_lora_rank = f.uint_or("q_lora_rank", 0)?;
    Ok(DeepseekConfig {
        family,
        schema: ConfigSchema::DeepseekInference,
        vocab_size: f.uint_or("vocab_size", 102400)?,
        hidden_size: f.uint("dim")?,
        intermediate_size: f.uint_or("inter_dim", 10944)?,
        num_hidden_layers: f.uint("n_layers")?,
        num_attention_heads: f.uint_or("n_heads", 16)?,
        q_lora_rank: (q_lora_rank > 0).then_some(q_lora_rank),
        kv_lora_rank: f.uint_or("kv_lora_rank", 512)?,
        qk_nope_head_dim,
        qk_rope_head_dim,
        v_head_dim: f.uint_or("v_head_dim", 128)?,
        rms_norm_eps: 1e-6,
        first_k_dense_replace: f.uint_or("n_dense_layers", 1)?,
        moe: MoeConfig {
            n_routed_experts: f.uint_or("n_routed_experts", 64)?,
            n_shared_experts: f.uint_or("n_shared_experts", 2)?,
            num_experts_per_tok: f.uint_or("n_activated_experts", 6)?,
            moe_intermediate_size: f.uint_or("moe_inter_dim", 1408)?,
            routing,
            norm_topk_prob: family == Family::DeepseekV3,
            routed_scaling_factor: f.float_or("route_scale", 1.0)?,
        },
        rope: RopeConfig {
            theta: f.float_or("rope_theta", 10000.0)?,
            layout: RopeLayout::Interleaved,
            yarn,
            attention_factor: 1.0,
        },
        softmax_scale,
        attention_bias: false,
        tie_word_embeddings: false,
        max_position_embeddings: max_seq_len,
        num_nextn_predict_layers: 0,
        bos_token_id: None,
        eos_token_id: None,
    })
}
