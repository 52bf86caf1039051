//! Forwarders of the calls on home sockets: send and receive (msghdr and mmsghdr forms
//! included; no control data), and the socket addresses copied back as the kernel does.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::Home;
use super::fwd_fd::{bind_new, iovs};
use super::transport::{Io, NOIO};
use super::{EFAULT, EINVAL};
use crate::rt::user;
use core::mem::{offset_of, size_of};
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
    // accept's, getsockname's and recvfrom's contract: a non-null addrlen (checked) points
    // at a writable socklen_t and a non-null addr at *addrlen writable bytes; k <= *addrlen
    let l = user::read::<u32>(lenp);
    let k = (l as usize).min(n).min(ab.len());
    user::put_bytes(addr, &ab[..k]);
    user::write::<u32>(lenp, n as u32);
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

/// recvmsg with the writable struct msghdr at `msg` (its name length, control length and
/// flags are written back there).
fn recvmsg_fwd(h: &impl Home, fd: i64, msg: u64, flags: u64, m: u64) -> i64 {
    // recvmsg's contract: msg points at a writable struct msghdr
    let hdr = user::read::<libc::msghdr>(msg);
    let mut v = [NOIO; 8];
    let Some(k) = iovs(hdr.msg_iov as u64, hdr.msg_iovlen, &mut v) else { return EINVAL };
    let nl = msg + offset_of!(libc::msghdr, msg_namelen) as u64;
    let r = recvfrom_fwd(h, fd, &v[..k], flags, hdr.msg_name as u64, if hdr.msg_name.is_null() { 0 } else { nl }, m);
    user::write::<libc::size_t>(msg + offset_of!(libc::msghdr, msg_controllen) as u64, 0);
    user::write::<libc::c_int>(msg + offset_of!(libc::msghdr, msg_flags) as u64, 0);
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
        // sendmmsg's/recvmmsg's contract: vec points at n writable struct mmsghdr, and i < n
        let e = vec + (i * size_of::<libc::mmsghdr>()) as u64;
        let hdr = e + offset_of!(libc::mmsghdr, msg_hdr) as u64;
        let r = if send {
            sendmsg_fwd(h, fd, &user::read::<libc::msghdr>(hdr), base, m)
        } else {
            let fl = if wait_one && i > 0 { base | libc::MSG_DONTWAIT as u64 } else { base };
            recvmsg_fwd(h, fd, hdr, fl, m)
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        user::write::<libc::c_uint>(e + offset_of!(libc::mmsghdr, msg_len) as u64, r as u32);
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
        // the address's own length, as the kernel reports it (not the room asked for)
        copy_addr(&ab, addr_len(&ab), a[1], a[2]);
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
    // getsockopt's contract: a non-null optlen (checked) points at a writable socklen_t
    let lp = user::read::<u32>(a[4]);
    let mut buf = [0u8; 256];
    let want = (lp as usize).min(256);
    let r = h.forward_quick(op::GETSOCKOPT, [fd as u64, a[1], a[2], want as u64, 0, 0], &[], &[Io { p: buf.as_mut_ptr() as u64, n: want }], m);
    if r >= 0 {
        // getsockopt's contract: optval has room for *optlen bytes, and want <= *optlen
        user::put_bytes(a[3], &buf[..want]);
        user::write::<u32>(a[4], want as u32);
    }
    r.min(0)
}

/// sendmsg with the msghdr at `msg`.
pub(super) fn sendmsg_at(h: &impl Home, fd: i64, msg: u64, flags: u64, m: u64) -> i64 {
    // sendmsg's contract: msg points at a struct msghdr (only read)
    sendmsg_fwd(h, fd, &user::read::<libc::msghdr>(msg), flags, m)
}

/// recvmsg with the msghdr at `msg`.
pub(super) fn recvmsg_at(h: &impl Home, fd: i64, msg: u64, flags: u64, m: u64) -> i64 {
    recvmsg_fwd(h, fd, msg, flags, m)
}
