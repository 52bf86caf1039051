//! Signal handlers of the shim. Async-signal-safe zone: no allocation, no locks, no
//! panics, no std I/O; only atomics and raw syscalls.
//!
//! Trigger signal (SIGUSR2, or MOS_CKPT_SIGNAL): a request from another process wakes the
//! manager through a pipe; the same signal sent by the process to itself goes to the
//! application's own handler (kept in `APP_ACTION`, which the sigaction hooks maintain).
//! Freeze signal (a private real-time signal): parks a thread for a checkpoint (its
//! kernel state is captured by `state::threads::capture_thread_state`, called from here).
//! The application's own signal state (dispositions, masks, pending signals) is
//! `state/signals.rs`'s.

use crate::ctxasm;
pub use crate::identity::{REAL_PID, RSEQ_OFFSET, RSEQ_SIZE, VPID};
pub use crate::process::fds::TRIGGER_FD;
pub use crate::process::slots::{slot_ptr, MAX_THREADS, SLOT_TID};
use ckpt::ctx::{ThreadCtx, RESUMED};
use ckpt::sys::{self, KSigAction};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

pub static TRIGGER_SIG: AtomicI32 = AtomicI32::new(libc::SIGUSR2);
pub static FREEZE_SIG: AtomicI32 = AtomicI32::new(crate::config::FREEZE_SIG_DEFAULT);


/// The application's view of the trigger and freeze signals' dispositions.
pub struct AppActions(UnsafeCell<[KSigAction; 2]>);
// SAFETY: written only by the sigaction hooks (application code, rare) and read by the
// trigger handler; a torn read can only mix two dispositions the app itself installed.
unsafe impl Sync for AppActions {}
pub static APP_ACTION: AppActions = AppActions(UnsafeCell::new(
    [KSigAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; 2],
));

pub fn app_action_slot(sig: i32) -> Option<usize> {
    if sig == TRIGGER_SIG.load(Ordering::Relaxed) {
        Some(0)
    } else if sig == FREEZE_SIG.load(Ordering::Relaxed) {
        Some(1)
    } else {
        None
    }
}

pub fn app_action(i: usize) -> KSigAction {
    // SAFETY: see AppActions.
    unsafe { (*APP_ACTION.0.get())[i] }
}

pub fn set_app_action(i: usize, a: KSigAction) {
    // SAFETY: see AppActions.
    unsafe { (*APP_ACTION.0.get())[i] = a }
}

// ---- thread parking ----

/// bumped at the start of every freeze: blocking calls that a freeze interrupted with
/// EINTR are resumed by the hooks in `hooks_eintr.rs`
pub static FREEZE_GEN: AtomicU32 = AtomicU32::new(0);
/// number of threads parked in this checkpoint (manager waits on it)
pub static PARKED: AtomicU32 = AtomicU32::new(0);
/// true while the manager is stopping threads (until it releases them)
pub static FREEZING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// bumped by the manager to release parked threads
pub static RELEASE: AtomicU32 = AtomicU32::new(0);
/// number of threads that finished `mos_thread_resumed` after a restart
pub static RESUMED_COUNT: AtomicU32 = AtomicU32::new(0);

/// set by a thread when it parked in the current checkpoint
pub static SLOT_PARKED: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];

extern "C" fn park_wait(ctx: *mut ThreadCtx) {
    let gen = RELEASE.load(Ordering::Acquire);
    let i = (ctx as usize - slot_ptr(0) as usize) / core::mem::size_of::<ThreadCtx>();
    SLOT_PARKED[i].store(1, Ordering::Release);
    PARKED.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&PARKED);
    while RELEASE.load(Ordering::Acquire) == gen {
        sys::futex_wait(&RELEASE, gen, None);
    }
}

/// Wait for the manager's release after a restart (called from mos_thread_resumed).
pub fn resumed_wait(gen: u32) {
    RESUMED_COUNT.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&RESUMED_COUNT);
    while RELEASE.load(Ordering::Acquire) == gen {
        sys::futex_wait(&RELEASE, gen, None);
    }
}

extern "C" fn freeze_handler(_sig: i32, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    let saved_errno = sys::errno();
    let tid = sys::gettid();
    // Ours only while the manager freezes, sent by it (tgkill from our own pid);
    // anything else is the application's own use of this signal number.
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, pid) = unsafe { ((*_info).si_code, (*_info).si_pid()) };
    let ours = FREEZING.load(Ordering::Acquire) && code == libc::SI_TKILL && pid == REAL_PID.load(Ordering::Relaxed);
    let slot = if ours { SLOT_TID.iter().position(|t| t.load(Ordering::Acquire) == tid) } else { None };
    // A freeze signal that arrives late (a thread that was blocking it when a freeze
    // gave up) must neither park nor kill: only a handler the application installed
    // gets signals we did not send during a freeze.
    let late_own = code == libc::SI_TKILL && pid == REAL_PID.load(Ordering::Relaxed);
    if slot.is_none() && !(late_own && app_action(1).handler as usize == libc::SIG_DFL) {
        deliver_to_app(1, _sig, _info, _uc);
    }
    if let Some(i) = slot {
        let ctx = slot_ptr(i);
        // SAFETY: slot i belongs to this thread for this checkpoint (see Slots).
        unsafe { crate::process::slots::capture_thread_state(&mut *ctx) };
        // SAFETY: ctx is valid; park_wait blocks until the manager releases us.
        let r = unsafe { ctxasm::mos_ctx_park(ctx, park_wait) };
        let _ = r == RESUMED;
    }
    // SAFETY: restoring this thread's errno.
    unsafe { *libc::__errno_location() = saved_errno };
}

