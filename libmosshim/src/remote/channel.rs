//! The channels to home: one per application thread and nesting depth (a call made from
//! a signal handler that interrupted a call), each a connection to the home shadowd that
//! carries one call at a time, and how such a connection is made: to the shadowd's local
//! listener when it is on this host (answers on a socket of their own, large reads
//! through a pipe), else over TCP, with the session's hello.
//!
//! Used from the SIGSYS handler: a fixed table, atomics, raw calls; nothing allocates
//! (but [`resync_channels`], the manager's, after a restart).

use crate::rt::syscall::r;
use super::call::manager_call;
use super::homefd::{internal_high, set_internal};
use super::transport::{read_all, send_fds, write_all};
use super::{gen, session, session_set};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use proto::rsys::{self, op};

pub(super) const DEPTHS: usize = 4;
const NCHAN: usize = 512;

pub(super) struct Chan {
    pub(super) key: AtomicI32,
    pub(super) depth: AtomicU32,
    pub(super) fd: [AtomicI32; DEPTHS],
    /// where answers come from, when not on `fd` (local connections: an answer socket)
    pub(super) ans: [AtomicI32; DEPTHS],
    /// the read end of the data pipe of a local connection (large reads come there)
    pub(super) pipe: [AtomicI32; DEPTHS],
    pub(super) gen: [AtomicU32; DEPTHS],
    pub(super) seq: [AtomicU64; DEPTHS],
    /// per-thread copy of a signal mask handed to the kernel (sigsuspend, ppoll)
    pub(super) mask: AtomicU64,
}
#[allow(clippy::declare_interior_mutable_const)]
const CHAN0: Chan = Chan {
    key: AtomicI32::new(0),
    depth: AtomicU32::new(0),
    fd: [const { AtomicI32::new(-1) }; DEPTHS],
    ans: [const { AtomicI32::new(-1) }; DEPTHS],
    pipe: [const { AtomicI32::new(-1) }; DEPTHS],
    gen: [const { AtomicU32::new(0) }; DEPTHS],
    seq: [const { AtomicU64::new(0) }; DEPTHS],
    mask: AtomicU64::new(0),
};
static CHANS: [Chan; NCHAN] = [CHAN0; NCHAN];

pub(super) fn my_chan() -> Option<&'static Chan> {
    let me = crate::tids::self_vtid();
    if let Some(c) = CHANS.iter().find(|c| c.key.load(Ordering::Acquire) == me) {
        return Some(c);
    }
    for c in CHANS.iter() {
        if c.key.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            c.depth.store(0, Ordering::Relaxed);
            for d in 0..DEPTHS {
                c.fd[d].store(-1, Ordering::Relaxed);
                c.ans[d].store(-1, Ordering::Relaxed);
                c.pipe[d].store(-1, Ordering::Relaxed);
                c.seq[d].store(0, Ordering::Relaxed);
            }
            return Some(c);
        }
    }
    None
}

/// The calling thread ends: its channels go.
pub(super) fn release_chan() {
    let me = crate::tids::self_vtid();
    if let Some(c) = CHANS.iter().find(|c| c.key.load(Ordering::Acquire) == me) {
        let g = gen();
        for d in 0..DEPTHS {
            let fd = c.fd[d].swap(-1, Ordering::AcqRel);
            let ans = c.ans[d].swap(-1, Ordering::AcqRel);
            let pipe = c.pipe[d].swap(-1, Ordering::AcqRel);
            if c.gen[d].load(Ordering::Relaxed) == g {
                for f in [fd, ans, pipe].into_iter().filter(|&f| f >= 0) {
                    set_internal(f as i64, false);
                    r!(libc::SYS_close, f);
                }
            }
        }
        c.key.store(0, Ordering::Release);
    }
}

/// The home shadowd's local listener (proto::rsys: an abstract unix socket), learnt from
/// a hello reply.
struct LocalListener {
    /// its name, NUL-padded, in 4 words
    name: [AtomicU64; 4],
    /// 0: no local listener known; 1: known, calls connections try it first; 2: it could
    /// not be reached from here (another host or network namespace): TCP only.
    state: AtomicU32,
    /// `MOS_RSYS_TCP=1`: never use the local listener (set at start-up, kept in images).
    off: AtomicBool,
}
static LOCAL: LocalListener = LocalListener { name: [const { AtomicU64::new(0) }; 4], state: AtomicU32::new(0), off: AtomicBool::new(false) };

/// Start-up, `MOS_RSYS_TCP=1`: never use the local listener.
pub fn set_local_off() {
    LOCAL.off.store(true, Ordering::Relaxed);
}

/// The body may have moved to another host: learn the local listener afresh.
pub fn forget_local() {
    LOCAL.state.store(0, Ordering::Release);
}

fn learn_local(rep: &rsys::HelloReply) {
    if rep.local_len() == 0 || LOCAL.state.load(Ordering::Acquire) != 0 {
        return;
    }
    for (i, w) in LOCAL.name.iter().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rep.local[i * 8..i * 8 + 8]);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    let _ = LOCAL.state.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed);
}

/// Connect one channel of `kind` to the home shadow; returns the fd (internal, high).
pub fn connect(kind: u32) -> i64 {
    let mut side = [-1; 2];
    connect_x(kind, &mut side)
}

