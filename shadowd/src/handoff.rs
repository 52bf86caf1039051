//! Files handed home before a process's body leaves (DESIGN §2 "Remote execution"): the
//! process (its shim) sends its open descriptors to its home shadowd over a local unix
//! socket (`<state>/shadow.sock`, SOCK_SEQPACKET, SCM_RIGHTS), with the fd numbers they
//! have in the process. The shadowd keeps the very same open file descriptions, so
//! offsets, deleted files, pipes, ttys and sockets survive; the shadow session of that job
//! adopts them. Only peers of our own uid (or root) may hand off.
//!
//! One request, `OpenSession` (an rsys session, see [`crate::rsys`]): that connection then
//! stays open as the home stub's, carrying `StubSignal` in and `BodyExited`/`BodyLost` out;
//! its closing ends the session.

use proto::Msg;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::rsys::{Session, Sessions};

/// Most descriptors one hand-off carries (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;
const MAX_MSG: usize = 64 * 1024;

fn sockaddr(path: &Path) -> std::io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let b = path.as_os_str().as_encoded_bytes();
    if b.len() >= a.sun_path.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "socket path too long"));
    }
    for (i, c) in b.iter().enumerate() {
        a.sun_path[i] = *c as libc::c_char;
    }
    Ok((a, (std::mem::size_of::<libc::sa_family_t>() + b.len() + 1) as libc::socklen_t))
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    // SAFETY: creating a socket; the fd is owned by the returned OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send `payload` with `fds` attached.
pub(crate) fn send_with_fds(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
    let mut cbuf = vec![0u8; space.max(1)];
    // SAFETY: msghdr is plain data; we fill the fields sendmsg reads.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer is CMSG_SPACE(n*4) bytes, enough for one header and
        // n descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, fds.len());
        }
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receive one message and the descriptors attached to it.
fn recv_with_fds(sock: RawFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * 4) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; recvmsg fills it.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into cbuf; every received
    // descriptor becomes owned (closed on drop) whatever happens next.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "too many descriptors in one hand-off"));
    }
    buf.truncate(n as usize);
    Ok((buf, fds))
}

/// The home stub's end of a session (what the shim holds; tests and tools use this one).
pub struct StubConn {
    fd: OwnedFd,
    /// The session token.
    pub token: Vec<u8>,
    /// Where the body connects.
    pub rsys_addr: String,
}

impl StubConn {
    /// Open a session for process `pid` at the shadowd listening on `sock`, handing it
    /// `files` (fd number in the process, descriptor).
    pub fn open(sock: &Path, pid: u32, cwd: &Path, files: &[(i32, RawFd)]) -> Result<StubConn, String> {
        use std::os::fd::AsRawFd;
        if files.len() > MAX_FDS {
            return Err(format!("{} descriptors, at most {MAX_FDS} per session", files.len()));
        }
        let s = seqpacket().map_err(|e| e.to_string())?;
        let (a, len) = sockaddr(sock).map_err(|e| e.to_string())?;
        // SAFETY: connecting our socket to a valid sockaddr_un.
        if unsafe { libc::connect(s.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(format!("cannot reach {}: {}", sock.display(), std::io::Error::last_os_error()));
        }
        let msg = Msg::OpenSession { pid, cwd: cwd.into(), fds: files.iter().map(|f| f.0).collect() };
        let payload = postcard::to_allocvec(&msg).map_err(|e| e.to_string())?;
        let raw: Vec<RawFd> = files.iter().map(|f| f.1).collect();
        send_with_fds(s.as_raw_fd(), &payload, &raw).map_err(|e| e.to_string())?;
        let (reply, _) = recv_with_fds(s.as_raw_fd()).map_err(|e| e.to_string())?;
        match postcard::from_bytes::<Msg>(&reply) {
            Ok(Msg::SessionOpened { token, rsys_addr }) => Ok(StubConn { fd: s, token, rsys_addr }),
            Ok(Msg::Error { msg }) => Err(msg),
            Ok(m) => Err(format!("unexpected answer {}", m.name())),
            Err(e) => Err(format!("bad answer: {e}")),
        }
    }

    /// Send a message to the shadowd (`StubSignal`).
    pub fn send(&self, m: &Msg) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let b = postcard::to_allocvec(m).map_err(|e| e.to_string())?;
        send_with_fds(self.fd.as_raw_fd(), &b, &[]).map_err(|e| e.to_string())
    }

    /// The next message from the shadowd, waiting up to `timeout`; `Ok(None)` on timeout,
    /// an error once the connection is closed.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Msg>, String> {
        use std::os::fd::AsRawFd;
        let mut p = [libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: p is a live array of one pollfd.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
        if n <= 0 {
            return Ok(None);
        }
        let (b, _) = recv_with_fds(self.fd.as_raw_fd()).map_err(|e| e.to_string())?;
        if b.is_empty() {
            return Err("connection closed".into());
        }
        postcard::from_bytes(&b).map(Some).map_err(|e| e.to_string())
    }
}

fn peer_uid(fd: RawFd) -> Option<u32> {
    // SAFETY: ucred is plain data; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED with a correctly sized buffer.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut _ as *mut _, &mut len) };
    (r == 0).then_some(cred.uid)
}

