//! Stopping and releasing the application's threads from the manager: every thread is
//! sent the freeze signal and parks in its handler (`signals`), the manager waits until
//! all have parked, and later releases them. Manager-thread code (allocates); the parking
//! side in `signals` is the async-signal-safe part.

use crate::log::log;
use crate::rawfs;
use crate::signals::{FREEZE_GEN, FREEZE_SIG, FREEZING, MAX_THREADS, PARKED, REAL_PID, RELEASE, SLOT_PARKED, SLOT_TID};
use ckpt::sys;
use core::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// number of application threads frozen in the last checkpoint
pub static NTHREADS: AtomicU32 = AtomicU32::new(0);

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
    FREEZING.store(false, Ordering::Release);
    RELEASE.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&RELEASE);
}

/// Stop every thread but this one; returns how many parked.
/// Stop every thread but this one; returns the slots of the threads that parked.
pub fn freeze(me: i32) -> Result<Vec<usize>, String> {
    let pid = REAL_PID.load(Ordering::Relaxed);
    let sig = FREEZE_SIG.load(Ordering::Relaxed);
    for (t, p) in SLOT_TID.iter().zip(SLOT_PARKED.iter()) {
        t.store(0, Ordering::Relaxed);
        p.store(0, Ordering::Relaxed);
    }
    PARKED.store(0, Ordering::Release);
    FREEZE_GEN.fetch_add(1, Ordering::AcqRel);
    FREEZING.store(true, Ordering::Release);
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
            return Ok((0..MAX_THREADS).filter(|&i| SLOT_PARKED[i].load(Ordering::Acquire) == 1).collect());
        }
        for t in new {
            // slot = position in `assigned`; a thread gone before the signal keeps its slot
            if assigned.len() >= MAX_THREADS {
                return Err(format!("more than {MAX_THREADS} threads"));
            }
            SLOT_TID[assigned.len()].store(t, Ordering::Release);
            assigned.push(t);
            // SAFETY: tgkill to a thread of our own process (ESRCH if it already exited).
            unsafe { ckpt::sc!(libc::SYS_tgkill, pid, t, sig) };
        }
        // Wait until every signalled thread parked (threads that exited meanwhile drop out).
        loop {
            let parked = PARKED.load(Ordering::Acquire);
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
            sys::futex_wait(&PARKED, parked, Some(10));
        }
    }
}
