//! Forwarders of poll and select over home and local descriptors (the epoll sets that
//! watch home fds are [`super::epoll`]'s): local entries natively, home ones at home,
//! a local entry becoming ready cancelling the home wait.
//!
//! Runs in the SIGSYS handler: no allocation, no locks.

use super::call::Home;
use super::dispatch::{strip_mask_arg, Act};
use super::homefd::is_remote;
use super::transport::Io;
use super::wait::mono_ms;
use super::{epoll, sigsys_bit, EINVAL};
use crate::rt::syscall::r;
use crate::rt::user;
use core::mem::{offset_of, size_of};
use proto::rsys::op;

// The pollfd array at `p` (n entries): poll's contract, as the application passed it (or
// select_fwd's own array): n writable struct pollfd, read and written field by field.

/// Entry `i` (< n) of the pollfd array at `p`.
fn pollfd_at(p: u64, i: usize) -> libc::pollfd {
    user::read_at::<libc::pollfd>(p, i)
}

/// Set the fd of entry `i` (< n) of the pollfd array at `p`.
fn set_fd(p: u64, i: usize, fd: i32) {
    user::write::<i32>(p + (i * size_of::<libc::pollfd>() + offset_of!(libc::pollfd, fd)) as u64, fd);
}

/// Set the revents of entry `i` (< n) of the pollfd array at `p`.
fn set_revents(p: u64, i: usize, revents: i16) {
    user::write::<i16>(p + (i * size_of::<libc::pollfd>() + offset_of!(libc::pollfd, revents)) as u64, revents);
}

fn any_remote_pollfd(p: u64, n: usize) -> bool {
    (0..n).any(|i| is_remote(pollfd_at(p, i).fd as i64))
}

/// A fresh epoll fd watching the local entries of the pollfd array at `p` (n entries);
/// -1 if none can be made.
fn local_watch(p: u64, n: usize) -> i64 {
    let ep = r!(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC);
    if ep < 0 {
        return -1;
    }
    for f in (0..n).map(|i| pollfd_at(p, i)).filter(|f| f.fd >= 0 && !is_remote(f.fd as i64)) {
        let mut ev = libc::epoll_event { events: f.events as u16 as u32, u64: 0 };
        r!(libc::SYS_epoll_ctl, ep, libc::EPOLL_CTL_ADD, f.fd, &mut ev as *mut libc::epoll_event);
    }
    ep
}

/// poll over home and local descriptors: local ones natively, home ones at home, in
/// short turns until something is ready or the time is up.
pub(super) fn poll_mixed(h: &impl Home, p: u64, n: usize, timeout_ms: i64, m: u64, g: &mut [i64; 23], nr: i64) -> i64 {
    if !any_remote_pollfd(p, n) {
        if nr == libc::SYS_poll {
            return r!(libc::SYS_poll, p, n, timeout_ms);
        }
        return r!(libc::SYS_ppoll, g[libc::REG_RDI as usize], g[libc::REG_RSI as usize], g[libc::REG_RDX as usize], 0, 8);
    }
    let all_remote = (0..n).map(|i| pollfd_at(p, i)).all(|f| f.fd < 0 || is_remote(f.fd as i64));
    let io = [Io { p, n: n * 8 }];
    if all_remote {
        return h.forward(op::POLL, [0, n as u64, timeout_ms as u64, 0, 0, 0], &io, &io, m, true);
    }
    if n > 1024 {
        return EINVAL;
    }
    let start = mono_ms();
    // hide one class of entries by negating their fd (poll ignores negative fds)
    let hide = |hid: &mut [u64; 16], remote: bool| {
        for i in 0..n {
            let fd = pollfd_at(p, i).fd;
            if fd >= 0 && is_remote(fd as i64) == remote {
                set_fd(p, i, !fd);
                hid[i / 64] |= 1 << (i % 64);
            }
        }
    };
    let unhide = |hid: &mut [u64; 16]| {
        for i in 0..n {
            if hid[i / 64] & (1 << (i % 64)) != 0 {
                set_fd(p, i, !pollfd_at(p, i).fd);
                set_revents(p, i, 0);
            }
        }
        *hid = [0; 16];
    };
    let mut hid = [0u64; 16];
    let mut stash = [0i16; 1024];
    loop {
        // local entries, non-blocking
        hide(&mut hid, true);
        let lr = r!(libc::SYS_poll, p, n, 0);
        unhide(&mut hid);
        if lr < 0 {
            return lr;
        }
        for (i, s) in stash.iter_mut().enumerate().take(n) {
            *s = pollfd_at(p, i).revents;
        }
        // home entries: no wait if something local is ready already; else wait at home
        // while an epoll set of the local entries watches them (should one become ready
        // first, the home wait is cancelled and the loop looks again)
        let left = if timeout_ms < 0 { -1 } else { (timeout_ms - (mono_ms() - start)).max(0) };
        let watch = if lr > 0 || left == 0 { -1 } else { local_watch(p, n) };
        // (without a watch, for want of an epoll fd: slices of 20 ms)
        let t = if lr > 0 { 0 } else if watch < 0 { if left < 0 { 20 } else { left.min(20) } } else { left };
        hide(&mut hid, false);
        let rr = h.forward_watching(op::POLL, [0, n as u64, t as u64, 0, 0, 0], &io, &io, m, true, watch);
        unhide(&mut hid);
        if watch >= 0 {
            r!(libc::SYS_close, watch);
        }
        if rr == -(libc::ECANCELED as i64) {
            continue;
        }
        if rr < 0 {
            return rr;
        }
        for (i, &s) in stash.iter().enumerate().take(n) {
            let fd = pollfd_at(p, i).fd;
            if fd >= 0 && !is_remote(fd as i64) {
                set_revents(p, i, s);
            }
        }
        if lr + rr > 0 {
            return lr + rr;
        }
        if timeout_ms >= 0 && mono_ms() - start >= timeout_ms {
            return 0;
        }
    }
}

