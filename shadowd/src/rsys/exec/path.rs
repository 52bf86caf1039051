//! Forwarded calls that name files by path: open, stat, link, rename, the current
//! directory. Owns the mapping of the body's paths to ours (its own fds, the session's
//! cwd); paths are resolved against the session's cwd, never the daemon's.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use proto::rsys::{self as wire, op, Req};

use super::{cap, done, file_type, neg_errno, struct_bytes, sys, with_data, Answer, Stop};
use crate::lock;
use crate::rsys::Session;

pub(super) fn call(s: &Session, req: &Req, bulk: &[u8]) -> Answer {
    let a = req.args;
    let ai = |i: usize| a[i] as i64;
    let ol = req.out_len;
    let bp = bulk.as_ptr() as i64;
    match req.op {
        op::TRUNCATE | op::STATFS => {
            let cwd = lock(&s.cwd).clone();
            let p = session_paths(s, bulk, 0, 1)?;
            let full = at_cwd(&cwd, &p[0])?;
            if req.op == op::TRUNCATE {
                // SAFETY: full is NUL-terminated and live.
                done(unsafe { sys(libc::SYS_truncate, [full.as_ptr() as i64, ai(1), 0, 0, 0, 0]) })
            } else {
                // SAFETY: statfs is plain data.
                let mut st: libc::statfs = unsafe { std::mem::zeroed() };
                // SAFETY: full is NUL-terminated, st is a live struct statfs.
                let r = unsafe { sys(libc::SYS_statfs, [full.as_ptr() as i64, &mut st as *mut _ as i64, 0, 0, 0, 0]) };
                if r < 0 {
                    return done(r);
                }
                Ok((0, struct_bytes(&st)))
            }
        }
        op::GETCWD => {
            let cwd = lock(&s.cwd).clone();
            let mut p = match std::fs::read_link(format!("/proc/self/fd/{}", cwd.as_raw_fd())) {
                Ok(p) => p.into_os_string().into_encoded_bytes(),
                Err(e) => return done(-i64::from(e.raw_os_error().unwrap_or(libc::EIO))),
            };
            p.push(0);
            if p.len() > a[1] as usize || p.len() > ol as usize {
                return done(-libc::ERANGE as i64);
            }
            Ok((p.len() as i64, p))
        }
        op::CHDIR => {
            let cwd = lock(&s.cwd).clone();
            let p = session_paths(s, bulk, 0, 1)?;
            // SAFETY: p[0] is NUL-terminated and live.
            let r = unsafe { libc::openat(cwd.as_raw_fd(), p[0].as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if r < 0 {
                return done(neg_errno());
            }
            // SAFETY: r is a fresh descriptor we own.
            *lock(&s.cwd) = Arc::new(unsafe { OwnedFd::from_raw_fd(r) });
            done(0)
        }
        op::FCHDIR => {
            let f = s.file(a[0])?;
            if file_type(f.as_raw_fd()) != libc::S_IFDIR {
                return done(-libc::ENOTDIR as i64);
            }
            *lock(&s.cwd) = f;
            done(0)
        }
        op::OPENAT => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let flags = ai(2) | libc::O_CLOEXEC as i64;
            // SAFETY: p[0] is NUL-terminated and live.
            let r = unsafe { sys(libc::SYS_openat, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, flags, ai(3), 0, 0]) };
            if r < 0 {
                return done(r);
            }
            // SAFETY: r is a fresh descriptor we own.
            done(s.bind(a[4], unsafe { OwnedFd::from_raw_fd(r as RawFd) }))
        }
        op::MKDIRAT | op::MKNODAT | op::FCHOWNAT | op::UNLINKAT | op::FCHMODAT | op::FACCESSAT2 => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let nr = match req.op {
                op::MKDIRAT => libc::SYS_mkdirat,
                op::MKNODAT => libc::SYS_mknodat,
                op::FCHOWNAT => libc::SYS_fchownat,
                op::UNLINKAT => libc::SYS_unlinkat,
                op::FCHMODAT => libc::SYS_fchmodat,
                _ => libc::SYS_faccessat2, // op::FACCESSAT2
            };
            // SAFETY: p[0] is NUL-terminated and live; the rest are integers.
            done(unsafe { sys(nr, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, ai(2), ai(3), ai(4), 0]) })
        }
        op::NEWFSTATAT => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: p[0] is NUL-terminated, st is a live struct stat.
            let r = unsafe { sys(libc::SYS_newfstatat, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, &mut st as *mut _ as i64, ai(3), 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, struct_bytes(&st)))
        }
        op::LINKAT | op::RENAMEAT2 => {
            let od = s.dir(a[0])?;
            let nd = s.dir(a[2])?;
            let p = session_paths(s, bulk, 0, 2)?;
            let nr = if req.op == op::LINKAT { libc::SYS_linkat } else { libc::SYS_renameat2 };
            // SAFETY: both paths are NUL-terminated and live.
            done(unsafe { sys(nr, [od.as_raw_fd() as i64, p[0].as_ptr() as i64, nd.as_raw_fd() as i64, p[1].as_ptr() as i64, ai(4), 0]) })
        }
        op::SYMLINKAT => {
            let d = s.dir(a[1])?;
            // (the target is the link's text, stored as given; only linkpath is a path)
            let p = paths(bulk, 0, 2)?;
            // SAFETY: both paths are NUL-terminated and live.
            done(unsafe { sys(libc::SYS_symlinkat, [p[0].as_ptr() as i64, d.as_raw_fd() as i64, p[1].as_ptr() as i64, 0, 0, 0]) })
        }
        op::READLINKAT => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let n = cap(a[3], ol).min(1 << 16);
            let mut buf = vec![0u8; n];
            // SAFETY: p[0] is NUL-terminated; buf is a live buffer of n bytes.
            let r = unsafe { sys(libc::SYS_readlinkat, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, buf.as_mut_ptr() as i64, n as i64, 0, 0]) };
            with_data(r, buf)
        }
        op::UTIMENSAT => {
            let d = s.dir(a[0])?;
            let (times, skip) = if a[2] == 1 {
                if bulk.len() < 32 {
                    return done(-libc::EFAULT as i64);
                }
                (bp, 32)
            } else {
                (0, 0)
            };
            let p = session_paths(s, bulk, skip, 1)?;
            let path = if p[0].as_bytes().is_empty() { 0 } else { p[0].as_ptr() as i64 };
            // SAFETY: times (if any) points at 32 bytes of bulk; path is NUL-terminated or null.
            done(unsafe { sys(libc::SYS_utimensat, [d.as_raw_fd() as i64, path, times, ai(3), 0, 0]) })
        }
        op::STATX => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let mut buf = [0u8; 256];
            // SAFETY: p[0] is NUL-terminated; buf is 256 bytes, the size of struct statx.
            let r = unsafe { sys(libc::SYS_statx, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, ai(2), ai(3), buf.as_mut_ptr() as i64, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, buf.to_vec()))
        }
        _ => done(-libc::ENOSYS as i64),
    }
}

