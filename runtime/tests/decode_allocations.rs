//! A decode step on the cpu backend allocates nothing once a session has reserved its length:
//! the arena, scratch buffers and KV cache are reused, the logits are borrowed. A later
//! session reuses a finished one's workspace.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use saturn_frontend::{Model, Phase, load_model, phase_graph};
use saturn_runtime::{Backend, CpuPrograms, Executor, Limits, PhaseGraphs, Prepared};

/// Counts every allocation of the process (every thread, the kernels' pool included).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests count the whole process's allocations: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// The tiny V3 model's checkpoint.
fn tiny() -> Model {
    load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/deepseek-v3-tiny")).unwrap()
}

/// The mini V3 spec (seeded random weights) with a vocabulary of 4096: over 4 MiB of weights,
/// so its programs run on the kernels' pool with the other threads polling for work.
fn large() -> Model {
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/deepseek-v3-mini.toml"),
    )
    .unwrap()
    .replace("vocab_size = 512", "vocab_size = 4096");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deepseek-v3-mini-4096.toml");
    std::fs::write(&path, spec).unwrap();
    load_model(&path).unwrap()
}

/// The model's forward, prefill and decode graphs, optimised for the cpu.
fn graphs(model: &Model) -> Vec<saturn_ir::Graph> {
    let optimise = |phase: Phase, syms: &[(&str, u64)]| {
        let mut options = saturn_passes::OptimizeOptions::for_target("cpu").unwrap();
        options.symbols = syms.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        saturn_passes::optimize(&phase_graph(&model.config, phase).unwrap(), &options).unwrap().graph
    };
    vec![
        optimise(Phase::Chunked, &[("S", 1), ("P", 64)]),
        optimise(Phase::Prefill, &[("S", 8)]),
        optimise(Phase::Decode, &[("P", 64)]),
    ]
}

/// Runs `f` on an executor of the model's compiled programs.
fn with_executor(model: Model, f: impl FnOnce(&Executor, &Prepared, Limits, usize)) {
    let graphs = graphs(&model);
    let weights = model.open_weights(&graphs[0]).unwrap();
    let prepared = Prepared::new(&[&graphs[0], &graphs[1], &graphs[2]], weights.as_ref()).unwrap();
    let [forward, prefill, decode] = &prepared.graphs[..] else { unreachable!("three graphs") };
    let phases = PhaseGraphs { prefill: Some(prefill), decode: Some(decode) };
    let programs = CpuPrograms::compile(forward, phases, &prepared).unwrap();
    let executor = Executor { graph: forward, phases, backend: Backend::Cpu(&programs) };
    let limits =
        Limits { vocab_size: model.config.vocab_size, max_positions: model.config.max_position_embeddings };
    f(&executor, &prepared, limits, model.config.vocab_size as usize);
}

/// Thirty greedy decode steps after a prompt, counted once two steps have warmed up: none
/// allocates.
fn decode_steps_allocate_nothing(model: Model) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    with_executor(model, |executor, prepared, limits, vocab| {
        let mut session = executor.session(prepared, limits).unwrap();
        session.reserve(40);
        let argmax = |logits: &[f32]| saturn_runtime::argmax(&logits[logits.len() - vocab..]);
        let mut next = argmax(session.prefill_in_place(&[3, 17, 42]).unwrap());
        // Warm up: the first decode step plans the decode program and grows the scratch buffers.
        for _ in 0..2 {
            next = argmax(session.extend_in_place(&[next]).unwrap());
        }
        let before = allocations();
        for _ in 0..30 {
            next = argmax(session.extend_in_place(&[next]).unwrap());
        }
        let allocations = allocations() - before;
        assert_eq!(allocations, 0, "30 decode steps allocated {allocations} times");
        assert_eq!(session.position(), 35);
    });
}

#[test]
fn decode_steps_allocate_nothing_on_the_cpu_backend() {
    decode_steps_allocate_nothing(tiny());
}

/// The same with a program large enough to run on the pool, its other threads polling.
#[test]
fn decode_steps_of_a_large_program_allocate_nothing() {
    decode_steps_allocate_nothing(large());
}

#[test]
fn a_later_session_reuses_a_finished_ones_workspace() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    with_executor(tiny(), |executor, prepared, limits, vocab| {
        // A prompt and three greedy steps; the logits of every run, and the allocations.
        let run = || {
            let before = allocations();
            let mut session = executor.session(prepared, limits).unwrap();
            let mut logits = session.prefill_in_place(&[3, 17, 42, 5, 9]).unwrap().to_vec();
            for _ in 0..3 {
                let next = saturn_runtime::argmax(&logits[logits.len() - vocab..]);
                logits.extend_from_slice(session.extend_in_place(&[next]).unwrap());
            }
            (logits, allocations() - before)
        };
        let (first, fresh) = run();
        let (second, reused) = run();
        assert_eq!(first, second, "a recycled workspace changed the results");
        // What remains are the session's own buffers (its KV cache, ids, these logits), not
        // the arena, plans and scratch of every kernel.
        assert!(reused * 2 < fresh, "the second session allocated {reused} times, the first {fresh}");
    });
}
