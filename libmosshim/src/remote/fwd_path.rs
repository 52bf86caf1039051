//! Forwarders of the calls that name a path: the path (and a second one) goes home as
//! bulk data, relative paths only against AT_FDCWD or a home directory; paths that name
//! this node's own kernel objects and devices stay local.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::forward_quick;
use super::dispatch::Act;
use super::homefd::is_remote;
use super::transport::Io;
use super::{raw, EBADF, EFAULT};
use proto::rsys::{self, op};

pub(super) fn strlen(p: u64) -> Option<usize> {
    if p == 0 {
        return None;
    }
    let mut n = 0;
    // SAFETY: the call's contract: a non-null path (checked) is a NUL-terminated string;
    // read byte by byte up to its NUL (at most 8 KiB), as the kernel reads it.
    while unsafe { *((p + n as u64) as *const u8) } != 0 {
        n += 1;
        if n > 8192 {
            return None;
        }
    }
    Some(n)
}

pub(super) fn path_io(p: u64) -> Option<Io> {
    strlen(p).map(|n| Io { p, n: n + 1 })
}

/// Paths that name this node's own kernel objects or devices and stay local.
pub(super) fn local_path(p: u64) -> bool {
    let Some(n) = strlen(p) else { return false };
    // SAFETY: n bytes were just read by strlen.
    let s = unsafe { core::slice::from_raw_parts(p as *const u8, n) };
    // the process's name for one of its fds: where that fd is
    if let Some((fd, _)) = rsys::own_fd_path(s) {
        return !is_remote(fd as i64);
    }
    const LOCAL: [&[u8]; 8] = [
        b"/proc/self/",
        b"/proc/thread-self/",
        b"/sys/devices/system/cpu/",
        b"/proc/cpuinfo",
        b"/proc/meminfo",
        b"/dev/null",
        b"/dev/zero",
        b"/dev/urandom",
    ];
    LOCAL.iter().any(|l| s.starts_with(l)) || s == b"/dev/random" || s == b"/proc/self"
}

pub(super) fn dir_ok(dirfd: i64, p: u64) -> Result<(), i64> {
    // absolute paths ignore dirfd; otherwise AT_FDCWD or a home directory
    // SAFETY: p is a NUL-terminated path (checked by the caller).
    let abs = p != 0 && unsafe { *(p as *const u8) } == b'/';
    if abs || dirfd == libc::AT_FDCWD as i64 || is_remote(dirfd) {
        Ok(())
    } else {
        Err(EBADF)
    }
}

pub(super) fn path_call(op: u32, dirfd: i64, p: u64, extra: [u64; 4], out: &[Io], m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(forward_quick(op, [dirfd as u64, 0, extra[2], extra[3], 0, 0], &[pi], out, m))
}

pub(super) fn path_call2(op: u32, dirfd: i64, p: u64, x: [u64; 3], m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(forward_quick(op, [dirfd as u64, 0, x[0], x[1], x[2], 0], &[pi], &[], m))
}

pub(super) fn two_paths(op: u32, d1: i64, p1: u64, d2: i64, p2: u64, flags: u64, m: u64) -> Act {
    let (Some(i1), Some(i2)) = (path_io(p1), path_io(p2)) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(d1, p1).and(dir_ok(d2, p2)) {
        return Act::Ret(e);
    }
    Act::Ret(forward_quick(op, [d1 as u64, 0, d2 as u64, 0, flags, 0], &[i1, i2], &[], m))
}

pub(super) fn readlink_fwd(dirfd: i64, p: u64, buf: u64, size: u64, m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(forward_quick(op::READLINKAT, [dirfd as u64, 0, 0, size, 0, 0], &[pi], &[Io { p: buf, n: size as usize }], m))
}

pub(super) fn utime_fwd(nr: i64, a: [u64; 6], m: u64) -> i64 {
    // everything becomes utimensat(dirfd, path, times, flags)
    let mut ts = [0i64; 4];
    let (dirfd, p, given, flags) = match nr {
        libc::SYS_utimensat => {
            if a[2] != 0 {
                // SAFETY: utimensat's contract: non-null times (checked) points at struct
                // timespec[2], 4 i64.
                unsafe { core::ptr::copy_nonoverlapping(a[2] as *const i64, ts.as_mut_ptr(), 4) };
            }
            (a[0] as i32 as i64, a[1], a[2] != 0, a[3])
        }
        libc::SYS_utime => {
            if a[1] != 0 {
                // SAFETY: utime's contract: non-null times (checked) points at struct utimbuf
                // {actime, modtime}, 2 i64.
                let u = unsafe { core::slice::from_raw_parts(a[1] as *const i64, 2) };
                ts = [u[0], 0, u[1], 0];
            }
            (libc::AT_FDCWD as i64, a[0], a[1] != 0, 0)
        }
        _ => {
            let (d, p, tv) = if nr == libc::SYS_utimes { (libc::AT_FDCWD as i64, a[0], a[1]) } else { (a[0] as i32 as i64, a[1], a[2]) };
            if tv != 0 {
                // SAFETY: utimes'/futimesat's contract: non-null times (checked) points at struct
                // timeval[2], 4 i64.
                let u = unsafe { core::slice::from_raw_parts(tv as *const i64, 4) };
                ts = [u[0], u[1] * 1000, u[2], u[3] * 1000];
            }
            (d, p, tv != 0, 0)
        }
    };
    let empty = [0u8; 1];
    let pi = if p == 0 {
        if !is_remote(dirfd) {
            return r!(libc::SYS_utimensat, dirfd, 0, if given { ts.as_ptr() as u64 } else { 0 }, flags);
        }
        Io { p: empty.as_ptr() as u64, n: 1 }
    } else {
        if local_path(p) {
            return r!(libc::SYS_utimensat, dirfd, p, if given { ts.as_ptr() as u64 } else { 0 }, flags);
        }
        if let Err(e) = dir_ok(dirfd, p) {
            return e;
        }
        match path_io(p) {
            Some(x) => x,
            None => return EFAULT,
        }
    };
    let ti = Io { p: ts.as_ptr() as u64, n: if given { 32 } else { 0 } };
    forward_quick(op::UTIMENSAT, [dirfd as u64, 0, given as u64, flags, 0, 0], &[ti, pi], &[], m)
}