/// Accept session openings and registrations on `path` forever (call from a thread).
pub fn serve(path: &Path, node: &str, sessions: Arc<Sessions>, registry: Arc<crate::candidates::Registry>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // Bound and listening under a temporary name, then renamed into place: a client that
    // sees `path` can connect at once (bind makes the name before listen would accept).
    let tmp = path.with_extension(format!("sock.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = seqpacket()?;
    let (a, len) = sockaddr(&tmp)?;
    // SAFETY: bind/listen on our socket with a valid address.
    unsafe {
        if libc::bind(l.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) != 0 || libc::listen(l.as_raw_fd(), 16) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    loop {
        // SAFETY: accepting on our listening socket; the fd is owned at once.
        let c = unsafe { libc::accept4(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if c < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // SAFETY: c is a fresh descriptor we own.
        let c = unsafe { OwnedFd::from_raw_fd(c) };
        let (node2, sessions, registry) = (node.to_string(), sessions.clone(), registry.clone());
        // A session's connection stays open as long as its stub lives: one thread each.
        let spawned = std::thread::Builder::new().name("local-peer".into()).spawn(move || peer(c, &node2, &sessions, &registry));
        if let Err(e) = spawned {
            crate::warn!(node, "dropped a local peer: no thread for it: {e}");
        }
    }
}

fn reply(c: &OwnedFd, m: &Msg) -> bool {
    use std::os::fd::AsRawFd;
    match postcard::to_allocvec(m) {
        Ok(b) => send_with_fds(c.as_raw_fd(), &b, &[]).is_ok(),
        Err(_) => false,
    }
}

/// One local connection: a session whose stub stays connected, a registration (one
/// answer), or a refusal.
fn peer(c: OwnedFd, node: &str, sessions: &Sessions, registry: &crate::candidates::Registry) {
    use std::os::fd::AsRawFd;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if !matches!(peer_uid(c.as_raw_fd()), Some(u) if u == me || u == 0) {
        crate::warn!(node, "refused a local peer of another user");
        reply(&c, &Msg::Error { msg: "permission denied: another user's process".into() });
        return;
    }
    let answer = match recv_with_fds(c.as_raw_fd()) {
        Ok((payload, fds)) => match postcard::from_bytes::<Msg>(&payload) {
            Ok(Msg::OpenSession { pid, cwd, fds: nums }) if nums.len() == fds.len() => {
                let c = Arc::new(c);
                match sessions.open(pid, cwd.as_path(), nums.into_iter().zip(fds).collect(), c.clone()) {
                    Ok(s) => {
                        crate::log!(node, "pid {pid}: session opened ({} file(s))", s.file_count());
                        let ok = reply(&c, &Msg::SessionOpened { token: s.token().to_vec(), rsys_addr: sessions.addr() });
                        if ok {
                            stub(&c, pid, &s, node);
                        }
                        sessions.end(&s);
                        return;
                    }
                    Err(e) => {
                        let m = Msg::Error { msg: format!("cannot open a session for pid {pid}: cwd {}: {e}", cwd.as_path().display()) };
                        reply(&c, &m);
                        return;
                    }
                }
            }
            Ok(Msg::RegisterProcess { pid, no_migrate }) if fds.is_empty() => match register(c.as_raw_fd(), pid, no_migrate, registry) {
                Ok(()) => {
                    crate::log!(node, "pid {pid} registered{}", if no_migrate { " (never moved)" } else { "" });
                    Msg::Ack
                }
                Err(e) => Msg::Error { msg: e },
            },
            Ok(Msg::OpenSession { .. }) => Msg::Error { msg: "fd numbers and attached descriptors differ in count".into() },
            Ok(m) => Msg::Error { msg: format!("expected OpenSession or RegisterProcess, got {}", m.name()) },
            Err(e) => Msg::Error { msg: format!("malformed message: {e}") },
        },
        Err(e) => Msg::Error { msg: format!("hand-off: {e}") },
    };
    if let Msg::Error { msg } = &answer {
        crate::warn!(node, "local peer refused: {msg}");
    }
    reply(&c, &answer);
}

/// Register process `pid` for balancing: only its own owner (or root) may, and only a
/// process of the same uid as the peer.
fn register(c: RawFd, pid: u32, no_migrate: bool, registry: &crate::candidates::Registry) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let peer = peer_uid(c).ok_or("cannot read the peer's credentials")?;
    let owner = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid()).map_err(|_| format!("no process {pid}"))?;
    if peer != 0 && peer != owner {
        return Err(format!("permission denied: process {pid} is not the peer's"));
    }
    registry.register(pid, no_migrate)
}

/// How often the stub's connection and run state are looked at.
const STUB_POLL: Duration = Duration::from_millis(100);

/// Serve the home stub of session `s` until its connection closes: its signals go to the
/// body, its being stopped (Ctrl-Z, SIGSTOP) stops the body and its continuing continues it.
fn stub(c: &OwnedFd, pid: u32, s: &Session, node: &str) {
    use std::os::fd::AsRawFd;
    let mut stopped = false;
    loop {
        let mut p = [libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: p is a live array of one pollfd.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 1, STUB_POLL.as_millis() as i32) };
        if n > 0 && p[0].revents != 0 {
            match recv_with_fds(c.as_raw_fd()) {
                Ok((payload, _)) if payload.is_empty() => return,
                Ok((payload, _)) => match postcard::from_bytes::<Msg>(&payload) {
                    Ok(Msg::StubSignal { signal }) if (1..=64).contains(&signal) => s.signal(signal as u32),
                    Ok(m) => crate::warn!(node, "pid {pid}: ignoring {} from the stub", m.name()),
                    Err(e) => crate::warn!(node, "pid {pid}: ignoring a malformed message from the stub: {e}"),
                },
                Err(e) => {
                    crate::warn!(node, "pid {pid}: stub connection: {e}");
                    return;
                }
            }
        }
        match run_state(pid) {
            Some('T') if !stopped => {
                stopped = true;
                s.signal(libc::SIGSTOP as u32);
            }
            Some(st) if st != 'T' && stopped => {
                stopped = false;
                s.signal(libc::SIGCONT as u32);
            }
            _ => {}
        }
        s.tick();
    }
}

/// The state letter of `/proc/<pid>/stat` (after the command name, which may hold spaces).
fn run_state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}
