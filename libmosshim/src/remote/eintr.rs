//! EINTR policy: which signals end an interrupted forwarded call with EINTR (signal(7):
//! poll never restarts; other calls unless the handler lacks SA_RESTART), from the signal
//! actions as the kernel holds them, read again only after one may have changed.
//!
//! Runs in the SIGSYS handler: atomics and raw calls only.

use super::raw;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use proto::rsys::op;

/// Signal actions as the kernel holds them, read before a forwarded call waits: bit
/// `sig - 1` of `SIG_HANDLED` when `sig` has an application handler, of `SIG_NORESTART`
/// when that handler lacks SA_RESTART. Read again whenever `SIGACT_GEN` moved since the
/// last reading (a handler changed, or the body was restarted from an image).
pub(super) static SIG_HANDLED: AtomicU64 = AtomicU64::new(0);
pub(super) static SIG_NORESTART: AtomicU64 = AtomicU64::new(0);
pub(super) static SIGACT_GEN: AtomicU32 = AtomicU32::new(1);
pub(super) static SIGACT_READ: AtomicU32 = AtomicU32::new(0);

/// A signal action may have changed: read them all again before the next wait.
pub fn sigactions_changed() {
    SIGACT_GEN.fetch_add(1, Ordering::AcqRel);
}

/// The signals whose handler ends an interrupted call `op` with EINTR: poll is never
/// restarted, the others are unless the handler lacks SA_RESTART (signal(7)). The shim's
/// own signals (checkpoint trigger, freeze), glibc's internal ones and SIGSYS never are.
pub(super) fn eintr_signals(op: u32) -> u64 {
    let g = SIGACT_GEN.load(Ordering::Acquire);
    if SIGACT_READ.load(Ordering::Acquire) != g {
        let (mut handled, mut norestart) = (0u64, 0u64);
        for sig in 1..=64 {
            if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGSYS | 32 | 33) || crate::signals::app_action_slot(sig).is_some() {
                continue;
            }
            let mut k = ckpt::sys::KSigAction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            if r!(libc::SYS_rt_sigaction, sig, 0, &mut k as *mut ckpt::sys::KSigAction, 8) != 0 {
                continue;
            }
            if k.handler > libc::SIG_IGN as u64 {
                handled |= ckpt::sys::sigbit(sig);
                if k.flags & libc::SA_RESTART as u64 == 0 {
                    norestart |= ckpt::sys::sigbit(sig);
                }
            }
        }
        SIG_HANDLED.store(handled, Ordering::Release);
        SIG_NORESTART.store(norestart, Ordering::Release);
        SIGACT_READ.store(g, Ordering::Release);
    }
    if op == op::POLL {
        SIG_HANDLED.load(Ordering::Acquire)
    } else {
        SIG_NORESTART.load(Ordering::Acquire)
    }
}
