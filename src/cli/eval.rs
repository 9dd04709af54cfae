//! `saturn eval`: logits of a prefill and of decode steps through the KV cache.

use std::path::Path;

use anyhow::{Result, bail};
use saturn_frontend::{Logits, load_model};

use super::RunArgs;
use super::optimize::RunGraphs;
use saturn_runtime::Limits;

use super::output::write_f32_safetensors;

pub fn run(model: &Path, ids: &[u64], decode_ids: Option<&[u64]>, out: &Path, run: &RunArgs) -> Result<()> {
    let model = load_model(model)?;
    let graphs = RunGraphs::new(&model.config, run.opt_level, run.opt_target(), Logits::All)?;
    let weights = model.open_weights(&graphs.forward)?;
    let limits =
        Limits { vocab_size: model.config.vocab_size, max_positions: model.config.max_position_embeddings };
    let prepared = graphs.prepare(weights.as_ref())?;
    let programs = run.compile(&prepared)?;
    let executor = super::executor(&prepared, &programs)?;
    let weights = run.weights(&prepared);
    let mut session = executor.session(&weights, limits)?;
    // Check every id before running anything, so a bad decode id fails fast.
    let all: Vec<u64> = ids.iter().chain(decode_ids.unwrap_or_default()).copied().collect();
    saturn_runtime::check_ids(&all, limits)?;

    let logits = session.prefill(ids)?;
    let mut tensors = vec![("logits", logits.shape.clone(), f32_data(&logits)?)];
    if let Some(decode_ids) = decode_ids {
        let mut rows = Vec::with_capacity(decode_ids.len() * model.config.vocab_size as usize);
        for &id in decode_ids {
            rows.extend(f32_data(&session.extend(&[id])?)?);
        }
        tensors.push(("decode_logits", vec![decode_ids.len(), model.config.vocab_size as usize], rows));
    }
    write_f32_safetensors(out, &tensors)?;
    tracing::info!(tokens = ids.len(), path = %out.display(), "wrote logits");
    Ok(())
}

fn f32_data(t: &saturn_ir::Tensor) -> Result<Vec<f32>> {
    match t.as_f32() {
        Some(d) => Ok(d.to_vec()),
        None => bail!("the logits are not f32 (a saturn bug)"),
    }
}
