//! saturn's frontend: model definitions to IR.
//!
//! Reads a Hugging Face DeepSeek V2/V3 checkpoint folder (`config.json` plus `model.safetensors`
//! or shards listed in `model.safetensors.index.json`), a bare config, or a saturn model spec
//! (`models/*.toml`, see the `spec` module), and lowers it to the prefill
//! [`Graph`](saturn_ir::Graph). Weights stay in the memory-mapped files: the graph names
//! them by key, and [`Checkpoint`] implements [`saturn_ir::ParamSource`] to bind them.
//!
//! ```no_run
//! use std::path::Path;
//! let model = saturn_frontend::load_model(Path::new("models/deepseek-v3-tiny")).unwrap();
//! let graph = saturn_frontend::forward_graph(&model.config).unwrap();
//! let weights = model.open_weights(&graph).unwrap(); // a `ParamSource`
//! ```
//!
//! This crate knows nothing of passes, kernels or the terminal.

mod checkpoint;
mod config;
mod error;
mod lower;
mod memory;
mod random_weights;
mod spec;
mod weights;

use std::path::{Path, PathBuf};

use saturn_ir::ParamSource;

pub use checkpoint::{Checkpoint, TensorEntry};
pub use config::{ConfigSchema, DeepseekConfig, Family, MoeConfig, RopeConfig, Routing, yarn_get_mscale};
pub use error::{FrontendError, Result};
pub use lower::{
    AttentionForm, CACHED, Logits, Phase, TOKENS, attention_form, cache_name, forward_graph,
    forward_graph_with, phase_graph, phase_graph_with,
};
pub use memory::{BytesByDtype, MemoryReport, PRICED_DTYPES, memory_report};
pub use random_weights::RandomWeights;
pub use spec::StorageDtype;
pub use weights::{check_weights, expected_weights};

/// Where a model's weights come from.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightsSource {
    /// A bare config: the model can be dumped, not run.
    None,
    /// A Hugging Face checkpoint folder.
    Checkpoint(PathBuf),
    /// Seeded random weights, normal with standard deviation `std` (norm weights are 1).
    Random { seed: u64, std: f64 },
}

/// A model definition: its config and where its weights come from.
#[derive(Debug)]
pub struct Model {
    pub config: DeepseekConfig,
    /// The file the config was read from (`config.json`, or a spec `.toml`).
    pub config_path: PathBuf,
    pub weights: WeightsSource,
    /// The dtype memory reports should assume for the weights: a spec's `weights.dtype`; `None`
    /// for a Hugging Face config (the checkpoint's own dtypes).
    pub storage_dtype: Option<StorageDtype>,
}

/// Reads a model from a spec (a `.toml` file), a checkpoint folder (its `config.json`) or a
/// bare config file.
pub fn load_model(path: &Path) -> Result<Model> {
    if path.extension().is_some_and(|ext| ext == "toml") {
        let (config, weights, storage_dtype) = spec::read_spec(path)?;
        return Ok(Model {
            config,
            config_path: path.to_path_buf(),
            weights,
            storage_dtype: Some(storage_dtype),
        });
    }
    if path.is_dir() {
        let config_path = path.join("config.json");
        let config = DeepseekConfig::from_file(&config_path)?;
        let weights = WeightsSource::Checkpoint(path.to_path_buf());
        return Ok(Model { config, config_path, weights, storage_dtype: None });
    }
    let config = DeepseekConfig::from_file(path)?;
    Ok(Model { config, config_path: path.to_path_buf(), weights: WeightsSource::None, storage_dtype: None })
}

impl Model {
    /// Opens the weights `graph` needs. A checkpoint is checked to hold exactly those weights,
    /// with the right shapes and readable dtypes.
    pub fn open_weights(&self, graph: &saturn_ir::Graph) -> Result<Box<dyn ParamSource + Send + Sync>> {
        match &self.weights {
            WeightsSource::None => Err(FrontendError::NotAModel {
                path: self.config_path.clone(),
                msg: "this is a bare config; running it needs a checkpoint folder or a spec with weights".into(),
            }),
            WeightsSource::Checkpoint(_) if self.config.schema == ConfigSchema::DeepseekInference => {
                Err(FrontendError::NotAModel {
                    path: self.config_path.clone(),
                    msg: "DeepSeek inference-format checkpoints use other tensor names; convert to Hugging Face \
                          layout"
                        .into(),
                })
            }
            WeightsSource::Checkpoint(dir) => {
                let checkpoint = Checkpoint::open(dir)?;
                check_weights(graph, &self.config, &checkpoint)?;
                Ok(Box::new(checkpoint))
            }
            WeightsSource::Random { seed, std } => Ok(Box::new(RandomWeights::new(*seed, *std))),
        }
    }
}
