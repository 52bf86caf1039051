//! The dispatch of one trapped system call: forwarded home (the forwarders in
//! `fwd_*.rs`), answered here, or run natively. One arm per call or family.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::{forward, forward_quick};
use super::channel::my_chan;
use super::eintr::sigactions_changed;
use super::fwd_fd::{bind_new, close_range, fcntl_fwd, ioctl_fwd, mmap_fwd, readv_fwd, write_loop, writev_fwd};
use super::fwd_path::{dir_ok, local_path, path_call, path_call2, path_io, readlink_fwd, strlen, two_paths, utime_fwd};
use super::fwd_poll::{any_remote_pollfd, poll_mixed, select_fwd};
use super::fwd_socket::{addr_len, copy_addr, mmsg_fwd, recvfrom_fwd, recvmsg_fwd, sendmsg_fwd, sendto_fwd};
use super::homefd::{drop_placeholder, is_internal, is_remote, may_block, placeholder, set_remote};
use super::transport::Io;
use super::{epoll, raw, sigsys_bit, EBADF, EFAULT, EINVAL, ENOSYS, PLACEHOLDER};
use core::sync::atomic::Ordering;
use proto::rsys::{self, op};

// x86_64 numbers of calls newer than the libc crate's table (Linux 6.13 .. 6.17)
pub(super) const SYS_SETXATTRAT: i64 = 463;
pub(super) const SYS_REMOVEXATTRAT: i64 = 466;
pub(super) const SYS_OPEN_TREE_ATTR: i64 = 467;
pub(super) const SYS_FILE_GETATTR: i64 = 468;
pub(super) const SYS_FILE_SETATTR: i64 = 469;

/// What the handler does with one call.
pub(super) enum Act {
    /// return this result
    Ret(i64),
    /// run it natively (trampoline)
    Native,
}

