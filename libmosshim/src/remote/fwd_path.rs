//! Forwarders of the calls that name a path: the path (and a second one) goes home as
//! bulk data, relative paths only against AT_FDCWD or a home directory; paths that name
//! this node's own kernel objects and devices stay local.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::Home;
use super::dispatch::Act;
use super::fwd_fd::bind_new;
use super::homefd::is_remote;
use super::transport::Io;
use super::{EBADF, EFAULT, EINVAL};
use crate::rt::syscall::r;
use crate::rt::user;
use proto::rsys::{self, op};

/// The length of the path at `p` (the call's contract: a non-null path is a
/// NUL-terminated string), at most 8 KiB.
fn strlen(p: u64) -> Option<usize> {
    user::cstr_len(p, 8192)
}

fn path_io(p: u64) -> Option<Io> {
    strlen(p).map(|n| Io { p, n: n + 1 })
}

/// Paths that name this node's own kernel objects or devices and stay local.
fn local_path(p: u64) -> bool {
    let Some(n) = strlen(p) else { return false };
    // (the n bytes strlen just read)
    let s = user::bytes(p, n);
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

fn dir_ok(dirfd: i64, p: u64) -> Result<(), i64> {
    // absolute paths ignore dirfd; otherwise AT_FDCWD or a home directory
    // (p is a NUL-terminated path, checked by the caller)
    let abs = p != 0 && user::read::<u8>(p) == b'/';
    if abs || dirfd == libc::AT_FDCWD as i64 || is_remote(dirfd) {
        Ok(())
    } else {
        Err(EBADF)
    }
}

pub(super) fn path_call(h: &impl Home, op: u32, dirfd: i64, p: u64, extra: [u64; 4], out: &[Io], m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(h.forward_quick(op, [dirfd as u64, 0, extra[2], extra[3], 0, 0], &[pi], out, m))
}

pub(super) fn path_call2(h: &impl Home, op: u32, dirfd: i64, p: u64, x: [u64; 3], m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(h.forward_quick(op, [dirfd as u64, 0, x[0], x[1], x[2], 0], &[pi], &[], m))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn two_paths(h: &impl Home, op: u32, d1: i64, p1: u64, d2: i64, p2: u64, flags: u64, m: u64) -> Act {
    let (Some(i1), Some(i2)) = (path_io(p1), path_io(p2)) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(d1, p1).and(dir_ok(d2, p2)) {
        return Act::Ret(e);
    }
    Act::Ret(h.forward_quick(op, [d1 as u64, 0, d2 as u64, 0, flags, 0], &[i1, i2], &[], m))
}

pub(super) fn readlink_fwd(h: &impl Home, dirfd: i64, p: u64, buf: u64, size: u64, m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(h.forward_quick(op::READLINKAT, [dirfd as u64, 0, 0, size, 0, 0], &[pi], &[Io { p: buf, n: size as usize }], m))
}

pub(super) fn utime_fwd(h: &impl Home, nr: i64, a: [u64; 6], m: u64) -> i64 {
    // everything becomes utimensat(dirfd, path, times, flags)
    let mut ts = [0i64; 4];
    let (dirfd, p, given, flags) = match nr {
        libc::SYS_utimensat => {
            if a[2] != 0 {
                // utimensat's contract: non-null times (checked) points at struct
                // timespec[2], 4 i64
                ts = user::read::<[i64; 4]>(a[2]);
            }
            (a[0] as i32 as i64, a[1], a[2] != 0, a[3])
        }
        libc::SYS_utime => {
            if a[1] != 0 {
                // utime's contract: non-null times (checked) points at struct utimbuf
                // {actime, modtime}, 2 i64
                let u = user::read::<[i64; 2]>(a[1]);
                ts = [u[0], 0, u[1], 0];
            }
            (libc::AT_FDCWD as i64, a[0], a[1] != 0, 0)
        }
        _ => {
            let (d, p, tv) = if nr == libc::SYS_utimes { (libc::AT_FDCWD as i64, a[0], a[1]) } else { (a[0] as i32 as i64, a[1], a[2]) };
            if tv != 0 {
                // utimes'/futimesat's contract: non-null times (checked) points at struct
                // timeval[2], 4 i64
                let u = user::read::<[i64; 4]>(tv);
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
    h.forward_quick(op::UTIMENSAT, [dirfd as u64, 0, given as u64, flags, 0, 0], &[ti, pi], &[], m)
}

/// open / creat / openat / openat2 (`nr`): a home path is opened at home and bound to a
/// placeholder number; a local path opens here. openat2's RESOLVE_* flags are refused.
pub(super) fn open_fwd(h: &impl Home, nr: i64, a: [u64; 6], m: u64) -> Act {
    let (dirfd, p, flags, mode) = match nr {
        libc::SYS_open => (libc::AT_FDCWD as i64, a[0], a[1], a[2]),
        libc::SYS_creat => (libc::AT_FDCWD as i64, a[0], (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64, a[1]),
        libc::SYS_openat => (a[0] as i32 as i64, a[1], a[2], a[3]),
        _ => {
            // struct open_how { u64 flags, mode, resolve }
            // openat2's contract: how points at a struct open_how, whose first three u64
            // are flags, mode, resolve
            let how = user::read::<[u64; 3]>(a[2]);
            if how[2] != 0 {
                return Act::Ret(-(libc::EOPNOTSUPP as i64));
            }
            (a[0] as i32 as i64, a[1], how[0], how[1])
        }
    };
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(bind_new(h, op::OPENAT, [dirfd as u64, 0, flags, mode, 0, 0], 4, &[pi], &[], m))
}

/// stat / lstat / newfstatat (`nr`), all as newfstatat; an empty path with AT_EMPTY_PATH
/// is an fstat of the home dirfd.
pub(super) fn stat_fwd(h: &impl Home, nr: i64, a: [u64; 6], m: u64) -> Act {
    let (dirfd, p, buf, flags) = match nr {
        libc::SYS_stat => (libc::AT_FDCWD as i64, a[0], a[1], 0),
        libc::SYS_lstat => (libc::AT_FDCWD as i64, a[0], a[1], libc::AT_SYMLINK_NOFOLLOW as u64),
        _ => (a[0] as i32 as i64, a[1], a[2], a[3]),
    };
    if strlen(p) == Some(0) && flags & libc::AT_EMPTY_PATH as u64 != 0 {
        return if is_remote(dirfd) { Act::Ret(h.forward_quick(op::FSTAT, [dirfd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: buf, n: 144 }], m)) } else { Act::Native };
    }
    path_call(h, op::NEWFSTATAT, dirfd, p, [0, 0, 0, flags], &[Io { p: buf, n: 144 }], m)
}

/// statx: an empty path with AT_EMPTY_PATH names dirfd (home or local).
pub(super) fn statx_fwd(h: &impl Home, a: [u64; 6], m: u64) -> Act {
    let dirfd = a[0] as i32 as i64;
    if strlen(a[1]) == Some(0) && a[2] & libc::AT_EMPTY_PATH as u64 != 0 && !is_remote(dirfd) {
        return Act::Native;
    }
    if strlen(a[1]) != Some(0) && local_path(a[1]) {
        return Act::Native;
    }
    let Some(pi) = path_io(a[1]) else { return Act::Ret(EFAULT) };
    if strlen(a[1]) != Some(0) {
        if let Err(e) = dir_ok(dirfd, a[1]) {
            return Act::Ret(e);
        }
    }
    Act::Ret(h.forward_quick(op::STATX, [dirfd as u64, 0, a[2], a[3], 0, 0], &[pi], &[Io { p: a[4], n: 256 }], m))
}

/// fchmodat2: AT_EMPTY_PATH with an empty path is an fchmod of dirfd; AT_SYMLINK_NOFOLLOW
/// is EOPNOTSUPP (a symlink's own mode cannot be changed on Linux).
pub(super) fn fchmodat2_fwd(h: &impl Home, a: [u64; 6], m: u64) -> Act {
    let (d, flags) = (a[0] as i32 as i64, a[3] as i32);
    // (an empty path with AT_EMPTY_PATH names dirfd itself)
    let empty = a[1] == 0 || strlen(a[1]) == Some(0);
    if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        Act::Ret(EINVAL)
    } else if flags & libc::AT_EMPTY_PATH != 0 && empty {
        if is_remote(d) {
            Act::Ret(h.forward_quick(op::FCHMOD, [d as u64, a[2], 0, 0, 0, 0], &[], &[], m))
        } else {
            Act::Native
        }
    } else if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        // (a symlink's own mode cannot be changed on Linux)
        Act::Ret(-(libc::EOPNOTSUPP as i64))
    } else {
        path_call(h, op::FCHMODAT, d, a[1], [0, 0, a[2], 0], &[], m)
    }
}

/// truncate(path, length).
pub(super) fn truncate_fwd(h: &impl Home, a: [u64; 6], m: u64) -> Act {
    if local_path(a[0]) {
        return Act::Native;
    }
    let Some(pi) = path_io(a[0]) else { return Act::Ret(EFAULT) };
    Act::Ret(h.forward_quick(op::TRUNCATE, [0, a[1], 0, 0, 0, 0], &[pi], &[], m))
}

/// chdir(path): the working directory is at home.
pub(super) fn chdir_fwd(h: &impl Home, p: u64, m: u64) -> i64 {
    let Some(pi) = path_io(p) else { return EFAULT };
    h.forward_quick(op::CHDIR, [0; 6], &[pi], &[], m)
}

/// symlink / symlinkat: `target` (any text) at `link`, relative to `dirfd`.
pub(super) fn symlink_fwd(h: &impl Home, target: u64, dirfd: i64, link: u64, m: u64) -> i64 {
    let (Some(ti), Some(li)) = (path_io(target), path_io(link)) else { return EFAULT };
    if let Err(e) = dir_ok(dirfd, link) {
        return e;
    }
    h.forward_quick(op::SYMLINKAT, [0, dirfd as u64, 0, 0, 0, 0], &[ti, li], &[], m)
}

/// statfs(path, buf).
pub(super) fn statfs_fwd(h: &impl Home, p: u64, buf: u64, m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    Act::Ret(h.forward_quick(op::STATFS, [0; 6], &[pi], &[Io { p: buf, n: 120 }], m))
}
