//! The rsys listeners: TCP from anywhere, an abstract unix socket for bodies on this host.
//! Owns accepting, the hello and its reply, and the answer socket a local connection may
//! pass; then hands the connection to [`super::control`] or [`super::serve`](mod@super::serve). Drops a peer
//! with a bad hello or token, never the listener.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use proto::rsys::{self as wire, Hello, HelloReply};

use super::control::control;
use super::serve::calls;
use super::splice::{data_pipe, DataPipe};
use super::{random_token, Sessions};
use crate::{lock, log};

/// How long a hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted body connection.
pub enum Conn {
    /// From anywhere, on the rsys TCP listener.
    Tcp(TcpStream),
    /// From this host, on the abstract unix listener (calls connections only).
    Unix(UnixStream),
}

/// Read + Write, for the one place that does not care which transport it has.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

impl Conn {
    fn io(&mut self) -> &mut dyn Duplex {
        match self {
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        }
    }
    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        };
    }
    fn set_write_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_write_timeout(t),
            Conn::Unix(s) => s.set_write_timeout(t),
        };
    }
}

/// Accept body connections over TCP forever (call from a thread).
pub fn serve(listener: TcpListener, sessions: Arc<Sessions>) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => spawn_connection(&sessions, Conn::Tcp(stream), peer.to_string()),
            Err(e) => {
                log!(sessions.node, "rsys: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Bind the local listener: an abstract unix socket named `mos-rsys-` and 16 random hex
/// digits. Returns it and its name.
pub fn bind_local() -> io::Result<(UnixListener, String)> {
    use std::os::linux::net::SocketAddrExt;
    let r = random_token()?;
    let name: String = std::iter::once("mos-rsys-".to_string()).chain(r[..8].iter().map(|b| format!("{b:02x}"))).collect();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    Ok((UnixListener::bind_addr(&addr)?, name))
}

/// Accept calls connections from bodies on this host forever (call from a thread).
pub fn serve_local(listener: UnixListener, sessions: Arc<Sessions>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let peer = match peer_pid(&stream) {
                    Some(pid) => format!("local pid {pid}"),
                    None => "local".to_string(),
                };
                spawn_connection(&sessions, Conn::Unix(stream), peer)
            }
            Err(e) => {
                log!(sessions.node, "rsys: local accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn peer_pid(s: &UnixStream) -> Option<i32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_PEERCRED) writes at most len bytes into the live ucred.
    let r = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut libc::ucred as *mut libc::c_void, &mut len)
    };
    (r == 0).then_some(cred.pid)
}

fn spawn_connection(sessions: &Arc<Sessions>, conn: Conn, peer: String) {
    let s = sessions.clone();
    let name = format!("rsys-{peer}");
    let spawned = std::thread::Builder::new().name(name).spawn(move || connection(&s, conn, &peer));
    if let Err(e) = spawned {
        log!(sessions.node, "rsys: dropped a connection: no thread for it: {e}");
    }
}

fn connection(sessions: &Sessions, mut conn: Conn, peer: &str) {
    let node = &sessions.node;
    conn.set_read_timeout(Some(HELLO_TIMEOUT));
    conn.set_write_timeout(Some(Duration::from_secs(30)));
    match &conn {
        Conn::Tcp(s) => {
            let _ = s.set_nodelay(true);
        }
        // room for a whole large read in the socket, so a spliced answer goes out in one
        // call while the body copies it (root may pass net.core.wmem_max; others get it)
        Conn::Unix(s) => big_send_buffer(s.as_raw_fd()),
    }
    let mut b = [0u8; wire::HELLO_LEN];
    if let Err(e) = conn.io().read_exact(&mut b) {
        log!(node, "rsys: dropped {peer}: no complete hello: {e}");
        return;
    }
    let local = *lock(&sessions.local_name);
    let refuse = |mut conn: Conn, status: i32, why: &str| {
        log!(node, "rsys: dropped {peer}: {why}");
        let _ = conn.io().write_all(&HelloReply { status, vpid: 0, local: [0; wire::LOCAL_NAME_LEN] }.encode());
    };
    let Some(hello) = Hello::decode(&b) else {
        return refuse(conn, -libc::EACCES, "bad magic");
    };
    let Some(session) = sessions.find(&hello.token) else {
        return refuse(conn, -libc::EACCES, "unknown session token");
    };
    let unix = matches!(conn, Conn::Unix(_));
    if hello.kind != wire::KIND_CALLS && (hello.kind != wire::KIND_CONTROL || unix) {
        return refuse(conn, -libc::EINVAL, &format!("unknown connection kind {}", hello.kind));
    }
    if conn.io().write_all(&HelloReply { status: 0, vpid: session.vpid, local }.encode()).is_err() {
        return;
    }
    let answers = match &conn {
        Conn::Unix(s) if hello.kind == wire::KIND_CALLS && hello.flags & wire::HELLO_ANSWER_SOCKET != 0 => match recv_answer_socket(s) {
            Ok(a) => Some(a),
            Err(e) => {
                log!(node, "rsys: dropped {peer}: no answer socket: {e}");
                return;
            }
        },
        _ => None,
    };
    conn.set_read_timeout(None);
    if hello.kind == wire::KIND_CALLS {
        log!(node, "pid {}: calls connection over {} from {peer}", session.vpid, if unix { "unix" } else { "tcp" });
    }
    match conn {
        Conn::Tcp(stream) => {
            keepalive(&stream);
            if hello.kind == wire::KIND_CONTROL {
                return control(&session, stream, &hello, peer);
            }
            if let Err(e) = calls(&session, Conn::Tcp(stream), None) {
                log!(node, "rsys: pid {}: calls connection from {peer} dropped: {e}", session.vpid);
            }
        }
        Conn::Unix(stream) => {
            if let Err(e) = calls(&session, Conn::Unix(stream), answers) {
                log!(node, "rsys: pid {}: calls connection from {peer} dropped: {e}", session.vpid);
            }
        }
    }
}

/// Room for a whole large read in a unix socket we answer on, so a spliced answer goes out
/// in one call while the body copies it (root may pass net.core.wmem_max; others get it).
fn big_send_buffer(fd: RawFd) {
    let want: libc::c_int = (wire::MAX_IO + 64 * 1024) as libc::c_int;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, &want as *const libc::c_int as *const libc::c_void, std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
        if r == 0 {
            break;
        }
    }
}

