//! The home-fd table: which descriptor numbers stand for files open at home (locally a
//! placeholder keeps the number), what kind each is (may a call on it block), and the
//! descriptors remote mode keeps for itself (internal, high, hidden from the
//! application). Lock-free bitmaps, used from the SIGSYS handler: no allocation (but
//! [`internal_fds`], the manager's) and no locks.

use crate::rt::syscall::r;
use super::call::Home;
use super::transport::Io;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use proto::rsys::op;

pub(super) const MAXFD: usize = 65536;

/// The table: one bit per descriptor number for home files and for remote mode's own
/// descriptors, and one kind per home fd.
struct HomeFds {
    remote: [AtomicU64; MAXFD / 64],
    internal: [AtomicU64; MAXFD / 64],
    /// Per home fd: 0 not known yet, 1 a regular file or directory (calls finish at
    /// once), 2 anything that may block (pipe, socket, terminal, device).
    kind: [AtomicU8; MAXFD],
}
static HOME_FDS: HomeFds = HomeFds {
    remote: [const { AtomicU64::new(0) }; MAXFD / 64],
    internal: [const { AtomicU64::new(0) }; MAXFD / 64],
    kind: [const { AtomicU8::new(0) }; MAXFD],
};

fn bit_get(t: &[AtomicU64], fd: i64) -> bool {
    fd >= 0 && (fd as usize) < MAXFD && t[fd as usize / 64].load(Ordering::Relaxed) & (1 << (fd % 64)) != 0
}
fn bit_set(t: &[AtomicU64], fd: i64, on: bool) {
    if fd >= 0 && (fd as usize) < MAXFD {
        if on {
            t[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::Relaxed);
        } else {
            t[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::Relaxed);
        }
    }
}
/// Is `fd` one of the home files?
pub fn is_remote(fd: i64) -> bool {
    bit_get(&HOME_FDS.remote, fd)
}
/// Mark `fd` as a home file (or not).
pub fn set_remote(fd: i64, on: bool) {
    bit_set(&HOME_FDS.remote, fd, on);
    if fd >= 0 && (fd as usize) < MAXFD {
        HOME_FDS.kind[fd as usize].store(0, Ordering::Relaxed);
    }
}
/// Mark `fd` as one of remote mode's own descriptors (or not).
pub(super) fn set_internal(fd: i64, on: bool) {
    bit_set(&HOME_FDS.internal, fd, on);
}

/// May a read or write on home fd `fd` block for ever? (asked home once per fd)
pub(super) fn may_block(h: &impl Home, fd: i64, m: u64) -> bool {
    if fd < 0 || fd as usize >= MAXFD {
        return true;
    }
    let k = HOME_FDS.kind[fd as usize].load(Ordering::Relaxed);
    if k != 0 {
        return k == 2;
    }
    let mut st = [0u8; 144];
    let r = h.forward_quick(op::FSTAT, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: st.as_mut_ptr() as u64, n: 144 }], m);
    if r < 0 {
        return true;
    }
    let mode = u32::from_ne_bytes([st[24], st[25], st[26], st[27]]) & libc::S_IFMT;
    let blocks = mode != libc::S_IFREG && mode != libc::S_IFDIR;
    HOME_FDS.kind[fd as usize].store(if blocks { 2 } else { 1 }, Ordering::Relaxed);
    blocks
}

pub(super) fn is_internal(fd: i64) -> bool {
    bit_get(&HOME_FDS.internal, fd)
}
/// Every descriptor of the shim's own (never saved in an image, kept in the manager's
/// table): the process's ([`crate::process::fds::own_fds`]) and remote mode's.
pub fn shim_fds() -> Vec<i32> {
    let mut v = crate::process::fds::own_fds();
    v.extend(internal_fds());
    v
}

/// The descriptors remote mode uses for itself (never saved in an image).
pub fn internal_fds() -> Vec<i32> {
    let mut v = Vec::new();
    for (i, w) in HOME_FDS.internal.iter().enumerate() {
        let mut x = w.load(Ordering::Relaxed);
        while x != 0 {
            let b = x.trailing_zeros();
            v.push((i * 64) as i32 + b as i32);
            x &= x - 1;
        }
    }
    v
}

fn high_base() -> i64 {
    let mut lim = [0u64; 2];
    r!(libc::SYS_prlimit64, 0, libc::RLIMIT_NOFILE, 0, lim.as_mut_ptr());
    (lim[0] as i64 - 64).clamp(64, 4000)
}

/// Forget the internal descriptors of an earlier incarnation (after a restart).
pub fn reset_internal() {
    for w in HOME_FDS.internal.iter() {
        w.store(0, Ordering::Relaxed);
    }
}

/// [`internal_high`] for the manager.
pub fn internal_high_pub(fd: i64) -> i64 {
    internal_high(fd)
}


/// Move an fd of ours high and mark it internal: the application must not see or close
/// it. An fd the manager opens in its own table is not the application's business at all.
pub(super) fn internal_high(fd: i64) -> i64 {
    let h = r!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, high_base());
    r!(libc::SYS_close, fd);
    let own_table = crate::process::fds::SHIM_FDS.manager_own_table_tid() == r!(libc::SYS_gettid) as i32;
    if h >= 0 && !own_table {
        bit_set(&HOME_FDS.internal, h, true);
    }
    h
}

/// A placeholder at the lowest free number >= `min`.
pub(super) fn placeholder(min: i64) -> i64 {
    let src = super::placeholder_src();
    if src < 0 {
        return -(libc::EMFILE as i64);
    }
    r!(libc::SYS_fcntl, src, libc::F_DUPFD, min)
}

pub(super) fn drop_placeholder(fd: i64) {
    set_remote(fd, false);
    r!(libc::SYS_close, fd);
}
