//! The saturation loop: rules searched and applied in rounds, bounded by iteration, node and
//! time limits, with a backoff scheduler that benches rules that match too often.
//!
//! Each iteration searches every rule (read-only), then adds and unions all proposed terms,
//! then rebuilds. A term that does not type is dropped. The loop stops when an iteration
//! changes nothing (saturated) or a limit is reached; either way the e-graph is valid.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use egg::Id;
use serde::Serialize;

use crate::analysis::{TensorGraph, node_type};
use crate::lang::TensorNode;
use crate::rules::{Arg, Family, Rule, Term};

/// Bounds on saturation.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
    /// Matches per rule per iteration before the rule is benched (doubles on each bench).
    pub match_limit: usize,
    /// Iterations a benched rule sits out (doubles on each bench).
    pub ban_length: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            iterations: 12,
            nodes: 100_000,
            time: Duration::from_millis(1500),
            match_limit: 2_000,
            ban_length: 2,
        }
    }
}

/// Why saturation stopped.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An iteration added nothing new: every rule has been applied everywhere.
    Saturated,
    IterationLimit,
    NodeLimit,
    TimeLimit,
}

impl StopReason {
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Saturated => "saturated",
            StopReason::IterationLimit => "iteration_limit",
            StopReason::NodeLimit => "node_limit",
            StopReason::TimeLimit => "time_limit",
        }
    }
}

/// What one rule did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RuleStats {
    pub family: String,
    /// Terms proposed.
    pub matches: usize,
    /// Terms that changed the e-graph (added a node or merged two classes).
    pub applied: usize,
    /// Terms dropped because they did not type (a shape condition did not hold).
    pub rejected: usize,
    pub times_banned: usize,
    pub search_seconds: f64,
}

/// The outcome of [`saturate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SaturationReport {
    pub stop_reason: StopReason,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub seconds: f64,
    pub rules: BTreeMap<String, RuleStats>,
}

/// Runs `rules` on `egraph` until saturation or a limit.
pub fn saturate(egraph: &mut TensorGraph, rules: &[Rule], limits: &Limits) -> SaturationReport {
    let start = Instant::now();
    let mut stats: BTreeMap<String, RuleStats> = BTreeMap::new();
    for r in rules {
        stats
            .entry(r.name.into())
            .or_insert_with(|| RuleStats { family: family_name(r.family), ..Default::default() });
    }
    let mut banned_until: BTreeMap<&str, usize> = BTreeMap::new();
    let mut iterations = 0;
    let stop_reason = loop {
        if iterations >= limits.iterations {
            break StopReason::IterationLimit;
        }
        if start.elapsed() >= limits.time {
            break StopReason::TimeLimit;
        }
        if egraph.total_number_of_nodes() >= limits.nodes {
            break StopReason::NodeLimit;
        }
        iterations += 1;
        let index = index_by_op(egraph);
        let mut proposals: Vec<(&str, Id, Term)> = Vec::new();
        let mut any_banned = false;
        for rule in rules {
            if banned_until.get(rule.name).is_some_and(|&until| iterations < until) {
                any_banned = true;
                continue;
            }
            let t = Instant::now();
            let mut found: Vec<(&str, Id, Term)> = Vec::new();
            for root in rule.roots {
                for (class, node) in index.get(root).map(Vec::as_slice).unwrap_or_default() {
                    found.extend(
                        (rule.find)(egraph, *class, node).into_iter().map(|term| (rule.name, *class, term)),
                    );
                }
            }
            let s = stats.get_mut(rule.name).expect("registered above");
            s.search_seconds += t.elapsed().as_secs_f64();
            let threshold = limits.match_limit << s.times_banned;
            if found.len() > threshold {
                banned_until.insert(rule.name, iterations + (limits.ban_length << s.times_banned));
                s.times_banned += 1;
                any_banned = true;
                continue;
            }
            s.matches += found.len();
            proposals.extend(found);
        }
        let mut changed = false;
        for (name, class, term) in proposals {
            let s = stats.get_mut(name).expect("registered above");
            let before = egraph.total_number_of_nodes();
            match add_term(egraph, &term).filter(|&id| egraph[id].data.ty == egraph[class].data.ty) {
                Some(id) => {
                    let merged = egraph.union(class, id);
                    if merged || egraph.total_number_of_nodes() != before {
                        s.applied += 1;
                        changed = true;
                    }
                }
                // A term that does not type, or types differently from the class, is dropped.
                None => s.rejected += 1,
            }
        }
        egraph.rebuild();
        if !changed && !any_banned {
            break StopReason::Saturated;
        }
    };
    SaturationReport {
        stop_reason,
        iterations,
        egraph_nodes: egraph.total_number_of_nodes(),
        egraph_classes: egraph.number_of_classes(),
        seconds: start.elapsed().as_secs_f64(),
        rules: stats,
    }
}

fn family_name(f: Family) -> String {
    f.name().to_string()
}

/// Every e-node by op name, in class order (deterministic).
fn index_by_op(egraph: &TensorGraph) -> BTreeMap<&'static str, Vec<(Id, TensorNode)>> {
    let mut classes: Vec<&egg::EClass<TensorNode, _>> = egraph.classes().collect();
    classes.sort_by_key(|c| c.id);
    let mut index: BTreeMap<&'static str, Vec<(Id, TensorNode)>> = BTreeMap::new();
    for class in classes {
        for node in &class.nodes {
            index.entry(node.name()).or_default().push((class.id, node.clone()));
        }
    }
    index
}

/// Adds a term's nodes after type-checking each; `None` if one does not type.
fn add_term(egraph: &mut TensorGraph, term: &Term) -> Option<Id> {
    match term {
        Term::Class(id) => Some(*id),
        Term::Nodes(nodes) => {
            let mut ids: Vec<Id> = Vec::with_capacity(nodes.len());
            for (op, args) in nodes {
                let children = args
                    .iter()
                    .map(|a| match a {
                        Arg::Class(c) => *c,
                        Arg::Node(i) => ids[*i],
                    })
                    .collect();
                let node = TensorNode::new(op.clone(), children);
                node_type(egraph, &node).ok()?;
                ids.push(egraph.add(node));
            }
            ids.last().copied()
        }
    }
}
