//! The thread pool kernel calls are split over: persistent workers plus the calling thread.
//!
//! A decode step makes a few hundred small matmul calls, so the cost of starting one matters as
//! much as the kernels: going through rayon (inject a job, wake a worker, block the caller until
//! it is woken again) costs ~15-20 us per call. Here the caller publishes the call, wakes any
//! sleeping worker and starts on the items itself; workers join as soon as they run. When the
//! caller has taken the last item it closes the call and waits only for workers that actually
//! joined, so a worker that wakes late never delays it. Idle workers poll for a while (`POLL`,
//! enough to catch the next call of a decode step) and then sleep. Attention runs on this pool
//! too, so within a step nothing else needs the cores.
//! The pool has as many participants as rayon's global pool has threads (`RAYON_NUM_THREADS`).
//! If the pool is busy (a second thread calling kernels at the same time), the call falls back
//! to rayon. Nothing is allocated per call.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker keeps polling for the next call before it sleeps. Long enough to span
/// the serial work between two matmuls of a decode step (norms, RoPE, sampling): a worker that
/// slept there needs a futex wake-up and joins each call late (200 us against 5 us: +15-25%
/// single-sequence decode on SmolLM2, +10% for 8 sequences; prefill unchanged).
const POLL: Duration = Duration::from_micros(200);

/// Threads a kernel call may use (rayon's pool size; `RAYON_NUM_THREADS` sets it).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// The current call's item function, borrowed from the caller's stack. Read only by workers
/// counted in `joined` while `open`, and the caller waits for `joined == 0` before returning.
struct Job {
    f: UnsafeCell<Option<&'static (dyn Fn(usize) + Sync)>>,
}
unsafe impl Sync for Job {}

struct Pool {
    /// Bumped once per call to wake workers.
    epoch: AtomicU64,
    job: Job,
    items: AtomicUsize,
    next: AtomicUsize,
    /// Whether the current call still accepts workers.
    open: AtomicBool,
    /// Workers inside the current call.
    joined: AtomicUsize,
    /// Held by the caller for the duration of a call.
    busy: AtomicBool,
    panicked: AtomicBool,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let workers = threads() - 1;
        if workers == 0 {
            return None;
        }
        let p: &'static Pool = Box::leak(Box::new(Pool {
            epoch: AtomicU64::new(0),
            job: Job { f: UnsafeCell::new(None) },
            items: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        }));
        for i in 0..workers {
            let spawned = std::thread::Builder::new().name(format!("nanbeige-kernel-{i}")).spawn(move || worker(p));
            if spawned.is_err() {
                return None;
            }
        }
        Some(p)
    })
}

impl Pool {
    /// Take items of the current call until none are left.
    fn run_items(&self) {
        // SAFETY: see `Job`: only called by the caller or by a joined worker of an open call.
        let f = unsafe { (*self.job.f.get()).expect("job published") };
        let items = self.items.load(Ordering::Acquire);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= items {
                break;
            }
            f(i);
        }
    }
}

fn worker(p: &'static Pool) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            let e = p.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            // Read the clock only now and then: it is a (v)syscall, far dearer than a poll.
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(128) || start.elapsed() < POLL {
                std::hint::spin_loop();
                continue;
            }
            let mut sleepers = p.sleepers.lock().unwrap();
            *sleepers += 1;
            while p.epoch.load(Ordering::Acquire) == seen {
                sleepers = p.wake.wait(sleepers).unwrap();
            }
            *sleepers -= 1;
        }
        // Join only a call that is still open (the caller may have finished it alone).
        p.joined.fetch_add(1, Ordering::SeqCst);
        if p.open.load(Ordering::SeqCst) {
            // A panicking item must not leave the caller waiting forever; the caller re-raises it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.run_items())).is_err() {
                p.panicked.store(true, Ordering::Relaxed);
            }
        }
        p.joined.fetch_sub(1, Ordering::Release);
    }
}

/// Ends a call: closes it, waits until no joined worker still uses the job (also when the
/// caller's own items panic, so the borrowed closure never dangles), then frees the pool.
struct CallGuard(&'static Pool);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let p = self.0;
        p.open.store(false, Ordering::SeqCst);
        while p.joined.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        unsafe { *p.job.f.get() = None };
        p.busy.store(false, Ordering::Release);
    }
}

/// Run `f(i)` for every `i` in `0..items`, spread over the pool; returns when all are done.
pub fn for_each(items: usize, f: impl Fn(usize) + Sync) {
    if items <= 1 {
        (0..items).for_each(f);
        return;
    }
    let Some(p) = pool() else {
        (0..items).for_each(f);
        return;
    };
    if p.busy.swap(true, Ordering::Acquire) {
        // Another thread is using the pool (or this is a nested call): share rayon's instead.
        return for_each_rayon(items, f);
    }
    let f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: the 'static lifetime is a lie confined to this call: `CallGuard` clears the job
    // only after every worker that joined is done with it.
    let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    unsafe { *p.job.f.get() = Some(f) };
    p.items.store(items, Ordering::Relaxed);
    p.next.store(0, Ordering::Relaxed);
    p.open.store(true, Ordering::SeqCst);
    let guard = CallGuard(p);
    p.epoch.fetch_add(1, Ordering::SeqCst);
    if *p.sleepers.lock().unwrap() > 0 {
        p.wake.notify_all();
    }
    p.run_items();
    drop(guard);
    if p.panicked.swap(false, Ordering::Relaxed) {
        panic!("a kernel work item panicked on a pool thread");
    }
}

