//! The restorer's half of timers (the shim captures itimers and POSIX timers in
//! `libmosshim/src/state/timers.rs`): the three itimers are re-armed here with the time
//! they had left. POSIX timers carry kernel ids and thread targets, so the restored shim
//! recreates them once its threads exist (`state::timers`). Runs after the point of no
//! return: raw system calls only, no allocation.

/// Re-arm ITIMER_REAL/VIRTUAL/PROF with their remaining time and interval.
pub(super) fn restore_itimers(meta: &crate::image::ImageMeta) {
    for t in &meta.itimers {
        let v = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: t.interval_us / 1_000_000,
                tv_usec: t.interval_us % 1_000_000,
            },
            it_value: libc::timeval {
                tv_sec: t.value_us / 1_000_000,
                tv_usec: t.value_us % 1_000_000,
            },
        };
        // SAFETY: valid itimerval.
        unsafe {
            crate::sc!(
                libc::SYS_setitimer,
                t.which as i64,
                &v as *const libc::itimerval,
                0usize,
            )
        };
    }
}