extern "C" fn trigger_handler(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let saved_errno = sys::errno();
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, pid) = unsafe { ((*info).si_code, (*info).si_pid()) };
    let external = (code == libc::SI_USER || code == libc::SI_QUEUE)
        && pid != REAL_PID.load(Ordering::Relaxed);
    if external {
        let fd = TRIGGER_FD.load(Ordering::Relaxed);
        if fd >= 0 {
            let b = 1u8;
            // SAFETY: one-byte write to our non-blocking pipe.
            unsafe { libc::write(fd, &b as *const u8 as *const _, 1) };
        }
    } else {
        deliver_to_app(0, sig, info, uc);
    }
    // SAFETY: restoring this thread's errno.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Run the application's own disposition for the trigger (slot 0) or freeze (slot 1)
/// signal, when the signal was not ours.
fn deliver_to_app(slot: usize, sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let a = app_action(slot);
    match a.handler as usize {
        h if h == libc::SIG_IGN => {}
        h if h == libc::SIG_DFL => {
            // default action of the user signals is to terminate: do exactly that
            if matches!(
                sig,
                libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT
            ) {
                return;
            }
            let dfl = KSigAction::default();
            sys::rt_sigaction(sig, Some(&dfl), None);
            sys::rt_sigprocmask(libc::SIG_UNBLOCK, Some(sys::sigbit(sig)), None);
            // SAFETY: re-raise the signal to ourselves with the default disposition.
            unsafe { ckpt::sc!(libc::SYS_tgkill, sys::getpid_real(), sys::gettid(), sig) };
        }
        h => {
            if a.flags & libc::SA_SIGINFO as u64 != 0 {
                // SAFETY: the app installed this as an sa_sigaction handler.
                let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { core::mem::transmute(h) };
                f(sig, info, uc);
            } else {
                // SAFETY: the app installed this as an sa_handler.
                let f: extern "C" fn(i32) = unsafe { core::mem::transmute(h) };
                f(sig);
            }
            if a.flags & libc::SA_RESETHAND as u64 != 0 {
                set_app_action(slot, KSigAction::default());
            }
        }
    }
}

/// Install the trigger and freeze handlers (raw rt_sigaction with our own restorer).
pub fn install() {
    let full = !0u64;
    let trig = KSigAction {
        handler: trigger_handler as *const () as u64,
        flags: (libc::SA_SIGINFO | libc::SA_RESTART) as u64 | sys::SA_RESTORER,
        restorer: ctxasm::mos_sigreturn as *const () as u64,
        mask: 0,
    };
    let frz = KSigAction {
        handler: freeze_handler as *const () as u64,
        flags: (libc::SA_SIGINFO | libc::SA_RESTART) as u64 | sys::SA_RESTORER,
        restorer: ctxasm::mos_sigreturn as *const () as u64,
        mask: full,
    };
    let mut old = KSigAction::default();
    sys::rt_sigaction(
        TRIGGER_SIG.load(Ordering::Relaxed),
        Some(&trig),
        Some(&mut old),
    );
    set_app_action(0, old);
    let mut old = KSigAction::default();
    sys::rt_sigaction(
        FREEZE_SIG.load(Ordering::Relaxed),
        Some(&frz),
        Some(&mut old),
    );
    set_app_action(1, old);
}

/// Parse MOS_CKPT_SIGNAL: `USR1`, `SIGUSR1`, `SIGRTMIN+3`, `RTMAX-2` or a number.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    let s = s.strip_prefix("SIG").unwrap_or(s);
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let rt = |base: i32, rest: &str| -> Option<i32> {
        if rest.is_empty() {
            return Some(base);
        }
        let (sign, num) = rest.split_at(1);
        let n: i32 = num.parse().ok()?;
        let v = if sign == "+" {
            base + n
        } else if sign == "-" {
            base - n
        } else {
            return None;
        };
        (34..=64).contains(&v).then_some(v)
    };
    if let Some(rest) = s.strip_prefix("RTMIN") {
        return rt(34, rest);
    }
    if let Some(rest) = s.strip_prefix("RTMAX") {
        return rt(64, rest);
    }
    Some(match s {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "USR1" => 10,
        "USR2" => 12,
        "ALRM" => 14,
        "TERM" => 15,
        "WINCH" => 28,
        "URG" => 23,
        "PWR" => 30,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_signal;
    #[test]
    fn signals() {
        assert_eq!(parse_signal("USR1"), Some(10));
        assert_eq!(parse_signal("SIGUSR2"), Some(12));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("RTMAX-2"), Some(62));
        assert_eq!(parse_signal("40"), Some(40));
        assert_eq!(parse_signal("KILL9"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
