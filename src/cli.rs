//! Subcommands.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use saturn_frontend::{load_model, prefill_graph};
use saturn_ir::{TensorData, text};

/// saturn: a compiler for DeepSeek-style model graphs.
#[derive(Debug, Parser)]
#[command(name = "saturn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the lowered IR of a model.
    Dump {
        /// A checkpoint folder, or a bare config.json (no weights needed).
        model: PathBuf,
        /// Which graph to print.
        #[arg(long, value_enum, default_value_t = Phase::Prefill)]
        phase: Phase,
    },
    /// Run one prefill over token ids and write the logits of every position.
    Eval {
        /// A checkpoint folder: config.json plus model.safetensors (or a sharded index).
        model_dir: PathBuf,
        /// Comma-separated token ids, e.g. 3,17,42.
        #[arg(long)]
        ids: String,
        /// Where to write `logits` [S, vocab] f32, as safetensors.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Phase {
    /// One pass over a whole prompt (`S` tokens, no cache).
    Prefill,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dump { model, phase: Phase::Prefill } => dump(&model),
        Command::Eval { model_dir, ids, out } => eval(&model_dir, &ids, &out),
    }
}

fn dump(model: &Path) -> Result<()> {
    let model = load_model(model)?;
    let graph = prefill_graph(&model.config)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text::print(&graph).as_bytes()).context("writing to stdout")?;
    Ok(())
}

fn eval(model_dir: &Path, ids: &str, out: &Path) -> Result<()> {
    let ids = parse_ids(ids)?;
    if !model_dir.is_dir() {
        bail!("{}: not a checkpoint folder (eval needs config.json and weights)", model_dir.display());
    }
    let model = load_model(model_dir)?;
    saturn_runtime::check_prompt(&ids, model.config.vocab_size)?;
    let graph = prefill_graph(&model.config)?;
    let weights = model.open_weights(&graph)?;
    let logits = saturn_runtime::prefill(&graph, weights.as_ref(), &ids)?;
    let TensorData::F32(data) = &logits.data else { bail!("the logits are not f32 (a saturn bug)") };
    write_safetensors(out, &[("logits", &logits.shape, data)])?;
    tracing::info!(tokens = ids.len(), path = %out.display(), "wrote logits");
    Ok(())
}

/// Parses `3,17,42` (spaces allowed) into token ids.
fn parse_ids(s: &str) -> Result<Vec<u64>> {
    let ids: Vec<u64> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u64>().with_context(|| format!("--ids: `{t}` is not a token id")))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("--ids: the id list is empty; give at least one token id, e.g. --ids 3,17,42");
    }
    Ok(ids)
}

/// Writes f32 tensors to `path` through a temporary file in the same folder, renamed into
/// place, so a failure never leaves a half-written file.
fn write_safetensors(path: &Path, tensors: &[(&str, &Vec<usize>, &Vec<f32>)]) -> Result<()> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, data)| data.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), b)
                .map(|v| (*name, v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serialized = safetensors::serialize(views, None)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create a file in this folder", dir.display()))?;
    tmp.write_all(&serialized).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}