/// The fallback: rayon's global pool (its jobs live on the stack, so no allocation either).
fn for_each_rayon(items: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= items {
            break;
        }
        f(i);
    };
    fan_out(threads().min(items), &work);
}

fn fan_out(n: usize, work: &(impl Fn() + Sync)) {
    if n <= 1 {
        work();
    } else {
        let half = n / 2;
        rayon::join(|| fan_out(half, work), || fan_out(n - half, work));
    }
}

/// More than `shrinking_spans` ever makes (about 2 x threads x ln(groups) per call).
pub(crate) const SPANS_MAX: usize = 512;

/// Work items of a memory-bound call as (matrix, first group, end group), largest first: each
/// takes 1/(2 x threads) of the groups still left in the call (over all its matrices), down to
/// `min` groups (a group: whatever unit the caller splits, 16 weight rows for the kernels);
/// `groups` holds each matrix's group count. Equal items (8 per thread per matrix) left the
/// cores finishing a call up to a whole item (a sixteenth of a matrix) apart; with shrinking ones
/// the last items are a pair of groups, and a decode layer of the 3B shape makes 63 items where
/// it made 112 (the LM head 28 where it made 16). Decode-step matmuls, `kernel_bench
/// --decode-sim`: Q4_0 +4%, Q8_0 +1-2%, Q4_K +1%.
pub(crate) fn shrinking_spans(groups: &[usize], min: usize, spans: &mut [(u32, u32, u32); SPANS_MAX]) -> usize {
    let mut left: usize = groups.iter().sum();
    let div = 2 * threads();
    let mut n = 0;
    for (wi, &gs) in groups.iter().enumerate() {
        let mut g = 0;
        while g < gs {
            let rest = gs - g;
            // A multiple of `min`, so the pairs of a two-stream item come out even.
            let mut s = left.div_ceil(div).next_multiple_of(min).min(rest);
            // Never leave a piece smaller than `min` behind, nor overflow the table.
            if rest - s < min || n + groups.len() >= SPANS_MAX {
                s = rest;
            }
            spans[n] = (wi as u32, g as u32, (g + s) as u32);
            n += 1;
            g += s;
            left -= s;
        }
    }
    n
}

/// A raw pointer that may cross threads: each item writes a disjoint part of one output buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// Going through a method makes closures capture the wrapper, not the bare pointer field.
    pub fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_spans_cover_every_group_once_largest_first() {
        // Decode-step shapes of Nanbeige4.1-3B (q/k/v, gate/up, the LM head) and odd ones.
        for (groups, min) in [(&[160, 32, 32][..], 2), (&[656, 656], 2), (&[10384], 2), (&[37, 1, 5], 1), (&[3], 2)] {
            let mut spans = [(0, 0, 0); SPANS_MAX];
            let n = shrinking_spans(groups, min, &mut spans);
            let spans = &spans[..n];
            let mut at = (0, 0);
            for &(wi, lo, hi) in spans {
                if (wi as usize, lo as usize) != at {
                    assert_eq!((wi as usize, lo), (at.0 + 1, 0), "{groups:?}: a gap before {:?}", (wi, lo, hi));
                    assert_eq!(at.1, groups[at.0], "{groups:?}: matrix {} not finished", at.0);
                }
                assert!(hi > lo);
                at = (wi as usize, hi as usize);
            }
            assert_eq!(at, (groups.len() - 1, *groups.last().unwrap()), "{groups:?}: not all groups covered");
            // Pieces shrink (whatever is left of a matrix may be smaller) and stay even with pairs.
            let sizes: Vec<u32> = spans.iter().map(|s| s.2 - s.1).collect();
            let last_of_matrix = |i: usize| i + 1 == n || spans[i + 1].0 != spans[i].0;
            for i in 0..n {
                assert!(sizes[i] as usize >= min.min(groups[spans[i].0 as usize]), "{groups:?}: {sizes:?}");
                if !last_of_matrix(i) {
                    assert_eq!(sizes[i] as usize % min, 0, "{groups:?}: {sizes:?}");
                    if i > 0 && spans[i - 1].0 == spans[i].0 {
                        assert!(sizes[i] <= sizes[i - 1], "{groups:?}: {sizes:?}");
                    }
                }
            }
            let total: usize = groups.iter().sum();
            assert!(n <= 2 * total.max(1).ilog2() as usize * 2 * threads() + 4 * groups.len(), "{groups:?}: {n} items");
            if total >= 64 {
                // The last item is small next to the call.
                assert!((*sizes.last().unwrap() as usize) * 16 <= total, "{groups:?}: {sizes:?}");
            }
        }
    }
}