/// [`paths`], where a body's name for one of its own fds ([`wire::own_fd_path`]) becomes
/// ours for the session's file (`/proc/self/fd/<our fd>`); ENOENT if it has no such fd.
fn session_paths(s: &Session, bulk: &[u8], skip: usize, count: usize) -> Result<Vec<CString>, Stop> {
    let mut v = paths(bulk, skip, count)?;
    for p in &mut v {
        if let Some((n, rest)) = wire::own_fd_path(p.as_bytes()) {
            let f = s.file(n as u32 as u64).map_err(|_| Stop::Errno(-libc::ENOENT as i64))?;
            let mut q = format!("/proc/self/fd/{}", f.as_raw_fd()).into_bytes();
            q.extend_from_slice(rest);
            *p = CString::new(q).map_err(|_| Stop::Errno(-libc::EFAULT as i64))?;
        }
    }
    Ok(v)
}

/// Bulk as `count` NUL-terminated strings, after `skip` leading bytes.
fn paths(bulk: &[u8], skip: usize, count: usize) -> Result<Vec<CString>, Stop> {
    let mut out = Vec::with_capacity(count);
    let mut rest = bulk.get(skip..).ok_or(Stop::Errno(-libc::EFAULT as i64))?;
    for _ in 0..count {
        let end = rest.iter().position(|&c| c == 0).ok_or(Stop::Errno(-libc::EFAULT as i64))?;
        out.push(CString::new(&rest[..end]).map_err(|_| Stop::Errno(-libc::EFAULT as i64))?);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

/// `/proc/self/fd/<cwd>/path` for calls without an *at form.
fn at_cwd(cwd: &OwnedFd, p: &CStr) -> Result<CString, Stop> {
    let b = p.to_bytes();
    if b.first() == Some(&b'/') {
        return Ok(p.to_owned());
    }
    let mut v = format!("/proc/self/fd/{}/", cwd.as_raw_fd()).into_bytes();
    v.extend_from_slice(b);
    CString::new(v).map_err(|_| Stop::Errno(-libc::EINVAL as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_and_checked() {
        let p = paths(b"abc\0de\0", 0, 2).ok().unwrap();
        assert_eq!(p[0].as_bytes(), b"abc");
        assert_eq!(p[1].as_bytes(), b"de");
        assert!(paths(b"abc", 0, 1).is_err(), "no NUL");
        assert!(paths(b"abc\0", 0, 2).is_err(), "one path short");
        assert!(paths(b"", 5, 1).is_err(), "skip beyond the bulk");
    }

}
