//! Forwarded socket calls: socket, connect, bind, listen, accept, send, receive, options.
//! A connect once started runs to its end; blocking receives and accepts wait as
//! [`super::wait`] says.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use proto::rsys::{self as wire, op, Req};

use super::fd::send_all;
use super::wait::{may_block, nonblocking, wait};
use super::{done, neg_errno, sys, Answer, Stop};
use crate::rsys::Session;

pub(super) fn call(s: &Session, req: &Req, bulk: &[u8], client: RawFd) -> Answer {
    let a = req.args;
    let ai = |i: usize| a[i] as i64;
    let ol = req.out_len;
    let bp = bulk.as_ptr() as i64;
    match req.op {
        op::SENDTO => {
            let f = s.file(a[0])?;
            let alen = a[4] as usize;
            if alen > bulk.len() {
                return done(-libc::EINVAL as i64);
            }
            let (payload, addr) = bulk.split_at(bulk.len() - alen);
            send_all(f.as_raw_fd(), payload, a[3] as i32, addr, client)
        }
        op::SOCKET => {
            let ty = (ai(1) as i32) | libc::SOCK_CLOEXEC;
            // SAFETY: integer arguments only.
            let r = unsafe { libc::socket(ai(0) as i32, ty, ai(2) as i32) };
            if r < 0 {
                return done(neg_errno());
            }
            // SAFETY: r is a fresh descriptor we own.
            done(s.bind(a[3], unsafe { OwnedFd::from_raw_fd(r) }))
        }
        op::CONNECT => {
            let f = s.file(a[0])?;
            connect(f.as_raw_fd(), bulk)
        }
        op::RECVFROM => {
            let f = s.file(a[0])?;
            recvfrom(f.as_raw_fd(), a[2], ai(3) as i32, a[4] == 1, ol, client)
        }
        op::SHUTDOWN | op::LISTEN => {
            let f = s.file(a[0])?;
            let nr = if req.op == op::SHUTDOWN { libc::SYS_shutdown } else { libc::SYS_listen };
            // SAFETY: integer arguments only.
            done(unsafe { sys(nr, [f.as_raw_fd() as i64, ai(1), 0, 0, 0, 0]) })
        }
        op::BIND => {
            let f = s.file(a[0])?;
            // SAFETY: bulk holds the sockaddr, live for the call.
            done(unsafe { sys(libc::SYS_bind, [f.as_raw_fd() as i64, bp, bulk.len() as i64, 0, 0, 0]) })
        }
        op::GETSOCKNAME | op::GETPEERNAME => {
            let f = s.file(a[0])?;
            let mut addr = [0u8; 128];
            let mut len: libc::socklen_t = 128;
            let nr = if req.op == op::GETSOCKNAME { libc::SYS_getsockname } else { libc::SYS_getpeername };
            // SAFETY: addr and len are live; len says addr's size.
            let r = unsafe { sys(nr, [f.as_raw_fd() as i64, addr.as_mut_ptr() as i64, &mut len as *mut _ as i64, 0, 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, addr[..(len as usize).min(128)].to_vec()))
        }
        op::SETSOCKOPT => {
            let f = s.file(a[0])?;
            // SAFETY: bulk holds the value, live for the call.
            done(unsafe { sys(libc::SYS_setsockopt, [f.as_raw_fd() as i64, ai(1), ai(2), bp, bulk.len() as i64, 0]) })
        }
        op::GETSOCKOPT => {
            let f = s.file(a[0])?;
            let mut buf = vec![0u8; (a[3] as usize).min(4096)];
            let mut len = buf.len() as libc::socklen_t;
            // SAFETY: buf and len are live; len says buf's size.
            let r = unsafe { sys(libc::SYS_getsockopt, [f.as_raw_fd() as i64, ai(1), ai(2), buf.as_mut_ptr() as i64, &mut len as *mut _ as i64, 0]) };
            if r < 0 {
                return done(r);
            }
            buf.truncate(len as usize);
            Ok((0, buf))
        }
        op::ACCEPT4 => {
            let f = s.file(a[0])?;
            let fd = f.as_raw_fd();
            let flags = (ai(2) as i32 & libc::SOCK_NONBLOCK) | libc::SOCK_CLOEXEC;
            let blocking = !nonblocking(fd);
            loop {
                if blocking {
                    wait(fd, true, libc::POLLIN, Some(client))?;
                }
                let mut addr = [0u8; 128];
                let mut len: libc::socklen_t = 128;
                // SAFETY: addr and len are live; len says addr's size.
                let r = unsafe { sys(libc::SYS_accept4, [fd as i64, addr.as_mut_ptr() as i64, &mut len as *mut _ as i64, flags as i64, 0, 0]) };
                if blocking && r == -libc::EAGAIN as i64 {
                    continue;
                }
                if r < 0 {
                    return done(r);
                }
                // SAFETY: r is a fresh descriptor we own.
                let ret = s.bind(a[3], unsafe { OwnedFd::from_raw_fd(r as RawFd) });
                let data = if a[4] == 1 { addr[..(len as usize).min(128)].to_vec() } else { Vec::new() };
                return Ok((ret, data));
            }
        }
        _ => done(-libc::ENOSYS as i64),
    }
}

fn recvfrom(fd: RawFd, len: u64, flags: i32, want_addr: bool, out_len: u32, client: RawFd) -> Answer {
    let head = if want_addr { 4 + wire::RECV_ADDR_AREA } else { 0 };
    let n = (len as usize).min((out_len as usize).saturating_sub(head)).min(wire::MAX_IO);
    let mut buf = vec![0u8; head + n];
    let blocking = may_block(fd) && flags & libc::MSG_DONTWAIT == 0;
    loop {
        if blocking {
            wait(fd, true, libc::POLLIN, Some(client))?;
        }
        let mut addr = [0u8; wire::RECV_ADDR_AREA];
        let mut alen = wire::RECV_ADDR_AREA as libc::socklen_t;
        let (ap, lp) = if want_addr { (addr.as_mut_ptr() as i64, &mut alen as *mut _ as i64) } else { (0, 0) };
        let fl = flags | if blocking { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: buf[head..] has n bytes; addr and alen are live.
        let r = unsafe { sys(libc::SYS_recvfrom, [fd as i64, buf[head..].as_mut_ptr() as i64, n as i64, fl as i64, ap, lp]) };
        if blocking && r == -libc::EAGAIN as i64 {
            continue;
        }
        if r < 0 {
            return done(r);
        }
        if want_addr {
            buf[..4].copy_from_slice(&alen.to_le_bytes());
            let k = (alen as usize).min(wire::RECV_ADDR_AREA);
            buf[4..4 + k].copy_from_slice(&addr[..k]);
        }
        // MSG_TRUNC may report more than was copied.
        buf.truncate(head + (r as usize).min(n));
        return Ok((r, buf));
    }
}

/// connect: once started it cannot be taken back, so a blocking connect runs to its end
/// even if the body goes away; its answer is then replayed to the resent request.
fn connect(fd: RawFd, addr: &[u8]) -> Answer {
    let ap = addr.as_ptr() as i64;
    if !may_block(fd) {
        // SAFETY: addr is live for the call.
        return done(unsafe { sys(libc::SYS_connect, [fd as i64, ap, addr.len() as i64, 0, 0, 0]) });
    }
    // SAFETY: integer arguments only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: integer arguments only.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) };
    // SAFETY: addr is live for the call.
    let mut r = unsafe { sys(libc::SYS_connect, [fd as i64, ap, addr.len() as i64, 0, 0, 0]) };
    if r == -libc::EINPROGRESS as i64 {
        r = match wait(fd, true, libc::POLLOUT, None) {
            Ok(()) => {
                let mut err: i32 = 0;
                let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
                // SAFETY: err and len are live; len says err's size.
                let g = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut i32 as *mut libc::c_void, &mut len) };
                if g < 0 {
                    neg_errno()
                } else {
                    -i64::from(err)
                }
            }
            // (a blocking connect past SO_SNDTIMEO goes on in the background)
            Err(Stop::Errno(e)) if e == -libc::EAGAIN as i64 => -libc::EINPROGRESS as i64,
            Err(Stop::Errno(e)) => e,
            Err(Stop::Abandon) => -libc::EINTR as i64,
        };
    }
    // SAFETY: integer arguments only.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    done(r)
}
