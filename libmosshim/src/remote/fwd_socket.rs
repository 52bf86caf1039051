//! Forwarders of the calls on home sockets: send and receive (msghdr and mmsghdr forms
//! included; no control data), and the socket addresses copied back as the kernel does.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::Home;
use super::fwd_fd::{bind_new, iovs};
use super::transport::{Io, NOIO};
use super::{EFAULT, EINVAL};
use proto::rsys::{self, op};

pub(super) fn addr_len(ab: &[u8; 128]) -> usize {
    match u16::from_ne_bytes([ab[0], ab[1]]) as i32 {
        libc::AF_INET => 16,
        libc::AF_INET6 => 28,
        libc::AF_UNIX => 110,
        _ => 128,
    }
}

pub(super) fn copy_addr(ab: &[u8], n: usize, addr: u64, lenp: u64) {
    if addr == 0 || lenp == 0 {
        return;
    }
    // SAFETY: accept's, getsockname's and recvfrom's contract: a non-null addrlen (checked)
    // points at a writable socklen_t and a non-null addr at *addrlen writable bytes; k <= *addrlen.
    unsafe {
        let l = &mut *(lenp as *mut u32);
        let k = (*l as usize).min(n).min(ab.len());
        core::ptr::copy_nonoverlapping(ab.as_ptr(), addr as *mut u8, k);
        *l = n as u32;
    }
}

pub(super) fn sendto_fwd(h: &impl Home, fd: i64, data: &[Io], flags: u64, addr: u64, alen: usize, m: u64) -> i64 {
    let mut b = [NOIO; 9];
    let mut k = 0;
    let mut total = 0usize;
    for d in data {
        b[k] = *d;
        k += 1;
        total += d.n;
    }
    if total > rsys::MAX_IO {
        return -(libc::EMSGSIZE as i64);
    }
    let al = if addr != 0 { alen } else { 0 };
    b[k] = Io { p: addr, n: al };
    k += 1;
    h.forward(op::SENDTO, [fd as u64, 0, 0, flags, al as u64, 0], &b[..k], &[], m, true)
}

pub(super) fn recvfrom_fwd(h: &impl Home, fd: i64, data: &[Io], flags: u64, addr: u64, lenp: u64, m: u64) -> i64 {
    let want = addr != 0 && lenp != 0;
    let mut area = [0u8; 4 + rsys::RECV_ADDR_AREA];
    let mut out = [NOIO; 9];
    let mut k = 0;
    if want {
        out[0] = Io { p: area.as_mut_ptr() as u64, n: area.len() };
        k = 1;
    }
    let mut total = 0usize;
    for d in data {
        let n = d.n.min(rsys::MAX_IO - total);
        out[k] = Io { p: d.p, n };
        k += 1;
        total += n;
    }
    let r = h.forward(op::RECVFROM, [fd as u64, 0, total as u64, flags, want as u64, 0], &[], &out[..k], m, true);
    if r >= 0 && want {
        let n = u32::from_le_bytes([area[0], area[1], area[2], area[3]]) as usize;
        copy_addr(&area[4..], n.min(rsys::RECV_ADDR_AREA), addr, lenp);
    }
    r
}

fn sendmsg_fwd(h: &impl Home, fd: i64, msg: &libc::msghdr, flags: u64, m: u64) -> i64 {
    if msg.msg_controllen != 0 {
        return -(libc::EOPNOTSUPP as i64);
    }
    let mut v = [NOIO; 8];
    let Some(k) = iovs(msg.msg_iov as u64, msg.msg_iovlen, &mut v) else { return EINVAL };
    sendto_fwd(h, fd, &v[..k], flags, msg.msg_name as u64, msg.msg_namelen as usize, m)
}

fn recvmsg_fwd(h: &impl Home, fd: i64, msg: &mut libc::msghdr, flags: u64, m: u64) -> i64 {
    let mut v = [NOIO; 8];
    let Some(k) = iovs(msg.msg_iov as u64, msg.msg_iovlen, &mut v) else { return EINVAL };
    let nl = &mut msg.msg_namelen as *mut u32 as u64;
    let r = recvfrom_fwd(h, fd, &v[..k], flags, msg.msg_name as u64, if msg.msg_name.is_null() { 0 } else { nl }, m);
    msg.msg_controllen = 0;
    msg.msg_flags = 0;
    r
}

