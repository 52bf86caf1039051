//! Forwarded control calls on a descriptor: ioctl (by the shape table both ends share),
//! fcntl and flock. Locks are taken per open file (OFD), never as this daemon's process
//! locks; a blocking lock naps while watching the body's connection.

use std::os::fd::{AsRawFd, RawFd};

use proto::rsys as wire;

use super::wait::{nap, LOCK_RETRY_MS};
use super::{done, struct_bytes, sys, Answer};
use crate::rsys::Session;

/// flock: a blocking one retries without blocking, napping between tries.
pub(super) fn flock(s: &Session, fd: u64, operation: i32, client: RawFd) -> Answer {
    let f = s.file(fd)?;
    if operation & (libc::LOCK_NB | libc::LOCK_UN) != 0 {
        // SAFETY: integer arguments only.
        return done(unsafe { sys(libc::SYS_flock, [f.as_raw_fd() as i64, operation as i64, 0, 0, 0, 0]) });
    }
    loop {
        // SAFETY: integer arguments only.
        let r = unsafe { sys(libc::SYS_flock, [f.as_raw_fd() as i64, (operation | libc::LOCK_NB) as i64, 0, 0, 0, 0]) };
        if r != -libc::EWOULDBLOCK as i64 {
            return done(r);
        }
        nap(client, LOCK_RETRY_MS)?;
    }
}

pub(super) fn ioctl(s: &Session, fd: u64, request: u64, bulk: &[u8], out_len: u32) -> Answer {
    let f = s.file(fd)?;
    let req = request as libc::c_ulong;
    let (inp, outp) = match wire::ioctl_shape(request) {
        wire::IoctlShape::Forward { input, output } => (input, output),
        // close-on-exec is the body's business; ours is always set
        wire::IoctlShape::FdFlag => return done(0),
        wire::IoctlShape::Unsupported => return done(-libc::ENOTTY as i64),
    };
    let mut buf = [0u8; 64];
    let k = inp.min(bulk.len());
    buf[..k].copy_from_slice(&bulk[..k]);
    // SAFETY: buf is 64 bytes, more than any of the structs these requests use.
    let r = unsafe { sys(libc::SYS_ioctl, [f.as_raw_fd() as i64, req as i64, buf.as_mut_ptr() as i64, 0, 0, 0]) };
    if r < 0 {
        return done(r);
    }
    Ok((r, buf[..outp.min(out_len as usize)].to_vec()))
}

pub(super) fn fcntl(s: &Session, fd: u64, cmd: i32, arg: i64, bulk: &[u8], client: RawFd) -> Answer {
    let f = s.file(fd)?;
    let fd = f.as_raw_fd();
    match cmd {
        libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => {
            const FL: usize = std::mem::size_of::<libc::flock>();
            if bulk.len() < FL {
                return done(-libc::EFAULT as i64);
            }
            // SAFETY: flock is plain data; bulk has at least FL bytes.
            let mut fl: libc::flock = unsafe { std::ptr::read_unaligned(bulk.as_ptr() as *const libc::flock) };
            // Process-associated locks would all belong to this daemon (one pid for every
            // session, dropped by any close): take them per open file instead.
            let (try_cmd, wait_cmd) = match cmd {
                libc::F_GETLK | libc::F_OFD_GETLK => (libc::F_OFD_GETLK, false),
                libc::F_SETLK | libc::F_OFD_SETLK => (libc::F_OFD_SETLK, false),
                _ => (libc::F_OFD_SETLK, true),
            };
            fl.l_pid = 0;
            loop {
                // SAFETY: fl is a live struct flock.
                let r = unsafe { sys(libc::SYS_fcntl, [fd as i64, try_cmd as i64, &mut fl as *mut _ as i64, 0, 0, 0]) };
                if wait_cmd && (r == -libc::EAGAIN as i64 || r == -libc::EACCES as i64) {
                    nap(client, LOCK_RETRY_MS)?;
                    continue;
                }
                if r < 0 {
                    return done(r);
                }
                return Ok((r, struct_bytes(&fl)));
            }
        }
        libc::F_GETFD | libc::F_SETFD => done(0),
        libc::F_GETFL | libc::F_SETFL | libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ | libc::F_GET_SEALS | libc::F_ADD_SEALS => {
            // SAFETY: integer arguments only.
            done(unsafe { sys(libc::SYS_fcntl, [fd as i64, cmd as i64, arg, 0, 0, 0]) })
        }
        _ => done(-libc::EINVAL as i64),
    }
}
