//! The optimisation pipeline: segments and templates, saturation, extraction, verification.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use saturn_ir::{Graph, IrError, NodeId, SymBindings, verify};
use serde::Serialize;
use thiserror::Error;

use crate::analysis::TensorGraph;
use crate::convert::{build, load};
use crate::cost::{CostError, NodeCost, Target, Targets, node_cost};
use crate::extract::{self, NodeCostFn};
use crate::lang::TensorNode;
use crate::rules::{Rule, all_rules};
use crate::saturate::{Limits, SaturationReport, saturate};
use crate::templates::{instantiate, segments, signature, standalone};

#[derive(Debug, Error)]
pub enum PassError {
    #[error(transparent)]
    Cost(#[from] CostError),
    #[error("the optimised graph is invalid (a saturn bug): {0}")]
    Invalid(#[from] IrError),
}

/// How extraction chooses among equivalent forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Extraction {
    /// Greedy DAG extraction: fast on any size.
    Greedy,
    /// Exhaustive search per segment when small enough, greedy otherwise.
    Exact,
}

/// What to optimise for, and the bounds.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    pub target: Target,
    /// Values of the graph's free symbols for costing (a phase, e.g. `P = 4096`); symbols left
    /// free are costed as 1.
    pub symbols: SymBindings,
    pub limits: Limits,
    pub extraction: Extraction,
}

impl OptimizeOptions {
    /// The built-in target `name`, default limits, greedy extraction, no symbol values.
    pub fn for_target(name: &str) -> Result<OptimizeOptions, PassError> {
        Ok(OptimizeOptions {
            target: Targets::builtin().get(name)?.clone(),
            symbols: SymBindings::new(),
            limits: Limits::default(),
            extraction: Extraction::Greedy,
        })
    }
}

/// Saturation of one template.
#[derive(Clone, Debug, Serialize)]
pub struct TemplateReport {
    /// The first segment's layer, or `None` for nodes outside layers.
    pub layer: Option<u64>,
    /// How many segments share the template.
    pub instances: usize,
    pub saturation: SaturationReport,
    /// True if extraction found nothing cheaper and the segment was kept as it was.
    pub kept_original: bool,
    /// True if extraction was exhaustive (asked for, and the segment was small enough).
    pub exact: bool,
}

/// What [`optimize`] did.
#[derive(Clone, Debug, Serialize)]
pub struct OptimizeReport {
    pub graph: String,
    pub target: String,
    pub symbols: BTreeMap<String, u64>,
    pub extraction: Extraction,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub cost_before: NodeCost,
    pub cost_after: NodeCost,
    pub segments: usize,
    pub templates: Vec<TemplateReport>,
    pub seconds: f64,
}

impl OptimizeReport {
    /// Seconds spent searching, per rule family, summed over templates.
    pub fn family_seconds(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.rule_totals().values() {
            *out.entry(s.family.clone()).or_insert(0.0) += s.search_seconds;
        }
        out
    }

    /// Per rule: matches, applied, rejected, summed over templates (each counted once).
    pub fn rule_totals(&self) -> BTreeMap<String, crate::RuleStats> {
        let mut out: BTreeMap<String, crate::RuleStats> = BTreeMap::new();
        for t in &self.templates {
            for (name, s) in &t.saturation.rules {
                let e = out
                    .entry(name.clone())
                    .or_insert_with(|| crate::RuleStats { family: s.family.clone(), ..Default::default() });
                e.matches += s.matches;
                e.applied += s.applied;
                e.rejected += s.rejected;
                e.times_banned += s.times_banned;
                e.search_seconds += s.search_seconds;
            }
        }
        out
    }
}

/// Optimises `graph` for `options.target`; the result verifies and costs no more than `graph`.
pub fn optimize(graph: &Graph, options: &OptimizeOptions) -> Result<Optimized, PassError> {
    let start = Instant::now();
    verify(graph)?;
    let input = graph;
    let folded = crate::fold::fold_constants(graph)?;
    let graph = &folded;
    let rules = all_rules();
    let segs = segments(graph);
    let mut out = Graph::new(graph.name.clone());
    let mut new_id: HashMap<NodeId, NodeId> = HashMap::new();
    // Optimised templates by signature: (the segment they came from, the graph, report index).
    let mut done: HashMap<String, (usize, Graph, usize)> = HashMap::new();
    let mut templates: Vec<TemplateReport> = Vec::new();
    for (k, seg) in segs.iter().enumerate() {
        let sig = signature(graph, seg);
        if !done.contains_key(&sig) {
            let original = standalone(graph, seg)?;
            let seg_result = optimize_segment(&original, &rules, options)?;
            templates.push(TemplateReport {
                layer: seg.layer,
                instances: 0,
                saturation: seg_result.saturation,
                kept_original: seg_result.kept_original,
                exact: seg_result.exact,
            });
            let optimized = seg_result.graph;
            done.insert(sig.clone(), (k, optimized, templates.len() - 1));
        }
        let (from, template, report) = &done[&sig];
        templates[*report].instances += 1;
        let external: Vec<NodeId> = seg.external.iter().map(|e| new_id[e]).collect();
        let exported = instantiate(&mut out, template, &segs[*from], seg, &external)?;
        for (old, new) in seg.exported.iter().zip(exported) {
            new_id.insert(*old, new);
        }
    }
    for (name, id) in graph.outputs() {
        out.set_output(name.clone(), new_id[id])?;
    }
    verify(&out)?;
    let cost_before = graph_cost(input, &options.symbols, &options.target);
    let mut cost_after = graph_cost(&out, &options.symbols, &options.target);
    if cost_after.seconds > cost_before.seconds {
        out = input.clone();
        cost_after = cost_before;
    }
    let report = OptimizeReport {
        graph: input.name.clone(),
        target: options.target.name.clone(),
        symbols: options.symbols.clone(),
        extraction: options.extraction,
        nodes_before: input.len(),
        nodes_after: out.len(),
        cost_before,
        cost_after,
        segments: segs.len(),
        templates,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Optimized { graph: out, report })
}

