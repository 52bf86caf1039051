//! The dispatch of one trapped system call: forwarded home (the forwarders in
//! `fwd_*.rs`), answered here, or run natively. One arm per call or family.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::Home;
use super::channel::my_chan;
use super::eintr::sigactions_changed;
use super::fwd_fd::{bind_new, close_fwd, close_range, dup3_fwd, dup_fwd, fcntl_fwd, ioctl_fwd, mmap_fwd, read_fwd, readv_fwd, vec_offset, write_loop, writev_fwd};
use super::fwd_path::{chdir_fwd, fchmodat2_fwd, open_fwd, path_call, path_call2, readlink_fwd, stat_fwd, statfs_fwd, statx_fwd, symlink_fwd, truncate_fwd, two_paths, utime_fwd};
use super::fwd_poll::{epoll_pwait2_fwd, epoll_pwait_fwd, poll_mixed, ppoll_fwd, select_fwd};
use super::fwd_socket::{accept_fwd, getsockopt_fwd, mmsg_fwd, recvfrom_fwd, recvmsg_at, sendmsg_at, sendto_fwd, sockname_fwd};
use super::homefd::is_remote;
use super::transport::Io;
use super::{epoll, sigsys_bit, EBADF, EINVAL, ENOSYS};
use crate::rt::syscall::r;
use crate::rt::user;
use core::sync::atomic::Ordering;
use proto::rsys::{self, op};

// x86_64 numbers of calls newer than the libc crate's table (Linux 6.13 .. 6.17)
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;
const SYS_OPEN_TREE_ATTR: i64 = 467;
const SYS_FILE_GETATTR: i64 = 468;
const SYS_FILE_SETATTR: i64 = 469;

/// What the handler does with one call.
pub(super) enum Act {
    /// return this result
    Ret(i64),
    /// run it natively (trampoline)
    Native,
}

