//! Forwarders of the calls on home fds: reads and writes (split to the protocol's
//! largest I/O, vectors gathered), closes, dups, fcntl, ioctl, mmap of a home file, and
//! binding a new home fd to a placeholder number.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::Home;
use super::dispatch::Act;
use super::homefd::{drop_placeholder, is_internal, is_remote, may_block, placeholder, set_remote, MAXFD};
use super::transport::{Io, NOIO};
use super::{epoll, EINVAL};
use crate::rt::syscall::r;
use crate::rt::user;
use proto::rsys::{self, op};

pub(super) fn bind_new(h: &impl Home, op: u32, mut args: [u64; 6], slot: usize, bulk: &[Io], out: &[Io], mask: u64) -> i64 {
    let n = placeholder(0);
    if n < 0 {
        return n;
    }
    args[slot] = n as u64;
    let r = h.forward(op, args, bulk, out, mask, op == op::ACCEPT4);
    if r < 0 {
        r!(libc::SYS_close, n);
        return r;
    }
    set_remote(n, true);
    // close-on-exec belongs to the fd number, so to the placeholder: O_CLOEXEC of open,
    // SOCK_CLOEXEC of socket and accept4 (the same bit)
    let flags = match op {
        op::OPENAT | op::ACCEPT4 => args[2],
        op::SOCKET => args[1],
        _ => 0,
    };
    if flags & libc::O_CLOEXEC as u64 != 0 {
        r!(libc::SYS_fcntl, n, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    n
}

pub(super) fn write_loop(h: &impl Home, fd: i64, mut p: u64, mut n: usize, off: Option<i64>, m: u64) -> i64 {
    let mut done = 0i64;
    loop {
        let k = n.min(rsys::MAX_IO);
        let r = match off {
            None => h.forward(op::WRITE, [fd as u64, 0, 0, 0, 0, 0], &[Io { p, n: k }], &[], m, may_block(h, fd, m)),
            Some(o) => h.forward_quick(op::PWRITE64, [fd as u64, 0, 0, (o + done) as u64, 0, 0], &[Io { p, n: k }], &[], m),
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        done += r;
        n -= r as usize;
        p += r as u64;
        if n == 0 || (r as usize) < k {
            return done;
        }
    }
}

pub(super) fn iovs(iov: u64, cnt: usize, v: &mut [Io; 8]) -> Option<usize> {
    if cnt > v.len() && iov != 0 {
        // more than 8: the caller handles them one by one
        return None;
    }
    for (i, slot) in v.iter_mut().enumerate().take(cnt) {
        // readv's (and sendmsg's / recvmsg's msg_iov) contract: iov points at cnt struct
        // iovec, and i < cnt
        let e = user::read_at::<libc::iovec>(iov, i);
        *slot = Io { p: e.iov_base as u64, n: e.iov_len };
    }
    Some(cnt)
}

pub(super) fn writev_fwd(h: &impl Home, fd: i64, iov: u64, cnt: usize, off: Option<i64>, m: u64) -> i64 {
    let mut done = 0i64;
    for i in 0..cnt {
        // writev's contract: iov points at cnt struct iovec, and i < cnt
        let e = user::read_at::<libc::iovec>(iov, i);
        if e.iov_len == 0 {
            continue;
        }
        let r = write_loop(h, fd, e.iov_base as u64, e.iov_len, off.map(|o| o + done), m);
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        done += r;
        if (r as usize) < e.iov_len {
            break;
        }
    }
    done
}

pub(super) fn readv_fwd(h: &impl Home, fd: i64, iov: u64, cnt: usize, off: Option<i64>, m: u64) -> i64 {
    let mut v = [NOIO; 8];
    if let Some(k) = iovs(iov, cnt, &mut v) {
        let total: usize = v[..k].iter().map(|x| x.n).sum::<usize>().min(rsys::MAX_IO);
        let mut left = total;
        for x in v[..k].iter_mut() {
            x.n = x.n.min(left);
            left -= x.n;
        }
        return match off {
            None => h.forward(op::READ, [fd as u64, 0, total as u64, 0, 0, 0], &[], &v[..k], m, may_block(h, fd, m)),
            Some(o) => h.forward_quick(op::PREAD64, [fd as u64, 0, total as u64, o as u64, 0, 0], &[], &v[..k], m),
        };
    }
    // many buffers: one call per buffer, stop at a short read
    let mut done = 0i64;
    for i in 0..cnt {
        // readv's contract: iov points at cnt struct iovec, and i < cnt
        let e = user::read_at::<libc::iovec>(iov, i);
        let n = e.iov_len.min(rsys::MAX_IO);
        let out = [Io { p: e.iov_base as u64, n }];
        let r = match off {
            None => h.forward(op::READ, [fd as u64, 0, n as u64, 0, 0, 0], &[], &out, m, may_block(h, fd, m)),
            Some(o) => h.forward_quick(op::PREAD64, [fd as u64, 0, n as u64, (o + done) as u64, 0, 0], &[], &out, m),
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        done += r;
        if (r as usize) < n {
            break;
        }
    }
    done
}

pub(super) fn close_range(h: &impl Home, first: u32, last: u32, flags: u32, m: u64) -> i64 {
    // home files in the range are closed at home; our own descriptors are skipped
    let hi = last.min(MAXFD as u32 - 1);
    let mut start = first as i64;
    let mut fd = first as i64;
    while fd <= hi as i64 {
        if is_remote(fd) && flags & libc::CLOSE_RANGE_CLOEXEC == 0 {
            h.forward_quick(op::CLOSE, [fd as u64, 0, 0, 0, 0, 0], &[], &[], m);
            set_remote(fd, false);
            epoll::forget_fd(fd);
        }
        if is_internal(fd) {
            if fd > start {
                r!(libc::SYS_close_range, start, fd - 1, flags);
            }
            start = fd + 1;
        }
        fd += 1;
    }
    if flags & libc::CLOSE_RANGE_CLOEXEC == 0 {
        epoll::forget_ep(first as i64, last as i64);
    }
    if start <= last as i64 {
        return r!(libc::SYS_close_range, start, last, flags);
    }
    0
}

pub(super) fn fcntl_fwd(h: &impl Home, fd: i64, cmd: i32, arg: u64, m: u64) -> i64 {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let n = placeholder(arg as i64);
            if n < 0 {
                return n;
            }
            let r = h.forward_quick(op::DUP3, [fd as u64, n as u64, 0, 0, 0, 0], &[], &[], m);
            if r < 0 {
                r!(libc::SYS_close, n);
                return r;
            }
            if cmd == libc::F_DUPFD_CLOEXEC {
                r!(libc::SYS_fcntl, n, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            set_remote(n, true);
            n
        }
        // close-on-exec belongs to the fd number: the placeholder keeps it
        libc::F_GETFD | libc::F_SETFD => r!(libc::SYS_fcntl, fd, cmd, arg),
        libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => {
            let io = [Io { p: arg, n: 32 }];
            h.forward(op::FCNTL, [fd as u64, cmd as u64, 0, 0, 0, 0], &io, &io, m, cmd == libc::F_SETLKW || cmd == libc::F_OFD_SETLKW)
        }
        _ => h.forward_quick(op::FCNTL, [fd as u64, cmd as u64, arg, 0, 0, 0], &[], &[], m),
    }
}

pub(super) fn ioctl_fwd(h: &impl Home, fd: i64, req: u64, arg: u64, m: u64) -> i64 {
    let (inl, outl) = match rsys::ioctl_shape(req) {
        rsys::IoctlShape::Forward { input, output } => (input, output),
        rsys::IoctlShape::FdFlag => return r!(libc::SYS_ioctl, fd, req, arg),
        rsys::IoctlShape::Unsupported => return -(libc::ENOTTY as i64),
    };
    h.forward_quick(op::IOCTL, [fd as u64, req, 0, 0, 0, 0], &[Io { p: arg, n: inl }], &[Io { p: arg, n: outl }], m)
}

pub(super) fn mmap_fwd(h: &impl Home, a: [u64; 6], m: u64) -> i64 {
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i32 as i64, a[5]);
    let shared = flags & libc::MAP_SHARED as u64 != 0;
    if shared && prot & libc::PROT_WRITE as u64 != 0 {
        crate::log::log("remote: a writable shared mapping of a home file is refused (ENODEV)");
        return -(libc::ENODEV as i64);
    }
    // a private copy of the file's bytes (read at home), then the asked protection
    let keep = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE | libc::MAP_POPULATE | libc::MAP_NORESERVE) as u64;
    let p = r!(libc::SYS_mmap, addr, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE as u64 | libc::MAP_ANONYMOUS as u64 | keep, -1i64, 0);
    if p < 0 {
        return p;
    }
    let mut done = 0u64;
    while done < len {
        let k = (len - done).min(rsys::MAX_IO as u64);
        let r = h.forward_quick(op::PREAD64, [fd as u64, 0, k, off + done, 0, 0], &[], &[Io { p: p as u64 + done, n: k as usize }], m);
        if r < 0 {
            r!(libc::SYS_munmap, p, len);
            return r;
        }
        if r == 0 {
            break;
        }
        done += r as u64;
    }
    r!(libc::SYS_mprotect, p, len, prot);
    p
}

/// read on a home fd (at most the protocol's largest I/O); a read that may block lets
/// the checkpoint freeze through its wait.
pub(super) fn read_fwd(h: &impl Home, fd: i64, buf: u64, count: u64, m: u64) -> i64 {
    let intr = may_block(h, fd, m);
    h.forward(op::READ, [fd as u64, 0, count.min(rsys::MAX_IO as u64), 0, 0, 0], &[], &[Io { p: buf, n: (count as usize).min(rsys::MAX_IO) }], m, intr)
}

/// The file offset a vectored read or write `nr` names in `a[3]`: none for readv and
/// writev, nor for preadv2 and pwritev2 given -1 (the file's own offset).
pub(super) fn vec_offset(nr: i64, a: [u64; 6]) -> Option<i64> {
    let own = nr == libc::SYS_readv || nr == libc::SYS_writev || ((nr == libc::SYS_preadv2 || nr == libc::SYS_pwritev2) && a[3] as i64 == -1);
    if own {
        None
    } else {
        Some(a[3] as i64)
    }
}

/// close: one of our own descriptors pretends to close; a home fd closes at home (and its
/// placeholder here, and its epoll entries); a local one natively, the home entries of
/// an epoll set it is dropped with it.
pub(super) fn close_fwd(h: &impl Home, fd: i64, rem: bool, m: u64) -> Act {
    if is_internal(fd) {
        Act::Ret(0)
    } else if rem {
        let r = h.forward_quick(op::CLOSE, [fd as u64, 0, 0, 0, 0, 0], &[], &[], m);
        drop_placeholder(fd);
        epoll::forget_fd(fd);
        Act::Ret(r)
    } else {
        epoll::forget_ep(fd, fd);
        Act::Native
    }
}

/// dup of a home fd: a placeholder at the lowest free number, dup'ed onto at home.
pub(super) fn dup_fwd(h: &impl Home, fd: i64, m: u64) -> i64 {
    let n = placeholder(0);
    if n < 0 {
        return n;
    }
    let r = h.forward_quick(op::DUP3, [fd as u64, n as u64, 0, 0, 0, 0], &[], &[], m);
    if r < 0 {
        r!(libc::SYS_close, n);
        return r;
    }
    set_remote(n, true);
    n
}

/// dup2 / dup3 (`nr`) where either end is a home fd: a home fd replaced is closed at
/// home; a home fd duplicated takes a placeholder at the new number and is dup'ed at
/// home. Our own descriptors cannot be replaced (EBUSY).
pub(super) fn dup3_fwd(h: &impl Home, nr: i64, a: [u64; 6], rem: bool, m: u64) -> Act {
    let fd = a[0] as i32 as i64;
    let new = a[1] as i32 as i64;
    let flags = if nr == libc::SYS_dup3 { a[2] } else { 0 };
    if is_internal(new) {
        return Act::Ret(-(libc::EBUSY as i64));
    }
    if fd == new {
        return if nr == libc::SYS_dup3 { Act::Ret(EINVAL) } else if rem { Act::Ret(new) } else { Act::Native };
    }
    if !rem && !is_remote(new) {
        return Act::Native;
    }
    if is_remote(new) {
        // replaced: closed at home, as close() does, its epoll entries with it
        h.forward_quick(op::CLOSE, [new as u64, 0, 0, 0, 0, 0], &[], &[], m);
        set_remote(new, false);
        epoll::forget_fd(new);
    }
    if !rem {
        return Act::Ret(r!(nr, a[0], a[1], a[2]));
    }
    let src = super::placeholder_src();
    let p = r!(libc::SYS_dup3, src, new, flags);
    if p < 0 {
        return Act::Ret(p);
    }
    let r = h.forward_quick(op::DUP3, [fd as u64, new as u64, 0, 0, 0, 0], &[], &[], m);
    if r < 0 {
        r!(libc::SYS_close, new);
        return Act::Ret(r);
    }
    set_remote(new, true);
    Act::Ret(new)
}
