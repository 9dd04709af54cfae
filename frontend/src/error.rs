//! Frontend errors. Each names the file, config field or tensor at fault.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {msg}")]
    Json { path: PathBuf, msg: String },
    #[error("{path}:{line}:{column}: {msg}")]
    Toml { path: PathBuf, line: usize, column: usize, msg: String },
    #[error("{path}: field `{field}`: {msg}")]
    ConfigField { path: PathBuf, field: String, msg: String },
    #[error("{path}: unknown model_type `{found}` (saturn reads deepseek_v2 and deepseek_v3)")]
    UnknownModelType { path: PathBuf, found: String },
    #[error("{path}: not a usable model: {msg}")]
    NotAModel { path: PathBuf, msg: String },
    #[error("{path}: corrupt or truncated safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("weight `{name}` is missing from the checkpoint")]
    MissingWeight { name: String },
    #[error("{path}: tensor `{name}` is not a weight of this model")]
    ExtraWeight { path: PathBuf, name: String },
    #[error("weight `{name}` has shape {got:?}, expected {expected:?}")]
    WeightShape { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("weight `{name}` has dtype {dtype}; saturn reads F32, BF16 and F16 weights")]
    WeightDtype { name: String, dtype: String },
    #[error("internal lowering error (a saturn bug): {0}")]
    Lowering(#[from] saturn_ir::IrError),
}

pub type Result<T, E = FrontendError> = std::result::Result<T, E>;