/// The answer socket a local calls connection passes after its hello
/// ([`wire::HELLO_ANSWER_SOCKET`]): one byte with one or two descriptors, a unix stream
/// socket and optionally the write end of a pipe ([`wire::RESP_DATA_IN_PIPE`]). Anything
/// else is refused (and every descriptor that came is closed).
fn recv_answer_socket(s: &UnixStream) -> io::Result<(UnixStream, Option<DataPipe>)> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // room for a few descriptors, so that extra ones are received (and closed), not lost
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: recvmsg into the live msghdr above.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const i32;
                let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<i32>();
                for i in 0..k {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n != 1 || fds.is_empty() || fds.len() > 2 || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{n} bytes with {} descriptors", fds.len())));
    }
    let pipe = if fds.len() == 2 { fds.pop() } else { None };
    let fd = fds.pop().expect("one descriptor");
    let opt = |name: libc::c_int| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most len bytes into v.
        let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, &mut v as *mut libc::c_int as *mut libc::c_void, &mut len) };
        (r == 0).then_some(v)
    };
    if opt(libc::SO_DOMAIN) != Some(libc::AF_UNIX) || opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the descriptor is not a unix stream socket"));
    }
    big_send_buffer(fd.as_raw_fd());
    let data = match pipe {
        Some(p) => Some(data_pipe(p)?),
        None => None,
    };
    Ok((UnixStream::from(fd), data))
}

/// A peer whose node died leaves no FIN behind: notice it within a minute or so.
fn keepalive(s: &TcpStream) {
    let fd = s.as_raw_fd();
    for (level, name, val) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 20),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4),
    ] {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(fd, level, name, &val as *const i32 as *const libc::c_void, std::mem::size_of::<i32>() as libc::socklen_t)
        };
    }
}
