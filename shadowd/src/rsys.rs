//! The home side of remote execution (DESIGN §2): shadow sessions and the rsys listener.
//!
//! A session is opened over `<state>/shadow.sock` (see [`crate::handoff`]) when a process's
//! body is about to leave; it owns the process's descriptors (handed home with SCM_RIGHTS),
//! its current directory and a token. Bodies connect to the rsys listener with that token
//! and have their file, socket and terminal calls performed here on the real descriptors,
//! exactly once per (chan, seq) as `proto::rsys` specifies. This module owns the session
//! table, the per-call execution and the body's control connection; it never trusts a peer:
//! a bad hello, a bad token or an oversized request drops that connection only.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::rsys::{self as wire, op, Ctl, Hello, HelloReply, Req, Resp};
use proto::Msg;

use crate::{lock, log};

/// Job ids with this bit are single processes migrated with `MigrateProcess`, not batch jobs.
pub const PROCESS_JOB_BIT: u64 = 0x4000_0000_0000_0000;
/// How long a hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a body that announced CTL_LEAVING has to reconnect from its next node.
pub const LEAVING_GRACE: Duration = Duration::from_secs(30);
/// Bulk beyond the largest I/O a request may carry (paths, addresses, structs).
const BULK_SLACK: usize = 64 * 1024;
/// How often blocking lock calls retry while watching their connection.
const LOCK_RETRY_MS: i32 = 50;

/// Every live session of this node.
pub struct Sessions {
    node: String,
    rsys_addr: Mutex<String>,
    /// The abstract name of the local (unix) listener, NUL-padded; zero: none.
    local_name: Mutex<[u8; wire::LOCAL_NAME_LEN]>,
    live: Mutex<HashMap<u64, Arc<Session>>>,
    next_id: AtomicU64,
}

/// One process whose body runs elsewhere.
pub struct Session {
    id: u64,
    token: [u8; wire::TOKEN_LEN],
    /// The process's pid at home.
    pub vpid: u32,
    node: String,
    files: Mutex<HashMap<i32, Arc<OwnedFd>>>,
    cwd: Mutex<Arc<OwnedFd>>,
    chans: Mutex<HashMap<u64, Arc<Mutex<Chan>>>>,
    ctl: Mutex<Control>,
    /// The home stub's connection (interactive processes); batch jobs have none.
    stub: Option<Arc<OwnedFd>>,
    /// The batch job this session serves.
    pub job: Option<u64>,
    told_stub: AtomicBool,
    closed: AtomicBool,
}

/// The exactly-once memory of one channel.
#[derive(Default)]
struct Chan {
    last: Option<u64>,
    ret: i64,
    data: Vec<u8>,
    /// The last answer was a large file read spliced to the body without passing through
    /// this process (see [`spliced_read`]): (file, offset, length) to read it again from,
    /// should it be asked for again. `data` is empty then.
    replay: Option<(Arc<OwnedFd>, i64, usize)>,
}

#[derive(Default)]
struct Control {
    conn: Option<(u64, TcpStream)>,
    next_conn: u64,
    node: String,
    body_pid: u32,
    pending: Vec<u32>,
    leaving: Option<Instant>,
}

impl Sessions {
    /// An empty table for node `node`.
    pub fn new(node: &str) -> Self {
        Sessions { node: node.to_string(), rsys_addr: Mutex::new(String::new()), local_name: Mutex::new([0; wire::LOCAL_NAME_LEN]), live: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    /// Where bodies connect (set once the listener is bound).
    pub fn set_addr(&self, addr: String) {
        *lock(&self.rsys_addr) = addr;
    }

    /// The rsys listener's address.
    pub fn addr(&self) -> String {
        lock(&self.rsys_addr).clone()
    }

    /// Name the local listener (its abstract name, without the leading NUL) in hello
    /// replies; longer than [`wire::LOCAL_NAME_LEN`] is refused.
    pub fn set_local_name(&self, name: &[u8]) -> io::Result<()> {
        if name.len() > wire::LOCAL_NAME_LEN || name.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "local listener name too long or with a NUL"));
        }
        let mut b = [0u8; wire::LOCAL_NAME_LEN];
        b[..name.len()].copy_from_slice(name);
        *lock(&self.local_name) = b;
        Ok(())
    }

    /// Open a session for process `pid` with `files` (its fd numbers) and home cwd `cwd`;
    /// `stub` is the home stub's connection, told once how the body ended.
    pub fn open(&self, pid: u32, cwd: &Path, files: Vec<(i32, OwnedFd)>, stub: Arc<OwnedFd>) -> io::Result<Arc<Session>> {
        let dir = open_dir(cwd)?;
        let s = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            token: random_token()?,
            vpid: pid,
            node: self.node.clone(),
            files: Mutex::new(files.into_iter().map(|(n, f)| (n, Arc::new(f))).collect()),
            cwd: Mutex::new(Arc::new(dir)),
            chans: Mutex::new(HashMap::new()),
            // the body is in transit from home until its first control connection
            ctl: Mutex::new(Control { leaving: Some(Instant::now()), ..Control::default() }),
            stub: Some(stub),
            job: None,
            told_stub: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        lock(&self.live).insert(s.id, s.clone());
        Ok(s)
    }

    /// The session of batch job `job` (see `Msg::OpenJobSession`): `files` are its fds
    /// 0, 1, 2. An existing session of the job is kept unless `fresh`.
    pub fn open_job(&self, job: u64, cwd: &Path, files: Vec<(i32, OwnedFd)>, fresh: bool) -> io::Result<Arc<Session>> {
        let old = lock(&self.live).values().find(|s| s.job == Some(job) && !s.closed.load(Ordering::SeqCst)).cloned();
        if let Some(old) = old {
            if !fresh {
                return Ok(old);
            }
            self.end(&old);
        }
        let dir = open_dir(cwd)?;
        let s = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            token: random_token()?,
            vpid: 0,
            node: self.node.clone(),
            files: Mutex::new(files.into_iter().map(|(n, f)| (n, Arc::new(f))).collect()),
            cwd: Mutex::new(Arc::new(dir)),
            chans: Mutex::new(HashMap::new()),
            ctl: Mutex::new(Control::default()),
            stub: None,
            job: Some(job),
            told_stub: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        lock(&self.live).insert(s.id, s.clone());
        log!(self.node, "job {job}: session opened at home");
        Ok(s)
    }

    /// Drop sessions that ended on their own (batch jobs that exited).
    fn sweep(&self) {
        lock(&self.live).retain(|_, s| !s.closed.load(Ordering::SeqCst));
    }

    /// End a session (its stub went away): no more hellos, its files closed (once calls
    /// still running let go of them), the body's control connection closed.
    pub fn end(&self, s: &Session) {
        lock(&self.live).remove(&s.id);
        s.closed.store(true, Ordering::SeqCst);
        lock(&s.files).clear();
        if let Some((_, c)) = lock(&s.ctl).conn.take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        log!(self.node, "session of pid {} ended", s.vpid);
    }

    /// The live session holding `token` (every token compared in constant time).
    fn find(&self, token: &[u8; wire::TOKEN_LEN]) -> Option<Arc<Session>> {
        self.sweep();
        let mut found = None;
        for s in lock(&self.live).values() {
            if ct_eq(&s.token, token) {
                found = Some(s.clone());
            }
        }
        found
    }

    /// The live session of the process `vpid`.
    pub fn by_vpid(&self, vpid: u32) -> Option<Arc<Session>> {
        lock(&self.live).values().find(|s| s.vpid == vpid).cloned()
    }

    /// The interactive processes homed here whose bodies have reported from elsewhere:
    /// (pid here, the address the body reported, its pid there).
    pub fn away(&self) -> Vec<(u32, String, u32)> {
        let live: Vec<Arc<Session>> = lock(&self.live).values().filter(|s| s.stub.is_some()).cloned().collect();
        let mut v: Vec<(u32, String, u32)> = live
            .iter()
            .filter_map(|s| {
                let c = lock(&s.ctl);
                (!c.node.is_empty()).then(|| (s.vpid, c.node.clone(), c.body_pid))
            })
            .collect();
        v.sort();
        v
    }

    /// Where the body of `vpid` runs: (node, pid there).
    pub fn where_is(&self, vpid: u32) -> Result<(String, u32), String> {
        let s = self.by_vpid(vpid).ok_or_else(|| format!("no process {vpid} with a body away is homed here"))?;
        let c = lock(&s.ctl);
        if c.conn.is_none() && c.node.is_empty() {
            return Err(format!("the body of process {vpid} has not connected yet"));
        }
        Ok((c.node.clone(), c.body_pid))
    }
}

