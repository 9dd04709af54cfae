//! `saturn compile` and `saturn explain`, and the optimisation options shared with `eval` and
//! `generate`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use saturn_frontend::{
    AttentionForm, CACHED, DeepseekConfig, Logits, Phase, TOKENS, attention_form, load_model, phase_graph,
    phase_graph_with,
};
use saturn_ir::{Graph, SymBindings, text};
use saturn_passes::{Extraction, Limits, OptimizeOptions, OptimizeReport, Targets, graph_cost, optimize};

use super::output::write_atomically;

/// How to optimise: the target, the phase's symbol values, and the bounds.
#[derive(Debug, Args)]
pub struct OptArgs {
    /// The cost-model target: h100, h200 or cpu (or one from --targets).
    #[arg(long, default_value = "h100")]
    pub target: String,
    /// A TOML file of extra or replacement targets (same schema as passes/targets.toml).
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// Cached positions P to cost decode for.
    #[arg(long, default_value_t = DEFAULT_CONTEXT)]
    pub context: u64,
    /// New tokens S to cost prefill for.
    #[arg(long, default_value_t = DEFAULT_TOKENS)]
    pub tokens: u64,
    /// Extra symbol values for costing, e.g. `--bind P=32768` (overrides --context/--tokens).
    #[arg(long, value_name = "SYM=VALUE")]
    pub bind: Vec<String>,
    /// Extraction: greedy (any size) or exact (small segments; greedy beyond).
    #[arg(long, value_enum, default_value_t = ExtractArg::Greedy)]
    pub extract: ExtractArg,
    /// Saturation time limit per template, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub time_limit_ms: u64,
    /// Saturation iteration limit.
    #[arg(long, default_value_t = 12)]
    pub iteration_limit: usize,
    /// E-graph node limit.
    #[arg(long, default_value_t = 100_000)]
    pub node_limit: usize,
}

/// The cached positions a decode is costed for, unless told otherwise.
const DEFAULT_CONTEXT: u64 = 4096;
/// The new tokens a prefill is costed for, unless told otherwise.
const DEFAULT_TOKENS: u64 = 2048;

/// Values for the symbols `phase`'s graph leaves free: `S` for prefill, `P` for decode, both
/// for the chunked graph (costed as decode: most steps are).
fn phase_symbols(phase: Phase, tokens: u64, context: u64) -> SymBindings {
    let bind = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    match phase {
        Phase::Prefill => bind(&[(TOKENS, tokens)]),
        Phase::Decode => bind(&[(CACHED, context)]),
        Phase::Chunked => bind(&[(TOKENS, 1), (CACHED, context)]),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExtractArg {
    Greedy,
    Exact,
}

impl OptArgs {
    /// The options for optimising `phase`: symbol values for the symbols the phase leaves free.
    pub fn options(&self, phase: Phase) -> Result<OptimizeOptions> {
        let targets = match &self.targets {
            Some(path) => Targets::from_file(path)?,
            None => Targets::builtin(),
        };
        let target = targets.get(&self.target)?.clone();
        let mut symbols = phase_symbols(phase, self.tokens, self.context);
        for b in &self.bind {
            let parsed = b.split_once('=').and_then(|(k, v)| Some((k.trim(), v.trim().parse::<u64>().ok()?)));
            match parsed {
                Some((k, v)) if saturn_ir::is_valid_name(k) => {
                    symbols.insert(k.to_string(), v);
                }
                _ => {
                    bail!("--bind {b}: expected SYMBOL=VALUE with a non-negative integer value, e.g. P=4096")
                }
            }
        }
        if self.iteration_limit == 0 || self.node_limit == 0 {
            bail!("--iteration-limit and --node-limit must be at least 1");
        }
        let limits = Limits {
            iterations: self.iteration_limit,
            nodes: self.node_limit,
            time: Duration::from_millis(self.time_limit_ms),
            ..Limits::default()
        };
        let extraction = match self.extract {
            ExtractArg::Greedy => Extraction::Greedy,
            ExtractArg::Exact => Extraction::Exact,
        };
        Ok(OptimizeOptions { target, symbols, limits, extraction })
    }
}

/// The graphs `eval`, `generate` and `bench` run: the chunked forward graph and the prefill and
/// decode graphs, computing the logits `logits` names (`eval` writes every position's,
/// generation needs the last), each optimised for `target` and its phase unless `opt_level` is
/// 0.
pub struct RunGraphs {
    pub forward: Graph,
    pub prefill: Graph,
    pub decode: Graph,
}

impl RunGraphs {
    pub fn new(config: &DeepseekConfig, opt_level: u8, target: &str, logits: Logits) -> Result<RunGraphs> {
        let phase = |phase: Phase| -> Result<Graph> {
            let lowered = phase_graph_with(config, phase, logits)?;
            if opt_level == 0 {
                return Ok(lowered);
            }
            let mut options = OptimizeOptions::for_target(target)?;
            options.symbols = phase_symbols(phase, DEFAULT_TOKENS, DEFAULT_CONTEXT);
            let optimized = optimize(&lowered, &options)?;
            tracing::info!(
                graph = %lowered.name,
                before = optimized.report.cost_before.seconds,
                after = optimized.report.cost_after.seconds,
                "optimised for {target}"
            );
            Ok(optimized.graph)
        };
        Ok(RunGraphs {
            forward: phase(Phase::Chunked)?,
            prefill: phase(Phase::Prefill)?,
            decode: phase(Phase::Decode)?,
        })
    }

    /// The graphs with their weight-only subexpressions computed from `weights`, in the order
    /// forward, prefill, decode (see [`RunGraphs::executor`]).
    pub fn prepare<'a>(
        &self,
        weights: &'a dyn saturn_runtime::ParamSource,
    ) -> Result<saturn_runtime::Prepared<'a>> {
        Ok(saturn_runtime::Prepared::new(&[&self.forward, &self.prefill, &self.decode], weights)?)
    }

    /// The prepared graphs as an executor's forward graph and phase graphs (see
    /// [`RunGraphs::prepare`]).
    pub fn graphs<'a>(
        prepared: &'a saturn_runtime::Prepared<'_>,
    ) -> Result<(&'a Graph, saturn_runtime::PhaseGraphs<'a>)> {
        let [forward, prefill, decode] = &prepared.graphs[..] else {
            bail!("three prepared graphs expected")
        };
        Ok((forward, saturn_runtime::PhaseGraphs { prefill: Some(prefill), decode: Some(decode) }))
    }
}