pub(super) fn dispatch(h: &impl Home, nr: i64, a: [u64; 6], g: &mut [i64; 23], mask: &mut u64) -> Act {
    use Act::{Native, Ret};
    let m = *mask;
    let fd = a[0] as i32 as i64;
    let rem = is_remote(fd);
    // the process's own /proc/<pid>: this node's, in its kernel numbers
    if let Some(r) = super::procpid::own_proc_call(nr, a) {
        return Ret(r);
    }
    match nr {
        // ---------------------------------------------------- fd calls
        libc::SYS_read if rem => Ret(read_fwd(h, fd, a[1], a[2], m)),
        libc::SYS_write if rem => Ret(write_loop(h, fd, a[1], a[2] as usize, None, m)),
        libc::SYS_pread64 if rem => Ret(h.forward_quick(op::PREAD64, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), a[3], 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m)),
        libc::SYS_pwrite64 if rem => Ret(write_loop(h, fd, a[1], a[2] as usize, Some(a[3] as i64), m)),
        libc::SYS_readv | libc::SYS_preadv | libc::SYS_preadv2 if rem => Ret(readv_fwd(h, fd, a[1], a[2] as usize, vec_offset(nr, a), m)),
        libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2 if rem => Ret(writev_fwd(h, fd, a[1], a[2] as usize, vec_offset(nr, a), m)),
        libc::SYS_close => close_fwd(h, fd, rem, m),
        libc::SYS_close_range => Ret(close_range(h, a[0] as u32, a[1] as u32, a[2] as u32, m)),
        libc::SYS_fstat if rem => Ret(h.forward_quick(op::FSTAT, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: a[1], n: 144 }], m)),
        // each of these is forwarded as itself: its op is its system call number (op::LSEEK,
        // op::FTRUNCATE, op::FSYNC, ... op::LISTEN); only a flock without LOCK_NB may block
        libc::SYS_lseek | libc::SYS_ftruncate | libc::SYS_fsync | libc::SYS_fdatasync | libc::SYS_fchmod | libc::SYS_fchown
        | libc::SYS_fallocate | libc::SYS_fadvise64 | libc::SYS_flock | libc::SYS_shutdown | libc::SYS_listen
            if rem => Ret(h.forward(nr as u32, a, &[], &[], m, nr == libc::SYS_flock && a[1] & libc::LOCK_NB as u64 == 0)),
        libc::SYS_fchdir if rem => Ret(h.forward_quick(op::FCHDIR, a, &[], &[], m)),
        libc::SYS_fchdir => Ret(EBADF),
        libc::SYS_fstatfs if rem => Ret(h.forward_quick(op::FSTATFS, a, &[], &[Io { p: a[1], n: 120 }], m)),
        libc::SYS_getdents64 if rem => Ret(h.forward_quick(op::GETDENTS64, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), 0, 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m)),
        libc::SYS_ioctl if rem => Ret(ioctl_fwd(h, fd, a[1], a[2], m)),
        libc::SYS_fcntl if rem => Ret(fcntl_fwd(h, fd, a[1] as i32, a[2], m)),
        // (F_DUPFD of a local fd included: the kernel's lowest free number is ours too)
        libc::SYS_fcntl => Native,
        libc::SYS_dup if rem => Ret(dup_fwd(h, fd, m)),
        libc::SYS_dup2 | libc::SYS_dup3 => dup3_fwd(h, nr, a, rem, m),
        libc::SYS_mmap if rem && a[3] & libc::MAP_ANONYMOUS as u64 == 0 => Ret(mmap_fwd(h, a, m)),
        libc::SYS_sendfile | libc::SYS_copy_file_range | libc::SYS_splice | libc::SYS_tee
            if rem || is_remote(a[1] as i32 as i64) || (nr == libc::SYS_copy_file_range && is_remote(a[2] as i32 as i64)) => Ret(EINVAL),
        libc::SYS_epoll_ctl if is_remote(a[2] as i32 as i64) => Ret(epoll::ctl(fd, a[1] as i32, a[2] as i32 as i64, a[3])),
        libc::SYS_epoll_wait if epoll::has(fd) => Ret(epoll::wait(h, fd, a[1], a[2] as i32 as i64, a[3] as i32 as i64, m)),
        libc::SYS_epoll_pwait if epoll::has(fd) => Ret(epoll_pwait_fwd(h, a, m)),
        libc::SYS_epoll_pwait2 if epoll::has(fd) => Ret(epoll_pwait2_fwd(h, a, m)),
        libc::SYS_poll => Ret(poll_mixed(h, a[0], a[1] as usize, a[2] as i32 as i64, m, g, nr)),
        libc::SYS_ppoll => ppoll_fwd(h, a, m, g),
        libc::SYS_select | libc::SYS_pselect6 => Ret(select_fwd(h, nr, a, m, g)),
        // ---------------------------------------------------- sockets
        libc::SYS_socket => Ret(bind_new(h, op::SOCKET, [a[0], a[1], a[2], 0, 0, 0], 3, &[], &[], m)),
        // op::CONNECT, op::BIND: the system call numbers
        libc::SYS_connect | libc::SYS_bind if rem => Ret(h.forward(nr as u32, [fd as u64, 0, 0, 0, 0, 0], &[Io { p: a[1], n: a[2] as usize }], &[], m, nr == libc::SYS_connect)),
        libc::SYS_accept | libc::SYS_accept4 if rem => Ret(accept_fwd(h, nr, fd, a, m)),
        libc::SYS_getsockname | libc::SYS_getpeername if rem => Ret(sockname_fwd(h, nr, fd, a[1], a[2], m)),
        libc::SYS_setsockopt if rem => Ret(h.forward_quick(op::SETSOCKOPT, [fd as u64, a[1], a[2], 0, 0, 0], &[Io { p: a[3], n: a[4] as usize }], &[], m)),
        libc::SYS_getsockopt if rem => Ret(getsockopt_fwd(h, fd, a, m)),
        libc::SYS_sendto if rem => Ret(sendto_fwd(h, fd, &[Io { p: a[1], n: a[2] as usize }], a[3], a[4], a[5] as usize, m)),
        libc::SYS_recvfrom if rem => Ret(recvfrom_fwd(h, fd, &[Io { p: a[1], n: a[2] as usize }], a[3], a[4], a[5], m)),
        libc::SYS_sendmsg if rem => Ret(sendmsg_at(h, fd, a[1], a[2], m)),
        libc::SYS_recvmsg if rem => Ret(recvmsg_at(h, fd, a[1], a[2], m)),
        libc::SYS_sendmmsg if rem => Ret(mmsg_fwd(h, fd, a[1], a[2] as u32, a[3], m, true)),
        libc::SYS_recvmmsg if rem => Ret(mmsg_fwd(h, fd, a[1], a[2] as u32, a[3], m, false)),
        // ---------------------------------------------------- paths
        libc::SYS_open | libc::SYS_creat | libc::SYS_openat | libc::SYS_openat2 => open_fwd(h, nr, a, m),
        libc::SYS_stat | libc::SYS_lstat | libc::SYS_newfstatat => stat_fwd(h, nr, a, m),
        libc::SYS_statx => statx_fwd(h, a, m),
        libc::SYS_access => path_call(h, op::FACCESSAT2, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_faccessat => path_call(h, op::FACCESSAT2, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_faccessat2 => path_call(h, op::FACCESSAT2, a[0] as i32 as i64, a[1], [0, 0, a[2], a[3]], &[], m),
        libc::SYS_unlink => path_call(h, op::UNLINKAT, libc::AT_FDCWD as i64, a[0], [0, 0, 0, 0], &[], m),
        libc::SYS_rmdir => path_call(h, op::UNLINKAT, libc::AT_FDCWD as i64, a[0], [0, 0, libc::AT_REMOVEDIR as u64, 0], &[], m),
        libc::SYS_unlinkat => path_call(h, op::UNLINKAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_mkdir => path_call(h, op::MKDIRAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_mkdirat => path_call(h, op::MKDIRAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_mknod => path_call(h, op::MKNODAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], a[2]], &[], m),
        libc::SYS_mknodat => path_call(h, op::MKNODAT, a[0] as i32 as i64, a[1], [0, 0, a[2], a[3]], &[], m),
        libc::SYS_chmod => path_call(h, op::FCHMODAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_fchmodat => path_call(h, op::FCHMODAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_fchmodat2 => fchmodat2_fwd(h, a, m),
        libc::SYS_chown => path_call(h, op::FCHOWNAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], a[2]], &[], m),
        libc::SYS_lchown => path_call2(h, op::FCHOWNAT, libc::AT_FDCWD as i64, a[0], [a[1], a[2], libc::AT_SYMLINK_NOFOLLOW as u64], m),
        libc::SYS_fchownat => path_call2(h, op::FCHOWNAT, a[0] as i32 as i64, a[1], [a[2], a[3], a[4]], m),
        libc::SYS_truncate => truncate_fwd(h, a, m),
        libc::SYS_chdir => Ret(chdir_fwd(h, a[0], m)),
        libc::SYS_getcwd => Ret(h.forward_quick(op::GETCWD, [0, a[1], 0, 0, 0, 0], &[], &[Io { p: a[0], n: a[1] as usize }], m)),
        libc::SYS_readlink => readlink_fwd(h, libc::AT_FDCWD as i64, a[0], a[1], a[2], m),
        libc::SYS_readlinkat => readlink_fwd(h, a[0] as i32 as i64, a[1], a[2], a[3], m),
        libc::SYS_rename => two_paths(h, op::RENAMEAT2, libc::AT_FDCWD as i64, a[0], libc::AT_FDCWD as i64, a[1], 0, m),
        libc::SYS_renameat => two_paths(h, op::RENAMEAT2, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], 0, m),
        libc::SYS_renameat2 => two_paths(h, op::RENAMEAT2, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4], m),
        libc::SYS_link => two_paths(h, op::LINKAT, libc::AT_FDCWD as i64, a[0], libc::AT_FDCWD as i64, a[1], 0, m),
        libc::SYS_linkat => two_paths(h, op::LINKAT, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4], m),
        libc::SYS_symlink => Ret(symlink_fwd(h, a[0], libc::AT_FDCWD as i64, a[1], m)),
        libc::SYS_symlinkat => Ret(symlink_fwd(h, a[0], a[1] as i32 as i64, a[2], m)),
        libc::SYS_utimensat | libc::SYS_utimes | libc::SYS_utime | libc::SYS_futimesat => Ret(utime_fwd(h, nr, a, m)),
        libc::SYS_statfs => statfs_fwd(h, a[0], a[1], m),
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
        libc::SYS_rt_sigprocmask => Ret(sigprocmask_emul(a, mask)),
        libc::SYS_rt_sigaction => sigaction_fwd(a),
        libc::SYS_rt_sigsuspend => strip_mask_arg(g, libc::REG_RDI as usize, a[0]),
        _ => Native,
    }
}

