//! Graph to text.

use std::fmt::Write;

use crate::graph::Graph;
use crate::op::Attr;

/// Prints `graph` in the text form (see the module docs).
pub fn print(graph: &Graph) -> String {
    let mut out = String::with_capacity(graph.len() * 80);
    writeln!(out, "graph {} {{", quote(&graph.name)).unwrap();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let operands: Vec<String> =
            graph.inputs(id).iter().map(|&i| format!("%{}", graph.node(i).name)).collect();
        write!(out, "  %{} = {}({})", node.name, node.op.name(), operands.join(", ")).unwrap();
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={}", attr(v))).collect();
            write!(out, " {{{}}}", parts.join(", ")).unwrap();
        }
        writeln!(out, " : {}", node.ty).unwrap();
    }
    for (name, id) in graph.outputs() {
        writeln!(out, "  output {name} = %{}", graph.node(*id).name).unwrap();
    }
    out.push_str("}\n");
    out
}

fn attr(v: &Attr) -> String {
    match v {
        Attr::Int(i) => i.to_string(),
        Attr::Float(f) => format!("{f:?}"),
        Attr::Bool(b) => b.to_string(),
        Attr::Str(s) => quote(s),
        Attr::Ident(s) => s.clone(),
        Attr::Dim(d) => d.to_string(),
        Attr::Dims(ds) => crate::dim::fmt_shape(ds),
        Attr::Ints(is) => {
            let parts: Vec<String> = is.iter().map(i64::to_string).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// A double-quoted string; `\` and `"` are escaped, as are newlines and tabs.
pub(crate) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
