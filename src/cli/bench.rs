//! `saturn bench`: prefill and decode throughput of a model, and how close decode comes to the
//! machine's memory-bandwidth limit.
//!
//! Prefill: the prompt from an empty cache, timed over `--repeat` fresh sessions (median).
//! Decode: after that prefill, `--decode-tokens` greedy steps of one token each (median over
//! the repeats of the whole loop). The bandwidth limit of decode is the machine's copy
//! bandwidth (measured here, STREAM-style: bytes read plus bytes written per second, over
//! buffers far larger than the caches) divided by the bytes one decode step reads (weights
//! once, the experts a token uses, the KV cache at the loop's middle position).
//!
//! Copy bandwidth counts each byte copied once (bytes per second of `memcpy`, as `mbw` reports
//! it; STREAM would count the read and the write, twice this). Decode only reads, and a pure
//! read stream runs faster than a copy, so the read bandwidth (a parallel sum over the same
//! buffer) is measured too and gives a stricter limit.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use saturn_frontend::{Logits, load_model};
use saturn_runtime::op_bench::median;
use saturn_runtime::{Limits, Session};
use serde::Serialize;

use super::RunArgs;
use super::optimize::RunGraphs;

#[derive(Serialize)]
struct Report {
    model: String,
    backend: String,
    threads: usize,
    prompt_tokens: usize,
    decode_tokens: usize,
    repeat: usize,
    load_seconds: f64,
    prefill_seconds: f64,
    prefill_tokens_per_s: f64,
    decode_seconds: f64,
    decode_tokens_per_s: f64,
    decode_bytes_per_token: Option<u64>,
    copy_bandwidth_bytes_per_s: Option<f64>,
    bandwidth_limit_tokens_per_s: Option<f64>,
    bandwidth_fraction: Option<f64>,
    read_bandwidth_bytes_per_s: Option<f64>,
    read_limit_tokens_per_s: Option<f64>,
    read_fraction: Option<f64>,
    generated_ids: Vec<u64>,
}

pub struct BenchArgs {
    pub prompt: Vec<u64>,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub json: bool,
    pub profile: bool,
}