/// [`connect`]. Calls connections go to the home shadowd's local listener when it is on
/// this host; their answers then come on a socket of their own and large reads through a
/// pipe, left in `side` (answer socket, data pipe's read end).
pub(super) fn connect_x(kind: u32, side: &mut [i64; 2]) -> i64 {
    *side = [-1; 2];
    if !session_set() {
        return -(libc::EIO as i64);
    }
    if kind == rsys::KIND_CALLS && !LOCAL.off.load(Ordering::Relaxed) && LOCAL.state.load(Ordering::Acquire) == 1 {
        let fd = connect_local(side);
        if fd >= 0 {
            return fd;
        }
        let _ = LOCAL.state.compare_exchange(1, 2, Ordering::AcqRel, Ordering::Relaxed);
    }
    let s = session();
    let fd = dial(libc::AF_INET, &s.addr as *const libc::sockaddr_in as u64, core::mem::size_of::<libc::sockaddr_in>());
    if fd < 0 {
        return fd;
    }
    let one: i32 = 1;
    r!(libc::SYS_setsockopt, fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one as *const i32, 4);
    hello(fd, kind, 0)
}

/// A connected stream socket of `domain` to the address at `addr` (`len` bytes), as an
/// internal high descriptor; or -errno.
fn dial(domain: i32, addr: u64, len: usize) -> i64 {
    let fd = r!(libc::SYS_socket, domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return fd;
    }
    let fd = internal_high(fd);
    if fd < 0 {
        return fd;
    }
    let rc = r!(libc::SYS_connect, fd, addr, len);
    if rc < 0 {
        return close_failed(fd, rc);
    }
    fd
}

fn close_failed(fd: i64, e: i64) -> i64 {
    set_internal(fd, false);
    r!(libc::SYS_close, fd);
    e
}

fn connect_local(side: &mut [i64; 2]) -> i64 {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let mut len = 0;
    for (i, w) in LOCAL.name.iter().enumerate() {
        for (j, b) in w.load(Ordering::Relaxed).to_ne_bytes().into_iter().enumerate() {
            // abstract: sun_path[0] stays NUL, the name follows
            a.sun_path[1 + i * 8 + j] = b as libc::c_char;
            if b != 0 && len == i * 8 + j {
                len += 1;
            }
        }
    }
    if len == 0 {
        return -(libc::ENOENT as i64);
    }
    let fd = dial(libc::AF_UNIX, &a as *const libc::sockaddr_un as u64, core::mem::size_of::<libc::sa_family_t>() + 1 + len);
    if fd < 0 {
        return fd;
    }
    // an answer socket and a data pipe: our ends stay here (internal, high), the others go
    let mut sp = [-1i32; 2];
    let mut pp = [-1i32; 2];
    let r = r!(libc::SYS_socketpair, libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sp.as_mut_ptr());
    if r < 0 {
        return close_failed(fd, r);
    }
    let r = r!(libc::SYS_pipe2, pp.as_mut_ptr(), libc::O_CLOEXEC);
    if r < 0 {
        r!(libc::SYS_close, sp[0]);
        r!(libc::SYS_close, sp[1]);
        return close_failed(fd, r);
    }
    let ans = internal_high(sp[0] as i64);
    let pipe = internal_high(pp[0] as i64);
    let theirs = [sp[1], pp[1]];
    let fd = if ans < 0 || pipe < 0 { close_failed(fd, -(libc::EMFILE as i64)) } else { hello(fd, rsys::KIND_CALLS, rsys::HELLO_ANSWER_SOCKET) };
    let sent = fd >= 0 && send_fds(fd, &theirs);
    for t in theirs {
        r!(libc::SYS_close, t);
    }
    if !sent {
        for m in [ans, pipe].into_iter().filter(|&m| m >= 0) {
            close_failed(m, 0);
        }
        return if fd >= 0 { close_failed(fd, -(libc::EIO as i64)) } else { fd };
    }
    *side = [ans, pipe];
    fd
}

/// Say hello on a fresh connection; the fd, or -errno (the connection closed).
fn hello(fd: i64, kind: u32, flags: u32) -> i64 {
    let s = session();
    let h = rsys::Hello {
        token: s.token,
        kind,
        vpid: crate::identity::vpid() as u32,
        body_pid: crate::identity::real_pid() as u32,
        flags,
        node: s.node,
    }
    .encode();
    if !write_all(fd, h.as_ptr(), h.len()) {
        return close_failed(fd, -(libc::EIO as i64));
    }
    let mut rb = [0u8; rsys::HELLO_REPLY_LEN];
    if !read_all(fd, rb.as_mut_ptr(), rb.len()) {
        return close_failed(fd, -(libc::EIO as i64));
    }
    let rep = rsys::HelloReply::decode(&rb);
    if rep.status != 0 {
        return close_failed(fd, rep.status as i64);
    }
    learn_local(&rep);
    fd
}

/// After a restart from an image: tell the home shadow where every channel stood when
/// the image was taken (answers remembered from later calls are forgotten).
pub fn resync_channels() {
    let mut at: Vec<(u64, u64)> = Vec::new();
    for c in CHANS.iter() {
        let key = c.key.load(Ordering::Acquire);
        if key == 0 {
            continue;
        }
        for d in 0..DEPTHS {
            let seq = c.seq[d].load(Ordering::Acquire);
            if seq > 0 {
                at.push((((key as u32 as u64) << 8) | d as u64, seq));
            }
        }
    }
    for (chan, seq) in at {
        manager_call(op::RESYNC, [chan, seq, 0, 0, 0, 0]);
    }
}
