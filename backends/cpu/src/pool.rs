//! A pool of worker threads for short parallel loops. A decoding step runs
//! dozens of products of tens of microseconds each; waking sleeping threads
//! (as a general-purpose pool does, or spawning them) costs about as much as
//! the product. These workers spin for a while after each job, so the next
//! one starts in well under a microsecond, and then sleep.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// One parallel loop: `tasks` calls of `f`, handed out one at a time.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

/// The pool: the published job, its sequence number, and the workers' state.
struct Pool {
    job: AtomicPtr<Job>,
    epoch: AtomicUsize,
    /// Workers inside a job (reading `job`).
    active: AtomicUsize,
    /// Whether a caller holds the pool (nested or concurrent loops run serially).
    busy: AtomicBool,
    sleep: Mutex<usize>,
    wake: Condvar,
    workers: usize,
}

// SAFETY: the job pointer is only dereferenced while its caller waits for it (see `parallel`).
unsafe impl Sync for Pool {}
// SAFETY: as above.
unsafe impl Send for Pool {}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let p: &'static Pool = Box::leak(Box::new(Pool {
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            sleep: Mutex::new(0),
            wake: Condvar::new(),
            workers: threads.saturating_sub(1),
        }));
        for _ in 0..p.workers {
            std::thread::spawn(move || p.work());
        }
        p
    })
}

impl Pool {
    fn work(&self) {
        let mut seen = self.epoch.load(SeqCst);
        loop {
            let start = Instant::now();
            while self.epoch.load(SeqCst) == seen {
                if start.elapsed() > SPIN {
                    let guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
                    if self.epoch.load(SeqCst) == seen {
                        drop(self.wake.wait_timeout(guard, Duration::from_millis(50)));
                    }
                } else {
                    std::hint::spin_loop();
                }
            }
            seen = self.epoch.load(SeqCst);
            self.active.fetch_add(1, SeqCst);
            let job = self.job.load(SeqCst);
            if !job.is_null() {
                // SAFETY: the caller clears `job` and then waits until `active` is 0
                // before its job goes out of scope, so a non-null pointer is live here.
                unsafe { run_tasks(&*job) };
            }
            self.active.fetch_sub(1, SeqCst);
        }
    }
}

/// Runs the job's remaining tasks on this thread.
///
/// # Safety
/// The job's closure must be alive.
unsafe fn run_tasks(job: &Job) {
    loop {
        let t = job.next.fetch_add(1, SeqCst);
        if t >= job.tasks {
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { (*job.f)(t) };
        job.done.fetch_add(1, SeqCst);
    }
}

/// How many threads [`parallel`] runs on (the caller's included).
pub fn threads() -> usize {
    pool().workers + 1
}

/// Calls `f(0)`, …, `f(tasks − 1)`, spread over the pool's workers and the
/// calling thread; returns when all have run. A call made while another is
/// running (from inside `f`, or from another thread) runs serially.
pub fn parallel(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let p = pool();
    if tasks <= 1 || p.workers == 0 || p.busy.swap(true, SeqCst) {
        (0..tasks).for_each(f);
        return;
    }
    // SAFETY (the lifetime erasure): `job` lives until every worker has left it (below).
    let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let job = Job { f, tasks, next: AtomicUsize::new(0), done: AtomicUsize::new(0) };
    p.job.store(&job as *const Job as *mut Job, SeqCst);
    p.epoch.fetch_add(1, SeqCst);
    {
        let _guard = p.sleep.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_all();
    }
    // SAFETY: `job` is alive on this stack frame.
    unsafe { run_tasks(&job) };
    while job.done.load(SeqCst) < tasks {
        std::hint::spin_loop();
    }
    p.job.store(std::ptr::null_mut(), SeqCst);
    while p.active.load(SeqCst) > 0 {
        std::hint::spin_loop();
    }
    p.busy.store(false, SeqCst);
}

/// Calls `f(i, chunk)` for the `chunk`-long pieces of `data` (the last may be
/// shorter), in parallel as [`parallel`] does.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let (len, base) = (data.len(), Base(data.as_mut_ptr()));
    parallel(len.div_ceil(chunk), &|i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: task i gets elements start..start + n, disjoint from every other task's.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(i, piece)
    });
}

/// A slice's base pointer shared by the tasks that split it.
struct Base<T>(*mut T);
// SAFETY: the tasks touch disjoint elements (see `for_each_chunk`).
unsafe impl<T: Send> Sync for Base<T> {}
impl<T> Base<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_and_nested_calls_run_serially() {
        for tasks in [0, 1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            parallel(tasks, &|t| {
                hits[t].fetch_add(1, SeqCst);
                parallel(3, &|_| {});
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
        }
    }
}