impl Session {
    /// The token bodies present.
    pub fn token(&self) -> [u8; wire::TOKEN_LEN] {
        self.token
    }

    /// How many descriptors the session holds.
    pub fn file_count(&self) -> usize {
        lock(&self.files).len()
    }

    /// Tell the stub how the body ended; only the first call has an effect. A batch job
    /// has no stub: its exit ends the session (its files are complete), a lost body is
    /// restarted elsewhere and reconnects.
    pub fn tell_stub(&self, msg: Msg) {
        let Some(stub) = &self.stub else {
            if let (Some(job), Msg::BodyExited { status }) = (self.job, &msg) {
                log!(self.node, "job {job}: exited (status {status:#x}); session closed");
                self.closed.store(true, Ordering::SeqCst);
                lock(&self.files).clear();
            }
            return;
        };
        if self.told_stub.swap(true, Ordering::SeqCst) {
            return;
        }
        log!(self.node, "pid {}: telling the stub {msg:?}", self.vpid);
        match postcard::to_allocvec(&msg) {
            Ok(b) => {
                if let Err(e) = crate::handoff::send_with_fds(stub.as_raw_fd(), &b, &[]) {
                    log!(self.node, "pid {}: cannot tell the stub {}: {e}", self.vpid, msg.name());
                }
            }
            Err(e) => log!(self.node, "pid {}: cannot encode {}: {e}", self.vpid, msg.name()),
        }
    }

    /// Deliver `signal` to the body now, or when its control connection arrives.
    pub fn signal(&self, signal: u32) {
        let mut c = lock(&self.ctl);
        let rec = Ctl { what: wire::CTL_SIGNAL, arg: signal }.encode();
        if let Some((_, conn)) = c.conn.as_mut() {
            if (&*conn).write_all(&rec).is_ok() {
                log!(self.node, "pid {}: signal {signal} sent to the body", self.vpid);
                return;
            }
        }
        log!(self.node, "pid {}: signal {signal} kept until the body connects", self.vpid);
        c.pending.push(signal);
    }

    /// Periodic check (from the stub's thread): a body that left and never arrived is lost.
    pub fn tick(&self) {
        let (lost, node) = {
            let c = lock(&self.ctl);
            (c.conn.is_none() && c.leaving.is_some_and(|t| t.elapsed() >= LEAVING_GRACE), c.node.clone())
        };
        if lost {
            let reason = if node.is_empty() {
                format!("the body never arrived at its new node (within {} s)", LEAVING_GRACE.as_secs())
            } else {
                format!("the body left node {node} and did not arrive anywhere within {} s", LEAVING_GRACE.as_secs())
            };
            self.tell_stub(Msg::BodyLost { reason });
        }
    }

    fn chan(&self, chan: u64) -> Arc<Mutex<Chan>> {
        lock(&self.chans).entry(chan).or_default().clone()
    }

    fn file(&self, fd: u64) -> Result<Arc<OwnedFd>, Stop> {
        let n = i32::try_from(fd as i64).map_err(|_| Stop::Errno(-libc::EBADF as i64))?;
        lock(&self.files).get(&n).cloned().ok_or(Stop::Errno(-libc::EBADF as i64))
    }

    fn dir(&self, fd: u64) -> Result<Arc<OwnedFd>, Stop> {
        if fd as i64 as i32 == libc::AT_FDCWD {
            return Ok(lock(&self.cwd).clone());
        }
        self.file(fd)
    }

    fn bind(&self, num: u64, fd: OwnedFd) -> i64 {
        match i32::try_from(num as i64) {
            Ok(n) if n >= 0 => {
                // The old descriptor at that number is closed (when no call still uses it).
                lock(&self.files).insert(n, Arc::new(fd));
                i64::from(n)
            }
            _ => -libc::EBADF as i64,
        }
    }
}

