//! `saturn dump`: the lowered IR of one phase.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use saturn_frontend::{Phase, load_model, phase_graph};
use saturn_ir::text;

pub fn run(model: &Path, phase: Phase) -> Result<()> {
    let model = load_model(model)?;
    let graph = phase_graph(&model.config, phase)?;
    std::io::stdout().lock().write_all(text::print(&graph).as_bytes()).context("writing to stdout")?;
    Ok(())
}