#[allow(clippy::too_many_lines)]
pub(super) fn dispatch(nr: i64, a: [u64; 6], g: &mut [i64; 23], mask: &mut u64) -> Act {
    use Act::{Native, Ret};
    let m = *mask;
    let fd = a[0] as i32 as i64;
    let rem = is_remote(fd);
    let zero = [0u64; 6];
    let _ = g;
    match nr {
        // ---------------------------------------------------- fd calls
        libc::SYS_read if rem => {
            let intr = may_block(fd, m);
            Ret(forward(op::READ, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), 0, 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m, intr))
        }
        libc::SYS_write if rem => Ret(write_loop(fd, a[1], a[2] as usize, None, m)),
        libc::SYS_pread64 if rem => Ret(forward_quick(op::PREAD64, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), a[3], 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m)),
        libc::SYS_pwrite64 if rem => Ret(write_loop(fd, a[1], a[2] as usize, Some(a[3] as i64), m)),
        libc::SYS_readv | libc::SYS_preadv | libc::SYS_preadv2 if rem => {
            let off = if nr == libc::SYS_readv || (nr == libc::SYS_preadv2 && a[3] as i64 == -1) { None } else { Some(a[3] as i64) };
            Ret(readv_fwd(fd, a[1], a[2] as usize, off, m))
        }
        libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2 if rem => {
            let off = if nr == libc::SYS_writev || (nr == libc::SYS_pwritev2 && a[3] as i64 == -1) { None } else { Some(a[3] as i64) };
            Ret(writev_fwd(fd, a[1], a[2] as usize, off, m))
        }
        libc::SYS_close => {
            if is_internal(fd) {
                Ret(0)
            } else if rem {
                let r = forward_quick(op::CLOSE, [fd as u64, 0, 0, 0, 0, 0], &[], &[], m);
                drop_placeholder(fd);
                epoll::forget_fd(fd);
                Ret(r)
            } else {
                epoll::forget_ep(fd, fd);
                Native
            }
        }
        libc::SYS_close_range => Ret(close_range(a[0] as u32, a[1] as u32, a[2] as u32, m)),
        libc::SYS_fstat if rem => Ret(forward_quick(op::FSTAT, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: a[1], n: 144 }], m)),
        libc::SYS_lseek | libc::SYS_ftruncate | libc::SYS_fsync | libc::SYS_fdatasync | libc::SYS_fchmod | libc::SYS_fchown
        | libc::SYS_fallocate | libc::SYS_fadvise64 | libc::SYS_flock | libc::SYS_shutdown | libc::SYS_listen
            if rem =>
        {
            let lock_wait = nr == libc::SYS_flock && a[1] & libc::LOCK_NB as u64 == 0;
            // each of these is forwarded as itself: its op is its system call number
            // (op::LSEEK, op::FTRUNCATE, op::FSYNC, ... op::LISTEN)
            Ret(forward(nr as u32, a, &[], &[], m, lock_wait))
        }
        libc::SYS_fchdir if rem => Ret(forward_quick(op::FCHDIR, a, &[], &[], m)),
        libc::SYS_fchdir => Ret(EBADF),
        libc::SYS_fstatfs if rem => Ret(forward_quick(op::FSTATFS, a, &[], &[Io { p: a[1], n: 120 }], m)),
        libc::SYS_getdents64 if rem => Ret(forward_quick(op::GETDENTS64, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), 0, 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m)),
        libc::SYS_ioctl if rem => Ret(ioctl_fwd(fd, a[1], a[2], m)),
        libc::SYS_fcntl if rem => Ret(fcntl_fwd(fd, a[1] as i32, a[2], m)),
        libc::SYS_fcntl => match a[1] as i32 {
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => Native,
            _ => Native,
        },
        libc::SYS_dup if rem => {
            let n = placeholder(0);
            if n < 0 {
                return Ret(n);
            }
            let r = forward_quick(op::DUP3, [fd as u64, n as u64, 0, 0, 0, 0], &[], &[], m);
            if r < 0 {
                r!(libc::SYS_close, n);
                return Ret(r);
            }
            set_remote(n, true);
            Ret(n)
        }
        libc::SYS_dup2 | libc::SYS_dup3 => {
            let new = a[1] as i32 as i64;
            let flags = if nr == libc::SYS_dup3 { a[2] } else { 0 };
            if is_internal(new) {
                return Ret(-(libc::EBUSY as i64));
            }
            if fd == new {
                return if nr == libc::SYS_dup3 { Ret(EINVAL) } else if rem { Ret(new) } else { Native };
            }
            if !rem && !is_remote(new) {
                return Native;
            }
            if is_remote(new) {
                forward_quick(op::CLOSE, [new as u64, 0, 0, 0, 0, 0], &[], &[], m);
                set_remote(new, false);
            }
            if !rem {
                return Ret(r!(nr, a[0], a[1], a[2]));
            }
            let src = PLACEHOLDER.load(Ordering::Relaxed);
            let p = r!(libc::SYS_dup3, src, new, flags);
            if p < 0 {
                return Ret(p);
            }
            let r = forward_quick(op::DUP3, [fd as u64, new as u64, 0, 0, 0, 0], &[], &[], m);
            if r < 0 {
                r!(libc::SYS_close, new);
                return Ret(r);
            }
            set_remote(new, true);
            Ret(new)
        }
        libc::SYS_mmap if rem && a[3] & libc::MAP_ANONYMOUS as u64 == 0 => Ret(mmap_fwd(a, m)),
        libc::SYS_sendfile | libc::SYS_copy_file_range | libc::SYS_splice | libc::SYS_tee
            if rem || is_remote(a[1] as i32 as i64) || (nr == libc::SYS_copy_file_range && is_remote(a[2] as i32 as i64)) =>
        {
            Ret(EINVAL)
        }
        libc::SYS_epoll_ctl if is_remote(a[2] as i32 as i64) => Ret(epoll::ctl(fd, a[1] as i32, a[2] as i32 as i64, a[3])),
        libc::SYS_epoll_wait if epoll::has(fd) => Ret(epoll::wait(fd, a[1], a[2] as i32 as i64, a[3] as i32 as i64, m)),
        libc::SYS_epoll_pwait if epoll::has(fd) => {
            // SAFETY: epoll_pwait's contract: a non-null sigmask (checked) points at a sigset; its
            // first 8 bytes are read.
            let wm = if a[4] != 0 { (unsafe { *(a[4] as *const u64) }) & !sigsys_bit() } else { m };
            Ret(epoll::wait(fd, a[1], a[2] as i32 as i64, a[3] as i32 as i64, wm))
        }
        libc::SYS_epoll_pwait2 if epoll::has(fd) => {
            let t = if a[3] == 0 { -1 } else {
                // SAFETY: epoll_pwait2's contract: a non-null timeout (checked) points at a struct
                // timespec.
                let ts = unsafe { &*(a[3] as *const libc::timespec) };
                ts.tv_sec.saturating_mul(1000).saturating_add(ts.tv_nsec / 1_000_000)
            };
            // SAFETY: epoll_pwait2's contract: a non-null sigmask (checked) points at a sigset; its
            // first 8 bytes are read.
            let wm = if a[4] != 0 { (unsafe { *(a[4] as *const u64) }) & !sigsys_bit() } else { m };
            Ret(epoll::wait(fd, a[1], a[2] as i32 as i64, t, wm))
        }
        libc::SYS_poll => Ret(poll_mixed(a[0], a[1] as usize, a[2] as i32 as i64, m, g, nr)),
        libc::SYS_ppoll => {
            let t = if a[2] == 0 { -1 } else {
                // SAFETY: ppoll's contract: a non-null timeout (checked) points at a struct timespec.
                let ts = unsafe { &*(a[2] as *const libc::timespec) };
                ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
            };
            if !any_remote_pollfd(a[0], a[1] as usize) {
                return strip_mask_arg(g, libc::REG_R10 as usize, a[3]);
            }
            Ret(poll_mixed(a[0], a[1] as usize, t, m, g, nr))
        }
        libc::SYS_select | libc::SYS_pselect6 => Ret(select_fwd(nr, a, m, g)),
        // sockets
        libc::SYS_socket => Ret(bind_new(op::SOCKET, [a[0], a[1], a[2], 0, 0, 0], 3, &[], &[], m)),
        // op::CONNECT, op::BIND: the system call numbers
        libc::SYS_connect | libc::SYS_bind if rem => Ret(forward(nr as u32, [fd as u64, 0, 0, 0, 0, 0], &[Io { p: a[1], n: a[2] as usize }], &[], m, nr == libc::SYS_connect)),
        libc::SYS_accept | libc::SYS_accept4 if rem => {
            let flags = if nr == libc::SYS_accept4 { a[3] } else { 0 };
            let mut ab = [0u8; 128];
            let want = a[1] != 0 && a[2] != 0;
            let r = bind_new(op::ACCEPT4, [fd as u64, 0, flags, 0, want as u64, 0], 3, &[], &[Io { p: ab.as_mut_ptr() as u64, n: 128 }], m);
            if r >= 0 && want {
                copy_addr(&ab, 128, a[1], a[2]);
            }
            Ret(r)
        }
        libc::SYS_getsockname | libc::SYS_getpeername if rem => {
            let mut ab = [0u8; 128];
            // op::GETSOCKNAME, op::GETPEERNAME: the system call numbers
            let r = forward_quick(nr as u32, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: ab.as_mut_ptr() as u64, n: 128 }], m);
            if r >= 0 {
                copy_addr(&ab, addr_len(&ab), a[1], a[2]);
            }
            Ret(r.min(0))
        }
        libc::SYS_setsockopt if rem => Ret(forward_quick(op::SETSOCKOPT, [fd as u64, a[1], a[2], 0, 0, 0], &[Io { p: a[3], n: a[4] as usize }], &[], m)),
        libc::SYS_getsockopt if rem => {
            if a[4] == 0 {
                return Ret(EFAULT);
            }
            // SAFETY: getsockopt's contract: a non-null optlen (checked) points at a writable socklen_t.
            let lp = unsafe { &mut *(a[4] as *mut u32) };
            let mut buf = [0u8; 256];
            let want = (*lp as usize).min(256);
            let r = forward_quick(op::GETSOCKOPT, [fd as u64, a[1], a[2], want as u64, 0, 0], &[], &[Io { p: buf.as_mut_ptr() as u64, n: want }], m);
            if r >= 0 {
                // SAFETY: getsockopt's contract: optval has room for *lp bytes, and want <= *lp.
                unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), a[3] as *mut u8, want) };
                *lp = want as u32;
            }
            Ret(r.min(0))
        }
        libc::SYS_sendto if rem => Ret(sendto_fwd(fd, &[Io { p: a[1], n: a[2] as usize }], a[3], a[4], a[5] as usize, m)),
        libc::SYS_recvfrom if rem => Ret(recvfrom_fwd(fd, &[Io { p: a[1], n: a[2] as usize }], a[3], a[4], a[5], m)),
        libc::SYS_sendmsg if rem => {
            // SAFETY: sendmsg's contract: msg points at a struct msghdr (only read).
            Ret(sendmsg_fwd(fd, unsafe { &*(a[1] as *const libc::msghdr) }, a[2], m))
        }
        libc::SYS_recvmsg if rem => {
            // SAFETY: recvmsg's contract: msg points at a writable struct msghdr.
            Ret(recvmsg_fwd(fd, unsafe { &mut *(a[1] as *mut libc::msghdr) }, a[2], m))
        }
        libc::SYS_sendmmsg if rem => Ret(mmsg_fwd(fd, a[1], a[2] as u32, a[3], m, true)),
        libc::SYS_recvmmsg if rem => Ret(mmsg_fwd(fd, a[1], a[2] as u32, a[3], m, false)),
        // ---------------------------------------------------- paths
        libc::SYS_open | libc::SYS_creat | libc::SYS_openat | libc::SYS_openat2 => {
            let (dirfd, p, flags, mode) = match nr {
                libc::SYS_open => (libc::AT_FDCWD as i64, a[0], a[1], a[2]),
                libc::SYS_creat => (libc::AT_FDCWD as i64, a[0], (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64, a[1]),
                libc::SYS_openat => (a[0] as i32 as i64, a[1], a[2], a[3]),
                _ => {
                    // struct open_how { u64 flags, mode, resolve }
                    // SAFETY: openat2's contract: how points at a struct open_how, whose first
                    // three u64 are flags, mode, resolve.
                    let how = unsafe { core::slice::from_raw_parts(a[2] as *const u64, 3) };
                    if how[2] != 0 {
                        return Ret(-(libc::EOPNOTSUPP as i64));
                    }
                    (a[0] as i32 as i64, a[1], how[0], how[1])
                }
            };
            if local_path(p) {
                return Native;
            }
            let Some(pi) = path_io(p) else { return Ret(EFAULT) };
            if let Err(e) = dir_ok(dirfd, p) {
                return Ret(e);
            }
            Ret(bind_new(op::OPENAT, [dirfd as u64, 0, flags, mode, 0, 0], 4, &[pi], &[], m))
        }
        libc::SYS_stat | libc::SYS_lstat | libc::SYS_newfstatat => {
            let (dirfd, p, buf, flags) = match nr {
                libc::SYS_stat => (libc::AT_FDCWD as i64, a[0], a[1], 0),
                libc::SYS_lstat => (libc::AT_FDCWD as i64, a[0], a[1], libc::AT_SYMLINK_NOFOLLOW as u64),
                _ => (a[0] as i32 as i64, a[1], a[2], a[3]),
            };
            if strlen(p) == Some(0) && flags & libc::AT_EMPTY_PATH as u64 != 0 {
                return if is_remote(dirfd) { Ret(forward_quick(op::FSTAT, [dirfd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: buf, n: 144 }], m)) } else { Native };
            }
            path_call(op::NEWFSTATAT, dirfd, p, [0, 0, 0, flags], &[Io { p: buf, n: 144 }], m)
        }
        libc::SYS_statx => {
            let dirfd = a[0] as i32 as i64;
            if strlen(a[1]) == Some(0) && a[2] & libc::AT_EMPTY_PATH as u64 != 0 && !is_remote(dirfd) {
                return Native;
            }
            if strlen(a[1]) != Some(0) && local_path(a[1]) {
                return Native;
            }
            let Some(pi) = path_io(a[1]) else { return Ret(EFAULT) };
            if strlen(a[1]) != Some(0) {
                if let Err(e) = dir_ok(dirfd, a[1]) {
                    return Ret(e);
                }
            }
            Ret(forward_quick(op::STATX, [dirfd as u64, 0, a[2], a[3], 0, 0], &[pi], &[Io { p: a[4], n: 256 }], m))
        }
        libc::SYS_access => path_call(op::FACCESSAT2, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_faccessat => path_call(op::FACCESSAT2, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_faccessat2 => path_call(op::FACCESSAT2, a[0] as i32 as i64, a[1], [0, 0, a[2], a[3]], &[], m),
        libc::SYS_unlink => path_call(op::UNLINKAT, libc::AT_FDCWD as i64, a[0], [0, 0, 0, 0], &[], m),
        libc::SYS_rmdir => path_call(op::UNLINKAT, libc::AT_FDCWD as i64, a[0], [0, 0, libc::AT_REMOVEDIR as u64, 0], &[], m),
        libc::SYS_unlinkat => path_call(op::UNLINKAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_mkdir => path_call(op::MKDIRAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_mkdirat => path_call(op::MKDIRAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_mknod => path_call(op::MKNODAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], a[2]], &[], m),
        libc::SYS_mknodat => path_call(op::MKNODAT, a[0] as i32 as i64, a[1], [0, 0, a[2], a[3]], &[], m),
        libc::SYS_chmod => path_call(op::FCHMODAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_fchmodat => path_call(op::FCHMODAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_fchmodat2 => {
            let (d, flags) = (a[0] as i32 as i64, a[3] as i32);
            // (an empty path with AT_EMPTY_PATH names dirfd itself)
            let empty = a[1] == 0 || strlen(a[1]) == Some(0);
            if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
                Ret(EINVAL)
            } else if flags & libc::AT_EMPTY_PATH != 0 && empty {
                if is_remote(d) {
                    Ret(forward_quick(op::FCHMOD, [d as u64, a[2], 0, 0, 0, 0], &[], &[], m))
                } else {
                    Native
                }
            } else if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
                // (a symlink's own mode cannot be changed on Linux)
                Ret(-(libc::EOPNOTSUPP as i64))
            } else {
                path_call(op::FCHMODAT, d, a[1], [0, 0, a[2], 0], &[], m)
            }
        }
        libc::SYS_chown => path_call(op::FCHOWNAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], a[2]], &[], m),
        libc::SYS_lchown => path_call2(op::FCHOWNAT, libc::AT_FDCWD as i64, a[0], [a[1], a[2], libc::AT_SYMLINK_NOFOLLOW as u64], m),
        libc::SYS_fchownat => path_call2(op::FCHOWNAT, a[0] as i32 as i64, a[1], [a[2], a[3], a[4]], m),
        libc::SYS_truncate => {
            if local_path(a[0]) {
                return Native;
            }
            let Some(pi) = path_io(a[0]) else { return Ret(EFAULT) };
            Ret(forward_quick(op::TRUNCATE, [0, a[1], 0, 0, 0, 0], &[pi], &[], m))
        }
        libc::SYS_chdir => {
            let Some(pi) = path_io(a[0]) else { return Ret(EFAULT) };
            Ret(forward_quick(op::CHDIR, zero, &[pi], &[], m))
        }
        libc::SYS_getcwd => Ret(forward_quick(op::GETCWD, [0, a[1], 0, 0, 0, 0], &[], &[Io { p: a[0], n: a[1] as usize }], m)),
        libc::SYS_readlink => readlink_fwd(libc::AT_FDCWD as i64, a[0], a[1], a[2], m),
        libc::SYS_readlinkat => readlink_fwd(a[0] as i32 as i64, a[1], a[2], a[3], m),
        libc::SYS_rename => two_paths(op::RENAMEAT2, libc::AT_FDCWD as i64, a[0], libc::AT_FDCWD as i64, a[1], 0, m),
        libc::SYS_renameat => two_paths(op::RENAMEAT2, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], 0, m),
        libc::SYS_renameat2 => two_paths(op::RENAMEAT2, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4], m),
        libc::SYS_link => two_paths(op::LINKAT, libc::AT_FDCWD as i64, a[0], libc::AT_FDCWD as i64, a[1], 0, m),
        libc::SYS_linkat => two_paths(op::LINKAT, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4], m),
        libc::SYS_symlink | libc::SYS_symlinkat => {
            let (t, d, l) = if nr == libc::SYS_symlink { (a[0], libc::AT_FDCWD as i64, a[1]) } else { (a[0], a[1] as i32 as i64, a[2]) };
            let (Some(ti), Some(li)) = (path_io(t), path_io(l)) else { return Ret(EFAULT) };
            if let Err(e) = dir_ok(d, l) {
                return Ret(e);
            }
            Ret(forward_quick(op::SYMLINKAT, [0, d as u64, 0, 0, 0, 0], &[ti, li], &[], m))
        }
        libc::SYS_utimensat | libc::SYS_utimes | libc::SYS_utime | libc::SYS_futimesat => Ret(utime_fwd(nr, a, m)),
        libc::SYS_statfs => {
            if local_path(a[0]) {
                return Native;
            }
            let Some(pi) = path_io(a[0]) else { return Ret(EFAULT) };
            Ret(forward_quick(op::STATFS, zero, &[pi], &[Io { p: a[1], n: 120 }], m))
        }
        libc::SYS_getxattr | libc::SYS_lgetxattr | libc::SYS_listxattr | libc::SYS_llistxattr | libc::SYS_setxattr
        | libc::SYS_lsetxattr | libc::SYS_removexattr | libc::SYS_lremovexattr => Ret(-(libc::EOPNOTSUPP as i64)),
        libc::SYS_fgetxattr | libc::SYS_flistxattr | libc::SYS_fsetxattr | libc::SYS_fremovexattr if rem => Ret(-(libc::EOPNOTSUPP as i64)),
        libc::SYS_inotify_add_watch | libc::SYS_fanotify_mark | libc::SYS_name_to_handle_at | libc::SYS_open_by_handle_at
        | libc::SYS_chroot | libc::SYS_mount | libc::SYS_umount2 | libc::SYS_pivot_root | libc::SYS_acct | libc::SYS_swapon
        | libc::SYS_swapoff | libc::SYS_uselib | libc::SYS_open_tree | libc::SYS_move_mount | libc::SYS_fsopen
        | libc::SYS_fspick | libc::SYS_mount_setattr | libc::SYS_quotactl | SYS_OPEN_TREE_ATTR
        | libc::SYS_execve | libc::SYS_execveat | libc::SYS_fork | libc::SYS_vfork => Ret(ENOSYS),
        // newer path-based calls without a forwarded form: extended attributes and inode
        // flags by path (setxattrat .. removexattrat, file_getattr, file_setattr)
        SYS_SETXATTRAT..=SYS_REMOVEXATTRAT | SYS_FILE_GETATTR | SYS_FILE_SETATTR => Ret(-(libc::EOPNOTSUPP as i64)),
        // asynchronous I/O the kernel would do on this node's files (an io_uring can open
        // files by path; both would read and write the placeholders of home fds): refused,
        // and callers fall back to plain calls
        libc::SYS_io_uring_setup | libc::SYS_io_setup => Ret(ENOSYS),
        // ---------------------------------------------------- signals
        libc::SYS_rt_sigprocmask => {
            // emulated on the saved mask, which the return from this handler installs
            let old = *mask;
            if a[1] != 0 {
                // SAFETY: rt_sigprocmask's contract: a non-null set (checked) points at a sigset;
                // its first word (signals 1..64) is read.
                let set = unsafe { *(a[1] as *const u64) };
                let frz = ckpt::sys::sigbit(crate::signals::FREEZE_SIG.load(Ordering::Relaxed));
                let set = set & !sigsys_bit() & !frz;
                match a[0] as i32 {
                    libc::SIG_BLOCK => *mask |= set,
                    libc::SIG_UNBLOCK => *mask &= !set,
                    libc::SIG_SETMASK => *mask = set,
                    _ => return Ret(EINVAL),
                }
            }
            if a[2] != 0 {
                // SAFETY: rt_sigprocmask's contract: a non-null oldset (checked) points at a
                // writable sigset; its first word is written.
                unsafe { *(a[2] as *mut u64) = old };
            }
            Ret(0)
        }
        libc::SYS_rt_sigaction => {
            if a[0] as i32 == libc::SIGSYS {
                return Ret(0);
            }
            if a[1] == 0 {
                return Native;
            }
            // SAFETY: rt_sigaction's contract: a non-null act (checked) points at a kernel struct
            // sigaction, which KSigAction mirrors.
            let mut k = unsafe { *(a[1] as *const ckpt::sys::KSigAction) };
            k.mask &= !sigsys_bit();
            let r = r!(libc::SYS_rt_sigaction, a[0], &k as *const ckpt::sys::KSigAction, a[2], a[3]);
            sigactions_changed();
            Ret(r)
        }
        libc::SYS_rt_sigsuspend => strip_mask_arg(g, libc::REG_RDI as usize, a[0]),
        _ => Native,
    }
}

/// Point the mask argument in register `reg` at a per-thread copy without SIGSYS.
pub(super) fn strip_mask_arg(g: &mut [i64; 23], reg: usize, p: u64) -> Act {
    if p == 0 {
        return Act::Native;
    }
    // SAFETY: the contract of the call whose mask argument this is: non-null (checked) points at a
    // sigset; its first word is read.
    let v = unsafe { *(p as *const u64) };
    if v & sigsys_bit() == 0 {
        return Act::Native;
    }
    if let Some(c) = my_chan() {
        c.mask.store(v & !sigsys_bit(), Ordering::Relaxed);
        g[reg] = c.mask.as_ptr() as i64;
    }
    Act::Native
}