/// An optimised graph and its report.
#[derive(Clone, Debug)]
pub struct Optimized {
    pub graph: Graph,
    pub report: OptimizeReport,
}

/// The cost of a whole graph: every node once (a DAG). Weight-only computations are free: the
/// runtime computes them once, when it prepares the graph (`saturn_runtime::Prepared`).
pub fn graph_cost(graph: &Graph, symbols: &SymBindings, target: &Target) -> NodeCost {
    let constant = graph.constant_nodes();
    graph.node_ids().filter(|id| !constant[id.index()]).fold(NodeCost::default(), |acc, id| {
        let inputs: Vec<&saturn_ir::TensorType> = graph.inputs(id).iter().map(|&i| graph.ty(i)).collect();
        acc + node_cost(&graph.node(id).op, &inputs, graph.ty(id), symbols, target)
    })
}

/// The seconds one e-node costs on the target (leaves, views and weight-only computations cost
/// nothing).
fn seconds_fn<'a>(options: &'a OptimizeOptions) -> impl Fn(&TensorGraph, &TensorNode) -> f64 + 'a {
    move |eg: &TensorGraph, node: &TensorNode| {
        let constant = !node.children.is_empty() && node.children.iter().all(|&c| eg[c].data.constant);
        if constant {
            return 0.0;
        }
        let inputs: Vec<&saturn_ir::TensorType> = node.children.iter().map(|&c| &eg[c].data.ty).collect();
        let output =
            crate::analysis::node_type(eg, node).unwrap_or_else(|_| eg[node.children[0]].data.ty.clone());
        node_cost(&node.op.op, &inputs, &output, &options.symbols, &options.target).seconds
    }
}

/// A segment after saturation and extraction.
struct SegmentResult {
    graph: Graph,
    saturation: SaturationReport,
    kept_original: bool,
    exact: bool,
}

/// The most combinations of alternatives exact extraction tries.
const EXACT_COMBINATIONS: u64 = 1 << 16;

/// Saturates and extracts one standalone segment; keeps it if nothing cheaper is found.
fn optimize_segment(
    original: &Graph,
    rules: &[Rule],
    options: &OptimizeOptions,
) -> Result<SegmentResult, PassError> {
    let mut loaded = load(original);
    let saturation = saturate(&mut loaded.egraph, rules, &options.limits);
    loaded.canonicalize();
    let roots = loaded.roots();
    let cost = seconds_fn(options);
    let cost: &NodeCostFn = &cost;
    let exact = match options.extraction {
        Extraction::Exact => extract::exact(&loaded.egraph, &roots, cost, EXACT_COMBINATIONS),
        Extraction::Greedy => None,
    };
    let is_exact = exact.is_some();
    let extraction = exact.unwrap_or_else(|| extract::greedy_dag(&loaded.egraph, &roots, cost));
    let built = build(&loaded, &extraction.choice)?;
    verify(&built)?;
    let before = graph_cost(original, &options.symbols, &options.target).seconds;
    let after = graph_cost(&built, &options.symbols, &options.target).seconds;
    let kept_original = after > before;
    let graph = if kept_original { original.clone() } else { built };
    Ok(SegmentResult { graph, saturation, kept_original, exact: is_exact })
}

/// Runs one rule for one iteration on `graph` and extracts, in every class, what the rule added
/// where it added something: the rewritten form, for soundness tests. Returns the graph and
/// how many terms the rule applied.
pub fn apply_rule_for_test(graph: &Graph, rule_name: &str) -> Result<(Graph, usize), PassError> {
    let rules: Vec<Rule> = all_rules().into_iter().filter(|r| r.name == rule_name).collect();
    assert!(!rules.is_empty(), "no rule named {rule_name}");
    let mut loaded = load(graph);
    let original: std::collections::HashSet<TensorNode> =
        loaded.egraph.classes().flat_map(|c| c.nodes.iter().cloned()).collect();
    let limits = Limits { iterations: 1, ..Limits::default() };
    let report = saturate(&mut loaded.egraph, &rules, &limits);
    let applied = report.rules.values().map(|s| s.applied).sum();
    loaded.canonicalize();
    let roots = loaded.roots();
    // Original nodes cost 1, added ones nothing: the cheapest DAG uses what the rule added.
    let canonical: std::collections::HashSet<TensorNode> = original
        .iter()
        .map(|n| TensorNode::new(n.op.clone(), n.children.iter().map(|&c| loaded.egraph.find(c)).collect()))
        .collect();
    let cost = |eg: &TensorGraph, n: &TensorNode| {
        let canon = TensorNode::new(n.op.clone(), n.children.iter().map(|&c| eg.find(c)).collect());
        if canonical.contains(&canon) { 1.0 } else { 0.0 }
    };
    let extraction = extract::greedy_dag(&loaded.egraph, &roots, &cost);
    Ok((build(&loaded, &extraction.choice)?, applied))
}
