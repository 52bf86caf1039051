//! The calls loop of one connection: a request in, its answer out, exactly once per
//! (chan, seq) as `proto::rsys` specifies. A resent call is answered from the channel's
//! memory without executing it again; a cancel between calls is ignored; a resync forgets
//! answers newer than a body's image. What executes one call is behind [`Execute`], so these
//! rules are tested here without a kernel's files; the session's executor is [`super::exec`].

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use proto::rsys::{self as wire, op, Req, Resp};

use super::exec::{self, Outcome};
use super::listen::Conn;
use super::splice::{self, splice_out, DataPipe};
use super::Session;
use crate::lock;

/// Bulk beyond the largest I/O a request may carry (paths, addresses, structs).
const BULK_SLACK: usize = 64 * 1024;

/// The exactly-once memory of one channel.
#[derive(Default)]
pub(super) struct Chan {
    last: Option<u64>,
    ret: i64,
    data: Vec<u8>,
    /// The last answer was a large file read spliced to the body without passing through
    /// this process (see [`splice::spliced_read`]): (file, offset, length) to read it again from,
    /// should it be asked for again. `data` is empty then.
    replay: Option<(Arc<OwnedFd>, i64, usize)>,
}

/// A large file read served by splice: (file, bytes moved or -errno, offset it was read
/// from, in the body's data pipe); see [`splice::spliced_read`].
pub(super) type Spliced = (Arc<OwnedFd>, i64, i64, bool);

/// What the calls loop needs of a session: whether it ended, its channels' memory, and the
/// execution of one call. The session's own is below; tests use a fake.
pub(super) trait Execute {
    /// The session has ended: the next request drops the connection.
    fn ended(&self) -> bool;
    /// The exactly-once memory of channel `chan` (created empty on first use).
    fn chan(&self, chan: u64) -> Arc<Mutex<Chan>>;
    /// Serve `req` as a large file read spliced into the body's data pipe `into` or this
    /// thread's pipe; None: not such a call, [`Execute::execute`] serves it.
    fn spliced_read(&self, req: &Req, into: Option<&DataPipe>) -> Option<Spliced>;
    /// Perform one call; `client` is the connection's descriptor, watched while it waits.
    fn execute(&self, req: &Req, bulk: &[u8], client: RawFd) -> Outcome;
}

