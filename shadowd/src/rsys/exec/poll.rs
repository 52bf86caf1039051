//! Forwarded poll: the body's pollfds mapped to the session's descriptors, waited on
//! together with the body's connection (a cancel or its end stops the wait).

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::wait::stirred;
use super::{done, neg_errno, Answer};
use crate::rsys::Session;

pub(super) fn poll(s: &Session, nfds: usize, timeout: i32, bulk: &[u8], client: RawFd) -> Answer {
    const PFD: usize = std::mem::size_of::<libc::pollfd>();
    if nfds.checked_mul(PFD) != Some(bulk.len()) {
        return done(-libc::EINVAL as i64);
    }
    let mut app: Vec<libc::pollfd> = bulk
        .chunks_exact(PFD)
        .map(|c| libc::pollfd {
            fd: i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            events: i16::from_le_bytes([c[4], c[5]]),
            revents: 0,
        })
        .collect();
    // Hold the descriptors for the whole wait.
    let mut held = Vec::new();
    let mut real = Vec::with_capacity(nfds + 1);
    let mut invalid = false;
    for p in &app {
        let fd = if p.fd < 0 {
            -1
        } else {
            match s.file(p.fd as u32 as u64) {
                Ok(f) => {
                    let r = f.as_raw_fd();
                    held.push(f);
                    r
                }
                Err(_) => {
                    invalid = true;
                    -1
                }
            }
        };
        real.push(libc::pollfd { fd, events: p.events, revents: 0 });
    }
    real.push(libc::pollfd { fd: client, events: libc::POLLIN, revents: 0 });
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    loop {
        let t = if invalid {
            0
        } else {
            match deadline {
                None => -1,
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
            }
        };
        // SAFETY: real is a live array of real.len() pollfd.
        let n = unsafe { libc::poll(real.as_mut_ptr(), real.len() as libc::nfds_t, t) };
        if n < 0 {
            let e = neg_errno();
            if e == -libc::EINTR as i64 {
                continue;
            }
            return done(e);
        }
        if real[nfds].revents != 0 {
            if let Some(stop) = stirred(client) {
                return Err(stop);
            }
            continue;
        }
        break;
    }
    let mut ready = 0;
    for (p, r) in app.iter_mut().zip(&real) {
        p.revents = if p.fd >= 0 && r.fd < 0 { libc::POLLNVAL } else { r.revents };
        if p.revents != 0 {
            ready += 1;
        }
    }
    let mut out = Vec::with_capacity(bulk.len());
    for p in &app {
        out.extend_from_slice(&p.fd.to_le_bytes());
        out.extend_from_slice(&p.events.to_le_bytes());
        out.extend_from_slice(&p.revents.to_le_bytes());
    }
    Ok((ready, out))
}
