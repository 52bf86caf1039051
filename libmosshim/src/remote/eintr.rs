//! EINTR policy: which signals end an interrupted forwarded call with EINTR (signal(7):
//! poll never restarts; other calls unless the handler lacks SA_RESTART), from the signal
//! actions as the kernel holds them, read again only after one may have changed.
//!
//! Runs in the SIGSYS handler: atomics and raw calls only.

use crate::rt::syscall::r;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use proto::rsys::op;

/// Signal actions as the kernel holds them, read before a forwarded call waits: bit
/// `sig - 1` of `handled` when `sig` has an application handler, of `norestart` when that
/// handler lacks SA_RESTART. Read again whenever `gen` moved since the last reading
/// (`read`: a handler changed, or the body was restarted from an image).
struct SigActions {
    handled: AtomicU64,
    norestart: AtomicU64,
    gen: AtomicU32,
    read: AtomicU32,
}
static SIGACTS: SigActions = SigActions { handled: AtomicU64::new(0), norestart: AtomicU64::new(0), gen: AtomicU32::new(1), read: AtomicU32::new(0) };

/// A signal action may have changed: read them all again before the next wait.
pub fn sigactions_changed() {
    SIGACTS.gen.fetch_add(1, Ordering::AcqRel);
}

/// The signals whose handler ends an interrupted call `op` with EINTR: poll is never
/// restarted, the others are unless the handler lacks SA_RESTART (signal(7)). The shim's
/// own signals (checkpoint trigger, freeze), glibc's internal ones and SIGSYS never are.
pub(super) fn eintr_signals(op: u32) -> u64 {
    let g = SIGACTS.gen.load(Ordering::Acquire);
    if SIGACTS.read.load(Ordering::Acquire) != g {
        let (mut handled, mut norestart) = (0u64, 0u64);
        for sig in 1..=64 {
            if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGSYS | crate::config::SIG_CANCEL | crate::config::SIG_SETXID) || crate::signals::app_action_slot(sig).is_some() {
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
        SIGACTS.handled.store(handled, Ordering::Release);
        SIGACTS.norestart.store(norestart, Ordering::Release);
        SIGACTS.read.store(g, Ordering::Release);
    }
    if op == op::POLL {
        SIGACTS.handled.load(Ordering::Acquire)
    } else {
        SIGACTS.norestart.load(Ordering::Acquire)
    }
}
