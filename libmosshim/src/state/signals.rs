//! The application's signal state. At checkpoint: every disposition
//! ([`capture_dispositions`], in the manager while frozen) and the process's shared
//! pending set ([`shared_pending`], from /proc/self/status); each thread's mask and
//! pending set are captured with its context (`threads::capture_thread_state`). The
//! restorer installs the dispositions (`ckpt/src/restore/signals.rs`); each restored
//! thread sets its own mask (`threads::mos_thread_resumed`); after a restart the manager
//! raises the pending signals again ([`Signals`]' `restarted`). A forked child drops the
//! trigger's wake-up pipe, which is the parent's (`atfork_child`: atomics only).
//!
//! The shim's own handlers (trigger, freeze) are `crate::signals`, not here.

use super::StateKind;
use ckpt::ctx::ThreadCtx;
use ckpt::image::*;
use ckpt::sys;

/// Signals in the lifecycle of [`StateKind`].
pub struct Signals;

impl StateKind for Signals {
    fn capture(&self, meta: &mut ImageMeta, cx: &super::CaptureCx<'_>) -> Result<(), String> {
        meta.shared_pending = shared_pending(cx.status);
        meta.sigactions = capture_dispositions();
        Ok(())
    }

    fn restarted(&self, meta: &ImageMeta) -> Result<(), String> {
        raise_pending(meta);
        Ok(())
    }

    fn atfork_child(&self) {
        crate::process::fds::SHIM_FDS.trigger.set(-1);
    }
}

/// The process-directed pending signals, from /proc/self/status's ShdPnd.
pub fn shared_pending(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Every signal's disposition that is not the default.
pub fn capture_dispositions() -> Vec<SigAction> {
    let mut sigactions = Vec::new();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut a = ckpt::sys::KSigAction::default();
        if ckpt::sys::rt_sigaction(sig, None, Some(&mut a)) == 0
            && (a.handler != 0 || a.flags != 0 || a.mask != 0)
        {
            sigactions.push(SigAction {
                signo: sig,
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            });
        }
    }
    sigactions
}

/// Signals that were pending when the image was taken are raised again (once each: the
/// kernel's queue of real-time signal instances and their siginfo are not saved).
pub fn raise_pending(meta: &ckpt::image::ImageMeta) {
    // (a pending SIGCANCEL is glibc's: raised again, from this process as glibc's check
    // wants, it cancels an asynchronous thread as it would have; SIGSETXID's broadcast
    // cannot be resumed)
    let ours = sys::sigbit(crate::signals::trigger_sig()) | sys::sigbit(crate::signals::freeze_sig()) | sys::sigbit(crate::config::SIG_SETXID);
    let pid = crate::identity::real_pid();
    for t in meta.threads.iter().filter(|t| !t.is_manager) {
        // SAFETY: the restored thread's context (read only).
        let c = unsafe { &*(t.ctx_addr as *const ThreadCtx) };
        let own = c.pending & !meta.shared_pending & !ours;
        for sig in (1..=64).filter(|&s| own & sys::sigbit(s) != 0) {
            // SAFETY: signal to a thread of our own process.
            unsafe { ckpt::sc!(libc::SYS_tgkill, pid, crate::tids::to_real(c.vtid), sig) };
        }
    }
    for sig in (1..=64).filter(|&s| meta.shared_pending & !ours & sys::sigbit(s) != 0) {
        // SAFETY: process-directed signal to ourselves.
        unsafe { ckpt::sc!(libc::SYS_kill, pid, sig) };
    }
}