fn ct_eq(a: &[u8; wire::TOKEN_LEN], b: &[u8; wire::TOKEN_LEN]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> io::Result<[u8; wire::TOKEN_LEN]> {
    let mut t = [0u8; wire::TOKEN_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut t)?;
    Ok(t)
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a NUL-terminated string alive for the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------------------
// The listener

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

/// Check that `p` is the write end of a pipe and make it as large as splices need.
fn data_pipe(p: OwnedFd) -> io::Result<DataPipe> {
    // SAFETY: fstat into a zeroed stat; fcntl queries on a descriptor we own.
    let (mode, fl) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let r = libc::fstat(p.as_raw_fd(), &mut st);
        (if r == 0 { st.st_mode & libc::S_IFMT } else { 0 }, libc::fcntl(p.as_raw_fd(), libc::F_GETFL))
    };
    if mode != libc::S_IFIFO || fl < 0 || fl & libc::O_ACCMODE != libc::O_WRONLY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the second descriptor is not the write end of a pipe"));
    }
    // SAFETY: fcntl on our own pipe end.
    let cap = unsafe {
        libc::fcntl(p.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE);
        libc::fcntl(p.as_raw_fd(), libc::F_GETPIPE_SZ)
    };
    if cap <= 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(DataPipe { fd: p, cap: cap as usize })
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

fn control(s: &Arc<Session>, stream: TcpStream, hello: &Hello, peer: &str) {
    let node_name = hello.node_name();
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log!(s.node, "rsys: pid {}: control connection from {peer}: {e}", s.vpid);
            return;
        }
    };
    let id = {
        let mut c = lock(&s.ctl);
        if s.closed.load(Ordering::SeqCst) {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
        for sig in std::mem::take(&mut c.pending) {
            if (&writer).write_all(&Ctl { what: wire::CTL_SIGNAL, arg: sig }.encode()).is_err() {
                c.pending.push(sig);
            }
        }
        if let Some((_, old)) = c.conn.take() {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        c.next_conn += 1;
        let id = c.next_conn;
        c.conn = Some((id, writer));
        c.node = node_name.clone();
        c.body_pid = hello.body_pid;
        c.leaving = None;
        id
    };
    log!(s.node, "pid {}: body is on node {node_name} as pid {} ({peer})", s.vpid, hello.body_pid);
    let mut r = stream;
    let mut b = [0u8; wire::CTL_LEN];
    let why = loop {
        match r.read_exact(&mut b) {
            Ok(()) => {
                let rec = Ctl::decode(&b);
                if rec.what == wire::CTL_LEAVING {
                    lock(&s.ctl).leaving = Some(Instant::now());
                    log!(s.node, "pid {}: body leaving node {node_name}", s.vpid);
                } else {
                    log!(s.node, "pid {}: ignoring control record {} from {peer}", s.vpid, rec.what);
                }
            }
            Err(e) => break e,
        }
    };
    let lost = {
        let mut c = lock(&s.ctl);
        if c.conn.as_ref().is_some_and(|(cid, _)| *cid == id) {
            c.conn = None;
            c.leaving.is_none()
        } else {
            false // replaced by the body's next connection
        }
    };
    if lost && !s.closed.load(Ordering::SeqCst) {
        let reason = if why.kind() == io::ErrorKind::UnexpectedEof { "connection closed".to_string() } else { why.to_string() };
        s.tell_stub(Msg::BodyLost { reason: format!("the body on node {node_name} was lost: {reason}") });
    }
}

/// Serve a calls connection: requests come on `conn`, answers go back on it, or on
/// `answers` when the body passed an answer socket (and maybe a data pipe).
fn calls(s: &Arc<Session>, conn: Conn, answers: Option<(UnixStream, Option<DataPipe>)>) -> io::Result<()> {
    match (&conn, &answers) {
        (Conn::Tcp(t), _) => serve_calls(s, t, t, t.as_raw_fd(), t.as_raw_fd(), None, false),
        (Conn::Unix(u), None) => serve_calls(s, u, u, u.as_raw_fd(), u.as_raw_fd(), None, true),
        (Conn::Unix(u), Some((a, d))) => serve_calls(s, u, a, u.as_raw_fd(), a.as_raw_fd(), d.as_ref(), false),
    }
}

/// The calls loop: requests from `rd`, answers to `wr`. `client`: the connection's fd (its
/// end tells that the body went away); `out`: the descriptor answers are written to (spliced data included). `poll_first`:
/// requests and answers share one unix socket, whose sleepers are all woken whenever the
/// body frees a buffer of our last answer (its write-space callback); only poll's wait
/// filters those wake-ups out, so the next request is awaited in poll, not in read.
fn serve_calls<R: Read, W: Write>(s: &Arc<Session>, mut rd: R, mut wr: W, client: RawFd, out: RawFd, data: Option<&DataPipe>, poll_first: bool) -> io::Result<()> {
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
        if s.closed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the session has ended"));
        }
        if req.op == op::CANCEL {
            // for a call that finished before the cancel came: its answer has gone
            continue;
        }
        if req.op == op::RESYNC {
            // a body restarted from an image: forget answers its channel gave after the
            // image was taken (they belong to a history that is being re-executed)
            let target = s.chan(req.args[0]);
            let mut t = lock(&target);
            if t.last.is_some_and(|l| l > req.args[1]) {
                *t = Chan::default();
            }
            drop(t);
            let resp = Resp { ret: 0, seq: req.seq, data_len: 0, flags: 0 };
            wr.write_all(&resp.encode())?;
            continue;
        }
        let chan = s.chan(req.chan);
        let mut st = lock(&chan);
        if st.last != Some(req.seq) {
            // into the body's data pipe if it has one, else through our pipe to `out`
            if let Some((file, ret, off, piped)) = spliced_read(s, &req, data) {
                st.last = Some(req.seq);
                st.ret = ret;
                let old = std::mem::take(&mut st.data);
                SPARE.with(|sp| sp.set(old));
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
            match execute(s, &req, &bulk, client) {
                Outcome::Done(ret, mut data) => {
                    data.truncate(req.out_len as usize);
                    st.last = Some(req.seq);
                    st.ret = ret;
                    // the answer it replaces serves the next call's read
                    let old = std::mem::replace(&mut st.data, data);
                    SPARE.with(|sp| sp.set(old));
                }
                Outcome::Abandon => {
                    return Err(io::Error::other(format!("call {} (chan {:#x} seq {}) abandoned: the body went away", req.op, req.chan, req.seq)));
                }
            }
        }
        if let Some((file, off, len)) = &st.replay {
            // the answer of a spliced read asked for again: read it again
            let mut buf = read_buf(*len);
            // SAFETY: buf has room for len bytes.
            let r = unsafe { sys(libc::SYS_pread64, [file.as_raw_fd() as i64, buf.as_mut_ptr() as i64, *len as i64, *off, 0, 0]) };
            let (_, mut data) = with_data(r, buf).unwrap_or_default();
            // (the file shrank since: the rest reads as zeros, the length stays the one given)
            data.resize(*len, 0);
            st.data = data;
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

// ---------------------------------------------------------------------------------------
// Large file reads: spliced

/// Reads of regular files from this size up go file -> pipe -> connection with splice(2):
/// the data never passes through this process, and the only copy left is the one into
/// the body's buffer (over TCP: the network's). Smaller reads are cheaper buffered.
const SPLICE_MIN: usize = 64 * 1024;
/// The pipe size asked for (the unprivileged maximum by default, /proc/sys/fs/pipe-max-size).
const SPLICE_PIPE: i32 = 1 << 20;

/// A connection thread's pipe: (read end, write end, capacity).
struct SplicePipe(OwnedFd, OwnedFd, usize);

thread_local! {
    static PIPE: std::cell::OnceCell<Option<SplicePipe>> = const { std::cell::OnceCell::new() };
}

fn with_pipe<R>(f: impl FnOnce(&SplicePipe) -> R) -> Option<R> {
    PIPE.with(|p| {
        p.get_or_init(|| {
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 writes two descriptors into the array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return None;
            }
            // SAFETY: both descriptors are new and ours.
            let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: fcntl on our own pipe.
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE) };
            // SAFETY: as above.
            let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
            (cap > 0).then_some(SplicePipe(r, w, cap as usize))
        })
        .as_ref()
        .map(f)
    })
}

