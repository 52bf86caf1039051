//! The restorer's half of signals (the shim captures dispositions, masks and pending
//! signals in `libmosshim/src/state/signals.rs`): the restorer drops the sigaltstack and
//! handlers Rust's runtime gave it and installs every saved disposition. Masks, the
//! alternate stacks of the restored threads and pending signals are the shim's to
//! re-establish after the restart (`mos_thread_resumed`, `raise_pending`).

use crate::sys;

/// The image's dispositions for every signal (the default where it had none).
pub(super) fn restore_dispositions(meta: &crate::image::ImageMeta) {
    // Rust's runtime gave this thread a sigaltstack and signal handlers: drop both.
    let ss = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: disabling the alternate signal stack.
    unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let a = match meta.sigactions.iter().find(|a| a.signo == sig) {
            Some(a) => sys::KSigAction {
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            },
            None => sys::KSigAction::default(),
        };
        sys::rt_sigaction(sig, Some(&a), None);
    }
}