impl Execute for Session {
    fn ended(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn chan(&self, chan: u64) -> Arc<Mutex<Chan>> {
        lock(&self.chans).entry(chan).or_default().clone()
    }

    fn spliced_read(&self, req: &Req, into: Option<&DataPipe>) -> Option<Spliced> {
        splice::spliced_read(self, req, into)
    }

    fn execute(&self, req: &Req, bulk: &[u8], client: RawFd) -> Outcome {
        exec::execute(self, req, bulk, client)
    }
}

/// Serve a calls connection: requests come on `conn`, answers go back on it, or on
/// `answers` when the body passed an answer socket (and maybe a data pipe).
pub(super) fn calls(s: &Arc<Session>, conn: Conn, answers: Option<(UnixStream, Option<DataPipe>)>) -> io::Result<()> {
    match (&conn, &answers) {
        (Conn::Tcp(t), _) => serve_calls(&**s, t, t, t.as_raw_fd(), t.as_raw_fd(), None, false),
        (Conn::Unix(u), None) => serve_calls(&**s, u, u, u.as_raw_fd(), u.as_raw_fd(), None, true),
        (Conn::Unix(u), Some((a, d))) => serve_calls(&**s, u, a, u.as_raw_fd(), a.as_raw_fd(), d.as_ref(), false),
    }
}

/// The calls loop: requests from `rd`, answers to `wr`. `client`: the connection's fd (its
/// end tells that the body went away); `out`: the descriptor answers are written to (spliced data included). `poll_first`:
/// requests and answers share one unix socket, whose sleepers are all woken whenever the
/// body frees a buffer of our last answer (its write-space callback); only poll's wait
/// filters those wake-ups out, so the next request is awaited in poll, not in read.
fn serve_calls<E: Execute, R: Read, W: Write>(ex: &E, mut rd: R, mut wr: W, client: RawFd, out: RawFd, data: Option<&DataPipe>, poll_first: bool) -> io::Result<()> {
    let mut h = [0u8; wire::REQ_LEN];
    loop {
        if poll_first {
            let mut p = libc::pollfd { fd: client, events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one live pollfd.
            while unsafe { libc::poll(&mut p, 1, -1) } < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {}
        }
        match rd.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let req = Req::decode(&h);
        if req.flags & wire::REQ_CPU_HINT != 0 {
            move_to_cpu(req.flags & 0xffff);
        }
        let n = req.bulk_len as usize;
        if n > wire::MAX_IO + BULK_SLACK {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("request with {n} bulk bytes")));
        }
        let mut bulk = vec![0u8; n];
        rd.read_exact(&mut bulk)?;
        if ex.ended() {
            return Err(io::Error::other("the session has ended"));
        }
        if req.op == op::CANCEL {
            // for a call that finished before the cancel came: its answer has gone
            continue;
        }
        if req.op == op::RESYNC {
            // a body restarted from an image: forget answers its channel gave after the
            // image was taken (they belong to a history that is being re-executed)
            let target = ex.chan(req.args[0]);
            let mut t = lock(&target);
            if t.last.is_some_and(|l| l > req.args[1]) {
                *t = Chan::default();
            }
            drop(t);
            let resp = Resp { ret: 0, seq: req.seq, data_len: 0, flags: 0 };
            wr.write_all(&resp.encode())?;
            continue;
        }
        let chan = ex.chan(req.chan);
        let mut st = lock(&chan);
        if st.last != Some(req.seq) {
            // into the body's data pipe if it has one, else through our pipe to `out`
            if let Some((file, ret, off, piped)) = ex.spliced_read(&req, data) {
                st.last = Some(req.seq);
                st.ret = ret;
                let old = std::mem::take(&mut st.data);
                exec::recycle(old);
                st.replay = (ret > 0).then_some((file, off, ret as usize));
                // (an error answer has no data, in the pipe or anywhere)
                let flags = if piped && ret > 0 { wire::RESP_DATA_IN_PIPE } else { 0 };
                let resp = Resp { ret, seq: req.seq, data_len: ret.max(0) as u32, flags }.encode();
                wr.write_all(&resp)?;
                if ret > 0 && !piped {
                    splice_out(out, ret as usize)?;
                }
                continue;
            }
            st.replay = None;
            exec::wait::calling(req.chan, req.seq);
            match ex.execute(&req, &bulk, client) {
                Outcome::Done(ret, mut data) => {
                    data.truncate(req.out_len as usize);
                    st.last = Some(req.seq);
                    st.ret = ret;
                    // the answer it replaces serves the next call's read
                    let old = std::mem::replace(&mut st.data, data);
                    exec::recycle(old);
                }
                Outcome::Abandon => {
                    return Err(io::Error::other(format!("call {} (chan {:#x} seq {}) abandoned: the body went away", req.op, req.chan, req.seq)));
                }
            }
        }
        if let Some((file, off, len)) = &st.replay {
            // the answer of a spliced read asked for again: read it again
            st.data = splice::read_again(file, *off, *len);
            st.replay = None;
        }
        let resp = Resp { ret: st.ret, seq: req.seq, data_len: st.data.len() as u32, flags: 0 }.encode();
        // header and data in one go, without copying the data
        let mut parts = [io::IoSlice::new(&resp), io::IoSlice::new(&st.data)];
        let mut rest: &mut [io::IoSlice] = &mut parts;
        while !rest.is_empty() {
            let n = wr.write_vectored(rest)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            io::IoSlice::advance_slices(&mut rest, n);
        }
        drop(st);
    }
}

