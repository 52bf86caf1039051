//! epoll sets that watch home fds, while away from home.
//!
//! The kernel cannot watch a file that is open at home (locally only a placeholder keeps
//! its number), so the body keeps those entries itself: (epoll fd, fd, events, data).
//! `epoll_wait` on a set that has such entries takes what the kernel's part has ready,
//! else forwards a poll of the home part and meanwhile watches the set's own fd: should a
//! local entry become ready first, the forwarded poll is cancelled
//! ([`super::call::Home::forward_watching`]).
//! A set with no home entry armed waits in the kernel.
//!
//! Semantics kept: EPOLL_CTL_ADD/MOD/DEL with EEXIST/ENOENT, the data word, EPOLLONESHOT
//! (an entry is disarmed once reported, until EPOLL_CTL_MOD), EPOLLERR/EPOLLHUP reported
//! whether asked for or not, closing the fd or the epoll fd drops the entry, EINTR when
//! a handler runs. Not kept: EPOLLET entries are reported while ready (an edge-triggered
//! reader reads until EAGAIN, so an extra report costs it one EAGAIN); an entry belongs
//! to the epoll fd's number (a dup of the epoll fd does not see it).
//!
//! The table is fixed-size and lock-free: it is used from the SIGSYS handler. It lives in
//! the process's memory, so an image carries it; entries of a set that was built at home
//! come from the image's interest list ([`adopt`]).

use super::call::Home;
use super::homefd::is_remote;
use super::transport::Io;
use super::wait::mono_ms;
use super::{EBADF, EINVAL};
use crate::rt::syscall::r;
use crate::rt::user;
use proto::rsys::op;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Entries in all sets together.
const SLOTS: usize = 128;
const FREE: i32 = -1;
const CLAIMED: i32 = -2;
/// Our mark on an EPOLLONESHOT entry already reported (no epoll flag uses this bit).
const DISARMED: u32 = 1 << 27;
/// The event bits (the rest are flags: EPOLLET, EPOLLONESHOT, ...).
const EVENTS: u32 = 0xffff;

struct Slot {
    ep: AtomicI32,
    fd: AtomicI32,
    events: AtomicU32,
    data: AtomicU64,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot { ep: AtomicI32::new(FREE), fd: AtomicI32::new(-1), events: AtomicU32::new(0), data: AtomicU64::new(0) }
}; SLOTS];
/// Slots in use (0: nothing to look at).
static USED: AtomicU32 = AtomicU32::new(0);

fn find(ep: i32, fd: i32) -> Option<&'static Slot> {
    if USED.load(Ordering::Acquire) == 0 {
        return None;
    }
    TABLE.iter().find(|s| s.ep.load(Ordering::Acquire) == ep && s.fd.load(Ordering::Acquire) == fd)
}

fn free(s: &Slot) {
    if s.ep.swap(FREE, Ordering::AcqRel) >= 0 {
        USED.fetch_sub(1, Ordering::AcqRel);
    }
}

fn add(ep: i32, fd: i32, events: u32, data: u64) -> i64 {
    if find(ep, fd).is_some() {
        return -(libc::EEXIST as i64);
    }
    for s in &TABLE {
        if s.ep.compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            s.fd.store(fd, Ordering::Release);
            s.events.store(events & !DISARMED, Ordering::Release);
            s.data.store(data, Ordering::Release);
            USED.fetch_add(1, Ordering::AcqRel);
            s.ep.store(ep, Ordering::Release);
            return 0;
        }
    }
    -(libc::ENOSPC as i64)
}

/// Does epoll fd `ep` have home entries?
pub fn has(ep: i64) -> bool {
    USED.load(Ordering::Acquire) != 0 && TABLE.iter().any(|s| s.ep.load(Ordering::Acquire) as i64 == ep)
}

/// `epoll_ctl(ep, op, fd, ev)` for a home `fd`.
pub fn ctl(ep: i64, op: i32, fd: i64, ev: u64) -> i64 {
    if is_remote(ep) || r!(libc::SYS_fcntl, ep, libc::F_GETFD) < 0 {
        return EBADF;
    }
    if ep == fd || ep < 0 || ep > i32::MAX as i64 {
        return EINVAL;
    }
    let (ep, fd) = (ep as i32, fd as i32);
    let read_ev = || {
        if ev == 0 {
            return None;
        }
        // epoll_ctl's contract: a non-null event (checked) points at a struct epoll_event
        // (packed on x86_64: read unaligned)
        Some(user::read::<libc::epoll_event>(ev))
    };
    match op {
        libc::EPOLL_CTL_ADD => match read_ev() {
            Some(e) => add(ep, fd, e.events, e.u64),
            None => -(libc::EFAULT as i64),
        },
        libc::EPOLL_CTL_MOD => match (find(ep, fd), read_ev()) {
            (None, _) => -(libc::ENOENT as i64),
            (Some(_), None) => -(libc::EFAULT as i64),
            (Some(s), Some(e)) => {
                s.events.store(e.events & !DISARMED, Ordering::Release);
                s.data.store(e.u64, Ordering::Release);
                0
            }
        },
        libc::EPOLL_CTL_DEL => match find(ep, fd) {
            None => -(libc::ENOENT as i64),
            Some(s) => {
                free(s);
                0
            }
        },
        _ => EINVAL,
    }
}

