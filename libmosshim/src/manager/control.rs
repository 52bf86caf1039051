//! The manager's control socket: one request per connection from `mos ckpt` / `mos
//! migrate` / the shadowd (checked against the caller's uid), answered with a
//! [`CkptReply`]; a streamed image's sink arrives with the request (SCM_RIGHTS) and a
//! streamed checkpoint waits for the requester's verdict. Manager-thread code.

use super::{checkpoint, reap, Outcome, Sink};
use crate::freeze::release_threads;
use crate::log::log;
use crate::remote::shim_fds as internal_fds;
use ckpt::control::{CkptReply, CkptRequest, MAX_MSG};
use ckpt::sys;

fn peer_uid(c: i32) -> Option<u32> {
    // SAFETY: ucred is plain data; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::ucred>() as u32;
    // SAFETY: SO_PEERCRED with a correctly sized buffer.
    let r = unsafe {
        libc::getsockopt(
            c,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut _,
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

pub(super) fn serve(c: i32) {
    let reply = |c: i32, r: &CkptReply| {
        if let Ok(b) = postcard::to_allocvec(r) {
            // SAFETY: writing our buffer to our socket.
            unsafe { libc::write(c, b.as_ptr().cast(), b.len()) };
        }
    };
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    match peer_uid(c) {
        Some(u) if u == me || u == 0 => {}
        _ => {
            reply(
                c,
                &CkptReply::Failed("permission denied: peer runs as another user".into()),
            );
            // SAFETY: closing our fd.
            unsafe { libc::close(c) };
            return;
        }
    }
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: setting a receive timeout on our socket.
    unsafe {
        libc::setsockopt(
            c,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const _,
            core::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // The request ends where it parses (a streamed one's connection stays open for the
    // verdict); a sink for a streamed image comes attached to it.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // the descriptors that came with it: the sink, then the post-copy request pipe or
    // the stop-and-copy lanes
    let mut fds = Fds::default();
    let parsed = loop {
        let n = recv_with_fds(c, &mut chunk, &mut fds);
        if n <= 0 || buf.len() > MAX_MSG {
            break postcard::from_bytes::<CkptRequest>(&buf);
        }
        buf.extend_from_slice(&chunk[..n as usize]);
        if let Ok(r) = postcard::from_bytes::<CkptRequest>(&buf) {
            break Ok(r);
        }
    };
    let refuse = |why: String, fds: &mut Fds| {
        reply(c, &CkptReply::Failed(why));
        fds.close_all();
        // SAFETY: closing our fd.
        unsafe { libc::close(c) };
    };
    let req = match parsed {
        Ok(r) if r.stream && fds.n == 0 => {
            return refuse("a streamed checkpoint needs a descriptor to write the image into; none came with the request".into(), &mut fds);
        }
        Ok(r) if r.lazy && r.stream && fds.n < 2 => {
            return refuse("a post-copy migration needs a second descriptor for page requests; none came with the request".into(), &mut fds);
        }
        Ok(r) if r.lanes > 0 && (!r.stream || r.lazy || r.live || r.lanes as usize > ckpt::image::lanes::MAX_LANES || fds.n != 1 + r.lanes as usize) => {
            return refuse(format!("a request for {} lanes came with {} descriptors (and lanes are for stop-and-copy streams only, at most {})", r.lanes, fds.n, ckpt::image::lanes::MAX_LANES), &mut fds);
        }
        Ok(r) => r,
        Err(e) => return refuse(format!("malformed request: {e}"), &mut fds),
    };
    let mut sink = Sink::NONE;
    let mut requests = -1;
    if req.stream {
        sink.pipe = fds.take(0);
        if req.lazy {
            requests = fds.take(1);
        }
        for k in 0..req.lanes as usize {
            sink.lanes[k] = fds.take(1 + k);
        }
        sink.n = req.lanes as usize;
    }
    // what came and is not used
    fds.close_all();
    let migrating = req.migrate.is_some();
    let was_remote = crate::remote::went_away();
    let exit = req.exit || migrating || req.stream;
    crate::state::fds::set_strict(req.strict);
    let outcome = checkpoint(req.out, exit, req.migrate, sink, req.live && req.stream, requests, c);
    crate::state::fds::set_strict(false);
    match outcome {
        // The connection belongs to the process that took the image; in the restored
        // process that fd number means nothing: forget it.
        Outcome::Restarted => {}
        Outcome::Done { path, bytes, stop_us, frozen_us, threads, total_us, round_bytes, copy_us } => {
            reply(c, &CkptReply::Done { path, bytes, stop_us, frozen_us, threads, total_us, round_bytes, copy_us });
            let verdict = !req.stream || committed(c);
            // write tracking of a live migration ends here either way
            crate::state::dirty::close_tracker();
            if !verdict {
                // The image did not arrive, or not whole, where it went: undo, run on.
                log("streamed checkpoint not committed by the requester: the process runs on here");
                if migrating && !was_remote {
                    crate::migrate::undo_hand_off();
                }
                reap(true);
                release_threads();
                // SAFETY: closing our fd.
                unsafe { libc::close(c) };
                return;
            }
            // SAFETY: closing our fd; with --exit the image is safe, so leave now without
            // flushing stdio (unflushed output lives on in the image).
            unsafe {
                libc::close(c);
                if migrating && !was_remote {
                    reap(true);
                    crate::migrate::run_stub();
                }
                if migrating {
                    crate::migrate::leaving();
                }
                if exit {
                    reap(true); // no zombie writer left to init
                    ckpt::sc!(libc::SYS_exit_group, req.exit_code & 0xff);
                }
            }
        }
        Outcome::Failed(e) => {
            log(&format!(
                "checkpoint failed: {e} (internal fds {:?})",
                internal_fds()
            ));
            reply(c, &CkptReply::Failed(e));
            // SAFETY: closing our fd.
            unsafe { libc::close(c) };
        }
    }
}

/// Descriptors that came with a request (close-on-exec), in order; -1 once taken.
#[derive(Default)]
struct Fds {
    fd: [i32; ckpt::control::MAX_FDS],
    n: usize,
}

impl Fds {
    fn take(&mut self, i: usize) -> i32 {
        if i >= self.n {
            return -1;
        }
        core::mem::replace(&mut self.fd[i], -1)
    }

    fn close_all(&mut self) {
        for f in &mut self.fd[..self.n] {
            if *f >= 0 {
                // SAFETY: closing a descriptor we were sent and do not use.
                unsafe { libc::close(*f) };
                *f = -1;
            }
        }
    }
}

/// One read of the control connection into `buf`; descriptors that came along are added
/// to `fds` (past its room they are closed). Returns the byte count (<= 0: end or error).
fn recv_with_fds(c: i32, buf: &mut [u8], fds: &mut Fds) -> isize {
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; its pointers refer to our locals for the call.
    let mut mh: libc::msghdr = unsafe { core::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = core::mem::size_of_val(&cbuf);
    // SAFETY: receiving into our buffers.
    let n = unsafe { libc::recvmsg(c, &mut mh, libc::MSG_CMSG_CLOEXEC) };
    if n >= 0 {
        // SAFETY: walking the control messages the kernel wrote into cbuf.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(&mh);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cm).cast::<i32>();
                    let count = ((*cm).cmsg_len - libc::CMSG_LEN(0) as usize) / core::mem::size_of::<i32>();
                    for i in 0..count {
                        let f = core::ptr::read_unaligned(data.add(i));
                        if fds.n < fds.fd.len() {
                            fds.fd[fds.n] = f;
                            fds.n += 1;
                        } else {
                            libc::close(f);
                        }
                    }
                }
                cm = libc::CMSG_NXTHDR(&mh, cm);
            }
        }
    }
    n as isize
}

/// Wait (frozen) for the requester's verdict on a streamed image: true on
/// [`ckpt::control::COMMIT`], false on anything else, the connection closing or the
/// timeout.
fn committed(c: i32) -> bool {
    let tv = libc::timeval { tv_sec: ckpt::control::VERDICT_TIMEOUT_S, tv_usec: 0 };
    // SAFETY: setting a receive timeout on our socket.
    unsafe { libc::setsockopt(c, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const _, core::mem::size_of::<libc::timeval>() as u32) };
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into our buffer.
        let n = unsafe { libc::read(c, b.as_mut_ptr().cast(), 1) };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        return n == 1 && b[0] == ckpt::control::COMMIT;
    }
}
