//! One connection's bytes: a request (header and bulk data in one writev), its answer
//! (header and data in one readv when they are there, the rest where it belongs, the
//! data pipe of a local connection included), exact reads and writes, passing fds, and
//! the CPU hint and short spin of large local reads.
//!
//! Used from the SIGSYS handler: stack buffers and raw calls only.

use crate::rt::syscall::r;
use super::wait::mono_ns;
use core::sync::atomic::{AtomicU32, Ordering};
use proto::rsys::{self, Req, Resp};

/// Move exactly `n` bytes at address `p` with `op(address, count)`, one system call per
/// piece (EINTR retried); false if the descriptor failed or reached its end.
fn exact(mut p: u64, mut n: usize, op: impl Fn(u64, usize) -> i64) -> bool {
    while n > 0 {
        let k = op(p, n);
        if k == -(libc::EINTR as i64) {
            continue;
        }
        if k <= 0 {
            return false;
        }
        p += k as u64;
        n -= k as usize;
    }
    true
}

pub(super) fn write_all(fd: i64, p: *const u8, n: usize) -> bool {
    exact(p as u64, n, |p, n| r!(libc::SYS_write, fd, p, n))
}

/// Read exactly n bytes from a connection (MSG_WAITALL: one call, however many pieces the
/// data arrives in).
pub(super) fn read_all(fd: i64, p: *mut u8, n: usize) -> bool {
    exact(p as u64, n, |p, n| r!(libc::SYS_recvfrom, fd, p, n, libc::MSG_WAITALL, 0, 0))
}

/// Read exactly `n` bytes from the pipe `fd`.
fn read_pipe(fd: i64, p: *mut u8, n: usize) -> bool {
    exact(p as u64, n, |p, n| r!(libc::SYS_read, fd, p, n))
}

/// Pass `fds` (one or two) over the unix connection `conn` (one byte carrying them).
pub(super) fn send_fds(conn: i64, fds: &[i32; 2]) -> bool {
    let byte = 0u8;
    let mut iov = libc::iovec { iov_base: &byte as *const u8 as *mut _, iov_len: 1 };
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(8) } as usize;
    // SAFETY: the control buffer holds one cmsg with 8 bytes of data (CMSG_SPACE(8) <= 32).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(8) as usize;
        core::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut [i32; 2], *fds);
    }
    loop {
        let r = r!(libc::SYS_sendmsg, conn, &msg as *const libc::msghdr, libc::MSG_NOSIGNAL);
        if r == -(libc::EINTR as i64) {
            continue;
        }
        return r == 1;
    }
}

#[derive(Clone, Copy)]
pub(super) struct Io {
    pub(super) p: u64,
    pub(super) n: usize,
}
pub(super) const NOIO: Io = Io { p: 0, n: 0 };

pub(super) fn send_req(fd: i64, req: &Req, bulk: &[Io]) -> bool {
    let h = req.encode();
    let mut iov = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; 6];
    iov[0] = libc::iovec { iov_base: h.as_ptr() as *mut _, iov_len: h.len() };
    let mut k = 1;
    for b in bulk.iter().filter(|b| b.n > 0) {
        iov[k] = libc::iovec { iov_base: b.p as *mut _, iov_len: b.n };
        k += 1;
    }
    let mut first = 0;
    while first < k {
        let w = r!(libc::SYS_writev, fd, iov[first..].as_ptr(), k - first);
        if w == -(libc::EINTR as i64) {
            continue;
        }
        if w <= 0 {
            return false;
        }
        let mut w = w as usize;
        while first < k && w >= iov[first].iov_len {
            w -= iov[first].iov_len;
            first += 1;
        }
        if first < k {
            iov[first].iov_base = (iov[first].iov_base as usize + w) as *mut _;
            iov[first].iov_len -= w;
        }
    }
    true
}

/// Reads from this size up carry the CPU hint (the server splices them).
pub(super) const HINT_MIN: usize = 64 * 1024;

