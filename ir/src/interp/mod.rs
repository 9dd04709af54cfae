//! Temporary API shim while the interpreter lands (replaced by the real module).
use std::collections::{BTreeMap, HashMap};
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}
impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { shape, data: TensorData::F32(data) }
    }
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Tensor {
        Tensor { shape, data: TensorData::I64(data) }
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
}
pub trait ParamSource {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String>;
}
pub struct Bindings<'a> {
    pub symbols: crate::SymBindings,
    pub inputs: HashMap<String, Tensor>,
    pub params: &'a dyn ParamSource,
}
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("not yet")]
    NotYet,
}
pub fn evaluate(_g: &crate::Graph, _b: &Bindings) -> Result<BTreeMap<String, Tensor>, InterpError> {
    Err(InterpError::NotYet)
}
