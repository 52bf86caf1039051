//! Waiting inside a call: a call that may block waits in poll on its file *and* the body's
//! connection, so that a cancel ends it with EINTR and a connection that closes abandons it
//! (nothing consumed; the resent request runs it afresh). Owns those rules, nothing else.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use proto::rsys::{self as wire, op, Req};

use super::{file_type, neg_errno, Stop};

/// How often blocking lock calls retry while watching their connection.
pub(super) const LOCK_RETRY_MS: i32 = 50;

pub(super) fn nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// Whether a read or write on `fd` can block (and so must watch the connection).
pub(super) fn may_block(fd: RawFd) -> bool {
    let t = file_type(fd);
    t != libc::S_IFREG && t != libc::S_IFDIR && t != libc::S_IFBLK && !nonblocking(fd)
}

/// Wait until `fd` has `events`, unless the client connection stirs first (see [`stirred`]).
/// For a socket (`sock`), its SO_RCVTIMEO or SO_SNDTIMEO (POLLOUT) ends the wait with EAGAIN.
pub(super) fn wait(fd: RawFd, sock: bool, events: i16, client: Option<RawFd>) -> Result<(), Stop> {
    let deadline = if sock { sock_timeout(fd, events).map(|t| Instant::now() + t) } else { None };
    loop {
        let mut p = [
            libc::pollfd { fd, events, revents: 0 },
            libc::pollfd { fd: client.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
        ];
        let t = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: p is a live array of two pollfd.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, t) };
        if n == 0 && t >= 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Errno(-libc::EAGAIN as i64));
        }
        if n < 0 {
            let e = neg_errno();
            if e == -libc::EINTR as i64 {
                continue;
            }
            return Err(Stop::Errno(e));
        }
        if p[1].revents != 0 {
            if let Some(stop) = stirred(client.unwrap_or(-1)) {
                return Err(stop);
            }
            continue;
        }
        if p[0].revents != 0 {
            return Ok(());
        }
    }
}

/// The receive (or, for POLLOUT, send) timeout of socket `fd`, if it has one.
fn sock_timeout(fd: RawFd, events: i16) -> Option<Duration> {
    let opt = if events & libc::POLLOUT != 0 { libc::SO_SNDTIMEO } else { libc::SO_RCVTIMEO };
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: tv and len are live; len says tv's size.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, &mut tv as *mut libc::timeval as *mut libc::c_void, &mut len) };
    if r < 0 || (tv.tv_sec <= 0 && tv.tv_usec <= 0) {
        return None;
    }
    Some(Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64))
}

/// Sleep `ms` unless the client connection stirs (see [`stirred`]).
pub(in crate::rsys) fn nap(client: RawFd, ms: i32) -> Result<(), Stop> {
    let mut p = [libc::pollfd { fd: client, events: libc::POLLIN, revents: 0 }];
    // SAFETY: p is a live array of one pollfd.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
    if n > 0 && p[0].revents != 0 {
        // (a stale cancel taken: the nap is over, the caller tries again)
        return stirred(client).map_or(Ok(()), Err);
    }
    Ok(())
}

thread_local! {
    /// The call this serving thread executes now: (chan, seq).
    static CALLING: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The serving thread is about to execute call (`chan`, `seq`): a cancel that names
/// another call does not end it (see [`stirred`]).
pub(in crate::rsys) fn calling(chan: u64, seq: u64) {
    CALLING.with(|c| c.set((chan, seq)));
}

/// The client connection stirred while a call waited. A cancel ([`wire::OP_CANCEL`]: the
/// body took a signal whose handler does not restart calls) naming this call ends it with
/// EINTR; one naming another call (it finished before the cancel came) is taken and
/// dropped, and the call goes on waiting (None); anything else (the connection closed:
/// the body went away or was restarted elsewhere, or bytes that are no cancel) abandons
/// it.
pub(super) fn stirred(client: RawFd) -> Option<Stop> {
    let mut h = [0u8; wire::REQ_LEN];
    for _ in 0..50 {
        // SAFETY: h has REQ_LEN bytes.
        let n = unsafe { libc::recv(client, h.as_mut_ptr() as *mut libc::c_void, h.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n == h.len() as isize {
            let r = Req::decode(&h);
            if r.op != op::CANCEL || r.bulk_len != 0 {
                return Some(Stop::Abandon);
            }
            // SAFETY: as above; this takes the bytes just peeked.
            unsafe { libc::recv(client, h.as_mut_ptr() as *mut libc::c_void, h.len(), libc::MSG_DONTWAIT) };
            if CALLING.with(|c| c.get()) != (r.chan, r.seq) {
                return None;
            }
            return Some(Stop::Errno(-libc::EINTR as i64));
        }
        if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock) {
            return Some(Stop::Abandon);
        }
        // part of a header: the rest is on its way
        let mut p = libc::pollfd { fd: client, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one live pollfd.
        unsafe { libc::poll(&mut p, 1, 20) };
    }
    Some(Stop::Abandon)
}
