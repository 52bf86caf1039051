//! Forwarding one call home. [`Home`] is the seam under the forwarders: the thing that
//! sends one forwarded call home and returns its answer, so the call mapping can be unit
//! tested with a fake. Its methods: `forward_quick` (a file or path call, answered at
//! once), `forward` (one that may block: the checkpoint freeze gets through its wait) and
//! `forward_watching` (a blocking call also cancelled when a local fd becomes ready).
//! The real one, [`Channels`], takes the thread's channel, (re)connects it, sends the
//! request, waits, cancels at home when a signal must end the call, and resends after a
//! restart or a broken connection. And the manager thread's own calls (exit report,
//! offsets).
//!
//! Runs in the SIGSYS handler (but the manager's calls): no allocation, no locks; so
//! must every [`Home`].

use crate::rt::syscall::r;
use super::channel::{connect_x, my_chan, DEPTHS};
use super::eintr::eintr_signals;
use super::homefd::set_internal;
use super::transport::{cpu_hint, read_resp, send_req, spin_for, Io, HINT_MIN, spin_us};
use super::wait::{wait_answer, Waited};
use super::{gen, home_lost, session_set};
use core::sync::atomic::{AtomicU32, Ordering};
use proto::rsys::{self, op, Req};

/// Sends one forwarded call home and returns its answer (-errno on failure); `out`
/// receives the answer's data in order. The thread's application signal mask is `mask`.
pub(super) trait Home {
    /// Forward one call; `intr`: the call may block for ever (a pipe, a terminal, a
    /// socket, poll, a lock): a checkpoint may freeze the thread while it waits. A call
    /// that may block is also cancelled (see [`op::CANCEL`]) when local fd `also` (not -1)
    /// becomes readable: a wait on home and local fds at once. Such a call given up at
    /// home returns -ECANCELED.
    #[allow(clippy::too_many_arguments)]
    fn forward_watching(&self, op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64, intr: bool, also: i64) -> i64;

    /// [`Home::forward_watching`] without a local fd to watch.
    fn forward(&self, op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64, intr: bool) -> i64 {
        self.forward_watching(op, args, bulk, out, mask, intr, -1)
    }

    /// Forward one call that completes quickly at home (files, paths): the wait for the
    /// answer lets the application's signals through, but not the checkpoint freeze, so
    /// an image never catches a file call half done (its effect on the file offset and
    /// the offset recorded in the image always agree).
    fn forward_quick(&self, op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64) -> i64 {
        self.forward(op, args, bulk, out, mask, false)
    }
}

/// The home shadowd, over the calling thread's channel (see [`forward_watching`]).
pub(super) struct Channels;

impl Home for Channels {
    fn forward_watching(&self, op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64, intr: bool, also: i64) -> i64 {
        forward_watching(op, args, bulk, out, mask, intr, also)
    }
}

