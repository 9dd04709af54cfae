//! Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p.

use crate::RuntimeError;

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampler {
    /// The most likely token (the lowest id among equals).
    Greedy,
    /// A draw from `softmax(logits / temperature)`, restricted to the `top_k` most likely tokens
    /// and then to the smallest set whose probability reaches `top_p` (at least one token).
    Random { temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64 },
}

impl Sampler {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if let Sampler::Random { temperature, top_k, top_p, .. } = self {
            if !(*temperature > 0.0 && temperature.is_finite()) {
                return Err(RuntimeError::Sampling(format!(
                    "temperature must be positive, got {temperature}"
                )));
            }
            if *top_k == Some(0) {
                return Err(RuntimeError::Sampling("top-k must be at least 1".into()));
            }
            if let Some(p) = top_p
                && !(*p > 0.0 && *p <= 1.0)
            {
                return Err(RuntimeError::Sampling(format!("top-p must be in (0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

/// The random stream of one sequence (splitmix64: small, fast, reproducible everywhere).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks the next token from one row of logits.
pub(crate) fn pick(sampler: &Sampler, logits: &[f32], rng: &mut Rng) -> u64 {
    match sampler {
        Sampler::Greedy => argmax(logits),
        Sampler::Random { temperature, top_k, top_p, .. } => {
            // Candidates sorted by logit, most likely first; ties keep the lower id first.
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            order.truncate(top_k.unwrap_or(order.len()).max(1));
            let max = logits[order[0]] as f64;
            let mut probs: Vec<f64> =
                order.iter().map(|&i| ((logits[i] as f64 - max) / *temperature as f64).exp()).collect();
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
            if let Some(top_p) = top_p {
                let mut cumulative = 0.0;
                let keep = probs
                    .iter()
                    .position(|p| {
                        cumulative += p;
                        cumulative >= *top_p as f64
                    })
                    .map_or(probs.len(), |i| i + 1);
                probs.truncate(keep);
                order.truncate(keep);
            }
            let total: f64 = probs.iter().sum();
            let mut u = rng.uniform() * total;
            for (&id, p) in order.iter().zip(&probs) {
                if u < *p {
                    return id as u64;
                }
                u -= p;
            }
            *order.last().expect("at least one candidate") as u64
        }
    }
}

/// The greedy choice: the index of the largest logit, the first one on ties.
pub fn argmax(logits: &[f32]) -> u64 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Sampler {
        Sampler::Random { temperature, top_k, top_p, seed: 0 }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(pick(&Sampler::Greedy, &[0.0, 3.0, 3.0, 1.0], &mut Rng::new(0)), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = Rng::new(7);
        for _ in 0..50 {
            assert_eq!(pick(&random(5.0, Some(1), None), &[0.5, 0.1, 2.0, 1.9], &mut rng), 2);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities about 0.64, 0.24, 0.09, 0.03: top-p 0.8 keeps ids 0 and 1 only.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut rng = Rng::new(1);
        let picks: Vec<u64> =
            (0..400).map(|_| pick(&random(1.0, None, Some(0.8)), &logits, &mut rng)).collect();
        assert!(picks.iter().all(|&p| p < 2));
        assert!(picks.contains(&0) && picks.contains(&1));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with probabilities 0.25 and 0.75.
        let logits = [0.0, 3f32.ln()];
        let mut rng = Rng::new(3);
        let n = 20_000;
        let ones = (0..n).filter(|_| pick(&random(1.0, None, None), &logits, &mut rng) == 1).count();
        let share = ones as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn invalid_parameters_are_errors() {
        assert!(random(0.0, None, None).validate().is_err());
        assert!(random(1.0, Some(0), None).validate().is_err());
        assert!(random(1.0, None, Some(1.5)).validate().is_err());
        assert!(random(0.7, Some(40), Some(0.9)).validate().is_ok());
    }
}
