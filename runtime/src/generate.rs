//! The generation loop: prefill, then decode token by token.

use saturn_ir::ParamSource;

use crate::sampling::{Rng, pick};
use crate::{Executor, Limits, RuntimeError, Sampler};

/// How [`generate`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// The most tokens generated per prompt.
    pub max_new_tokens: usize,
    /// Generation of a prompt stops after this token (which is kept in the output).
    pub eos_token_id: Option<u64>,
    pub sampler: Sampler,
}

/// Generates up to `max_new_tokens` after each prompt; returns the new ids of each prompt.
/// Each prompt runs in its own session of `executor`.
///
/// Prompts run one after another, each in its own [`Session`](crate::Session); with a sampler, prompt `i` draws
/// from the stream seeded with `seed + i`, so results do not depend on the other prompts.
/// `on_token(prompt, id)` is called for every generated token (for progress reports).
pub fn generate(
    executor: Executor,
    params: &dyn ParamSource,
    limits: Limits,
    prompts: &[Vec<u64>],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(usize, u64),
) -> Result<Vec<Vec<u64>>, RuntimeError> {
    options.sampler.validate()?;
    if prompts.is_empty() {
        return Err(RuntimeError::EmptyPrompt);
    }
    // The last generated token is never fed back, so it needs no position.
    for prompt in prompts {
        let needed = (prompt.len() + options.max_new_tokens.saturating_sub(1)) as u64;
        if needed > limits.max_positions {
            return Err(RuntimeError::ContextTooLong { needed, max: limits.max_positions });
        }
    }
    let mut results = Vec::with_capacity(prompts.len());
    for (index, prompt) in prompts.iter().enumerate() {
        let mut rng = match options.sampler {
            Sampler::Random { seed, .. } => Rng::new(seed.wrapping_add(index as u64)),
            Sampler::Greedy => Rng::new(0),
        };
        let mut session = executor.session(params, limits)?;
        session.reserve(prompt.len() + options.max_new_tokens);
        let mut generated = Vec::with_capacity(options.max_new_tokens);
        if options.max_new_tokens > 0 {
            session.prefill_in_place(prompt)?;
            loop {
                let next = pick(&options.sampler, session.last_row(), &mut rng);
                generated.push(next);
                on_token(index, next);
                if generated.len() == options.max_new_tokens || options.eos_token_id == Some(next) {
                    break;
                }
                session.extend_in_place(&[next])?;
            }
        }
        results.push(generated);
    }
    Ok(results)
}