pub(super) fn select_fwd(h: &impl Home, nr: i64, a: [u64; 6], m: u64, g: &mut [i64; 23]) -> i64 {
    let nfds = (a[0] as usize).min(1024);
    let sets = [a[1], a[2], a[3]];
    let isset = |s: u64, fd: usize| s != 0 && {
        // select's contract: a non-null set (checked) holds at least nfds bits in 64-bit
        // words, as the kernel reads it, and fd < nfds
        let w = user::read_at::<u64>(s, fd / 64);
        w & (1 << (fd % 64)) != 0
    };
    let any = (0..nfds).any(|fd| is_remote(fd as i64) && sets.iter().any(|&s| isset(s, fd)));
    if !any {
        return r!(nr, a[0], a[1], a[2], a[3], a[4], if nr == libc::SYS_pselect6 { 0 } else { a[5] });
    }
    let timeout_ms: i64 = if a[4] == 0 {
        -1
    } else if nr == libc::SYS_select {
        // select's contract: a non-null timeout (checked) points at a struct timeval
        let tv = user::read::<libc::timeval>(a[4]);
        tv.tv_sec * 1000 + tv.tv_usec / 1000
    } else {
        // pselect6's contract: a non-null timeout (checked) points at a struct timespec
        let ts = user::read::<libc::timespec>(a[4]);
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    };
    let mut pf = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 256];
    let mut k = 0;
    for fd in 0..nfds {
        let ev = (if isset(sets[0], fd) { libc::POLLIN } else { 0 }) | (if isset(sets[1], fd) { libc::POLLOUT } else { 0 }) | (if isset(sets[2], fd) { libc::POLLPRI } else { 0 });
        if ev != 0 {
            if k == pf.len() {
                return EINVAL;
            }
            pf[k] = libc::pollfd { fd: fd as i32, events: ev, revents: 0 };
            k += 1;
        }
    }
    let r = poll_mixed(h, pf.as_mut_ptr() as u64, k, timeout_ms, m, g, libc::SYS_poll);
    if r < 0 {
        return r;
    }
    for s in sets.iter().filter(|s| **s != 0) {
        // select's contract: each non-null set is writable for nfds bits in 64-bit words, as
        // the kernel writes it; exactly those words are cleared
        user::zero(*s, nfds.div_ceil(64) * 8);
    }
    let set = |s: u64, fd: i32| {
        if s != 0 {
            // select's contract: a non-null set (checked) is writable for nfds bits in 64-bit
            // words, and the ready fd came from pf, so fd < nfds
            let w = user::read_at::<u64>(s, fd as usize / 64);
            user::write_at::<u64>(s, fd as usize / 64, w | 1 << (fd % 64));
        }
    };
    let mut count = 0;
    for f in &pf[..k] {
        if f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && f.events & libc::POLLIN != 0 {
            set(sets[0], f.fd);
            count += 1;
        }
        if f.revents & (libc::POLLOUT | libc::POLLERR) != 0 && f.events & libc::POLLOUT != 0 {
            set(sets[1], f.fd);
            count += 1;
        }
        if f.revents & libc::POLLPRI != 0 && f.events & libc::POLLPRI != 0 {
            set(sets[2], f.fd);
            count += 1;
        }
    }
    count
}

/// epoll_pwait on a set with home entries: its own signal mask (SIGSYS left out), if it
/// gives one, else the thread's.
pub(super) fn epoll_pwait_fwd(h: &impl Home, a: [u64; 6], m: u64) -> i64 {
    // epoll_pwait's contract: a non-null sigmask (checked) points at a sigset; its first 8
    // bytes are read
    let wm = if a[4] != 0 { user::read::<u64>(a[4]) & !sigsys_bit() } else { m };
    epoll::wait(h, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3] as i32 as i64, wm)
}

/// epoll_pwait2 on a set with home entries: [`epoll_pwait_fwd`] with a timespec timeout.
pub(super) fn epoll_pwait2_fwd(h: &impl Home, a: [u64; 6], m: u64) -> i64 {
    let t = if a[3] == 0 { -1 } else {
        // epoll_pwait2's contract: a non-null timeout (checked) points at a struct timespec
        let ts = user::read::<libc::timespec>(a[3]);
        ts.tv_sec.saturating_mul(1000).saturating_add(ts.tv_nsec / 1_000_000)
    };
    // epoll_pwait2's contract: a non-null sigmask (checked) points at a sigset; its first 8
    // bytes are read
    let wm = if a[4] != 0 { user::read::<u64>(a[4]) & !sigsys_bit() } else { m };
    epoll::wait(h, a[0] as i32 as i64, a[1], a[2] as i32 as i64, t, wm)
}

/// ppoll: with a home fd, [`poll_mixed`]; else natively, its mask argument pointed at a
/// copy without SIGSYS.
pub(super) fn ppoll_fwd(h: &impl Home, a: [u64; 6], m: u64, g: &mut [i64; 23]) -> Act {
    let t = if a[2] == 0 { -1 } else {
        // ppoll's contract: a non-null timeout (checked) points at a struct timespec
        let ts = user::read::<libc::timespec>(a[2]);
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    };
    if !any_remote_pollfd(a[0], a[1] as usize) {
        return strip_mask_arg(g, libc::REG_R10 as usize, a[3]);
    }
    Act::Ret(poll_mixed(h, a[0], a[1] as usize, t, m, g, libc::SYS_ppoll))
}
