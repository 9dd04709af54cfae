//! `saturn memory`: weights and KV-cache sizes.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use saturn_frontend::{BytesByDtype, MemoryReport, Phase, load_model, memory_report, phase_graph};

pub fn run(model: &Path, context: Option<u64>, batch: u64, json: bool) -> Result<()> {
    let model = load_model(model)?;
    let context = context.unwrap_or(model.config.max_position_embeddings.min(4096));
    if context == 0 || batch == 0 {
        bail!("--context and --batch must be at least 1");
    }
    if context > model.config.max_position_embeddings {
        bail!(
            "--context {context} is beyond the model's max_position_embeddings ({})",
            model.config.max_position_embeddings
        );
    }
    let graph = phase_graph(&model.config, Phase::Chunked)?;
    let report = memory_report(&model, &graph, context, batch)?;
    let text = if json { serde_json::to_string_pretty(&report)? + "\n" } else { table(&report) };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(())
}

fn table(r: &MemoryReport) -> String {
    let mut s = String::new();
    let dtypes: Vec<&str> = r.weight_bytes.0.iter().map(|(d, _)| d.as_str()).collect();
    let row = |s: &mut String, label: &str, b: &BytesByDtype| {
        let cells: String = b.0.iter().map(|(_, n)| format!("{:>14}", human(*n))).collect();
        writeln!(s, "  {label:<28}{cells}").unwrap();
    };
    writeln!(s, "{} with {} layers", r.model_type, r.layers).unwrap();
    writeln!(s, "parameters: {}", group(r.parameters)).unwrap();
    let header: String = dtypes.iter().map(|d| format!("{d:>14}")).collect();
    writeln!(s, "\nweights{:<23}{header}", "").unwrap();
    row(&mut s, "all parameters", &r.weight_bytes);
    if let Some(stored) = r.stored_weight_bytes {
        writeln!(s, "  as stored: {}", human(stored)).unwrap();
    }
    writeln!(
        s,
        "\nKV cache per token per layer: {} = {} elements",
        r.cache_layout, r.cache_elements_per_token_per_layer
    )
    .unwrap();
    writeln!(
        s,
        "  (expanded keys and values would be {} elements: {:.1}x more)",
        group(r.expanded_kv_elements_per_token_per_layer),
        r.expanded_kv_elements_per_token_per_layer as f64 / r.cache_elements_per_token_per_layer as f64
    )
    .unwrap();
    writeln!(s, "KV cache per token ({} layers): {} elements", r.layers, group(r.cache_elements_per_token))
        .unwrap();
    writeln!(
        s,
        "KV cache for context {} x batch {}: {} elements",
        r.context,
        r.batch,
        group(r.cache_elements_total)
    )
    .unwrap();
    writeln!(s, "\nKV cache bytes{:<16}{header}", "").unwrap();
    row(&mut s, "per token per layer", &r.cache_bytes_per_token_per_layer);
    row(&mut s, "per token", &r.cache_bytes_per_token);
    row(&mut s, "total", &r.cache_bytes_total);
    s
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes with a binary unit: `1152 B`, `35.2 KiB`, `1.25 TiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}
