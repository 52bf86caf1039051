//! Waiting for an answer: in ppoll with the application's signal mask, so its signals
//! (and, for a call that may block, the checkpoint freeze) get through; the signals whose
//! handlers must end the call with EINTR held back and watched with a signalfd; and a
//! local fd watched beside the answer. And the monotonic clock the waits measure with.
//!
//! Runs in the SIGSYS handler: raw calls and stack buffers only.

use crate::rt::syscall::r;
use super::sigsys_bit;

/// Wait for the answer on `fd` with the application's mask `mask` (signals get through).
/// Returns 1 when readable, 0 when interrupted.
fn wait_readable(fd: i64, mask: u64) -> i64 {
    let mut p = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
    let m = mask & !ckpt::sys::sigbit(libc::SIGSYS);
    let r = r!(libc::SYS_ppoll, &mut p as *mut libc::pollfd, 1, 0, &m as *const u64, 8);
    if r > 0 {
        1
    } else {
        0
    }
}

/// How a wait for an answer ended.
pub(super) enum Waited {
    /// the answer is there
    Ready,
    /// a signal's handler ran (one that restarts the call)
    Interrupted,
    /// a signal is pending whose handler must end the call with EINTR
    Cancel,
    /// the local fd watched beside the answer became readable
    Also,
}

/// Wait for the answer on `fd` with the application's mask `mask`. The signals of
/// `eintr` that `mask` lets through are held back meanwhile and watched with a signalfd
/// (when `watch`): one pending ends the wait with [`Waited::Cancel`]; it is delivered
/// once the call has returned, as the kernel does for a call it does not restart. Local
/// fd `also` (when `watch`, and not -1) becoming readable cancels the call too.
pub(super) fn wait_answer(fd: i64, mask: u64, eintr: u64, watch: bool, also: i64) -> Waited {
    let held = eintr & !mask & !sigsys_bit();
    let also = if watch { also } else { -1 };
    if held == 0 && also < 0 {
        return if wait_readable(fd, mask) == 1 { Waited::Ready } else { Waited::Interrupted };
    }
    let sfd = if watch && held != 0 { r!(libc::SYS_signalfd4, -1i64, &held as *const u64, 8, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) } else { -1 };
    let mut p = [
        libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: sfd as i32, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: also as i32, events: libc::POLLIN, revents: 0 },
    ];
    let m = (mask | held) & !sigsys_bit();
    let r = r!(libc::SYS_ppoll, p.as_mut_ptr(), 3, 0, &m as *const u64, 8);
    if sfd >= 0 {
        r!(libc::SYS_close, sfd);
    }
    if r > 0 && p[0].revents != 0 {
        Waited::Ready
    } else if r > 0 && p[1].revents != 0 {
        Waited::Cancel
    } else if r > 0 && p[2].revents != 0 {
        Waited::Also
    } else {
        Waited::Interrupted
    }
}

/// CLOCK_MONOTONIC in ns (a raw call from the shim's own code).
pub(super) fn mono_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    r!(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts as *mut libc::timespec);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

pub(super) fn mono_ms() -> i64 {
    mono_ns() / 1_000_000
}
