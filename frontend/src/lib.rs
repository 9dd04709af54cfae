//! saturn's frontend: model definitions to IR.
//!
//! Reads a Hugging Face DeepSeek V2/V3 checkpoint folder (`config.json` plus `model.safetensors`
//! or shards listed in `model.safetensors.index.json`), or a bare config, and lowers it to the
//! prefill [`Graph`](saturn_ir::Graph). Weights stay in the memory-mapped files: the graph names
//! them by key, and [`Checkpoint`] implements [`saturn_ir::ParamSource`] to bind them.
//!
//! ```no_run
//! use std::path::Path;
//! let model = saturn_frontend::load_model(Path::new("models/deepseek-v3-tiny")).unwrap();
//! let graph = saturn_frontend::prefill_graph(&model.config).unwrap();
//! let weights = model.open_weights(&graph).unwrap();
//! ```
//!
//! This crate knows nothing of passes, kernels or the terminal.

mod checkpoint;
mod config;
mod error;
mod lower;
mod weights;

use std::path::{Path, PathBuf};

pub use checkpoint::{Checkpoint, TensorEntry};
pub use config::{ConfigSchema, DeepseekConfig, Family, MoeConfig, RopeConfig, Routing, yarn_get_mscale};
pub use error::{FrontendError, Result};
pub use lower::{TOKENS, prefill_graph};
pub use weights::{check_weights, expected_weights};

/// A model definition: its config, and the folder that holds its weights, if any.
#[derive(Debug)]
pub struct Model {
    pub config: DeepseekConfig,
    pub config_path: PathBuf,
    /// The checkpoint folder, when `load_model` was given a folder.
    pub weights_dir: Option<PathBuf>,
}

/// Reads a model from a checkpoint folder (its `config.json`) or from a bare config file.
pub fn load_model(path: &Path) -> Result<Model> {
    let (config_path, weights_dir) = if path.is_dir() {
        (path.join("config.json"), Some(path.to_path_buf()))
    } else {
        (path.to_path_buf(), None)
    };
    let config = DeepseekConfig::from_file(&config_path)?;
    Ok(Model { config, config_path, weights_dir })
}

impl Model {
    /// Opens the checkpoint and checks it holds exactly the weights `graph` needs, with the
    /// right shapes and readable dtypes.
    pub fn open_weights(&self, graph: &saturn_ir::Graph) -> Result<Checkpoint> {
        let dir = self.weights_dir.as_deref().ok_or_else(|| FrontendError::NotAModel {
            path: self.config_path.clone(),
            msg: "this is a bare config; evaluating needs a checkpoint folder with weights".into(),
        })?;
        if self.config.schema == ConfigSchema::DeepseekInference {
            return Err(FrontendError::NotAModel {
                path: self.config_path.clone(),
                msg: "DeepSeek inference-format checkpoints use other tensor names; convert to Hugging Face layout"
                    .into(),
            });
        }
        let checkpoint = Checkpoint::open(dir)?;
        check_weights(graph, &self.config, &checkpoint)?;
        Ok(checkpoint)
    }
}
