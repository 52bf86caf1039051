//! Stopping and releasing the application's threads from the manager: every thread is
//! sent the freeze signal and parks in its handler (`signals`), the manager waits until
//! all have parked, and later releases them. Manager-thread code (allocates); the parking
//! side in `signals` is the async-signal-safe part.

use crate::log::log;
use crate::rawfs;
use crate::signals::{self, MAX_THREADS};
use ckpt::sys;
use core::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// number of application threads frozen in the last checkpoint
static NTHREADS: AtomicU32 = AtomicU32::new(0);

/// How many application threads the last checkpoint froze.
pub fn nthreads() -> u32 {
    NTHREADS.load(Ordering::Acquire)
}

/// The manager froze `n` application threads for the image it writes.
pub fn set_nthreads(n: u32) {
    NTHREADS.store(n, Ordering::Release);
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Park every application thread (a stopped body); false if they would not stop.
pub fn pause_app() -> bool {
    match freeze(sys::gettid()) {
        Ok(_) => true,
        Err(e) => {
            release_threads();
            log(&format!("cannot stop the application: {e}"));
            false
        }
    }
}

/// Let the threads parked by [`pause_app`] go on.
pub fn resume_app() {
    release_threads();
}

pub fn release_threads() {
    signals::release_parked();
}

/// Stop every thread but this one; returns how many parked.
/// Stop every thread but this one; returns the slots of the threads that parked.
pub fn freeze(me: i32) -> Result<Vec<usize>, String> {
    let pid = crate::identity::real_pid();
    let sig = signals::freeze_sig();
    crate::process::slots::clear_slot_tids();
    signals::start_freeze();
    let mut assigned: Vec<i32> = Vec::new();
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let tids = rawfs::list_dir_numbers("/proc/self/task")
            .map_err(|e| format!("listing threads: {e}"))?;
        let new: Vec<i32> = tids
            .iter()
            .map(|&t| t as i32)
            .filter(|t| *t != me && !assigned.contains(t))
            .collect();
        if new.is_empty() {
            // Threads that exited while we were freezing simply are not in the image.
            return Ok((0..MAX_THREADS).filter(|&i| signals::slot_parked(i)).collect());
        }
        for t in new {
            // slot = position in `assigned`; a thread gone before the signal keeps its slot
            if assigned.len() >= MAX_THREADS {
                return Err(format!("more than {MAX_THREADS} threads"));
            }
            crate::process::slots::set_slot_tid(assigned.len(), t);
            assigned.push(t);
            // SAFETY: tgkill to a thread of our own process (ESRCH if it already exited).
            unsafe { ckpt::sc!(libc::SYS_tgkill, pid, t, sig) };
        }
        // Wait until every signalled thread parked (threads that exited meanwhile drop out).
        loop {
            let parked = signals::parked_count();
            let alive: Vec<i32> = assigned
                .iter()
                .copied()
                // SAFETY: tgkill with signal 0 only checks the thread exists.
                .filter(|&t| unsafe { ckpt::sc!(libc::SYS_tgkill, pid, t, 0) } == 0)
                .collect();
            if parked as usize >= alive.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {} threads did not stop within {:?} (blocked in an uninterruptible call, or blocking signal {sig}?)",
                    alive.len() - parked as usize,
                    alive.len(),
                    FREEZE_TIMEOUT
                ));
            }
            signals::wait_parked(parked, 10);
        }
    }
}