/// A read or pread of SPLICE_MIN bytes or more from a regular file, moved into the body's
/// data pipe `into` if there is one and it fits, else into this thread's pipe:
/// Some((file, bytes moved or -errno, offset it was read from, in the data pipe)); then
/// the caller sends the answer header and, for this thread's pipe, [`splice_out`]s the
/// bytes. None: not such a call (or the file cannot be spliced): the ordinary path serves it.
fn spliced_read(s: &Session, req: &Req, into: Option<&DataPipe>) -> Option<(Arc<OwnedFd>, i64, i64, bool)> {
    if req.op != op::READ && req.op != op::PREAD64 {
        return None;
    }
    let n = cap(req.args[2], req.out_len);
    if n < SPLICE_MIN {
        return None;
    }
    let file = s.file(req.args[0]).ok()?;
    let fd = file.as_raw_fd();
    if file_type(fd) != libc::S_IFREG {
        return None;
    }
    let splice = |pipe: RawFd, capacity: usize| {
        let positional = req.op == op::PREAD64;
        let mut off = if positional {
            req.args[3] as i64
        } else {
            // SAFETY: lseek on a descriptor we hold.
            unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
        };
        if off < 0 {
            return None;
        }
        // the pipe holds page pieces: a read that starts inside a page needs one more
        const PAGE: usize = 4096;
        if (off as usize % PAGE + n).div_ceil(PAGE) > capacity / PAGE {
            return None;
        }
        let start = off;
        let mut moved = 0usize;
        while moved < n {
            let offp: *mut i64 = if positional { &mut off } else { std::ptr::null_mut() };
            // Non-blocking: should the pipe be full after all, the read comes up short
            // rather than waiting for ever.
            // SAFETY: splice from a file we hold into a pipe we hold; offp is null or live.
            let r = unsafe { libc::splice(fd, offp, pipe, std::ptr::null_mut(), n - moved, libc::SPLICE_F_NONBLOCK) };
            if r < 0 {
                let e = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
                if moved == 0 && (e == libc::EINVAL || e == libc::EAGAIN) {
                    return None; // a file system without splice (or a full pipe): read it the ordinary way
                }
                if moved == 0 {
                    return Some((file.clone(), -i64::from(e), start));
                }
                break;
            }
            if r == 0 {
                break;
            }
            moved += r as usize;
        }
        Some((file.clone(), moved as i64, start))
    };
    // the body's data pipe first (true: the data is there), else this thread's pipe
    if let Some((f, ret, off)) = into.and_then(|d| splice(d.fd.as_raw_fd(), d.cap)) {
        return Some((f, ret, off, true));
    }
    with_pipe(|p| splice(p.1.as_raw_fd(), p.2)).flatten().map(|(f, ret, off)| (f, ret, off, false))
}

/// The body's data pipe ([`wire::RESP_DATA_IN_PIPE`]): its write end, and its capacity.
struct DataPipe {
    fd: OwnedFd,
    cap: usize,
}