pub fn run(model_path: &Path, args: &BenchArgs, run: &RunArgs) -> Result<()> {
    if args.decode_tokens == 0 || args.repeat == 0 {
        bail!("--decode-tokens and --repeat must be at least 1");
    }
    let start = Instant::now();
    let model = load_model(model_path)?;
    let graphs = RunGraphs::new(&model.config, run.opt_level, run.opt_target(), Logits::Last)?;
    let limits =
        Limits { vocab_size: model.config.vocab_size, max_positions: model.config.max_position_embeddings };
    let all = args.prompt.len() + args.decode_tokens;
    saturn_runtime::check_ids(&args.prompt, limits)?;
    if all as u64 > limits.max_positions {
        bail!("{all} positions are beyond the model's max_position_embeddings ({})", limits.max_positions);
    }
    let weights = model.open_weights(&graphs.forward)?;
    let prepared = graphs.prepare(weights.as_ref())?;
    let programs = run.compile(&prepared)?;
    let executor = super::executor(&prepared, &programs)?;
    let weights = run.weights(&prepared);
    let load_seconds = start.elapsed().as_secs_f64();

    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let mut generated_ids = Vec::new();
    let mut profiles = Vec::new();
    let rounds = args.repeat + 1 + usize::from(args.profile);
    for round in 0..rounds {
        let mut session = executor.session(&weights, limits)?;
        session.reserve(all);
        // Profiling times every step, so only an extra last round is profiled.
        let profiled = args.profile && round == rounds - 1;
        if profiled {
            session.enable_profile();
        }
        let t = Instant::now();
        session.prefill_in_place(&args.prompt)?;
        let mut next = saturn_runtime::argmax(session.last_row());
        prefill.push(t.elapsed().as_secs_f64());
        if profiled {
            profiles.push(("prefill", session.profile()));
        }
        let t = Instant::now();
        let ids = decode_loop(&mut session, &mut next, args.decode_tokens)?;
        decode.push(t.elapsed().as_secs_f64());
        if profiled {
            profiles.push(("prefill + decode", session.profile()));
        }
        generated_ids = ids;
    }
    if args.profile {
        prefill.pop();
        decode.pop();
        for (phase, profile) in &profiles {
            eprintln!("profile of {phase} (seconds, calls):");
            for (kernel, seconds, calls) in profile {
                eprintln!("  {kernel:<22} {seconds:>9.4} {calls:>7}");
            }
        }
    }
    // The first round warms caches and page tables; it is not counted.
    let (prefill_seconds, decode_seconds) = (median(&prefill[1..]), median(&decode[1..]));
    let middle = (args.prompt.len() + args.decode_tokens / 2) as u64;
    let decode_bytes_per_token = programs.cpu().map(|p| p.bytes_read(middle, 1)).transpose()?;
    let bandwidth = decode_bytes_per_token.map(|_| measure_bandwidth());
    let decode_tokens_per_s = args.decode_tokens as f64 / decode_seconds;
    let limit_at = |bw: Option<f64>| decode_bytes_per_token.zip(bw).map(|(b, bw)| bw / b as f64);
    let (copy_bandwidth, read_bandwidth) = (bandwidth.map(|b| b.0), bandwidth.map(|b| b.1));
    let (limit, read_limit) = (limit_at(copy_bandwidth), limit_at(read_bandwidth));
    let report = Report {
        model: model_path.display().to_string(),
        backend: run.backend_name(),
        threads: rayon_threads(),
        prompt_tokens: args.prompt.len(),
        decode_tokens: args.decode_tokens,
        repeat: args.repeat,
        load_seconds,
        prefill_seconds,
        prefill_tokens_per_s: args.prompt.len() as f64 / prefill_seconds,
        decode_seconds,
        decode_tokens_per_s,
        decode_bytes_per_token,
        copy_bandwidth_bytes_per_s: copy_bandwidth,
        bandwidth_limit_tokens_per_s: limit,
        bandwidth_fraction: limit.map(|l| decode_tokens_per_s / l),
        read_bandwidth_bytes_per_s: read_bandwidth,
        read_limit_tokens_per_s: read_limit,
        read_fraction: read_limit.map(|l| decode_tokens_per_s / l),
        generated_ids,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!("{} on {} ({} threads), loaded in {:.2} s", r.model, r.backend, r.threads, r.load_seconds);
    println!(
        "prefill: {} tokens in {:.4} s: {:.1} tokens/s (median of {})",
        r.prompt_tokens, r.prefill_seconds, r.prefill_tokens_per_s, r.repeat
    );
    println!(
        "decode:  {} tokens in {:.4} s: {:.1} tokens/s (median of {})",
        r.decode_tokens, r.decode_seconds, r.decode_tokens_per_s, r.repeat
    );
    if let (Some(b), Some(bw), Some(l), Some(f)) = (
        r.decode_bytes_per_token,
        r.copy_bandwidth_bytes_per_s,
        r.bandwidth_limit_tokens_per_s,
        r.bandwidth_fraction,
    ) {
        println!(
            "decode reads {:.1} MB per token; copy bandwidth {:.1} GB/s: limit {:.1} tokens/s, reached {:.0}%",
            b as f64 / 1e6,
            bw / 1e9,
            l,
            100.0 * f
        );
    }
    if let (Some(bw), Some(l), Some(f)) =
        (r.read_bandwidth_bytes_per_s, r.read_limit_tokens_per_s, r.read_fraction)
    {
        println!("read bandwidth {:.1} GB/s: limit {:.1} tokens/s, reached {:.0}%", bw / 1e9, l, 100.0 * f);
    }
}

/// Greedy decode steps after a prefill whose choice is `next`; returns the generated ids.
fn decode_loop(session: &mut Session, next: &mut u64, steps: usize) -> Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(steps + 1);
    ids.push(*next);
    for _ in 0..steps {
        session.extend_in_place(&[*next])?;
        *next = saturn_runtime::argmax(session.last_row());
        ids.push(*next);
    }
    Ok(ids)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine's copy and read bandwidths in bytes per second: the best of a few copies (each
/// byte counted once) and of a few sums of a 256 MiB buffer, split across the threads.
fn measure_bandwidth() -> (f64, f64) {
    const BYTES: usize = 256 << 20;
    let src = vec![1f32; BYTES / 4];
    let mut dst = vec![0f32; BYTES / 4];
    let threads = rayon_threads();
    let chunk = (BYTES / 4).div_ceil(threads);
    let best = |run: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let copy = best(&mut || {
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        })
    });
    let mut total = 0f32;
    let read = best(&mut || {
        total += std::thread::scope(|s| {
            let parts: Vec<_> = src.chunks(chunk).map(|c| s.spawn(move || sum(c))).collect();
            parts.into_iter().map(|p| p.join().unwrap_or(0.0)).sum::<f32>()
        })
    });
    std::hint::black_box((&dst, total));
    (BYTES as f64 / copy, BYTES as f64 / read)
}

/// A sum in 16 independent lanes, so the loop runs at memory speed, not at add latency.
fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for c in v.chunks_exact(16) {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum()
}
