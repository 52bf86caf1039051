//! Forwarded calls on a descriptor: read, write, seek, stat, sync, dup, close. Owns the
//! blocking write that writes everything ([`send_all`]); a blocking read waits as
//! [`super::wait`] says.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use proto::rsys::{op, Req};

use super::wait::{may_block, nonblocking, wait};
use super::{cap, done, file_type, neg_errno, read_buf, struct_bytes, sys, with_data, Answer, Stop};
use crate::lock;
use crate::rsys::Session;

pub(super) fn call(s: &Session, req: &Req, bulk: &[u8], client: RawFd) -> Answer {
    let a = req.args;
    let ai = |i: usize| a[i] as i64;
    let ol = req.out_len;
    let bp = bulk.as_ptr() as i64;
    match req.op {
        op::READ => {
            let f = s.file(a[0])?;
            let fd = f.as_raw_fd();
            let n = cap(a[2], ol);
            let mut buf = read_buf(n);
            let t = file_type(fd);
            let blocking = t != libc::S_IFREG && t != libc::S_IFDIR && t != libc::S_IFBLK && !nonblocking(fd);
            let sock = t == libc::S_IFSOCK;
            loop {
                if blocking {
                    wait(fd, sock, libc::POLLIN, Some(client))?;
                }
                // SAFETY: buf is a live buffer of n bytes.
                let r = unsafe {
                    if blocking && sock {
                        sys(libc::SYS_recvfrom, [fd as i64, buf.as_mut_ptr() as i64, n as i64, libc::MSG_DONTWAIT as i64, 0, 0])
                    } else {
                        sys(libc::SYS_read, [fd as i64, buf.as_mut_ptr() as i64, n as i64, 0, 0, 0])
                    }
                };
                if blocking && r == -libc::EAGAIN as i64 {
                    continue;
                }
                return with_data(r, buf);
            }
        }
        op::WRITE => {
            let f = s.file(a[0])?;
            send_all(f.as_raw_fd(), bulk, 0, &[], client)
        }
        op::PREAD64 => {
            let f = s.file(a[0])?;
            let n = cap(a[2], ol);
            let mut buf = read_buf(n);
            // SAFETY: buf has room for n bytes.
            let r = unsafe { sys(libc::SYS_pread64, [f.as_raw_fd() as i64, buf.as_mut_ptr() as i64, n as i64, ai(3), 0, 0]) };
            with_data(r, buf)
        }
        op::PWRITE64 => {
            let f = s.file(a[0])?;
            // SAFETY: bulk is live for the call.
            done(unsafe { sys(libc::SYS_pwrite64, [f.as_raw_fd() as i64, bp, bulk.len() as i64, ai(3), 0, 0]) })
        }
        op::CLOSE => match i32::try_from(ai(0)).ok().and_then(|n| lock(&s.files).remove(&n)) {
            Some(_) => done(0),
            None => done(-libc::EBADF as i64),
        },
        op::FSTAT => {
            let f = s.file(a[0])?;
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is a live struct stat.
            let r = unsafe { sys(libc::SYS_fstat, [f.as_raw_fd() as i64, &mut st as *mut _ as i64, 0, 0, 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, struct_bytes(&st)))
        }
        op::LSEEK => {
            let f = s.file(a[0])?;
            // SAFETY: integer arguments only.
            done(unsafe { sys(libc::SYS_lseek, [f.as_raw_fd() as i64, ai(1), ai(2), 0, 0, 0]) })
        }
        op::FSYNC | op::FDATASYNC | op::FTRUNCATE | op::FCHMOD | op::FCHOWN | op::FADVISE64 | op::FALLOCATE => {
            let f = s.file(a[0])?;
            let nr = match req.op {
                op::FSYNC => libc::SYS_fsync,
                op::FDATASYNC => libc::SYS_fdatasync,
                op::FTRUNCATE => libc::SYS_ftruncate,
                op::FCHMOD => libc::SYS_fchmod,
                op::FCHOWN => libc::SYS_fchown,
                op::FADVISE64 => libc::SYS_fadvise64,
                _ => libc::SYS_fallocate, // op::FALLOCATE
            };
            // SAFETY: integer arguments only.
            done(unsafe { sys(nr, [f.as_raw_fd() as i64, ai(1), ai(2), ai(3), 0, 0]) })
        }
        op::FSTATFS => {
            let f = s.file(a[0])?;
            // SAFETY: statfs is plain data.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: st is a live struct statfs.
            let r = unsafe { sys(libc::SYS_fstatfs, [f.as_raw_fd() as i64, &mut st as *mut _ as i64, 0, 0, 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, struct_bytes(&st)))
        }
        op::GETDENTS64 => {
            let f = s.file(a[0])?;
            let n = cap(a[2], ol);
            let mut buf = vec![0u8; n];
            // SAFETY: buf is a live buffer of n bytes.
            let r = unsafe { sys(libc::SYS_getdents64, [f.as_raw_fd() as i64, buf.as_mut_ptr() as i64, n as i64, 0, 0, 0]) };
            with_data(r, buf)
        }
        op::DUP3 => {
            if a[0] == a[1] {
                return done(-libc::EINVAL as i64);
            }
            let f = s.file(a[0])?;
            // SAFETY: integer arguments only.
            let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if r < 0 {
                return done(neg_errno());
            }
            // SAFETY: r is a fresh descriptor we own.
            done(s.bind(a[1], unsafe { OwnedFd::from_raw_fd(r) }))
        }
        _ => done(-libc::ENOSYS as i64),
    }
}

/// write / sendto: a call that may block writes everything. Before the first byte has gone
/// the connection stirring ends it as [`wait`] says; after that, a cancel or the socket's
/// send timeout ends it with the count written so far (as the kernel does), and a body
/// that went away does not stop it (its answer waits for the resent request).
pub(super) fn send_all(fd: RawFd, data: &[u8], flags: i32, addr: &[u8], client: RawFd) -> Answer {
    let sock = file_type(fd) == libc::S_IFSOCK;
    let (ap, al) = if addr.is_empty() { (0, 0) } else { (addr.as_ptr() as i64, addr.len() as i64) };
    let once = |buf: &[u8], extra: i32| -> i64 {
        // SAFETY: buf and addr are live for the call.
        unsafe {
            if sock {
                sys(libc::SYS_sendto, [fd as i64, buf.as_ptr() as i64, buf.len() as i64, (flags | extra | libc::MSG_NOSIGNAL) as i64, ap, al])
            } else {
                sys(libc::SYS_write, [fd as i64, buf.as_ptr() as i64, buf.len() as i64, 0, 0, 0])
            }
        }
    };
    if !may_block(fd) || flags & libc::MSG_DONTWAIT != 0 {
        return done(once(data, 0));
    }
    let mut sent = 0usize;
    let mut watch = Some(client);
    loop {
        match wait(fd, sock, libc::POLLOUT, watch) {
            Ok(()) => {}
            Err(e) if sent == 0 => return Err(e),
            Err(Stop::Abandon) => {
                watch = None;
                continue;
            }
            Err(Stop::Errno(_)) => return done(sent as i64),
        }
        let rest = &data[sent..];
        let r = if sock {
            once(rest, libc::MSG_DONTWAIT)
        } else {
            // A pipe or terminal that polls writable takes PIPE_BUF bytes without blocking.
            once(&rest[..rest.len().min(libc::PIPE_BUF)], 0)
        };
        if r == -libc::EAGAIN as i64 || r == -libc::EINTR as i64 {
            continue;
        }
        if r < 0 {
            return done(if sent > 0 { sent as i64 } else { r });
        }
        sent += r as usize;
        if sent >= data.len() {
            return done(sent as i64);
        }
    }
}
