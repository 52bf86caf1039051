//! Local control channel between `mos ckpt` and the shim's manager thread: an abstract
//! unix socket named after the process's real pid, one request and one reply per
//! connection (postcard, written then read to EOF). Peers of another uid are refused.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CkptRequest {
    /// absolute image path, or None for the default path
    pub out: Option<String>,
    /// exit (status 0) once the image is safe
    pub exit: bool,
    /// migration: the body leaves this node. A process at home first hands its files to
    /// the home shadowd listening on this unix socket (`<state>/shadow.sock`) and stays
    /// as the home stub once the image is safe; a body already away just leaves.
    #[serde(default)]
    pub migrate: Option<String>,
    /// The image goes into the descriptor sent with the request (SCM_RIGHTS: a pipe the
    /// requester streams on to where the process will run) instead of a file; `out` is
    /// ignored. The image is safe only when the requester says so: after the `Done` reply
    /// it sends one byte, [`COMMIT`], and only then does the process exit (or stay as the
    /// home stub). Anything else, or the connection closing, undoes the checkpoint: the
    /// process runs on where it was. See [`request_streamed`].
    #[serde(default)]
    pub stream: bool,
    /// Refuse what the program inherited and mos cannot reopen (a pipe or socket its
    /// parent left open), instead of recording it as inherited (rebound at restart).
    #[serde(default)]
    pub strict: bool,
    /// The status the process exits with after `exit` (HTCondor's checkpoint_exit_code,
    /// Slurm requeue wrappers); 0 by default.
    #[serde(default)]
    pub exit_code: i32,
    /// Live migration (pre-copy, with `stream`): memory is copied into the stream in
    /// rounds while the process runs, then the rest frozen (`ckpt::image::live`).
    #[serde(default)]
    pub live: bool,
    /// Post-copy (with `stream`): the image carries every region but the private
    /// anonymous memory, whose pages follow, those the target asks for first (their
    /// addresses, 8 bytes each, arrive on the second descriptor sent with the request).
    #[serde(default)]
    pub lazy: bool,
    /// Stop-and-copy (with `stream`): this many connected TCP sockets to the target come
    /// attached after the sink, and the image goes striped over them
    /// (`ckpt::image::lanes`) instead of into the sink, which then carries nothing.
    #[serde(default)]
    pub lanes: u32,
}

/// The byte a streamed checkpoint's requester sends once the image is safe.
pub const COMMIT: u8 = b'C';

/// How long the shim waits for the requester's verdict on a streamed image (it stays
/// frozen meanwhile; past this the checkpoint is undone and the process runs on).
pub const VERDICT_TIMEOUT_S: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CkptReply {
    Done {
        path: String,
        bytes: u64,
        /// time to stop every application thread
        stop_us: u64,
        /// time the application was frozen (stop + kernel state + fork)
        frozen_us: u64,
        /// threads saved (application threads + the manager)
        threads: u32,
        total_us: u64,
        /// Live migration: page bytes sent in each copy round while the process ran
        /// (empty: stop-and-copy).
        round_bytes: Vec<u64>,
        /// Live migration: how long the copy rounds ran before the freeze.
        copy_us: u64,
    },
    Failed(String),
}

pub const MAX_MSG: usize = 64 * 1024;

/// Most descriptors attached to one request: the sink, then the page-request pipe or the
/// lanes.
pub const MAX_FDS: usize = 2 + crate::image::lanes::MAX_LANES;

/// Before the reply of a live migration's streamed checkpoint, the shim writes a
/// two-byte note `[ROUND_NOTE, n]` on the connection as copy round `n` starts (the
/// last one frozen). A reply never starts with this byte (postcard: its variant index).
pub const ROUND_NOTE: u8 = 0xff;

pub fn socket_name(real_pid: i32) -> String {
    format!("mos-ckpt.{real_pid}")
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no such process")]
    NoProcess,
    #[error("not running under libmosshim (no checkpoint socket)")]
    NotShimmed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad reply from the process: {0}")]
    BadReply(String),
}

/// Ask the shim in `pid` for a checkpoint and wait for the result.
pub fn request(pid: i32, req: &CkptRequest) -> Result<CkptReply, ClientError> {
    let (reply, _conn) = exchange(pid, req, &[], &|_| {})?;
    Ok(reply)
}

/// A streamed checkpoint ([`CkptRequest::stream`]) whose image was written: the process
/// waits, frozen, for [`Verdict::commit`]. Dropping it undoes the checkpoint.
pub struct Verdict(std::os::unix::net::UnixStream);

impl Verdict {
    /// The image is safe where it went: the process may leave.
    pub fn commit(mut self) -> std::io::Result<()> {
        self.0.write_all(&[COMMIT])
    }
}

