//! Seeded random weights, for specs without a checkpoint (dumps, demos, benchmarks).

use saturn_ir::{ParamSource, Tensor};

/// Weights drawn from a normal distribution with standard deviation `std`, except norm weights
/// (keys ending in `norm.weight`), which are 1. Each tensor depends only on the seed and its key,
/// not on the order tensors are read in.
#[derive(Clone, Debug)]
pub struct RandomWeights {
    seed: u64,
    std: f64,
}

impl RandomWeights {
    pub fn new(seed: u64, std: f64) -> RandomWeights {
        RandomWeights { seed, std }
    }
}

impl ParamSource for RandomWeights {
    fn load(&self, key: &str, shape: &[usize]) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if key.ends_with("norm.weight") {
            return Ok(Tensor::f32(shape.to_vec(), vec![1.0; n]));
        }
        // FNV-1a of the key, mixed with the seed, starts a splitmix64 stream.
        let mut state =
            key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        state ^= self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // Box-Muller on two uniforms in (0, 1].
        let data = (0..n)
            .map(|_| {
                let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * self.std) as f32
            })
            .collect();
        Ok(Tensor::f32(shape.to_vec(), data))
    }
}
