//! Targets: the machine constants of the roofline, read from `targets.toml`.
//!
//! The built-in file (`passes/targets.toml`) is compiled in; [`Targets::from_file`] merges a
//! user file of the same schema over it. The file's serde structs below are its schema; every
//! constant carries a `source` string that says whether it is from a spec sheet, a measurement
//! or an estimate.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use saturn_ir::DType;
use serde::Deserialize;
use toml::Spanned;

/// The built-in targets file.
const BUILTIN_TARGETS: &str = include_str!("../../targets.toml");

/// The name errors in the built-in file are reported under.
const BUILTIN_PATH: &str = "passes/targets.toml (built in)";

/// Errors reading a targets file or looking up a target.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed file: bad TOML, a missing or unknown field, or an invalid value. Line and
    /// column are 1-based and count characters.
    #[error("{path}:{line}:{column}: {msg}")]
    File { path: PathBuf, line: usize, column: usize, msg: String },
    #[error("unknown target `{name}` (known targets: {})", known.join(", "))]
    UnknownTarget { name: String, known: Vec<String> },
}

/// One machine that the cost model prices kernels for.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub description: String,
    /// Dense matrix-product FLOP/s per dtype. Parsed targets always have `f32`, the fallback
    /// for dtypes without an entry.
    pub peak_flops: BTreeMap<DType, f64>,
    /// Bytes per second, counting bytes read plus bytes written.
    pub memory_bandwidth: f64,
    /// Seconds added per kernel launch.
    pub launch_overhead: f64,
    /// Bytes of last-level on-chip memory (L2 on a GPU, L3 on a CPU).
    pub on_chip_bytes: f64,
    pub sources: TargetSources,
}

/// Where each constant of a [`Target`] comes from: a spec sheet, a measurement or an estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSources {
    pub peak_flops: BTreeMap<DType, String>,
    pub memory_bandwidth: String,
    pub launch_overhead: String,
    pub on_chip_bytes: String,
}

impl Target {
    /// The peak FLOP/s for `dtype`, or the f32 one when `dtype` has no entry.
    pub fn peak_flops_for(&self, dtype: DType) -> Option<f64> {
        self.peak_flops.get(&dtype).or_else(|| self.peak_flops.get(&DType::F32)).copied()
    }
}

/// The known targets, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    by_name: BTreeMap<String, Target>,
}

impl Targets {
    /// The targets of the built-in `passes/targets.toml` (a test guarantees that it parses).
    pub fn builtin() -> Targets {
        let by_name = parse_targets(BUILTIN_TARGETS, Path::new(BUILTIN_PATH))
            .unwrap_or_else(|e| panic!("the built-in targets file is invalid: {e}"));
        Targets { by_name }
    }

    /// The built-in targets with those of the file at `path` merged over them: a target of the
    /// same name replaces the built-in one as a whole.
    pub fn from_file(path: &Path) -> Result<Targets, CostError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CostError::Io { path: path.into(), source })?;
        let mut targets = Targets::builtin();
        targets.by_name.extend(parse_targets(&text, path)?);
        Ok(targets)
    }

    pub fn get(&self, name: &str) -> Result<&Target, CostError> {
        self.by_name.get(name).ok_or_else(|| CostError::UnknownTarget {
            name: name.to_string(),
            known: self.by_name.keys().cloned().collect(),
        })
    }

    /// The target names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// One `[NAME]` table of a targets file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    description: String,
    memory_bandwidth: Constant,
    launch_overhead: Constant,
    on_chip_bytes: Constant,
    /// Keyed by dtype name (`f32`, `bf16`, ...).
    peak_flops: Spanned<BTreeMap<Spanned<String>, Constant>>,
}

/// A constant with the source of its value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Constant {
    value: Spanned<f64>,
    source: Spanned<String>,
}

/// Which values a constant may take.
#[derive(Clone, Copy)]
enum Allowed {
    Positive,
    NonNegative,
}

/// A file's text and path, for errors that point into it.
struct TargetsFile<'a> {
    path: &'a Path,
    text: &'a str,
}

fn parse_targets(text: &str, path: &Path) -> Result<BTreeMap<String, Target>, CostError> {
    let file = TargetsFile { path, text };
    let entries: BTreeMap<String, TargetEntry> = toml::from_str(text)
        .map_err(|e| file.error(e.span().unwrap_or(0..0), e.message().trim_end().to_string()))?;
    entries.into_iter().map(|(name, entry)| Ok((name.clone(), file.target(name, entry)?))).collect()
}

impl TargetsFile<'_> {
    fn error(&self, span: Range<usize>, msg: String) -> CostError {
        let before = self.text.get(..span.start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        CostError::File { path: self.path.into(), line, column, msg }
    }

    fn target(&self, name: String, entry: TargetEntry) -> Result<Target, CostError> {
        let (memory_bandwidth, bandwidth_source) =
            self.constant(&name, "memory_bandwidth", entry.memory_bandwidth, Allowed::Positive)?;
        let (launch_overhead, launch_source) =
            self.constant(&name, "launch_overhead", entry.launch_overhead, Allowed::NonNegative)?;
        let (on_chip_bytes, on_chip_source) =
            self.constant(&name, "on_chip_bytes", entry.on_chip_bytes, Allowed::NonNegative)?;
        let table_span = entry.peak_flops.span();
        let mut peak_flops = BTreeMap::new();
        let mut peak_sources = BTreeMap::new();
        for (dtype_name, constant) in entry.peak_flops.into_inner() {
            let dtype: DType = dtype_name
                .get_ref()
                .parse()
                .map_err(|e| self.error(dtype_name.span(), format!("`{name}.peak_flops`: {e}")))?;
            let field = format!("peak_flops.{dtype}");
            let (value, source) = self.constant(&name, &field, constant, Allowed::Positive)?;
            peak_flops.insert(dtype, value);
            peak_sources.insert(dtype, source);
        }
        if !peak_flops.contains_key(&DType::F32) {
            let msg = format!("`{name}.peak_flops` needs an `f32` entry, the fallback for other dtypes");
            return Err(self.error(table_span, msg));
        }
        Ok(Target {
            name,
            description: entry.description,
            peak_flops,
            memory_bandwidth,
            launch_overhead,
            on_chip_bytes,
            sources: TargetSources {
                peak_flops: peak_sources,
                memory_bandwidth: bandwidth_source,
                launch_overhead: launch_source,
                on_chip_bytes: on_chip_source,
            },
        })
    }

    /// Checks a constant's value and source; errors point at the value or the source.
    fn constant(
        &self,
        target: &str,
        field: &str,
        constant: Constant,
        allowed: Allowed,
    ) -> Result<(f64, String), CostError> {
        let value = *constant.value.get_ref();
        let (ok, requirement) = match allowed {
            Allowed::Positive => (value.is_finite() && value > 0.0, "finite and positive"),
            Allowed::NonNegative => (value.is_finite() && value >= 0.0, "finite and non-negative"),
        };
        if !ok {
            let msg = format!("`{target}.{field}.value` must be {requirement}, got {value}");
            return Err(self.error(constant.value.span(), msg));
        }
        if constant.source.get_ref().trim().is_empty() {
            let msg = format!(
                "`{target}.{field}.source` is empty: say where the value comes from \
                 (spec sheet, measured, estimate)"
            );
            return Err(self.error(constant.source.span(), msg));
        }
        Ok((value, constant.source.into_inner()))
    }
}