/// Ask the shim in `pid` for a checkpoint written into `sink` (the write end of a pipe
/// the caller reads on another thread; our copy is not closed here). Returns the reply
/// and, after `Done`, the connection on which to give the verdict.
/// `on_round` hears of each copy round of a live migration as it starts. `lanes`: TCP
/// sockets the image goes striped over ([`CkptRequest::lanes`]; none: into `sink`).
pub fn request_streamed(
    pid: i32,
    req: &CkptRequest,
    sink: std::os::fd::BorrowedFd<'_>,
    lanes: &[std::os::fd::BorrowedFd<'_>],
    on_round: &dyn Fn(u32),
) -> Result<(CkptReply, Verdict), ClientError> {
    let mut fds = vec![sink];
    fds.extend_from_slice(lanes);
    let (reply, conn) = exchange(pid, &CkptRequest { stream: true, lanes: lanes.len() as u32, ..req.clone() }, &fds, on_round)?;
    Ok((reply, Verdict(conn)))
}

/// [`request_streamed`] of a post-copy migration ([`CkptRequest::lazy`]): `requests` is
/// the read end of the pipe the caller writes the target's page requests into.
pub fn request_streamed_lazy(
    pid: i32,
    req: &CkptRequest,
    sink: std::os::fd::BorrowedFd<'_>,
    requests: std::os::fd::BorrowedFd<'_>,
) -> Result<(CkptReply, Verdict), ClientError> {
    let (reply, conn) = exchange(pid, &CkptRequest { stream: true, lazy: true, ..req.clone() }, &[sink, requests], &|_| {})?;
    Ok((reply, Verdict(conn)))
}

fn exchange(
    pid: i32,
    req: &CkptRequest,
    fds: &[std::os::fd::BorrowedFd<'_>],
    on_round: &dyn Fn(u32),
) -> Result<(CkptReply, std::os::unix::net::UnixStream), ClientError> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    // SAFETY: kill with signal 0 only checks existence.
    if unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return Err(ClientError::NoProcess);
    }
    let addr = SocketAddr::from_abstract_name(socket_name(pid).as_bytes())?;
    let mut s = match UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        // its control socket is abstract: in its network namespace, if not ours
        Err(_) => connect_in_netns_of(pid, &addr).ok_or(ClientError::NotShimmed)?,
    };
    let bytes = postcard::to_allocvec(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
    if fds.is_empty() {
        s.write_all(&bytes)?;
    } else {
        send_with_fds(&s, &bytes, fds)?;
    }
    let reply = if !fds.is_empty() {
        // the connection stays open for the verdict: the reply is one message, read whole,
        // after any round notes
        loop {
            let mut r = read_reply(&mut s)?;
            let notes = r.chunks(2).take_while(|c| c.len() == 2 && c[0] == ROUND_NOTE).count();
            for c in r[..notes * 2].chunks(2) {
                on_round(u32::from(c[1]));
            }
            r.drain(..notes * 2);
            if !r.is_empty() || notes == 0 {
                break r;
            }
        }
    } else {
        s.shutdown(std::net::Shutdown::Write)?;
        let mut reply = Vec::new();
        (&mut s).take(MAX_MSG as u64).read_to_end(&mut reply)?;
        reply
    };
    if reply.is_empty() {
        return Err(ClientError::BadReply(
            "connection closed without a reply (did the process die?)".into(),
        ));
    }
    let r = postcard::from_bytes(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
    Ok((r, s))
}

/// Connect to the abstract unix socket `addr` in `pid`'s network namespace when it is
/// not ours (a node of `mos cluster up --netns`): from a thread that enters it (a socket
/// stays in the namespace it was made in). None if it is ours, or cannot be entered.
fn connect_in_netns_of(pid: i32, addr: &std::os::unix::net::SocketAddr) -> Option<std::os::unix::net::UnixStream> {
    use std::os::fd::AsRawFd;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    let ours = std::fs::metadata("/proc/self/ns/net").ok()?;
    if std::os::unix::fs::MetadataExt::ino(&theirs) == std::os::unix::fs::MetadataExt::ino(&ours) {
        return None;
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    let addr = addr.clone();
    std::thread::spawn(move || {
        // SAFETY: setns of this (short-lived) thread only, with a namespace fd we hold.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        std::os::unix::net::UnixStream::connect_addr(&addr).ok()
    })
    .join()
    .ok()
    .flatten()
}

/// The request with `fds` attached (SCM_RIGHTS on its first byte), written whole.
fn send_with_fds(s: &std::os::unix::net::UnixStream, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} descriptors for one request (at most {MAX_FDS})", fds.len())));
    }
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let nfd = raw.len();
    let fds_len = (nfd * core::mem::size_of::<i32>()) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut mh: libc::msghdr = unsafe { core::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = space;
    // SAFETY: the control buffer holds one cmsg with room for nfd ints.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fds_len) as usize;
        for (i, f) in raw.iter().take(nfd).enumerate() {
            core::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>().add(i), *f);
        }
    }
    // SAFETY: sending our message on our socket.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut w = s;
    w.write_all(&bytes[n as usize..])
}

/// One reply on a connection that stays open: the shim writes it with one write and
/// nothing after it until the verdict, so one read (of up to MAX_MSG) holds it whole.
fn read_reply(s: &mut std::os::unix::net::UnixStream) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_MSG];
    let n = loop {
        match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    buf.truncate(n);
    Ok(buf)
}