/// [`Home::forward_watching`] over the calling thread's channel.
fn forward_watching(op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64, intr: bool, also: i64) -> i64 {
    if home_lost() {
        return -(libc::EIO as i64);
    }
    let Some(c) = my_chan() else { return -(libc::EIO as i64) };
    let d = c.depth.fetch_add(1, Ordering::AcqRel) as usize;
    struct Down<'a>(&'a AtomicU32);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _down = Down(&c.depth);
    if d >= DEPTHS {
        return -(libc::EIO as i64);
    }
    let seq = c.seq[d].fetch_add(1, Ordering::AcqRel) + 1;
    let out_len: usize = out.iter().map(|o| o.n).sum();
    let mut req = Req {
        op,
        flags: 0,
        chan: ((c.key.load(Ordering::Relaxed) as u32 as u64) << 8) | d as u64,
        seq,
        args,
        bulk_len: bulk.iter().map(|b| b.n).sum::<usize>() as u32,
        out_len: out_len as u32,
    };
    let mut failures = 0;
    loop {
        if home_lost() || failures > 3 {
            return -(libc::EIO as i64);
        }
        let g = gen();
        let mut fd = c.fd[d].load(Ordering::Acquire) as i64;
        let mut side = [c.ans[d].load(Ordering::Acquire) as i64, c.pipe[d].load(Ordering::Acquire) as i64];
        if fd < 0 || c.gen[d].load(Ordering::Acquire) != g {
            fd = connect_x(rsys::KIND_CALLS, &mut side);
            if fd < 0 {
                failures += 1;
                let ts = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
                r!(libc::SYS_nanosleep, &ts as *const libc::timespec, 0);
                continue;
            }
            c.fd[d].store(fd as i32, Ordering::Release);
            c.ans[d].store(side[0] as i32, Ordering::Release);
            c.pipe[d].store(side[1] as i32, Ordering::Release);
            c.gen[d].store(g, Ordering::Release);
        }
        let [ans, pipe] = side;
        // answers come on the answer socket when there is one
        let afd = if ans >= 0 { ans } else { fd };
        let drop_chan = |fd: i64| {
            c.fd[d].store(-1, Ordering::Release);
            c.ans[d].store(-1, Ordering::Release);
            c.pipe[d].store(-1, Ordering::Release);
            for f in [fd, ans, pipe].into_iter().filter(|&f| f >= 0) {
                set_internal(f, false);
                r!(libc::SYS_close, f);
            }
        };
        // a large file read over a local connection: tell the server where we are
        req.flags = if ans >= 0 && !intr && out_len >= HINT_MIN { cpu_hint() } else { 0 };
        if !send_req(fd, &req, bulk) {
            drop_chan(fd);
            failures += 1;
            continue;
        }
        // wait; a restart while we waited makes this channel void: resend elsewhere
        let mut stale = false;
        // a call that cannot block is simply read back (signals wait for its answer); one
        // that can waits in ppoll with the application's mask, the freeze included; a
        // signal whose handler must end it with EINTR cancels it at home
        let frz = ckpt::sys::sigbit(crate::signals::freeze_sig());
        let eintr = if intr { eintr_signals(op) & !frz } else { 0 };
        let (mut cancelled, mut by_also) = (false, false);
        while intr && !stale {
            let w = wait_answer(afd, mask & !frz, eintr, !cancelled, also);
            match w {
                Waited::Ready => break,
                Waited::Interrupted => stale = gen() != g,
                Waited::Cancel | Waited::Also => {
                    let cancel = Req { op: op::CANCEL, flags: 0, chan: req.chan, seq, args: [0; 6], bulk_len: 0, out_len: 0 };
                    if !send_req(fd, &cancel, &[]) {
                        break; // the answer read below fails too, and the call is resent
                    }
                    cancelled = true;
                    by_also = matches!(w, Waited::Also);
                }
            }
        }
        if stale {
            c.fd[d].store(-1, Ordering::Release);
            c.ans[d].store(-1, Ordering::Release);
            c.pipe[d].store(-1, Ordering::Release);
            continue;
        }
        let spin = spin_us();
        if !intr && pipe >= 0 && out_len >= HINT_MIN && spin > 0 {
            spin_for(afd, i64::from(spin) * 1000);
        }
        let Some(resp) = read_resp(afd, pipe, out, out_len, seq) else {
            drop_chan(fd);
            failures += 1;
            continue;
        };
        if by_also && resp.ret == -(libc::EINTR as i64) {
            return -(libc::ECANCELED as i64);
        }
        return resp.ret;
    }
}

/// A forwarded call from the manager thread (no data moved); -errno on failure.
pub fn manager_call(op: u32, args: [u64; 6]) -> i64 {
    Channels.forward_quick(op, args, &[], &[], !0)
}

/// The offset of a home file, asked at home (-1 for pipes, sockets, ttys).
pub fn remote_offset(fd: i32) -> i64 {
    let r = manager_call(op::LSEEK, [fd as u64, 0, libc::SEEK_CUR as u64, 0, 0, 0]);
    if r < 0 {
        -1
    } else {
        r
    }
}

/// The manager's calls (not under SUD): exit reports.
pub fn report_exit(status: i32) {
    super::STATE.exiting.store(true, Ordering::Release);
    if session_set() {
        Channels.forward_quick(op::EXIT, [status as u32 as u64, 0, 0, 0, 0, 0], &[], &[], !0);
    }
}
