//! A decode step on the cpu backend allocates nothing once a session has reserved its length:
//! the arena, scratch buffers and KV cache are reused, the logits are borrowed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use saturn_frontend::{Phase, load_model, phase_graph};
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

#[test]
fn decode_steps_allocate_nothing_on_the_cpu_backend() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/deepseek-v3-tiny");
    let model = load_model(&root).unwrap();
    let optimise = |phase: Phase, syms: &[(&str, u64)]| {
        let mut options = saturn_passes::OptimizeOptions::for_target("cpu").unwrap();
        options.symbols = syms.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        saturn_passes::optimize(&phase_graph(&model.config, phase).unwrap(), &options).unwrap().graph
    };
    let graphs = [
        optimise(Phase::Chunked, &[("S", 1), ("P", 64)]),
        optimise(Phase::Prefill, &[("S", 8)]),
        optimise(Phase::Decode, &[("P", 64)]),
    ];
    let weights = model.open_weights(&graphs[0]).unwrap();
    let prepared = Prepared::new(&[&graphs[0], &graphs[1], &graphs[2]], weights.as_ref()).unwrap();
    let [forward, prefill, decode] = &prepared.graphs[..] else { unreachable!("three graphs") };
    let phases = PhaseGraphs { prefill: Some(prefill), decode: Some(decode) };
    let programs = CpuPrograms::compile(forward, phases, &prepared).unwrap();
    let executor = Executor { graph: forward, phases, backend: Backend::Cpu(&programs) };
    let limits =
        Limits { vocab_size: model.config.vocab_size, max_positions: model.config.max_position_embeddings };
    let mut session = executor.session(&prepared, limits).unwrap();
    session.reserve(40);
    let vocab = model.config.vocab_size as usize;
    let argmax = |logits: &[f32]| saturn_runtime::argmax(&logits[logits.len() - vocab..]);
    let mut next = argmax(session.prefill_in_place(&[3, 17, 42]).unwrap());
    // Warm up: the first decode step plans the decode program and grows the scratch buffers.
    for _ in 0..2 {
        next = argmax(session.extend_in_place(&[next]).unwrap());
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..30 {
        next = argmax(session.extend_in_place(&[next]).unwrap());
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(allocations, 0, "30 decode steps allocated {allocations} times");
    assert_eq!(session.position(), 35);
}
