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
pub use crate::process::slots::{slot_ptr, MAX_THREADS};
use ckpt::ctx::{ThreadCtx, RESUMED};
use ckpt::sys::{self, KSigAction};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

/// The shim's two signals: the checkpoint trigger and the private freeze signal (both
/// set once at start-up, before any handler is installed).
struct ShimSignals {
    trigger: AtomicI32,
    freeze: AtomicI32,
}
static SHIM_SIGNALS: ShimSignals =
    ShimSignals { trigger: AtomicI32::new(libc::SIGUSR2), freeze: AtomicI32::new(crate::config::FREEZE_SIG_DEFAULT) };

/// The checkpoint trigger signal (SIGUSR2, or `MOS_CKPT_SIGNAL`).
pub fn trigger_sig() -> i32 {
    SHIM_SIGNALS.trigger.load(Ordering::Relaxed)
}

/// The private freeze signal that parks a thread for a checkpoint.
pub fn freeze_sig() -> i32 {
    SHIM_SIGNALS.freeze.load(Ordering::Relaxed)
}

/// Start-up: the trigger signal `MOS_CKPT_SIGNAL` names.
pub fn set_trigger_sig(sig: i32) {
    SHIM_SIGNALS.trigger.store(sig, Ordering::Relaxed);
}

/// Start-up: the freeze signal when the trigger took the default one.
pub fn set_freeze_sig(sig: i32) {
    SHIM_SIGNALS.freeze.store(sig, Ordering::Relaxed);
}

/// The application's view of the trigger and freeze signals' dispositions.
struct AppActions(UnsafeCell<[KSigAction; 2]>);
// SAFETY: written only by the sigaction hooks (application code, rare) and read by the
// trigger handler; a torn read can only mix two dispositions the app itself installed.
unsafe impl Sync for AppActions {}
static APP_ACTION: AppActions = AppActions(UnsafeCell::new(
    [KSigAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; 2],
));

pub fn app_action_slot(sig: i32) -> Option<usize> {
    if sig == trigger_sig() {
        Some(0)
    } else if sig == freeze_sig() {
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

/// The parking of the application's threads for a checkpoint, between the manager (which
/// starts a freeze, waits for the threads, releases them) and the freeze handler (where
/// each thread parks), and their resumption after a restart.
struct Parking {
    /// bumped at the start of every freeze: blocking calls that a freeze interrupted with
    /// EINTR are resumed by the hooks in `hooks_eintr.rs`
    gen: AtomicU32,
    /// number of threads parked in this checkpoint (manager waits on it)
    parked: AtomicU32,
    /// true while the manager is stopping threads (until it releases them)
    freezing: AtomicBool,
    /// bumped by the manager to release parked threads
    release: AtomicU32,
    /// number of threads that finished `mos_thread_resumed` after a restart
    resumed: AtomicU32,
    /// set by a thread when it parked in the current checkpoint
    slot_parked: [AtomicU32; MAX_THREADS],
}
static PARKING: Parking = Parking {
    gen: AtomicU32::new(0),
    parked: AtomicU32::new(0),
    freezing: AtomicBool::new(false),
    release: AtomicU32::new(0),
    resumed: AtomicU32::new(0),
    slot_parked: [const { AtomicU32::new(0) }; MAX_THREADS],
};

/// The freeze generation (bumped at the start of every freeze).
pub fn freeze_gen() -> u32 {
    PARKING.gen.load(Ordering::Acquire)
}

/// The manager starts a freeze: no slot parked yet, a new generation, and the freeze
/// signal counts as ours until [`release_parked`].
pub fn start_freeze() {
    for p in PARKING.slot_parked.iter() {
        p.store(0, Ordering::Relaxed);
    }
    PARKING.parked.store(0, Ordering::Release);
    PARKING.gen.fetch_add(1, Ordering::AcqRel);
    PARKING.freezing.store(true, Ordering::Release);
}

/// The manager lets the parked threads go on.
pub fn release_parked() {
    PARKING.freezing.store(false, Ordering::Release);
    PARKING.release.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&PARKING.release);
}

/// The release generation a parked or resumed thread waits to see move.
pub fn release_gen() -> u32 {
    PARKING.release.load(Ordering::Acquire)
}

/// How many threads parked in this freeze.
pub fn parked_count() -> u32 {
    PARKING.parked.load(Ordering::Acquire)
}

/// Wait (at most `ms`) for the parked count to move from `seen`.
pub fn wait_parked(seen: u32, ms: u64) {
    sys::futex_wait(&PARKING.parked, seen, Some(ms));
}

/// Whether the thread of slot `i` parked in this freeze.
pub fn slot_parked(i: usize) -> bool {
    PARKING.slot_parked[i].load(Ordering::Acquire) == 1
}

/// How many threads finished `mos_thread_resumed` since [`reset_resumed`].
pub fn resumed_count() -> u32 {
    PARKING.resumed.load(Ordering::Acquire)
}

/// Wait (at most `ms`) for the resumed count to move from `seen`.
pub fn wait_resumed(seen: u32, ms: u64) {
    sys::futex_wait(&PARKING.resumed, seen, Some(ms));
}

/// Before an image is written: no thread resumed from it yet.
pub fn reset_resumed() {
    PARKING.resumed.store(0, Ordering::Release);
}

extern "C" fn park_wait(ctx: *mut ThreadCtx) {
    let gen = PARKING.release.load(Ordering::Acquire);
    let i = (ctx as usize - slot_ptr(0) as usize) / core::mem::size_of::<ThreadCtx>();
    PARKING.slot_parked[i].store(1, Ordering::Release);
    PARKING.parked.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&PARKING.parked);
    while PARKING.release.load(Ordering::Acquire) == gen {
        sys::futex_wait(&PARKING.release, gen, None);
    }
}

/// Wait for the manager's release after a restart (called from mos_thread_resumed).
pub fn resumed_wait(gen: u32) {
    PARKING.resumed.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&PARKING.resumed);
    while PARKING.release.load(Ordering::Acquire) == gen {
        sys::futex_wait(&PARKING.release, gen, None);
    }
}

extern "C" fn freeze_handler(_sig: i32, _info: *mut libc::siginfo_t, _uc: *mut libc::c_void) {
    let saved_errno = sys::errno();
    let tid = sys::gettid();
    // Ours only while the manager freezes, sent by it (tgkill from our own pid);
    // anything else is the application's own use of this signal number.
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, pid) = unsafe { ((*_info).si_code, (*_info).si_pid()) };
    let ours = PARKING.freezing.load(Ordering::Acquire) && code == libc::SI_TKILL && pid == crate::identity::real_pid();
    let slot = if ours { crate::process::slots::slot_of_tid(tid) } else { None };
    // A freeze signal that arrives late (a thread that was blocking it when a freeze
    // gave up) must neither park nor kill: only a handler the application installed
    // gets signals we did not send during a freeze.
    let late_own = code == libc::SI_TKILL && pid == crate::identity::real_pid();
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
        && pid != crate::identity::real_pid();
    if external {
        let fd = crate::process::fds::SHIM_FDS.trigger.get();
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
        trigger_sig(),
        Some(&trig),
        Some(&mut old),
    );
    set_app_action(0, old);
    let mut old = KSigAction::default();
    sys::rt_sigaction(
        freeze_sig(),
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