/// sendmmsg / recvmmsg on a home socket: one forwarded sendmsg / recvmsg per message.
/// The count done so far, or the first call's error. recvmmsg waits for every message
/// (for the first only with MSG_WAITFORONE); its timeout argument is not applied.
pub(super) fn mmsg_fwd(h: &impl Home, fd: i64, vec: u64, n: u32, flags: u64, m: u64, send: bool) -> i64 {
    let wait_one = flags & libc::MSG_WAITFORONE as u64 != 0;
    let base = flags & !(libc::MSG_WAITFORONE as u64);
    let mut done = 0i64;
    for i in 0..n.min(1024) as usize {
        // SAFETY: sendmmsg's/recvmmsg's contract: vec points at n struct mmsghdr, and i < n.
        let e = unsafe { &mut *(vec as *mut libc::mmsghdr).add(i) };
        let r = if send {
            sendmsg_fwd(h, fd, &e.msg_hdr, base, m)
        } else {
            let fl = if wait_one && i > 0 { base | libc::MSG_DONTWAIT as u64 } else { base };
            recvmsg_fwd(h, fd, &mut e.msg_hdr, fl, m)
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        e.msg_len = r as u32;
        done += 1;
    }
    done
}

/// accept / accept4 (`nr`) on a home socket: the new socket is bound to a placeholder
/// number; the peer's address is copied back if asked for.
pub(super) fn accept_fwd(h: &impl Home, nr: i64, fd: i64, a: [u64; 6], m: u64) -> i64 {
    let flags = if nr == libc::SYS_accept4 { a[3] } else { 0 };
    let mut ab = [0u8; 128];
    let want = a[1] != 0 && a[2] != 0;
    let r = bind_new(h, op::ACCEPT4, [fd as u64, 0, flags, 0, want as u64, 0], 3, &[], &[Io { p: ab.as_mut_ptr() as u64, n: 128 }], m);
    if r >= 0 && want {
        copy_addr(&ab, 128, a[1], a[2]);
    }
    r
}

/// getsockname / getpeername (`nr`, also their op numbers) on a home socket.
pub(super) fn sockname_fwd(h: &impl Home, nr: i64, fd: i64, addr: u64, lenp: u64, m: u64) -> i64 {
    let mut ab = [0u8; 128];
    // op::GETSOCKNAME, op::GETPEERNAME: the system call numbers
    let r = h.forward_quick(nr as u32, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: ab.as_mut_ptr() as u64, n: 128 }], m);
    if r >= 0 {
        copy_addr(&ab, addr_len(&ab), addr, lenp);
    }
    r.min(0)
}

/// getsockopt on a home socket (values up to 256 bytes).
pub(super) fn getsockopt_fwd(h: &impl Home, fd: i64, a: [u64; 6], m: u64) -> i64 {
    if a[4] == 0 {
        return EFAULT;
    }
    // SAFETY: getsockopt's contract: a non-null optlen (checked) points at a writable socklen_t.
    let lp = unsafe { &mut *(a[4] as *mut u32) };
    let mut buf = [0u8; 256];
    let want = (*lp as usize).min(256);
    let r = h.forward_quick(op::GETSOCKOPT, [fd as u64, a[1], a[2], want as u64, 0, 0], &[], &[Io { p: buf.as_mut_ptr() as u64, n: want }], m);
    if r >= 0 {
        // SAFETY: getsockopt's contract: optval has room for *lp bytes, and want <= *lp.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), a[3] as *mut u8, want) };
        *lp = want as u32;
    }
    r.min(0)
}

/// sendmsg with the msghdr at `msg`.
pub(super) fn sendmsg_at(h: &impl Home, fd: i64, msg: u64, flags: u64, m: u64) -> i64 {
    // SAFETY: sendmsg's contract: msg points at a struct msghdr (only read).
    sendmsg_fwd(h, fd, unsafe { &*(msg as *const libc::msghdr) }, flags, m)
}

/// recvmsg with the msghdr at `msg`.
pub(super) fn recvmsg_at(h: &impl Home, fd: i64, msg: u64, flags: u64, m: u64) -> i64 {
    // SAFETY: recvmsg's contract: msg points at a writable struct msghdr.
    recvmsg_fwd(h, fd, unsafe { &mut *(msg as *mut libc::msghdr) }, flags, m)
}