/// Home fd `fd` was closed: it leaves every set.
pub fn forget_fd(fd: i64) {
    if USED.load(Ordering::Acquire) == 0 {
        return;
    }
    for s in TABLE.iter().filter(|s| s.ep.load(Ordering::Acquire) >= 0 && s.fd.load(Ordering::Acquire) as i64 == fd) {
        free(s);
    }
}

/// Local fds `first..=last` were closed: the sets among them go.
pub fn forget_ep(first: i64, last: i64) {
    if USED.load(Ordering::Acquire) == 0 {
        return;
    }
    for s in &TABLE {
        let e = s.ep.load(Ordering::Acquire) as i64;
        if e >= 0 && e >= first && e <= last {
            free(s);
        }
    }
}

/// After a restart from an image taken at home: the entries of epoll set `ep` that watch
/// home fds (the restorer left them out of the kernel's set).
pub fn adopt(ep: i32, fd: i32, events: u32, data: u64) {
    let _ = add(ep, fd, events, data);
}

/// epoll_wait on a set with home entries: events into `evp` (room for `max`), waiting at
/// most `timeout_ms` (-1: for ever) with the application's signal mask `m`.
pub(super) fn wait(h: &impl Home, ep: i64, evp: u64, max: i64, timeout_ms: i64, m: u64) -> i64 {
    if max <= 0 || max > i32::MAX as i64 / 12 {
        return EINVAL;
    }
    let max = max as usize;
    let start = mono_ms();
    let put = |i: usize, events: u32, data: u64| {
        let e = libc::epoll_event { events, u64: data };
        // epoll_wait's contract: evp has room for max struct epoll_event (packed: written
        // unaligned), and i < max
        user::write_at::<libc::epoll_event>(evp, i, e);
    };
    loop {
        let mut n = r!(libc::SYS_epoll_wait, ep, evp, max, 0);
        if n < 0 {
            return n;
        }
        let elapsed = mono_ms() - start;
        let left = if timeout_ms < 0 { i64::MAX } else { (timeout_ms - elapsed).max(0) };
        // the armed home entries
        let mut pf = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 64];
        let mut slot = [0usize; 64];
        let mut k = 0;
        for (i, s) in TABLE.iter().enumerate() {
            if k == pf.len() {
                break;
            }
            if s.ep.load(Ordering::Acquire) as i64 != ep {
                continue;
            }
            let ev = s.events.load(Ordering::Acquire);
            if ev & DISARMED != 0 {
                continue;
            }
            pf[k] = libc::pollfd { fd: s.fd.load(Ordering::Acquire), events: (ev & EVENTS) as u16 as i16, revents: 0 };
            slot[k] = i;
            k += 1;
        }
        if k == 0 {
            if n > 0 {
                return n;
            }
            // only the kernel's part: wait there, with the application's mask
            let t = if timeout_ms < 0 { -1 } else { left };
            return r!(libc::SYS_epoll_pwait, ep, evp, max, t, &m as *const u64, 8);
        }
        if (n as usize) < max {
            // nothing local yet: wait at home, until the set's own fd says otherwise
            let t = if n > 0 { 0 } else if timeout_ms < 0 { -1 } else { left.min(i32::MAX as i64) };
            let io = [Io { p: pf.as_mut_ptr() as u64, n: k * core::mem::size_of::<libc::pollfd>() }];
            let r = h.forward_watching(op::POLL, [0, k as u64, t as u64, 0, 0, 0], &io, &io, m, true, if n > 0 { -1 } else { ep });
            if r < 0 {
                if n > 0 {
                    return n;
                }
                if r == -(libc::ECANCELED as i64) {
                    continue; // a local entry became ready: taken at the top
                }
                return r;
            }
            for (p, &i) in pf[..k].iter().zip(&slot[..k]) {
                if p.revents == 0 || n as usize >= max {
                    continue;
                }
                let s = &TABLE[i];
                let ev = s.events.load(Ordering::Acquire);
                put(n as usize, p.revents as u16 as u32, s.data.load(Ordering::Acquire));
                n += 1;
                if ev & libc::EPOLLONESHOT as u32 != 0 {
                    s.events.store(ev | DISARMED, Ordering::Release);
                }
            }
        }
        if n > 0 {
            return n;
        }
        if timeout_ms >= 0 && mono_ms() - start >= timeout_ms {
            return 0;
        }
    }
}