/// rt_sigprocmask, emulated on the saved mask `mask`, which the return from the handler
/// installs. SIGSYS and the freeze signal cannot be blocked.
fn sigprocmask_emul(a: [u64; 6], mask: &mut u64) -> i64 {
    let old = *mask;
    if a[1] != 0 {
        // rt_sigprocmask's contract: a non-null set (checked) points at a sigset; its
        // first word (signals 1..64) is read
        let set = user::read::<u64>(a[1]);
        let frz = ckpt::sys::sigbit(crate::signals::freeze_sig());
        let set = set & !sigsys_bit() & !frz;
        match a[0] as i32 {
            libc::SIG_BLOCK => *mask |= set,
            libc::SIG_UNBLOCK => *mask &= !set,
            libc::SIG_SETMASK => *mask = set,
            _ => return EINVAL,
        }
    }
    if a[2] != 0 {
        // rt_sigprocmask's contract: a non-null oldset (checked) points at a writable
        // sigset; its first word is written
        user::write::<u64>(a[2], old);
    }
    0
}

/// rt_sigaction: SIGSYS stays ours (a new action for it is accepted and dropped), and no
/// handler may block it.
fn sigaction_fwd(a: [u64; 6]) -> Act {
    if a[0] as i32 == libc::SIGSYS {
        return Act::Ret(0);
    }
    if a[1] == 0 {
        return Act::Native;
    }
    // rt_sigaction's contract: a non-null act (checked) points at a kernel struct
    // sigaction, which KSigAction mirrors
    let mut k = user::read::<ckpt::sys::KSigAction>(a[1]);
    k.mask &= !sigsys_bit();
    let r = r!(libc::SYS_rt_sigaction, a[0], &k as *const ckpt::sys::KSigAction, a[2], a[3]);
    sigactions_changed();
    Act::Ret(r)
}

/// Point the mask argument in register `reg` at a per-thread copy without SIGSYS.
pub(super) fn strip_mask_arg(g: &mut [i64; 23], reg: usize, p: u64) -> Act {
    if p == 0 {
        return Act::Native;
    }
    // the contract of the call whose mask argument this is: non-null (checked) points at
    // a sigset; its first word is read
    let v = user::read::<u64>(p);
    if v & sigsys_bit() == 0 {
        return Act::Native;
    }
    if let Some(c) = my_chan() {
        c.mask.store(v & !sigsys_bit(), Ordering::Relaxed);
        g[reg] = c.mask.as_ptr() as i64;
    }
    Act::Native
}
