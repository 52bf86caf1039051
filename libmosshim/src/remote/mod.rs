//! Remote mode: the process's body runs away from its home node (DESIGN §2, §4).
//!
//! Every application thread runs under Syscall User Dispatch: any system call made
//! outside the shim's own code raises SIGSYS, and [`sud::sigsys_handler`] decides.
//! - Calls on the process's home files (fds marked in [`homefd::FD_REMOTE`]) and every
//!   call that names a path are forwarded to the home shadowd (`proto::rsys`) and their result is
//!   returned as the kernel would. Locally such an fd is a placeholder (`/dev/null`) that
//!   keeps its number taken, so fd numbering follows the kernel's lowest-free rule.
//! - Everything else (memory, futexes, clocks, threads, local pipes...) runs natively: the
//!   handler sends the thread to a trampoline inside the shim (allowed by SUD) that makes
//!   the very same system call with the thread's own registers and signal mask once the
//!   handler has returned, then jumps back to the instruction after the original one.
//!   One trampoline per calling site (return address), claimed on first use.
//!
//! The handler runs with every signal blocked except SIGSYS (SA_NODEFER, so nested traps
//! from an application signal handler work). While it waits for the shadow's answer it
//! unblocks the application's own mask (`ppoll`), so signals, and the checkpoint freeze,
//! still get through; a thread checkpointed while waiting resends its request (same
//! sequence number) from wherever it is restarted, and the shadow answers it exactly once.
//!
//! Nothing here allocates or takes a lock: raw system calls ([`crate::rt::syscall`]'s
//! `r!`, from the shim's text, which SUD allows), atomics, and stack buffers.
//!
//! Application pointers: a forwarded call reads and writes the buffers its caller passed,
//! where the kernel would have, through [`crate::rt::user`] only (its header says why
//! that is sound and what it relies on).
//!
//! Layout (one file per part; every file below `mod.rs` runs in the SIGSYS handler
//! unless its header says otherwise): `sud` (trampolines, the handler's entry),
//! `dispatch` (what each trapped call becomes), the forwarders `fwd_fd`, `fwd_path`,
//! `fwd_socket`, `fwd_poll` and `epoll`, `call` (forwarding one call), `channel` (the
//! per-thread channels to home and how they connect), `transport` (one connection's
//! bytes), `wait` and `eintr` (waiting for an answer, and which signals end it with
//! EINTR), `homefd` (the home-fd table).

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use proto::rsys;

mod call;
mod channel;
mod dispatch;
mod eintr;
pub mod epoll;
mod fwd_fd;
mod fwd_path;
mod fwd_poll;
mod fwd_socket;
mod homefd;
mod sud;
#[cfg(test)]
mod tests;
mod transport;
mod wait;

pub use call::{manager_call, remote_offset, report_exit, EXITING};
pub use channel::{connect, forget_local, resync_channels, LOCAL_OFF};
pub use eintr::sigactions_changed;
pub use homefd::{internal_high_pub, is_remote, reset_internal, set_remote, shim_fds};
pub use sud::{enable_thread, fast_call, install_handler, learn_text, strip_sigsys_from_handlers};
pub use transport::SPIN_US;
use channel::release_chan;

/// The process runs away from home (set by the restart of a migration image).
pub static REMOTE: AtomicBool = AtomicBool::new(false);
/// The session this process belongs to (token, shadow address): set when its files were
/// handed home; lives in memory, so every image taken afterwards carries it.
pub static SESSION_SET: AtomicBool = AtomicBool::new(false);
pub struct Session {
    pub token: [u8; rsys::TOKEN_LEN],
    pub addr: libc::sockaddr_in,
    pub node: [u8; 32],
}
pub struct SessionCell(pub core::cell::UnsafeCell<Session>);
// SAFETY: written by the manager while every application thread is frozen, read after.
unsafe impl Sync for SessionCell {}
pub static SESSION: SessionCell = SessionCell(core::cell::UnsafeCell::new(Session {
    token: [0; rsys::TOKEN_LEN],
    addr: libc::sockaddr_in { sin_family: 0, sin_port: 0, sin_addr: libc::in_addr { s_addr: 0 }, sin_zero: [0; 8] },
    node: [0; 32],
}));

/// Trap every call but run them all natively (`MOS_SUD_SELFTEST=1`): exercises the
/// dispatch machinery at home, and measures its cost.
pub static SELFTEST: AtomicBool = AtomicBool::new(false);

/// Start self-test mode on the calling (main) thread; threads created later follow.
pub fn selftest_enable() {
    SELFTEST.store(true, Ordering::Release);
    REMOTE.store(true, Ordering::Release);
    install_handler();
    enable_thread();
}

/// The home shadow is gone: forwarded calls fail with EIO.
pub static HOME_LOST: AtomicBool = AtomicBool::new(false);
/// Bumped at every restart: channel descriptors of an older incarnation are void.
pub static GEN: AtomicU32 = AtomicU32::new(1);
/// Placeholder source (`/dev/null`), an internal descriptor.
pub static PLACEHOLDER: AtomicI32 = AtomicI32::new(-1);

pub(super) const EBADF: i64 = -(libc::EBADF as i64);
pub(super) const ENOSYS: i64 = -(libc::ENOSYS as i64);
pub(super) const EINVAL: i64 = -(libc::EINVAL as i64);
pub(super) const EFAULT: i64 = -(libc::EFAULT as i64);

/// Is this process a migrated body (its home fds forwarded)?
#[inline(always)]
pub fn away() -> bool {
    REMOTE.load(Ordering::Relaxed)
}

pub(super) fn sigsys_bit() -> u64 {
    ckpt::sys::sigbit(libc::SIGSYS)
}