/// `saturn compile`: the optimiser's report, and what `emit` names (`ir`: the lowered and
/// optimised IR; `cuda`, `ptx`: see [`super::cuda`]), written to `dir`.
pub fn compile(
    model: &Path,
    phase: Phase,
    opt: &OptArgs,
    emit: &[String],
    (cuda_home, cuda_options): (Option<&Path>, saturn_codegen::cuda::CudaOptions),
    dir: &Path,
) -> Result<()> {
    for e in emit {
        if !["ir", "cuda", "ptx"].contains(&e.as_str()) {
            bail!("--emit {e}: unknown (supported: ir, cuda, ptx)");
        }
    }
    let wants = |what: &str| emit.iter().any(|e| e == what);
    let model = load_model(model)?;
    let options = opt.options(phase)?;
    let lowered = phase_graph(&model.config, phase)?;
    let optimized = optimize(&lowered, &options)?;
    let (report, optimized) = (optimized.report, optimized.graph);
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    if wants("ir") {
        write_atomically(&dir.join("lowered.ir"), text::print(&lowered).as_bytes())?;
        write_atomically(&dir.join("optimized.ir"), text::print(&optimized).as_bytes())?;
    }
    if wants("cuda") || wants("ptx") {
        let emit = super::cuda::CudaEmit { ptx: wants("ptx"), cuda_home, options: cuda_options };
        super::cuda::write(&optimized, &options.symbols, &emit, dir)?;
    }
    write_atomically(&dir.join("report.json"), (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    eprintln!(
        "{}: cost {:.3e} s -> {:.3e} s on {} ({} -> {} nodes) in {:.2} s",
        dir.display(),
        report.cost_before.seconds,
        report.cost_after.seconds,
        report.target,
        report.nodes_before,
        report.nodes_after,
        report.seconds
    );
    Ok(())
}

/// `saturn explain`: what the optimiser did, as a table (or the report as JSON).
pub fn explain(model: &Path, phase: Phase, opt: &OptArgs, json: bool) -> Result<()> {
    let model = load_model(model)?;
    let (_, report, _) = run(&model.config, phase, opt)?;
    let forms = forms_by_phase(&model.config, opt)?;
    let text = if json {
        let mut value = serde_json::to_value(&report)?;
        value["forms_by_phase"] = serde_json::to_value(&forms)?;
        serde_json::to_string_pretty(&value)? + "\n"
    } else {
        explain_text(&report) + &forms_text(&forms)
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(())
}

/// The graph the optimiser chooses for one phase, costed in every phase.
#[derive(Debug, serde::Serialize)]
pub struct FormCosts {
    pub chosen_for: String,
    pub attention: Option<AttentionForm>,
    /// Seconds on the target, per phase.
    pub seconds: std::collections::BTreeMap<String, f64>,
}

/// The decode and prefill choices for the chunked graph (`S` new tokens after `P` cached),
/// each costed under both phases' symbol values: the cost of both forms in both phases.
pub fn forms_by_phase(config: &DeepseekConfig, opt: &OptArgs) -> Result<Vec<FormCosts>> {
    let chunked = phase_graph(config, Phase::Chunked)?;
    let base = opt.options(Phase::Chunked)?;
    let phases = [
        ("decode", SymBindings::from([(TOKENS.to_string(), 1), (CACHED.to_string(), opt.context)])),
        ("prefill", SymBindings::from([(TOKENS.to_string(), opt.tokens), (CACHED.to_string(), 0)])),
    ];
    let mut out = Vec::new();
    for (name, symbols) in &phases {
        let options = OptimizeOptions { symbols: symbols.clone(), ..base.clone() };
        let graph = optimize(&chunked, &options)?.graph;
        let seconds = phases
            .iter()
            .map(|(p, syms)| (p.to_string(), graph_cost(&graph, syms, &base.target).seconds))
            .collect();
        out.push(FormCosts { chosen_for: name.to_string(), attention: attention_form(&graph), seconds });
    }
    Ok(out)
}

fn forms_text(forms: &[FormCosts]) -> String {
    let mut s = String::from("\nforms by phase (each phase's choice, costed in both phases, seconds)\n");
    writeln!(s, "  {:<22}{:<12}{:>14}{:>14}", "chosen for", "attention", "decode", "prefill").unwrap();
    for f in forms {
        let form = f.attention.map_or("-".to_string(), |a| format!("{a:?}").to_lowercase());
        let cost = |p: &str| f.seconds.get(p).copied().unwrap_or(f64::NAN);
        writeln!(s, "  {:<22}{form:<12}{:>14.4e}{:>14.4e}", f.chosen_for, cost("decode"), cost("prefill"))
            .unwrap();
    }
    s
}

/// Lowers `phase` and optimises it as `opt` says.
pub fn run(config: &DeepseekConfig, phase: Phase, opt: &OptArgs) -> Result<(Graph, OptimizeReport, Graph)> {
    let lowered = phase_graph(config, phase)?;
    let optimized = optimize(&lowered, &opt.options(phase)?)?;
    Ok((lowered, optimized.report, optimized.graph))
}

fn explain_text(r: &OptimizeReport) -> String {
    let mut s = String::new();
    let syms: Vec<String> = r.symbols.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(s, "{} on {} ({}), {:?} extraction", r.graph, r.target, syms.join(", "), r.extraction).unwrap();
    let (b, a) = (&r.cost_before, &r.cost_after);
    writeln!(s, "\ncost            before          after      ratio").unwrap();
    let row = |s: &mut String, label: &str, x: f64, y: f64| {
        let ratio = if y > 0.0 { x / y } else { f64::INFINITY };
        writeln!(s, "  {label:<10}{x:>12.4e}{y:>15.4e}{ratio:>10.2}x").unwrap();
    };
    row(&mut s, "seconds", b.seconds, a.seconds);
    row(&mut s, "bytes", b.bytes, a.bytes);
    row(&mut s, "flops", b.flops, a.flops);
    row(&mut s, "launches", b.launches as f64, a.launches as f64);
    writeln!(s, "  nodes     {:>12}{:>15}", r.nodes_before, r.nodes_after).unwrap();
    writeln!(
        s,
        "\n{} segments, {} templates optimised, in {:.3} s",
        r.segments,
        r.templates.len(),
        r.seconds
    )
    .unwrap();
    for t in &r.templates {
        let layer = t.layer.map_or_else(|| "outside layers".to_string(), |l| format!("layer {l}"));
        writeln!(
            s,
            "  {layer:<16} x{:<3} {:>3} iterations, {:>6} e-nodes, {:>6} classes, stopped: {}{}",
            t.instances,
            t.saturation.iterations,
            t.saturation.egraph_nodes,
            t.saturation.egraph_classes,
            t.saturation.stop_reason.name(),
            if t.kept_original { " (kept as lowered)" } else { "" }
        )
        .unwrap();
    }
    writeln!(s, "\nrule                            family        matches  applied rejected   search s")
        .unwrap();
    for (name, st) in r.rule_totals() {
        writeln!(
            s,
            "  {name:<30}{:<13}{:>8}{:>9}{:>9}{:>11.4}",
            st.family, st.matches, st.applied, st.rejected, st.search_seconds
        )
        .unwrap();
    }
    let parts: Vec<String> = r.family_seconds().iter().map(|(f, t)| format!("{f} {t:.4} s")).collect();
    writeln!(s, "\nsearch time per family: {}", parts.join(", ")).unwrap();
    s
}