/// Microseconds a large read over a local connection polls its answer socket before it
/// sleeps (`MOS_RSYS_SPIN_US`, read at start-up; 0: never). When the serving thread runs
/// on another CPU, sleeping costs a cross-CPU wake-up per call (tens of us on a VM); the
/// poll catches the answer instead, and yields the CPU between looks to a serving thread
/// that shares it. A 1 MiB read's answer comes in 30 to 100 us.
static SPIN_US: AtomicU32 = AtomicU32::new(150);

/// Start-up: `MOS_RSYS_SPIN_US`.
pub fn set_spin_us(us: u32) {
    SPIN_US.store(us, Ordering::Relaxed);
}

/// The spin of a large local read, in microseconds (0: never).
pub(super) fn spin_us() -> u32 {
    SPIN_US.load(Ordering::Relaxed)
}

/// Poll `fd` for up to `ns`, yielding the CPU between looks (to a serving thread that
/// shares it; on an otherwise idle CPU the yield returns at once).
pub(super) fn spin_for(fd: i64, ns: i64) {
    let end = mono_ns() + ns;
    loop {
        let mut p = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
        if r!(libc::SYS_poll, &mut p as *mut libc::pollfd, 1, 0) != 0 || mono_ns() >= end {
            return;
        }
        r!(libc::SYS_sched_yield);
    }
}

/// [`rsys::REQ_CPU_HINT`] with the calling thread's CPU, or 0 if it is not known.
pub(super) fn cpu_hint() -> u32 {
    let mut cpu = 0u32;
    if r!(libc::SYS_getcpu, &mut cpu as *mut u32, 0, 0) == 0 && cpu < 0x10000 {
        rsys::REQ_CPU_HINT | cpu
    } else {
        0
    }
}

/// Read the answer to call `seq`: its header and data come in one readv when they are
/// there already (the connection carries nothing else, so nothing past the answer can be
/// read). `None`: the connection failed, or the answer is not that of call `seq` (the
/// channel is then dropped and the call resent: a call never returns another's answer).
pub(super) fn read_resp(fd: i64, pipe: i64, out: &[Io], out_len: usize, seq: u64) -> Option<Resp> {
    let mut hb = [0u8; rsys::RESP_LEN];
    let mut iov = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; 9];
    iov[0] = libc::iovec { iov_base: hb.as_mut_ptr() as *mut _, iov_len: hb.len() };
    let mut k = 1;
    for o in out.iter().filter(|o| o.n > 0) {
        if k == iov.len() {
            break;
        }
        iov[k] = libc::iovec { iov_base: o.p as *mut _, iov_len: o.n };
        k += 1;
    }
    let got = loop {
        let n = r!(libc::SYS_readv, fd, iov.as_ptr(), k);
        if n == -(libc::EINTR as i64) {
            continue;
        }
        if n <= 0 {
            return None;
        }
        break n as usize;
    };
    if got < hb.len() && !read_all(fd, hb[got..].as_mut_ptr(), hb.len() - got) {
        return None;
    }
    let resp = Resp::decode(&hb);
    if resp.seq != seq {
        return None;
    }
    let want = (resp.data_len as usize).min(out_len);
    // the data bytes already in place, then the rest where it belongs
    let mut have = got.saturating_sub(hb.len());
    if have > want {
        return None; // more than the header announced: not our shadow
    }
    let in_pipe = resp.flags & rsys::RESP_DATA_IN_PIPE != 0;
    if in_pipe && (pipe < 0 || have > 0 || resp.data_len as usize > out_len) {
        return None;
    }
    let fill = |p: *mut u8, n: usize| if in_pipe { read_pipe(pipe, p, n) } else { read_all(fd, p, n) };
    let mut skip = have;
    for o in out {
        if have >= want {
            break;
        }
        if skip >= o.n {
            skip -= o.n;
            continue;
        }
        let n = (o.n - skip).min(want - have);
        if !fill((o.p as usize + skip) as *mut u8, n) {
            return None;
        }
        have += n;
        skip = 0;
    }
    // (a well-behaved shadow never sends more than out_len)
    let mut extra = resp.data_len as usize - want;
    let mut sink = [0u8; 256];
    while extra > 0 {
        let n = extra.min(sink.len());
        if !read_all(fd, sink.as_mut_ptr(), n) {
            return None;
        }
        extra -= n;
    }
    Some(resp)
}
