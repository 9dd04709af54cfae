//! The threads a large program's kernels split work across, kept polling for work while the
//! program runs.
//!
//! Rayon puts an idle thread to sleep after about 20 microseconds, and waking it again costs
//! 15-40 microseconds on a virtual machine. A decode step is a chain of parallel products of one
//! to a few megabytes (30-150 microseconds each) with serial steps between them (norms, RoPE,
//! routing, attention over the cache): without polling, the product after each serial stretch
//! started with its helper asleep. In the mid-size model's decode, the product after attention
//! took 46 microseconds per layer instead of 28, and a step 0.98x the time with polling
//! (BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The pool: one thread per core.
pub(super) fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("saturn-cpu-{i}"))
            .build()
            .unwrap_or_else(|_| {
                rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool")
            })
    })
}

/// How long a poller goes without finding work before it leaves its thread to rayon (which
/// puts it to sleep): longer than any serial stretch of a decode step, and short enough that a
/// poller rayon starts inside another job's wait holds that job up by little.
const IDLE_LIMIT: Duration = Duration::from_millis(1);

/// Whether runs poll: unless `SATURN_CPU_POLL=0` (read once), for machines shared with other
/// work, where spinning threads would take its time.
fn polling_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("SATURN_CPU_POLL").is_none_or(|v| v != "0"))
}

/// Whether a run has pollers now: one run at a time does.
static POLLED: AtomicBool = AtomicBool::new(false);

/// Pollers inside their loop (of the one polled run, or leaving one that ended).
static POLLERS: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` on this pool thread while the pool's other threads poll for work (and run it)
/// instead of sleeping.
///
/// Returns once `f` has and every poller has left, so that no poller of this run takes the
/// next run's work. A poller also leaves after [`IDLE_LIMIT`] without work: rayon may start a
/// poller inside another job's wait (when other code uses the pool at the same time), and that
/// job then waits at most that long, never forever. Runs on the pool from several threads at
/// once poll only for the first.
pub(super) fn awake<R>(f: impl FnOnce() -> R) -> R {
    let runner = rayon::current_thread_index();
    if runner.is_none()
        || rayon::current_num_threads() < 2
        || !polling_enabled()
        || POLLED.swap(true, Ordering::SeqCst)
    {
        return f();
    }
    /// Ends the run's polling, also when `f` panics: `done` is the run's flag.
    struct End(Arc<AtomicBool>);
    impl Drop for End {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            while POLLERS.load(Ordering::SeqCst) > 0 {
                std::hint::spin_loop();
            }
            POLLED.store(false, Ordering::SeqCst);
        }
    }
    let end = End(Arc::new(AtomicBool::new(false)));
    let done = Arc::clone(&end.0);
    rayon::spawn_broadcast(move |thread| {
        if Some(thread.index()) != runner {
            poll(&done);
        }
    });
    f()
}

/// One thread's polling: runs the pool's work as it comes until the run is `done` or no work
/// has come for [`IDLE_LIMIT`]. [`POLLERS`] is raised before `done` is read, and the run sets
/// `done` before it reads [`POLLERS`]: either the run waits for this poller, or this poller
/// sees `done`.
fn poll(done: &AtomicBool) {
    POLLERS.fetch_add(1, Ordering::SeqCst);
    let mut idle_since = Instant::now();
    while !done.load(Ordering::SeqCst) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > IDLE_LIMIT {
            break;
        } else {
            std::hint::spin_loop();
        }
    }
    POLLERS.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The tests here share the pool's one polled run.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn spin(d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {}
    }

    /// Waits up to a second for `POLLERS` to equal `n`.
    fn pollers_reach(n: usize) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            if POLLERS.load(Ordering::SeqCst) == n {
                return true;
            }
        }
        false
    }

    /// While a run does serial work, the other threads poll; one without work for longer than
    /// the idle limit leaves before the run ends; none is left when `awake` returns.
    #[test]
    fn pollers_come_and_leave() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if pool().current_num_threads() < 2 {
            return;
        }
        let others = pool().current_num_threads() - 1;
        let (started, left_when_idle) = pool().install(|| {
            awake(|| {
                let started = pollers_reach(others);
                spin((IDLE_LIMIT * 3).min(Duration::from_millis(50)));
                (started, pollers_reach(0))
            })
        });
        assert!(started, "the other threads did not start polling");
        assert!(left_when_idle, "idle pollers did not leave");
        let busy = pool().install(|| {
            awake(|| {
                assert!(pollers_reach(others));
                // Parallel work keeps them: they run it.
                (0..2000u64).into_par_iter().map(|i| i * i).sum::<u64>()
            })
        });
        assert_eq!(busy, (0..2000u64).map(|i| i * i).sum::<u64>());
        assert_eq!(POLLERS.load(Ordering::SeqCst), 0);
        assert!(!POLLED.load(Ordering::SeqCst));
    }

    /// Runs with pollers from several threads at once (each with a serial stretch, then
    /// parallel work) all finish with the right results, and polling is off afterwards.
    #[test]
    fn concurrent_runs_finish() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let runs: Vec<_> = (0..4u64)
            .map(|seed| {
                std::thread::spawn(move || {
                    (0..50u64)
                        .map(|round| {
                            pool().install(|| {
                                awake(|| {
                                    spin(Duration::from_micros(100));
                                    (0..64u64)
                                        .into_par_iter()
                                        .map(|i| {
                                            spin(Duration::from_micros(5));
                                            i * seed + round
                                        })
                                        .sum::<u64>()
                                })
                            })
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        for (seed, run) in runs.into_iter().enumerate() {
            let want: u64 =
                (0..50u64).map(|round| (0..64u64).map(|i| i * seed as u64 + round).sum::<u64>()).sum();
            assert_eq!(run.join().expect("a run thread"), want);
        }
        assert_eq!(POLLERS.load(Ordering::SeqCst), 0);
        assert!(!POLLED.load(Ordering::SeqCst));
    }
}