/// Move `n` bytes from this thread's pipe to the connection `sock`.
fn splice_out(sock: RawFd, mut n: usize) -> io::Result<()> {
    with_pipe(|p| {
        while n > 0 {
            // SAFETY: splice from our pipe to our connection.
            let r = unsafe { libc::splice(p.0.as_raw_fd(), std::ptr::null_mut(), sock, std::ptr::null_mut(), n, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            n -= r as usize;
        }
        Ok(())
    })
    .unwrap_or_else(|| Err(io::Error::other("no splice pipe")))
}

// ---------------------------------------------------------------------------------------
// Executing calls

enum Outcome {
    Done(i64, Vec<u8>),
    Abandon,
}

enum Stop {
    Errno(i64),
    Abandon,
}

type Answer = Result<(i64, Vec<u8>), Stop>;

fn neg_errno() -> i64 {
    -i64::from(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

/// A raw system call with integer arguments; -errno on failure.
///
/// # Safety
/// Every argument that the kernel reads or writes as a pointer must point to a live buffer
/// of the size that call expects.
// SAFETY: (contract) the caller vouches for the arguments, as documented above.
unsafe fn sys(nr: libc::c_long, a: [i64; 6]) -> i64 {
    // SAFETY: forwarded to the caller's contract.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        neg_errno()
    } else {
        r
    }
}

fn done(r: i64) -> Answer {
    Ok((r, Vec::new()))
}

fn with_data(r: i64, mut buf: Vec<u8>) -> Answer {
    if r < 0 {
        return Ok((r, Vec::new()));
    }
    if buf.len() < r as usize && buf.capacity() >= r as usize {
        // SAFETY: a read_buf the kernel just filled with r bytes.
        unsafe { buf.set_len(r as usize) };
    }
    buf.truncate(r as usize);
    Ok((r, buf))
}

/// Room for a read of `n` bytes, not zeroed (a large zeroed buffer costs more than the
/// read); `with_data` sets its length to what the kernel wrote.
fn read_buf(n: usize) -> Vec<u8> {
    let mut v = SPARE.with(|s| s.take());
    v.clear();
    v.reserve(n);
    v
}

thread_local! {
    /// The buffer of the answer this connection's channel no longer remembers (replaced
    /// by a newer one): reads fill it again instead of fresh memory, which would cost a
    /// page fault a page.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn file_type(fd: RawFd) -> u32 {
    // SAFETY: stat is plain data, fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live struct stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_mode & libc::S_IFMT
}

fn nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// Whether a read or write on `fd` can block (and so must watch the connection).
fn may_block(fd: RawFd) -> bool {
    let t = file_type(fd);
    t != libc::S_IFREG && t != libc::S_IFDIR && t != libc::S_IFBLK && !nonblocking(fd)
}

/// Wait until `fd` has `events`, unless the client connection stirs first (see [`stirred`]).
/// For a socket (`sock`), its SO_RCVTIMEO or SO_SNDTIMEO (POLLOUT) ends the wait with EAGAIN.
fn wait(fd: RawFd, sock: bool, events: i16, client: Option<RawFd>) -> Result<(), Stop> {
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
            return Err(stirred(client.unwrap_or(-1)));
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
fn nap(client: RawFd, ms: i32) -> Result<(), Stop> {
    let mut p = [libc::pollfd { fd: client, events: libc::POLLIN, revents: 0 }];
    // SAFETY: p is a live array of one pollfd.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
    if n > 0 && p[0].revents != 0 {
        return Err(stirred(client));
    }
    Ok(())
}

/// The client connection stirred while a call waited. A cancel ([`wire::OP_CANCEL`]: the
/// body took a signal whose handler does not restart calls) ends the call with EINTR;
/// anything else (the connection closed: the body went away or was restarted elsewhere,
/// or bytes that are no cancel) abandons it.
fn stirred(client: RawFd) -> Stop {
    let mut h = [0u8; wire::REQ_LEN];
    for _ in 0..50 {
        // SAFETY: h has REQ_LEN bytes.
        let n = unsafe { libc::recv(client, h.as_mut_ptr() as *mut libc::c_void, h.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n == h.len() as isize {
            let r = Req::decode(&h);
            if r.op != op::CANCEL || r.bulk_len != 0 {
                return Stop::Abandon;
            }
            // SAFETY: as above; this takes the bytes just peeked.
            unsafe { libc::recv(client, h.as_mut_ptr() as *mut libc::c_void, h.len(), libc::MSG_DONTWAIT) };
            return Stop::Errno(-libc::EINTR as i64);
        }
        if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock) {
            return Stop::Abandon;
        }
        // part of a header: the rest is on its way
        let mut p = libc::pollfd { fd: client, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one live pollfd.
        unsafe { libc::poll(&mut p, 1, 20) };
    }
    Stop::Abandon
}

/// [`paths`], where a body's name for one of its own fds ([`wire::own_fd_path`]) becomes
/// ours for the session's file (`/proc/self/fd/<our fd>`); ENOENT if it has no such fd.
fn session_paths(s: &Session, bulk: &[u8], skip: usize, count: usize) -> Result<Vec<CString>, Stop> {
    let mut v = paths(bulk, skip, count)?;
    for p in &mut v {
        if let Some((n, rest)) = wire::own_fd_path(p.as_bytes()) {
            let f = s.file(n as u32 as u64).map_err(|_| Stop::Errno(-libc::ENOENT as i64))?;
            let mut q = format!("/proc/self/fd/{}", f.as_raw_fd()).into_bytes();
            q.extend_from_slice(rest);
            *p = CString::new(q).map_err(|_| Stop::Errno(-libc::EFAULT as i64))?;
        }
    }
    Ok(v)
}

/// Bulk as `count` NUL-terminated strings, after `skip` leading bytes.
fn paths(bulk: &[u8], skip: usize, count: usize) -> Result<Vec<CString>, Stop> {
    let mut out = Vec::with_capacity(count);
    let mut rest = bulk.get(skip..).ok_or(Stop::Errno(-libc::EFAULT as i64))?;
    for _ in 0..count {
        let end = rest.iter().position(|&c| c == 0).ok_or(Stop::Errno(-libc::EFAULT as i64))?;
        out.push(CString::new(&rest[..end]).map_err(|_| Stop::Errno(-libc::EFAULT as i64))?);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

fn struct_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain C struct (stat, statfs, flock...) fully initialised by the
    // caller; we copy its bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }.to_vec()
}

fn cap(n: u64, out_len: u32) -> usize {
    (n as usize).min(out_len as usize).min(wire::MAX_IO)
}

/// `/proc/self/fd/<cwd>/path` for calls without an *at form.
fn at_cwd(cwd: &OwnedFd, p: &CStr) -> Result<CString, Stop> {
    let b = p.to_bytes();
    if b.first() == Some(&b'/') {
        return Ok(p.to_owned());
    }
    let mut v = format!("/proc/self/fd/{}/", cwd.as_raw_fd()).into_bytes();
    v.extend_from_slice(b);
    CString::new(v).map_err(|_| Stop::Errno(-libc::EINVAL as i64))
}

fn execute(s: &Session, req: &Req, bulk: &[u8], client: RawFd) -> Outcome {
    match call(s, req, bulk, client) {
        Ok((r, d)) => Outcome::Done(r, d),
        Err(Stop::Errno(e)) => Outcome::Done(e, Vec::new()),
        Err(Stop::Abandon) => Outcome::Abandon,
    }
}

fn call(s: &Session, req: &Req, bulk: &[u8], client: RawFd) -> Answer {
    let a = req.args;
    let ai = |i: usize| a[i] as i64;
    let ol = req.out_len;
    let bp = bulk.as_ptr() as i64;
    match req.op {
        op::PING => done(0),
        op::EXIT => {
            s.tell_stub(Msg::BodyExited { status: a[0] as i32 });
            done(0)
        }
        op::READ => {
            let f = s.file(a[0])?;
            let fd = f.as_raw_fd();
            let n = cap(a[2], ol);
            let mut buf = read_buf(n);
            let t = file_type(fd);
            let blocking = t != libc::S_IFREG && t != libc::S_IFDIR && t != libc::S_IFBLK && !nonblocking(fd);
            let sock = t == libc::S_IFSOCK;
            loop {
                if blocking {
                    wait(fd, sock, libc::POLLIN, Some(client))?;
                }
                // SAFETY: buf is a live buffer of n bytes.
                let r = unsafe {
                    if blocking && sock {
                        sys(libc::SYS_recvfrom, [fd as i64, buf.as_mut_ptr() as i64, n as i64, libc::MSG_DONTWAIT as i64, 0, 0])
                    } else {
                        sys(libc::SYS_read, [fd as i64, buf.as_mut_ptr() as i64, n as i64, 0, 0, 0])
                    }
                };
                if blocking && r == -libc::EAGAIN as i64 {
                    continue;
                }
                return with_data(r, buf);
            }
        }
        op::WRITE => {
            let f = s.file(a[0])?;
            send_all(f.as_raw_fd(), bulk, 0, &[], client)
        }
        op::SENDTO => {
            let f = s.file(a[0])?;
            let alen = a[4] as usize;
            if alen > bulk.len() {
                return done(-libc::EINVAL as i64);
            }
            let (payload, addr) = bulk.split_at(bulk.len() - alen);
            send_all(f.as_raw_fd(), payload, a[3] as i32, addr, client)
        }
        op::PREAD64 => {
            let f = s.file(a[0])?;
            let n = cap(a[2], ol);
            let mut buf = read_buf(n);
            // SAFETY: buf has room for n bytes.
            let r = unsafe { sys(libc::SYS_pread64, [f.as_raw_fd() as i64, buf.as_mut_ptr() as i64, n as i64, ai(3), 0, 0]) };
            with_data(r, buf)
        }
        op::PWRITE64 => {
            let f = s.file(a[0])?;
            // SAFETY: bulk is live for the call.
            done(unsafe { sys(libc::SYS_pwrite64, [f.as_raw_fd() as i64, bp, bulk.len() as i64, ai(3), 0, 0]) })
        }
        op::CLOSE => match i32::try_from(ai(0)).ok().and_then(|n| lock(&s.files).remove(&n)) {
            Some(_) => done(0),
            None => done(-libc::EBADF as i64),
        },
        op::FSTAT => {
            let f = s.file(a[0])?;
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is a live struct stat.
            let r = unsafe { sys(libc::SYS_fstat, [f.as_raw_fd() as i64, &mut st as *mut _ as i64, 0, 0, 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, struct_bytes(&st)))
        }
        op::POLL => poll(s, a[1] as usize, a[2] as i64 as i32, bulk, client),
        op::LSEEK => {
            let f = s.file(a[0])?;
            // SAFETY: integer arguments only.
            done(unsafe { sys(libc::SYS_lseek, [f.as_raw_fd() as i64, ai(1), ai(2), 0, 0, 0]) })
        }
        op::IOCTL => ioctl(s, a[0], a[1], bulk, ol),
        op::SOCKET => {
            let ty = (ai(1) as i32) | libc::SOCK_CLOEXEC;
            // SAFETY: integer arguments only.
            let r = unsafe { libc::socket(ai(0) as i32, ty, ai(2) as i32) };
            if r < 0 {
                return done(neg_errno());
            }
            // SAFETY: r is a fresh descriptor we own.
            done(s.bind(a[3], unsafe { OwnedFd::from_raw_fd(r) }))
        }
        op::CONNECT => {
            let f = s.file(a[0])?;
            connect(f.as_raw_fd(), bulk)
        }
        op::RECVFROM => {
            let f = s.file(a[0])?;
            recvfrom(f.as_raw_fd(), a[2], ai(3) as i32, a[4] == 1, ol, client)
        }
        op::SHUTDOWN | op::LISTEN => {
            let f = s.file(a[0])?;
            let nr = if req.op == op::SHUTDOWN { libc::SYS_shutdown } else { libc::SYS_listen };
            // SAFETY: integer arguments only.
            done(unsafe { sys(nr, [f.as_raw_fd() as i64, ai(1), 0, 0, 0, 0]) })
        }
        op::BIND => {
            let f = s.file(a[0])?;
            // SAFETY: bulk holds the sockaddr, live for the call.
            done(unsafe { sys(libc::SYS_bind, [f.as_raw_fd() as i64, bp, bulk.len() as i64, 0, 0, 0]) })
        }
        op::GETSOCKNAME | op::GETPEERNAME => {
            let f = s.file(a[0])?;
            let mut addr = [0u8; 128];
            let mut len: libc::socklen_t = 128;
            let nr = if req.op == op::GETSOCKNAME { libc::SYS_getsockname } else { libc::SYS_getpeername };
            // SAFETY: addr and len are live; len says addr's size.
            let r = unsafe { sys(nr, [f.as_raw_fd() as i64, addr.as_mut_ptr() as i64, &mut len as *mut _ as i64, 0, 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, addr[..(len as usize).min(128)].to_vec()))
        }
        op::SETSOCKOPT => {
            let f = s.file(a[0])?;
            // SAFETY: bulk holds the value, live for the call.
            done(unsafe { sys(libc::SYS_setsockopt, [f.as_raw_fd() as i64, ai(1), ai(2), bp, bulk.len() as i64, 0]) })
        }
        op::GETSOCKOPT => {
            let f = s.file(a[0])?;
            let mut buf = vec![0u8; (a[3] as usize).min(4096)];
            let mut len = buf.len() as libc::socklen_t;
            // SAFETY: buf and len are live; len says buf's size.
            let r = unsafe { sys(libc::SYS_getsockopt, [f.as_raw_fd() as i64, ai(1), ai(2), buf.as_mut_ptr() as i64, &mut len as *mut _ as i64, 0]) };
            if r < 0 {
                return done(r);
            }
            buf.truncate(len as usize);
            Ok((0, buf))
        }
        op::FCNTL => fcntl(s, a[0], ai(1) as i32, ai(2), bulk, client),
        op::FLOCK => {
            let f = s.file(a[0])?;
            let operation = ai(1) as i32;
            if operation & (libc::LOCK_NB | libc::LOCK_UN) != 0 {
                // SAFETY: integer arguments only.
                return done(unsafe { sys(libc::SYS_flock, [f.as_raw_fd() as i64, operation as i64, 0, 0, 0, 0]) });
            }
            loop {
                // SAFETY: integer arguments only.
                let r = unsafe { sys(libc::SYS_flock, [f.as_raw_fd() as i64, (operation | libc::LOCK_NB) as i64, 0, 0, 0, 0]) };
                if r != -libc::EWOULDBLOCK as i64 {
                    return done(r);
                }
                nap(client, LOCK_RETRY_MS)?;
            }
        }
        op::FSYNC | op::FDATASYNC | op::FTRUNCATE | op::FCHMOD | op::FCHOWN | op::FADVISE64 | op::FALLOCATE => {
            let f = s.file(a[0])?;
            let nr = match req.op {
                op::FSYNC => libc::SYS_fsync,
                op::FDATASYNC => libc::SYS_fdatasync,
                op::FTRUNCATE => libc::SYS_ftruncate,
                op::FCHMOD => libc::SYS_fchmod,
                op::FCHOWN => libc::SYS_fchown,
                op::FADVISE64 => libc::SYS_fadvise64,
                _ => libc::SYS_fallocate, // op::FALLOCATE
            };
            // SAFETY: integer arguments only.
            done(unsafe { sys(nr, [f.as_raw_fd() as i64, ai(1), ai(2), ai(3), 0, 0]) })
        }
        op::TRUNCATE | op::STATFS => {
            let cwd = lock(&s.cwd).clone();
            let p = session_paths(s, bulk, 0, 1)?;
            let full = at_cwd(&cwd, &p[0])?;
            if req.op == op::TRUNCATE {
                // SAFETY: full is NUL-terminated and live.
                done(unsafe { sys(libc::SYS_truncate, [full.as_ptr() as i64, ai(1), 0, 0, 0, 0]) })
            } else {
                // SAFETY: statfs is plain data.
                let mut st: libc::statfs = unsafe { std::mem::zeroed() };
                // SAFETY: full is NUL-terminated, st is a live struct statfs.
                let r = unsafe { sys(libc::SYS_statfs, [full.as_ptr() as i64, &mut st as *mut _ as i64, 0, 0, 0, 0]) };
                if r < 0 {
                    return done(r);
                }
                Ok((0, struct_bytes(&st)))
            }
        }
        op::FSTATFS => {
            let f = s.file(a[0])?;
            // SAFETY: statfs is plain data.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: st is a live struct statfs.
            let r = unsafe { sys(libc::SYS_fstatfs, [f.as_raw_fd() as i64, &mut st as *mut _ as i64, 0, 0, 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, struct_bytes(&st)))
        }
        op::GETCWD => {
            let cwd = lock(&s.cwd).clone();
            let mut p = match std::fs::read_link(format!("/proc/self/fd/{}", cwd.as_raw_fd())) {
                Ok(p) => p.into_os_string().into_encoded_bytes(),
                Err(e) => return done(-i64::from(e.raw_os_error().unwrap_or(libc::EIO))),
            };
            p.push(0);
            if p.len() > a[1] as usize || p.len() > ol as usize {
                return done(-libc::ERANGE as i64);
            }
            Ok((p.len() as i64, p))
        }
        op::CHDIR => {
            let cwd = lock(&s.cwd).clone();
            let p = session_paths(s, bulk, 0, 1)?;
            // SAFETY: p[0] is NUL-terminated and live.
            let r = unsafe { libc::openat(cwd.as_raw_fd(), p[0].as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if r < 0 {
                return done(neg_errno());
            }
            // SAFETY: r is a fresh descriptor we own.
            *lock(&s.cwd) = Arc::new(unsafe { OwnedFd::from_raw_fd(r) });
            done(0)
        }
        op::FCHDIR => {
            let f = s.file(a[0])?;
            if file_type(f.as_raw_fd()) != libc::S_IFDIR {
                return done(-libc::ENOTDIR as i64);
            }
            *lock(&s.cwd) = f;
            done(0)
        }
        op::GETDENTS64 => {
            let f = s.file(a[0])?;
            let n = cap(a[2], ol);
            let mut buf = vec![0u8; n];
            // SAFETY: buf is a live buffer of n bytes.
            let r = unsafe { sys(libc::SYS_getdents64, [f.as_raw_fd() as i64, buf.as_mut_ptr() as i64, n as i64, 0, 0, 0]) };
            with_data(r, buf)
        }
        op::OPENAT => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let flags = ai(2) | libc::O_CLOEXEC as i64;
            // SAFETY: p[0] is NUL-terminated and live.
            let r = unsafe { sys(libc::SYS_openat, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, flags, ai(3), 0, 0]) };
            if r < 0 {
                return done(r);
            }
            // SAFETY: r is a fresh descriptor we own.
            done(s.bind(a[4], unsafe { OwnedFd::from_raw_fd(r as RawFd) }))
        }
        op::MKDIRAT | op::MKNODAT | op::FCHOWNAT | op::UNLINKAT | op::FCHMODAT | op::FACCESSAT2 => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let nr = match req.op {
                op::MKDIRAT => libc::SYS_mkdirat,
                op::MKNODAT => libc::SYS_mknodat,
                op::FCHOWNAT => libc::SYS_fchownat,
                op::UNLINKAT => libc::SYS_unlinkat,
                op::FCHMODAT => libc::SYS_fchmodat,
                _ => libc::SYS_faccessat2, // op::FACCESSAT2
            };
            // SAFETY: p[0] is NUL-terminated and live; the rest are integers.
            done(unsafe { sys(nr, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, ai(2), ai(3), ai(4), 0]) })
        }
        op::NEWFSTATAT => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: p[0] is NUL-terminated, st is a live struct stat.
            let r = unsafe { sys(libc::SYS_newfstatat, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, &mut st as *mut _ as i64, ai(3), 0, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, struct_bytes(&st)))
        }
        op::LINKAT | op::RENAMEAT2 => {
            let od = s.dir(a[0])?;
            let nd = s.dir(a[2])?;
            let p = session_paths(s, bulk, 0, 2)?;
            let nr = if req.op == op::LINKAT { libc::SYS_linkat } else { libc::SYS_renameat2 };
            // SAFETY: both paths are NUL-terminated and live.
            done(unsafe { sys(nr, [od.as_raw_fd() as i64, p[0].as_ptr() as i64, nd.as_raw_fd() as i64, p[1].as_ptr() as i64, ai(4), 0]) })
        }
        op::SYMLINKAT => {
            let d = s.dir(a[1])?;
            // (the target is the link's text, stored as given; only linkpath is a path)
            let p = paths(bulk, 0, 2)?;
            // SAFETY: both paths are NUL-terminated and live.
            done(unsafe { sys(libc::SYS_symlinkat, [p[0].as_ptr() as i64, d.as_raw_fd() as i64, p[1].as_ptr() as i64, 0, 0, 0]) })
        }
        op::READLINKAT => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let n = cap(a[3], ol).min(1 << 16);
            let mut buf = vec![0u8; n];
            // SAFETY: p[0] is NUL-terminated; buf is a live buffer of n bytes.
            let r = unsafe { sys(libc::SYS_readlinkat, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, buf.as_mut_ptr() as i64, n as i64, 0, 0]) };
            with_data(r, buf)
        }
        op::UTIMENSAT => {
            let d = s.dir(a[0])?;
            let (times, skip) = if a[2] == 1 {
                if bulk.len() < 32 {
                    return done(-libc::EFAULT as i64);
                }
                (bp, 32)
            } else {
                (0, 0)
            };
            let p = session_paths(s, bulk, skip, 1)?;
            let path = if p[0].as_bytes().is_empty() { 0 } else { p[0].as_ptr() as i64 };
            // SAFETY: times (if any) points at 32 bytes of bulk; path is NUL-terminated or null.
            done(unsafe { sys(libc::SYS_utimensat, [d.as_raw_fd() as i64, path, times, ai(3), 0, 0]) })
        }
        op::ACCEPT4 => {
            let f = s.file(a[0])?;
            let fd = f.as_raw_fd();
            let flags = (ai(2) as i32 & libc::SOCK_NONBLOCK) | libc::SOCK_CLOEXEC;
            let blocking = !nonblocking(fd);
            loop {
                if blocking {
                    wait(fd, true, libc::POLLIN, Some(client))?;
                }
                let mut addr = [0u8; 128];
                let mut len: libc::socklen_t = 128;
                // SAFETY: addr and len are live; len says addr's size.
                let r = unsafe { sys(libc::SYS_accept4, [fd as i64, addr.as_mut_ptr() as i64, &mut len as *mut _ as i64, flags as i64, 0, 0]) };
                if blocking && r == -libc::EAGAIN as i64 {
                    continue;
                }
                if r < 0 {
                    return done(r);
                }
                // SAFETY: r is a fresh descriptor we own.
                let ret = s.bind(a[3], unsafe { OwnedFd::from_raw_fd(r as RawFd) });
                let data = if a[4] == 1 { addr[..(len as usize).min(128)].to_vec() } else { Vec::new() };
                return Ok((ret, data));
            }
        }
        op::DUP3 => {
            if a[0] == a[1] {
                return done(-libc::EINVAL as i64);
            }
            let f = s.file(a[0])?;
            // SAFETY: integer arguments only.
            let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if r < 0 {
                return done(neg_errno());
            }
            // SAFETY: r is a fresh descriptor we own.
            done(s.bind(a[1], unsafe { OwnedFd::from_raw_fd(r) }))
        }
        op::STATX => {
            let d = s.dir(a[0])?;
            let p = session_paths(s, bulk, 0, 1)?;
            let mut buf = [0u8; 256];
            // SAFETY: p[0] is NUL-terminated; buf is 256 bytes, the size of struct statx.
            let r = unsafe { sys(libc::SYS_statx, [d.as_raw_fd() as i64, p[0].as_ptr() as i64, ai(2), ai(3), buf.as_mut_ptr() as i64, 0]) };
            if r < 0 {
                return done(r);
            }
            Ok((0, buf.to_vec()))
        }
        _ => done(-libc::ENOSYS as i64),
    }
}

/// write / sendto: a call that may block writes everything. Before the first byte has gone
/// the connection stirring ends it as [`wait`] says; after that, a cancel or the socket's
/// send timeout ends it with the count written so far (as the kernel does), and a body
/// that went away does not stop it (its answer waits for the resent request).
fn send_all(fd: RawFd, data: &[u8], flags: i32, addr: &[u8], client: RawFd) -> Answer {
    let sock = file_type(fd) == libc::S_IFSOCK;
    let (ap, al) = if addr.is_empty() { (0, 0) } else { (addr.as_ptr() as i64, addr.len() as i64) };
    let once = |buf: &[u8], extra: i32| -> i64 {
        // SAFETY: buf and addr are live for the call.
        unsafe {
            if sock {
                sys(libc::SYS_sendto, [fd as i64, buf.as_ptr() as i64, buf.len() as i64, (flags | extra | libc::MSG_NOSIGNAL) as i64, ap, al])
            } else {
                sys(libc::SYS_write, [fd as i64, buf.as_ptr() as i64, buf.len() as i64, 0, 0, 0])
            }
        }
    };
    if !may_block(fd) || flags & libc::MSG_DONTWAIT != 0 {
        return done(once(data, 0));
    }
    let mut sent = 0usize;
    let mut watch = Some(client);
    loop {
        match wait(fd, sock, libc::POLLOUT, watch) {
            Ok(()) => {}
            Err(e) if sent == 0 => return Err(e),
            Err(Stop::Abandon) => {
                watch = None;
                continue;
            }
            Err(Stop::Errno(_)) => return done(sent as i64),
        }
        let rest = &data[sent..];
        let r = if sock {
            once(rest, libc::MSG_DONTWAIT)
        } else {
            // A pipe or terminal that polls writable takes PIPE_BUF bytes without blocking.
            once(&rest[..rest.len().min(libc::PIPE_BUF)], 0)
        };
        if r == -libc::EAGAIN as i64 || r == -libc::EINTR as i64 {
            continue;
        }
        if r < 0 {
            return done(if sent > 0 { sent as i64 } else { r });
        }
        sent += r as usize;
        if sent >= data.len() {
            return done(sent as i64);
        }
    }
}

fn recvfrom(fd: RawFd, len: u64, flags: i32, want_addr: bool, out_len: u32, client: RawFd) -> Answer {
    let head = if want_addr { 4 + wire::RECV_ADDR_AREA } else { 0 };
    let n = (len as usize).min((out_len as usize).saturating_sub(head)).min(wire::MAX_IO);
    let mut buf = vec![0u8; head + n];
    let blocking = may_block(fd) && flags & libc::MSG_DONTWAIT == 0;
    loop {
        if blocking {
            wait(fd, true, libc::POLLIN, Some(client))?;
        }
        let mut addr = [0u8; wire::RECV_ADDR_AREA];
        let mut alen = wire::RECV_ADDR_AREA as libc::socklen_t;
        let (ap, lp) = if want_addr { (addr.as_mut_ptr() as i64, &mut alen as *mut _ as i64) } else { (0, 0) };
        let fl = flags | if blocking { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: buf[head..] has n bytes; addr and alen are live.
        let r = unsafe { sys(libc::SYS_recvfrom, [fd as i64, buf[head..].as_mut_ptr() as i64, n as i64, fl as i64, ap, lp]) };
        if blocking && r == -libc::EAGAIN as i64 {
            continue;
        }
        if r < 0 {
            return done(r);
        }
        if want_addr {
            buf[..4].copy_from_slice(&alen.to_le_bytes());
            let k = (alen as usize).min(wire::RECV_ADDR_AREA);
            buf[4..4 + k].copy_from_slice(&addr[..k]);
        }
        // MSG_TRUNC may report more than was copied.
        buf.truncate(head + (r as usize).min(n));
        return Ok((r, buf));
    }
}

/// connect: once started it cannot be taken back, so a blocking connect runs to its end
/// even if the body goes away; its answer is then replayed to the resent request.
fn connect(fd: RawFd, addr: &[u8]) -> Answer {
    let ap = addr.as_ptr() as i64;
    if !may_block(fd) {
        // SAFETY: addr is live for the call.
        return done(unsafe { sys(libc::SYS_connect, [fd as i64, ap, addr.len() as i64, 0, 0, 0]) });
    }
    // SAFETY: integer arguments only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: integer arguments only.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) };
    // SAFETY: addr is live for the call.
    let mut r = unsafe { sys(libc::SYS_connect, [fd as i64, ap, addr.len() as i64, 0, 0, 0]) };
    if r == -libc::EINPROGRESS as i64 {
        r = match wait(fd, true, libc::POLLOUT, None) {
            Ok(()) => {
                let mut err: i32 = 0;
                let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
                // SAFETY: err and len are live; len says err's size.
                let g = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut i32 as *mut libc::c_void, &mut len) };
                if g < 0 {
                    neg_errno()
                } else {
                    -i64::from(err)
                }
            }
            // (a blocking connect past SO_SNDTIMEO goes on in the background)
            Err(Stop::Errno(e)) if e == -libc::EAGAIN as i64 => -libc::EINPROGRESS as i64,
            Err(Stop::Errno(e)) => e,
            Err(Stop::Abandon) => -libc::EINTR as i64,
        };
    }
    // SAFETY: integer arguments only.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    done(r)
}

fn poll(s: &Session, nfds: usize, timeout: i32, bulk: &[u8], client: RawFd) -> Answer {
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
            return Err(stirred(client));
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

fn ioctl(s: &Session, fd: u64, request: u64, bulk: &[u8], out_len: u32) -> Answer {
    let f = s.file(fd)?;
    let req = request as libc::c_ulong;
    let (inp, outp) = match wire::ioctl_shape(request) {
        wire::IoctlShape::Forward { input, output } => (input, output),
        // close-on-exec is the body's business; ours is always set
        wire::IoctlShape::FdFlag => return done(0),
        wire::IoctlShape::Unsupported => return done(-libc::ENOTTY as i64),
    };
    let mut buf = [0u8; 64];
    let k = inp.min(bulk.len());
    buf[..k].copy_from_slice(&bulk[..k]);
    // SAFETY: buf is 64 bytes, more than any of the structs these requests use.
    let r = unsafe { sys(libc::SYS_ioctl, [f.as_raw_fd() as i64, req as i64, buf.as_mut_ptr() as i64, 0, 0, 0]) };
    if r < 0 {
        return done(r);
    }
    Ok((r, buf[..outp.min(out_len as usize)].to_vec()))
}

fn fcntl(s: &Session, fd: u64, cmd: i32, arg: i64, bulk: &[u8], client: RawFd) -> Answer {
    let f = s.file(fd)?;
    let fd = f.as_raw_fd();
    match cmd {
        libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => {
            const FL: usize = std::mem::size_of::<libc::flock>();
            if bulk.len() < FL {
                return done(-libc::EFAULT as i64);
            }
            // SAFETY: flock is plain data; bulk has at least FL bytes.
            let mut fl: libc::flock = unsafe { std::ptr::read_unaligned(bulk.as_ptr() as *const libc::flock) };
            // Process-associated locks would all belong to this daemon (one pid for every
            // session, dropped by any close): take them per open file instead.
            let (try_cmd, wait_cmd) = match cmd {
                libc::F_GETLK | libc::F_OFD_GETLK => (libc::F_OFD_GETLK, false),
                libc::F_SETLK | libc::F_OFD_SETLK => (libc::F_OFD_SETLK, false),
                _ => (libc::F_OFD_SETLK, true),
            };
            fl.l_pid = 0;
            loop {
                // SAFETY: fl is a live struct flock.
                let r = unsafe { sys(libc::SYS_fcntl, [fd as i64, try_cmd as i64, &mut fl as *mut _ as i64, 0, 0, 0]) };
                if wait_cmd && (r == -libc::EAGAIN as i64 || r == -libc::EACCES as i64) {
                    nap(client, LOCK_RETRY_MS)?;
                    continue;
                }
                if r < 0 {
                    return done(r);
                }
                return Ok((r, struct_bytes(&fl)));
            }
        }
        libc::F_GETFD | libc::F_SETFD => done(0),
        libc::F_GETFL | libc::F_SETFL | libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ | libc::F_GET_SEALS | libc::F_ADD_SEALS => {
            // SAFETY: integer arguments only.
            done(unsafe { sys(libc::SYS_fcntl, [fd as i64, cmd as i64, arg, 0, 0, 0]) })
        }
        _ => done(-libc::EINVAL as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_and_checked() {
        let p = paths(b"abc\0de\0", 0, 2).ok().unwrap();
        assert_eq!(p[0].as_bytes(), b"abc");
        assert_eq!(p[1].as_bytes(), b"de");
        assert!(paths(b"abc", 0, 1).is_err(), "no NUL");
        assert!(paths(b"abc\0", 0, 2).is_err(), "one path short");
        assert!(paths(b"", 5, 1).is_err(), "skip beyond the bulk");
    }

    #[test]
    fn tokens_compare_whole() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] = 0;
        assert!(!ct_eq(&a, &b));
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }
}
