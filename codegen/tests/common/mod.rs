//! What the codegen tests share: a small deterministic generator for test data, proptest
//! settings, and where the CUDA tools are.

/// An xorshift64 generator: the same seed gives the same data everywhere.
pub struct Rng(u64);

// Each test binary uses its own part of this module.
#[allow(dead_code)]
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }

    /// True with probability `p` (never for `p <= 0`).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// Proptest settings: `cases` cases (or `PROPTEST_CASES` when set, for longer hunts), no
/// regression files written next to the tests.
#[allow(dead_code)]
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
}

/// A shape of constant dims.
#[allow(dead_code)]
pub fn dims(shape: &[usize]) -> Vec<saturn_ir::Dim> {
    shape.iter().map(|&d| saturn_ir::Dim::from(d)).collect()
}

/// Where the CUDA tools are: `SATURN_CUDA_HOME`, else `<repo>/.cuda-tools/nvidia/cu13`
/// (`scripts/install-cuda-tools.sh` installs them there; `scripts/test.sh` runs it).
#[allow(dead_code)]
pub fn cuda_home() -> std::path::PathBuf {
    match std::env::var_os("SATURN_CUDA_HOME").filter(|v| !v.is_empty()) {
        Some(home) => std::path::PathBuf::from(home),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cuda-tools/nvidia/cu13"),
    }
}

/// The CUDA tools with a private on-disk cache in `cache`. Missing tools fail the calling test
/// (they are never skipped).
#[allow(dead_code)]
pub fn cuda_tools(cache: &std::path::Path) -> saturn_codegen::cuda::CudaTools {
    let home = cuda_home();
    assert!(
        home.join("bin/ptxas").is_file(),
        "CUDA tools not found in {}: run scripts/install-cuda-tools.sh (or set SATURN_CUDA_HOME)",
        home.display()
    );
    saturn_codegen::cuda::CudaTools::locate(Some(&home))
        .unwrap_or_else(|e| panic!("{e}"))
        .with_cache_dir(Some(cache.to_path_buf()))
}
