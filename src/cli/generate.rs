//! `saturn generate`: greedy or sampled generation through the KV cache.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use saturn_frontend::{Logits, load_model};

use super::RunArgs;
use super::optimize::RunGraphs;
use saturn_runtime::{GenerateOptions, Limits, Sampler, generate};

/// The sampling options as given on the command line.
pub struct SamplingArgs {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl SamplingArgs {
    /// Greedy unless a sampling option is given; temperature defaults to 1 when sampling.
    fn sampler(&self) -> Sampler {
        if self.temperature.is_none() && self.top_k.is_none() && self.top_p.is_none() {
            return Sampler::Greedy;
        }
        Sampler::Random {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

pub fn run(
    model: &Path,
    prompts: &[Vec<u64>],
    max_new_tokens: usize,
    sampling: SamplingArgs,
    ignore_eos: bool,
    run: &RunArgs,
) -> Result<()> {
    let model = load_model(model)?;
    let graphs = RunGraphs::new(&model.config, run.opt_level, run.opt_target(), Logits::Last)?;
    let limits =
        Limits { vocab_size: model.config.vocab_size, max_positions: model.config.max_position_embeddings };
    for prompt in prompts {
        saturn_runtime::check_ids(prompt, limits)?;
    }
    let weights = model.open_weights(&graphs.forward)?;
    let prepared = graphs.prepare(weights.as_ref())?;
    let programs = run.compile(&prepared)?;
    let executor = super::executor(&prepared, &programs)?;
    let options = GenerateOptions {
        max_new_tokens,
        eos_token_id: if ignore_eos { None } else { model.config.eos_token_id },
        sampler: sampling.sampler(),
    };
    // Drawn only on a terminal (indicatif hides it otherwise).
    let progress = ProgressBar::new((prompts.len() * max_new_tokens) as u64).with_style(
        ProgressStyle::with_template("{spinner} generating {pos}/{len} tokens [{elapsed}] {per_sec}")
            .context("progress bar template")?,
    );
    let start = std::time::Instant::now();
    let weights = run.weights(&prepared);
    let outputs = generate(executor, &weights, limits, prompts, &options, &mut |_, _| progress.inc(1))?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    // The rate goes to stderr, so stdout stays the ids alone.
    let tokens: usize = outputs.iter().map(Vec::len).sum();
    eprintln!(
        "generated {tokens} tokens in {seconds:.3} s ({:.1} tokens/s, prefill included)",
        tokens as f64 / seconds.max(1e-9)
    );
    let mut stdout = std::io::stdout().lock();
    for ids in outputs {
        let line: Vec<String> = ids.iter().map(u64::to_string).collect();
        writeln!(stdout, "{}", line.join(",")).context("writing to stdout")?;
    }
    Ok(())
}
