//! Remote mode: the process's body runs away from its home node (DESIGN §2, §4).
//!
//! Every application thread runs under Syscall User Dispatch: any system call made
//! outside the shim's own code raises SIGSYS, and [`sud::sigsys_handler`] decides.
//! - Calls on the process's home files (fds marked in [`homefd`]'s table) and every
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

use core::cell::UnsafeCell;
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
mod procpid;
mod sud;
#[cfg(test)]
mod tests;
mod transport;
mod wait;

pub use call::{manager_call, remote_offset, report_exit};
pub use channel::{connect, forget_local, resync_channels, set_local_off};
pub use eintr::sigactions_changed;
pub use homefd::{internal_high_pub, is_remote, reset_internal, set_remote, shim_fds};
pub use sud::{enable_thread, fast_call, install_handler, learn_text, strip_sigsys_from_handlers};
pub use transport::set_spin_us;
use channel::release_chan;

/// The session this process belongs to (token, shadow address, the node it runs on).
pub struct Session {
    pub token: [u8; rsys::TOKEN_LEN],
    pub addr: libc::sockaddr_in,
    pub node: [u8; 32],
}

/// Remote mode's process-wide state.
struct RemoteState {
    /// the process runs away from home (set by the restart of a migration image)
    away: AtomicBool,
    /// trap every call but run them all natively (`MOS_SUD_SELFTEST=1`): exercises the
    /// dispatch machinery at home, and measures its cost
    selftest: AtomicBool,
    /// the home shadow is gone: forwarded calls fail with EIO
    home_lost: AtomicBool,
    /// the process has reported its end and is on its way out: the session closing under
    /// it is no loss of home (it must not stop itself then, or it would stay stopped for
    /// ever)
    exiting: AtomicBool,
    /// bumped at every restart: channel descriptors of an older incarnation are void
    gen: AtomicU32,
    /// placeholder source (`/dev/null`), an internal descriptor
    placeholder: AtomicI32,
    /// [`RemoteState::session`] is set: the process's files were handed home; it lives in
    /// memory, so every image taken afterwards carries it
    session_set: AtomicBool,
    session: UnsafeCell<Session>,
}
// SAFETY: the atomics are Sync; `session` is written by the manager only while no
// application thread runs (frozen, waiting after a restart, or start-up) and read after.
unsafe impl Sync for RemoteState {}
static STATE: RemoteState = RemoteState {
    away: AtomicBool::new(false),
    selftest: AtomicBool::new(false),
    home_lost: AtomicBool::new(false),
    exiting: AtomicBool::new(false),
    gen: AtomicU32::new(1),
    placeholder: AtomicI32::new(-1),
    session_set: AtomicBool::new(false),
    session: UnsafeCell::new(Session {
        token: [0; rsys::TOKEN_LEN],
        addr: libc::sockaddr_in { sin_family: 0, sin_port: 0, sin_addr: libc::in_addr { s_addr: 0 }, sin_zero: [0; 8] },
        node: [0; 32],
    }),
};

/// Start self-test mode on the calling (main) thread; threads created later follow.
pub fn selftest_enable() {
    STATE.selftest.store(true, Ordering::Release);
    STATE.away.store(true, Ordering::Release);
    install_handler();
    enable_thread();
}

/// Self-test mode (`MOS_SUD_SELFTEST=1`)?
pub(super) fn selftest() -> bool {
    STATE.selftest.load(Ordering::Relaxed)
}

/// The process becomes a remote body (a restart from a migration image, or a job started
/// away from home).
pub fn set_away() {
    STATE.away.store(true, Ordering::Release);
}

/// [`away`], ordered after what was published with [`set_away`] (the manager's reads).
pub fn went_away() -> bool {
    STATE.away.load(Ordering::Acquire)
}

/// Has the home shadow gone?
pub fn home_lost() -> bool {
    STATE.home_lost.load(Ordering::Acquire)
}

/// The home shadow is gone (true), or reached again after a restart (false).
pub fn set_home_lost(lost: bool) {
    STATE.home_lost.store(lost, Ordering::Release);
}

/// Has the process reported its end?
pub fn exiting() -> bool {
    STATE.exiting.load(Ordering::Acquire)
}

/// The channels' generation (bumped at every restart).
pub(super) fn gen() -> u32 {
    STATE.gen.load(Ordering::Acquire)
}

/// A restart: channel descriptors of the older incarnation are void.
pub fn new_gen() {
    STATE.gen.fetch_add(1, Ordering::AcqRel);
}

/// The placeholder source (`/dev/null`, an internal descriptor; -1 if none).
pub(super) fn placeholder_src() -> i32 {
    STATE.placeholder.load(Ordering::Relaxed)
}

/// Set the placeholder source.
pub fn set_placeholder_src(fd: i32) {
    STATE.placeholder.store(fd, Ordering::Release);
}

/// Is the session set (the process's files handed home)?
pub fn session_set() -> bool {
    STATE.session_set.load(Ordering::Acquire)
}

/// The session is set (after [`session_mut`] wrote it), or forgotten.
pub fn set_session_set(on: bool) {
    STATE.session_set.store(on, Ordering::Release);
}

/// The session (read from the SIGSYS handler and the manager).
pub(super) fn session() -> &'static Session {
    // SAFETY: the session is written only while no application thread runs (see
    // RemoteState), never while this shared reference is in use.
    unsafe { &*STATE.session.get() }
}

/// The session, to be written: only while no application thread runs (frozen, waiting
/// after a restart, or start-up), which the caller vouches for.
pub fn session_mut() -> *mut Session {
    STATE.session.get()
}

pub(super) const EBADF: i64 = -(libc::EBADF as i64);
pub(super) const ENOSYS: i64 = -(libc::ENOSYS as i64);
pub(super) const EINVAL: i64 = -(libc::EINVAL as i64);
pub(super) const EFAULT: i64 = -(libc::EFAULT as i64);

/// Is this process a migrated body (its home fds forwarded)?
#[inline(always)]
pub fn away() -> bool {
    STATE.away.load(Ordering::Relaxed)
}

pub(super) fn sigsys_bit() -> u64 {
    ckpt::sys::sigbit(libc::SIGSYS)
}