/// Move the calling thread to `cpu` once, if it runs elsewhere ([`wire::REQ_CPU_HINT`]):
/// bound there for a moment, then given its own affinity back.
fn move_to_cpu(cpu: u32) {
    // SAFETY: sched_getcpu has no preconditions.
    let now = unsafe { libc::sched_getcpu() };
    if now < 0 || now as u32 == cpu || cpu as usize >= libc::CPU_SETSIZE as usize {
        return;
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: all-zero cpu_set_t values are empty sets; each call gets a live set of its
    // size, and CPU_SET stays within the set (checked above).
    unsafe {
        let mut own: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut own) != 0 || !libc::CPU_ISSET(cpu as usize, &own) {
            return;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut one);
        if libc::sched_setaffinity(0, size, &one) == 0 {
            libc::sched_setaffinity(0, size, &own);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The replay, cancel and resync rules of the calls loop, with a fake executor.

    use std::collections::HashMap;
    use std::io::Cursor;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use proto::rsys::{self as wire, op, Req, Resp};

    use super::{serve_calls, Chan, DataPipe, Execute, Spliced};
    use crate::lock;
    use crate::rsys::exec::wait::nap;
    use crate::rsys::exec::{Outcome, Stop};

    /// A session that records what it executes. Its calls: READ answers `runs` (how many
    /// calls ran before) with data "answer <runs>"; WRITE fails with EBADF; FLOCK waits
    /// (napping on the connection, as a blocking lock does) until the connection stirs or
    /// half a second has passed (then 0); CONNECT is abandoned; GETDENTS64 answers 100 bytes;
    /// PREAD64 is a spliced read of `file` when there is one.
    #[derive(Default)]
    struct Fake {
        chans: Mutex<HashMap<u64, Arc<Mutex<Chan>>>>,
        runs: Mutex<Vec<(u32, u64)>>,
        ended: AtomicBool,
        file: Option<Arc<OwnedFd>>,
    }

    impl Execute for Fake {
        fn ended(&self) -> bool {
            self.ended.load(Ordering::SeqCst)
        }
        fn chan(&self, chan: u64) -> Arc<Mutex<Chan>> {
            lock(&self.chans).entry(chan).or_default().clone()
        }
        fn spliced_read(&self, req: &Req, _into: Option<&DataPipe>) -> Option<Spliced> {
            let file = self.file.as_ref().filter(|_| req.op == op::PREAD64)?;
            lock(&self.runs).push((req.op, req.seq));
            // 5 bytes from offset 2, "in the body's data pipe" (nothing to splice here)
            Some((file.clone(), 5, 2, true))
        }
        fn execute(&self, req: &Req, _bulk: &[u8], client: RawFd) -> Outcome {
            let n = {
                let mut runs = lock(&self.runs);
                runs.push((req.op, req.seq));
                runs.len() as i64 - 1
            };
            match req.op {
                op::READ => Outcome::Done(n, format!("answer {n}").into_bytes()),
                op::WRITE => Outcome::Done(-libc::EBADF as i64, Vec::new()),
                op::FLOCK => {
                    for _ in 0..100 {
                        match nap(client, 5) {
                            Ok(()) => {}
                            Err(Stop::Errno(e)) => return Outcome::Done(e, Vec::new()),
                            Err(Stop::Abandon) => return Outcome::Abandon,
                        }
                    }
                    Outcome::Done(0, Vec::new())
                }
                op::CONNECT => Outcome::Abandon,
                op::GETDENTS64 => Outcome::Done(100, vec![7; 100]),
                _ => Outcome::Done(-libc::ENOSYS as i64, Vec::new()),
            }
        }
    }

    fn req(op: u32, chan: u64, seq: u64) -> Req {
        Req { op, flags: 0, chan, seq, args: [0; 6], bulk_len: 0, out_len: 4096 }
    }

    fn bytes(reqs: &[Req]) -> Vec<u8> {
        reqs.iter().flat_map(|r| r.encode()).collect()
    }

    /// The answers written: (header, data on the answer stream).
    fn answers(mut b: &[u8]) -> Vec<(Resp, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let h: [u8; wire::RESP_LEN] = b[..wire::RESP_LEN].try_into().unwrap();
            let r = Resp::decode(&h);
            let n = if r.flags & wire::RESP_DATA_IN_PIPE != 0 { 0 } else { r.data_len as usize };
            v.push((r, b[wire::RESP_LEN..wire::RESP_LEN + n].to_vec()));
            b = &b[wire::RESP_LEN + n..];
        }
        v
    }

    /// Serve `reqs` (read from memory, no connection to watch) to the end of the stream.
    fn serve(fake: &Fake, reqs: &[Req]) -> (std::io::Result<()>, Vec<(Resp, Vec<u8>)>) {
        let mut out = Vec::new();
        let r = serve_calls(fake, Cursor::new(bytes(reqs)), &mut out, -1, -1, None, false);
        (r, answers(&out))
    }

    /// Serve `reqs` written ahead into a socket whose other end then closes: the loop's
    /// connection is a real one, so a waiting call sees a cancel or the end.
    fn serve_socket(fake: &Fake, reqs: &[Req]) -> (std::io::Result<()>, Vec<(Resp, Vec<u8>)>) {
        let (body, home) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &body, &bytes(reqs)).unwrap();
        drop(body);
        let mut out = Vec::new();
        let r = serve_calls(fake, &home, &mut out, home.as_raw_fd(), -1, None, false);
        (r, answers(&out))
    }

    fn runs(fake: &Fake) -> Vec<(u32, u64)> {
        lock(&fake.runs).clone()
    }

    #[test]
    fn a_resent_seq_is_answered_from_memory_without_executing_again() {
        let f = Fake::default();
        let (r, a) = serve(&f, &[req(op::READ, 1, 1), req(op::READ, 1, 1)]);
        assert!(r.is_ok());
        assert_eq!(runs(&f), vec![(op::READ, 1)]);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].0.ret, a[0].0.seq, &a[0].1[..]), (0, 1, &b"answer 0"[..]));
        assert_eq!(a[0], a[1], "the same answer, data included");
    }

    #[test]
    fn a_new_seq_executes() {
        let f = Fake::default();
        let (_, a) = serve(&f, &[req(op::READ, 1, 1), req(op::READ, 1, 2)]);
        assert_eq!(runs(&f), vec![(op::READ, 1), (op::READ, 2)]);
        assert_eq!(a[1].0.seq, 2);
        assert_eq!(a[1].1, b"answer 1");
    }

    #[test]
    fn channels_remember_apart() {
        let f = Fake::default();
        let (_, a) = serve(&f, &[req(op::READ, 1, 1), req(op::READ, 2, 1), req(op::READ, 1, 1)]);
        assert_eq!(runs(&f), vec![(op::READ, 1), (op::READ, 1)], "seq 1 of chan 2 is a call of its own");
        assert_eq!(a[2].1, b"answer 0", "chan 1 still remembers its answer");
    }

    #[test]
    fn an_error_answer_is_remembered_too() {
        let f = Fake::default();
        let (_, a) = serve(&f, &[req(op::WRITE, 1, 1), req(op::WRITE, 1, 1)]);
        assert_eq!(runs(&f).len(), 1);
        assert_eq!(a[0].0.ret, -libc::EBADF as i64);
        assert_eq!(a[1].0.ret, -libc::EBADF as i64);
        assert!(a[1].1.is_empty());
    }

    #[test]
    fn a_cancel_of_an_unknown_seq_is_ignored_and_not_answered() {
        let f = Fake::default();
        let (r, a) = serve(&f, &[req(op::CANCEL, 1, 7), req(op::READ, 1, 1)]);
        assert!(r.is_ok());
        assert_eq!(runs(&f), vec![(op::READ, 1)]);
        assert_eq!(a.len(), 1, "no answer for the cancel");
        assert_eq!(a[0].0.seq, 1);
    }

    #[test]
    fn a_cancel_of_a_finished_call_leaves_its_answer() {
        let f = Fake::default();
        let (_, a) = serve(&f, &[req(op::READ, 1, 1), req(op::CANCEL, 1, 1), req(op::READ, 1, 1)]);
        assert_eq!(runs(&f).len(), 1);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].0.ret, 0, "the answer stands, no EINTR");
        assert_eq!(a[1].1, b"answer 0");
    }

    #[test]
    fn a_cancel_of_an_in_flight_call_answers_eintr_and_that_is_remembered() {
        let f = Fake::default();
        let (r, a) = serve_socket(&f, &[req(op::FLOCK, 1, 1), req(op::CANCEL, 1, 1), req(op::FLOCK, 1, 1)]);
        assert!(r.is_ok());
        assert_eq!(runs(&f), vec![(op::FLOCK, 1)], "the resent call is not executed again");
        assert_eq!(a.len(), 2, "the cancel itself has no answer");
        assert_eq!((a[0].0.seq, a[0].0.ret), (1, -libc::EINTR as i64));
        assert_eq!(a[1].0.ret, -libc::EINTR as i64);
    }

    #[test]
    fn a_call_waiting_when_the_body_goes_away_is_abandoned_and_forgotten() {
        let f = Fake::default();
        let (r, a) = serve_socket(&f, &[req(op::READ, 1, 1), req(op::FLOCK, 1, 2)]);
        assert!(r.is_err(), "the connection is dropped");
        assert_eq!(a.len(), 1, "only the first call is answered");
        assert_eq!(lock(&f.chan(1)).last, Some(1), "the abandoned call left no memory");
        // the resent request (on the body's next connection) runs it afresh
        let (_, a) = serve(&f, &[req(op::FLOCK, 1, 2)]);
        assert_eq!(runs(&f).iter().filter(|r| **r == (op::FLOCK, 2)).count(), 2);
        assert_eq!(a[0].0.ret, 0);
    }

    #[test]
    fn an_abandoned_call_drops_the_connection_without_an_answer() {
        let f = Fake::default();
        let (r, a) = serve(&f, &[req(op::CONNECT, 1, 1), req(op::READ, 1, 2)]);
        assert!(r.is_err());
        assert!(a.is_empty());
        assert_eq!(runs(&f), vec![(op::CONNECT, 1)], "nothing after it is read");
        assert_eq!(lock(&f.chan(1)).last, None);
    }

    #[test]
    fn resync_forgets_answers_newer_than_the_image() {
        let f = Fake::default();
        let mut resync = req(op::RESYNC, 9, 100);
        resync.args[0] = 1;
        resync.args[1] = 3;
        let (_, a) = serve(&f, &[req(op::READ, 1, 5), resync, req(op::READ, 1, 5)]);
        assert_eq!(runs(&f), vec![(op::READ, 5), (op::READ, 5)], "seq 5 re-executes");
        assert_eq!(a.len(), 3);
        assert_eq!((a[1].0.ret, a[1].0.seq, a[1].0.data_len), (0, 100, 0), "resync answered with its own seq");
        assert_eq!(a[2].1, b"answer 1");
    }

    #[test]
    fn resync_keeps_an_answer_the_image_already_had() {
        let f = Fake::default();
        let mut resync = req(op::RESYNC, 9, 100);
        resync.args[0] = 1;
        resync.args[1] = 5;
        let (_, a) = serve(&f, &[req(op::READ, 1, 5), resync, req(op::READ, 1, 5)]);
        assert_eq!(runs(&f).len(), 1);
        assert_eq!(a[2].1, b"answer 0");
        assert_eq!(lock(&f.chan(9)).last, None, "resync is never remembered itself");
    }

    #[test]
    fn answer_data_is_cut_to_what_the_body_has_room_for() {
        let f = Fake::default();
        let mut r = req(op::GETDENTS64, 1, 1);
        r.out_len = 10;
        let (_, a) = serve(&f, &[r, r]);
        assert_eq!(a[0].0.ret, 100, "ret is the call's own");
        assert_eq!(a[0].1, vec![7; 10]);
        assert_eq!(a[1].1, vec![7; 10]);
    }

    #[test]
    fn an_oversized_request_drops_the_connection_unexecuted() {
        let f = Fake::default();
        let mut r = req(op::WRITE, 1, 1);
        r.bulk_len = (wire::MAX_IO + super::BULK_SLACK + 1) as u32;
        let (res, a) = serve(&f, &[r]);
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        assert!(a.is_empty() && runs(&f).is_empty());
    }

    #[test]
    fn an_ended_session_serves_nothing() {
        let f = Fake::default();
        f.ended.store(true, Ordering::SeqCst);
        let (r, a) = serve(&f, &[req(op::READ, 1, 1)]);
        assert!(r.is_err());
        assert!(a.is_empty() && runs(&f).is_empty());
    }

    #[test]
    fn a_resent_spliced_read_is_read_again_from_the_file() {
        let p = std::env::temp_dir().join(format!("mos-serve-test-{}", std::process::id()));
        std::fs::write(&p, b"0123456789").unwrap();
        let file = OwnedFd::from(std::fs::File::open(&p).unwrap());
        std::fs::remove_file(&p).unwrap();
        let f = Fake { file: Some(Arc::new(file)), ..Fake::default() };
        let (_, a) = serve(&f, &[req(op::PREAD64, 1, 1), req(op::PREAD64, 1, 1)]);
        assert_eq!(runs(&f).len(), 1);
        assert_eq!((a[0].0.ret, a[0].0.data_len, a[0].0.flags), (5, 5, wire::RESP_DATA_IN_PIPE));
        assert_eq!((a[1].0.ret, a[1].0.flags), (5, 0), "the replay comes on the answer stream");
        assert_eq!(a[1].1, b"23456");
    }

    /// proto::rsys: a cancel names the call (chan, seq) to give up; "if it has finished,
    /// its answer stands and the cancel is ignored". A stale cancel for seq 1 arriving
    /// while seq 2 waits is dropped, and seq 2 goes on.
    #[test]
    fn a_cancel_naming_another_call_leaves_the_waiting_one_alone() {
        let f = Fake::default();
        // the body's end stays open while the call waits (its end would abandon it)
        let (body, home) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &body, &bytes(&[req(op::FLOCK, 1, 2), req(op::CANCEL, 1, 1)])).unwrap();
        let mut out = Vec::new();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                // the fake FLOCK naps 100 x 5 ms unless stirred
                std::thread::sleep(std::time::Duration::from_millis(1500));
                drop(body);
            });
            let _ = serve_calls(&f, &home, &mut out, home.as_raw_fd(), -1, None, false);
        });
        let a = answers(&out);
        assert_eq!(a.len(), 1, "the waiting call is answered");
        assert_ne!(a[0].0.ret, -libc::EINTR as i64);
    }
}
