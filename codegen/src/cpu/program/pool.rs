//! The threads a large program's kernels split work across, kept polling for work while the
//! program runs.
//!
//! Rayon puts a thread that finds no work to sleep within microseconds, and waking it again
//! takes time, more so on a virtual machine. A decode step is a chain of parallel products of one
//! to a few megabytes (30-150 microseconds each) with serial steps between them (norms, RoPE,
//! routing, attention over the cache): without polling, the product after each serial stretch
//! started with its helper asleep. With polling, the mid-size model's decode took 0.98x the
//! time (BENCHMARKS.md, paired rounds against `SATURN_CPU_POLL=0`).

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

/// Pollers inside their loop.
static POLLERS: AtomicUsize = AtomicUsize::new(0);

/// Pollers that have entered their loop, ever: a test cannot count on seeing one in its loop,
/// which it leaves after [`IDLE_LIMIT`] idle, a shorter time than a busy machine may keep the
/// test's thread off a core.
#[cfg(test)]
static ENTERED: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` on this pool thread while the pool's other threads poll for work (and run it)
/// instead of sleeping.
///
/// The pollers are the other halves of `rayon::join`s (jobs on the stack, so a run allocates
/// nothing): idle threads steal the oldest job first, so each takes one poller, and the join
/// returns once every poller has left, so that none takes the next run's work. A poller also
/// leaves after [`IDLE_LIMIT`] without work: rayon may start a poller inside another job's wait
/// (when other code uses the pool at the same time), and that job then waits at most that long,
/// never forever. Runs on the pool from several threads at once poll only for the first.
pub(super) fn awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = rayon::current_num_threads();
    if rayon::current_thread_index().is_none()
        || threads < 2
        || !polling_enabled()
        || POLLED.swap(true, Ordering::SeqCst)
    {
        return f();
    }
    /// Sets its flag when dropped, also when `f` panics: `done` when `f` returns, `POLLED`
    /// cleared once the pollers have left.
    struct SetOnDrop<'a>(&'a AtomicBool, bool);
    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(self.1, Ordering::SeqCst);
        }
    }
    let _polled = SetOnDrop(&POLLED, false);
    let done = AtomicBool::new(false);
    let (out, ()) = rayon::join(
        || {
            let _done = SetOnDrop(&done, true);
            f()
        },
        || pollers(threads - 1, &done),
    );
    out
}

/// `count` pollers: one here, the others in a job another idle thread steals.
fn pollers(count: usize, done: &AtomicBool) {
    if count > 1 {
        rayon::join(|| poll(done), || pollers(count - 1, done));
    } else {
        poll(done);
    }
}

/// One thread's polling: runs the pool's work as it comes until the run is `done` or no work
/// has come for [`IDLE_LIMIT`].
fn poll(done: &AtomicBool) {
    POLLERS.fetch_add(1, Ordering::SeqCst);
    #[cfg(test)]
    ENTERED.fetch_add(1, Ordering::SeqCst);
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

    /// Waits up to a few seconds for `done()`.
    fn within_seconds(done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if done() {
                return true;
            }
        }
        false
    }

    /// Waits for `n` more pollers than `before` to have entered their loop.
    fn entered(before: usize, n: usize) -> bool {
        within_seconds(|| ENTERED.load(Ordering::SeqCst) >= before + n)
    }

    /// Waits for every poller to have left its loop.
    fn none_polling() -> bool {
        within_seconds(|| POLLERS.load(Ordering::SeqCst) == 0)
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
        let before = ENTERED.load(Ordering::SeqCst);
        let (started, left_when_idle) = pool().install(|| {
            awake(|| {
                let started = entered(before, others);
                spin((IDLE_LIMIT * 3).min(Duration::from_millis(50)));
                (started, none_polling())
            })
        });
        assert!(started, "the other threads did not start polling");
        assert!(left_when_idle, "idle pollers did not leave");
        let before = ENTERED.load(Ordering::SeqCst);
        let busy = pool().install(|| {
            awake(|| {
                assert!(entered(before, others));
                // Parallel work is run (by pollers or by threads they left to rayon).
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
