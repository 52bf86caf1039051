//! rsys over real connections: a process's session is opened over the local socket with
//! its descriptors (a pipe, a regular file, a deleted file); a raw rsys client (this test,
//! playing the body) has its calls performed at home on them, exactly once; the stub learns
//! how the body ended; bad peers are dropped while other sessions keep working.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::auth;
use proto::rsys::{self as wire, op, Ctl, Hello, HelloReply, Req, Resp};
use proto::{FrameReader, FrameWriter, Msg, Role};
use shadowd::handoff::StubConn;

const CWD: u64 = libc::AT_FDCWD as i64 as u64;

/// A shadowd on 127.0.0.1, SIGKILLed on drop.
struct Daemon {
    child: Child,
    addr: String,
    state: PathBuf,
    key: auth::ClusterKey,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Daemon {
    let key_path = dir.join("cluster.key");
    let key = auth::create_key_file(&key_path, false).unwrap();
    let state = dir.join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowd"))
        .args(["--node", "home", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .arg("--key")
        .arg(&key_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("shadowd.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let d = Daemon { child, addr, state, key };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(d.state.join("shadow.sock").exists() && d.state.join("rsys.addr").exists()) {
        assert!(Instant::now() < deadline, "no shadow.sock / rsys.addr");
        std::thread::sleep(Duration::from_millis(10));
    }
    d
}

fn pipe() -> (i32, i32) {
    let mut p = [0i32; 2];
    // SAFETY: pipe fills the array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

fn write_fd(fd: i32, b: &[u8]) {
    // SAFETY: b is live for the call.
    assert_eq!(unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) }, b.len() as isize);
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this test owns.
    unsafe { libc::close(fd) };
}

fn open_session(d: &Daemon, pid: u32, cwd: &Path, files: &[(i32, i32)]) -> StubConn {
    StubConn::open(&d.state.join("shadow.sock"), pid, cwd, files).unwrap()
}

fn hello(stub: &StubConn, kind: u32, node: &str, body_pid: u32) -> Hello {
    let mut token = [0u8; 32];
    token.copy_from_slice(&stub.token);
    let mut n = [0u8; 32];
    n[..node.len()].copy_from_slice(node.as_bytes());
    Hello { token, kind, vpid: 1, body_pid, flags: 0, node: n }
}

/// Connect and say hello; the server's answer.
fn connect_raw(addr: &str, h: &[u8]) -> (TcpStream, HelloReply) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(h).unwrap();
    let mut b = [0u8; wire::HELLO_REPLY_LEN];
    s.read_exact(&mut b).unwrap();
    (s, HelloReply::decode(&b))
}

/// The body's side of a calls connection.
struct Body {
    s: TcpStream,
    chan: u64,
}

impl Body {
    fn connect(stub: &StubConn) -> Body {
        let (s, r) = connect_raw(&stub.rsys_addr, &hello(stub, wire::KIND_CALLS, "", 0).encode());
        assert_eq!(r.status, 0);
        Body { s, chan: 7 << 8 }
    }

    fn send(&mut self, seq: u64, op: u32, args: [u64; 6], bulk: &[u8], out_len: u32) {
        let req = Req { op, flags: 0, chan: self.chan, seq, args, bulk_len: bulk.len() as u32, out_len };
        let mut b = req.encode().to_vec();
        b.extend_from_slice(bulk);
        self.s.write_all(&b).unwrap();
    }

    fn answer(&mut self, seq: u64) -> (i64, Vec<u8>) {
        let mut h = [0u8; wire::RESP_LEN];
        self.s.read_exact(&mut h).unwrap();
        let r = Resp::decode(&h);
        assert_eq!(r.seq, seq);
        let mut data = vec![0u8; r.data_len as usize];
        self.s.read_exact(&mut data).unwrap();
        (r.ret, data)
    }

    fn call(&mut self, seq: u64, op: u32, args: [u64; 6], bulk: &[u8], out_len: u32) -> (i64, Vec<u8>) {
        self.send(seq, op, args, bulk, out_len);
        self.answer(seq)
    }
}

/// Calls with a sequence counter.
struct Calls {
    b: Body,
    seq: u64,
}

impl Calls {
    fn call(&mut self, op: u32, args: [u64; 6], bulk: &[u8], out_len: u32) -> (i64, Vec<u8>) {
        self.seq += 1;
        self.b.call(self.seq, op, args, bulk, out_len)
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn stat_of(b: &[u8]) -> libc::stat {
    assert_eq!(b.len(), std::mem::size_of::<libc::stat>());
    // SAFETY: b holds a whole struct stat written by the kernel.
    unsafe { std::ptr::read_unaligned(b.as_ptr() as *const libc::stat) }
}

fn sockaddr_in(addr: std::net::SocketAddrV4) -> Vec<u8> {
    // SAFETY: sockaddr_in is plain data.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as u16;
    a.sin_port = addr.port().to_be();
    a.sin_addr.s_addr = u32::from_ne_bytes(addr.ip().octets());
    // SAFETY: a is a fully initialised plain struct.
    unsafe { std::slice::from_raw_parts(&a as *const _ as *const u8, std::mem::size_of::<libc::sockaddr_in>()) }.to_vec()
}

#[test]
fn calls_are_performed_on_the_sessions_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("data.txt"), b"0123456789").unwrap();
    let data = std::fs::File::options().read(true).write(true).open(home.join("data.txt")).unwrap();
    let gone_path = dir.path().join("gone");
    let mut gone = std::fs::File::options().create(true).truncate(true).read(true).write(true).open(&gone_path).unwrap();
    gone.write_all(b"deleted but open").unwrap();
    use std::io::Seek;
    gone.seek(std::io::SeekFrom::Start(0)).unwrap();
    std::fs::remove_file(&gone_path).unwrap();
    let (pr, pw) = pipe();
    let stub = open_session(&d, std::process::id(), &home, &[(0, pr), (5, data.as_raw_fd()), (7, gone.as_raw_fd())]);
    close(pr);
    drop(data);
    drop(gone);
    assert_eq!(std::fs::read_to_string(d.state.join("rsys.addr")).unwrap().trim(), stub.rsys_addr);
    let mut c = Calls { b: Body::connect(&stub), seq: 0 };

    // the pipe: what home writes reaches the body
    write_fd(pw, b"typed at home");
    assert_eq!(c.call(op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (13, b"typed at home".to_vec()));
    // the regular file
    assert_eq!(c.call(op::PREAD64, [5, 0, 4, 2, 0, 0], &[], 4096), (4, b"2345".to_vec()));
    assert_eq!(c.call(op::PWRITE64, [5, 0, 0, 0, 0, 0], b"AB", 0).0, 2);
    assert_eq!(std::fs::read(home.join("data.txt")).unwrap(), b"AB23456789");
    assert_eq!(c.call(op::PREAD64, [5, 0, 100, 0, 0, 0], &[], 3), (3, b"AB2".to_vec()), "answers fit out_len");
    // the deleted file
    assert_eq!(c.call(op::READ, [7, 0, 7, 0, 0, 0], &[], 100), (7, b"deleted".to_vec()));

    // a new file relative to the session cwd, bound at the number the body chose
    let flags = (libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC) as u64;
    assert_eq!(c.call(op::OPENAT, [CWD, 0, flags, 0o644, 20, 0], &cstr("new.txt"), 0).0, 20);
    assert_eq!(c.call(op::WRITE, [20, 0, 0, 0, 0, 0], b"fresh", 0).0, 5);
    let (r, st) = c.call(op::FSTAT, [20, 0, 0, 0, 0, 0], &[], 4096);
    assert_eq!((r, stat_of(&st).st_size), (0, 5));
    assert_eq!(c.call(op::CLOSE, [20, 0, 0, 0, 0, 0], &[], 0).0, 0);
    assert_eq!(c.call(op::CLOSE, [20, 0, 0, 0, 0, 0], &[], 0).0, -libc::EBADF as i64);
    assert_eq!(std::fs::read(home.join("new.txt")).unwrap(), b"fresh");
    // O_CLOEXEC on everything the session opens (look at the daemon's own fd table)
    assert_eq!(c.call(op::OPENAT, [CWD, 0, libc::O_RDONLY as u64, 0, 21, 0], &cstr("new.txt"), 0).0, 21);
    let (r, st) = c.call(op::NEWFSTATAT, [CWD, 0, 0, 0, 0, 0], &cstr("new.txt"), 4096);
    assert_eq!((r, stat_of(&st).st_size), (0, 5));

    // names and directories
    assert_eq!(c.call(op::MKDIRAT, [CWD, 0, 0o755, 0, 0, 0], &cstr("sub"), 0).0, 0);
    assert_eq!(c.call(op::MKDIRAT, [CWD, 0, 0o755, 0, 0, 0], &cstr("sub"), 0).0, -libc::EEXIST as i64);
    let mut two = cstr("new.txt");
    two.extend(cstr("sub/moved.txt"));
    assert_eq!(c.call(op::RENAMEAT2, [CWD, 0, CWD, 0, 0, 0], &two, 0).0, 0);
    assert!(home.join("sub/moved.txt").is_file() && !home.join("new.txt").exists());
    let dflags = (libc::O_RDONLY | libc::O_DIRECTORY) as u64;
    assert_eq!(c.call(op::OPENAT, [CWD, 0, dflags, 0, 22, 0], &cstr("sub"), 0).0, 22);
    let (n, ents) = c.call(op::GETDENTS64, [22, 0, 4096, 0, 0, 0], &[], 4096);
    assert!(n > 0 && ents.windows(9).any(|w| w == b"moved.txt"), "getdents lists the file");
    let (n, cwd) = c.call(op::GETCWD, [0, 4096, 0, 0, 0, 0], &[], 4096);
    let mut want = home.as_os_str().as_encoded_bytes().to_vec();
    want.push(0);
    assert_eq!((n as usize, &cwd), (want.len(), &want));
    assert_eq!(c.call(op::CHDIR, [0; 6], &cstr("sub"), 0).0, 0);
    let (_, cwd) = c.call(op::GETCWD, [0, 4096, 0, 0, 0, 0], &[], 4096);
    assert!(cwd.ends_with(b"/home/sub\0"), "{}", String::from_utf8_lossy(&cwd));
    let cflags = (libc::O_CREAT | libc::O_WRONLY) as u64;
    assert_eq!(c.call(op::OPENAT, [CWD, 0, cflags, 0o600, 23, 0], &cstr("here.txt"), 0).0, 23);
    assert!(home.join("sub/here.txt").is_file(), "relative to the new cwd");
    assert_eq!(c.call(op::UNLINKAT, [CWD, 0, 0, 0, 0, 0], &cstr("moved.txt"), 0).0, 0);
    assert!(!home.join("sub/moved.txt").exists());
    assert_eq!(c.call(op::FCHDIR, [7, 0, 0, 0, 0, 0], &[], 0).0, -libc::ENOTDIR as i64);

    // a socket connected at home to a local echo server
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let eaddr = match echo.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let server = std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).unwrap();
        s.write_all(&b[..n]).unwrap();
    });
    assert_eq!(c.call(op::SOCKET, [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 30, 0, 0], &[], 0).0, 30);
    assert_eq!(c.call(op::CONNECT, [30, 0, 0, 0, 0, 0], &sockaddr_in(eaddr), 0).0, 0);
    assert_eq!(c.call(op::SENDTO, [30, 0, 0, 0, 0, 0], b"ping", 0).0, 4);
    assert_eq!(c.call(op::RECVFROM, [30, 0, 100, 0, 0, 0], &[], 100), (4, b"ping".to_vec()));
    server.join().unwrap();
    let (r, peer) = c.call(op::GETPEERNAME, [30, 0, 0, 0, 0, 0], &[], 128);
    assert_eq!((r, peer), (0, sockaddr_in(eaddr)));

    // errors as the kernel would give them
    assert_eq!(c.call(op::READ, [99, 0, 10, 0, 0, 0], &[], 10).0, -libc::EBADF as i64);
    const NO_SUCH_OP: u32 = 9999;
    assert_eq!(c.call(NO_SUCH_OP, [0; 6], &[], 0).0, -libc::ENOSYS as i64);
    assert_eq!(c.call(op::PING, [0; 6], &[], 0).0, 0);
    close(pw);
    assert_eq!(c.call(op::READ, [0, 0, 100, 0, 0, 0], &[], 100).0, 0, "end of file once home closed the pipe");
}

#[test]
fn a_blocked_call_is_abandoned_and_a_resent_one_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let (pr, pw) = pipe();
    let out = std::fs::File::create(dir.path().join("out")).unwrap();
    let stub = open_session(&d, std::process::id(), dir.path(), &[(0, pr), (1, out.as_raw_fd())]);
    drop(out);

    // a read blocks on the empty pipe; its body goes away (migration) while it waits
    let mut a = Body::connect(&stub);
    a.send(1, op::READ, [0, 0, 100, 0, 0, 0], &[], 100);
    std::thread::sleep(Duration::from_millis(300));
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    // the abandoned read consumed nothing: home still finds the bytes in the pipe
    write_fd(pw, b"xy");
    std::thread::sleep(Duration::from_millis(200));
    let mut p = [libc::pollfd { fd: pr, events: libc::POLLIN, revents: 0 }];
    // SAFETY: p is a live array of one pollfd.
    assert_eq!(unsafe { libc::poll(p.as_mut_ptr(), 1, 0) }, 1, "the bytes are still in the pipe");
    let mut two = [0u8; 2];
    // SAFETY: two is a live 2-byte buffer.
    assert_eq!(unsafe { libc::read(pr, two.as_mut_ptr().cast(), 2) }, 2);
    assert_eq!(&two, b"xy");
    close(pr);
    write_fd(pw, b"abc");
    // the body, from its next node, resends the same request: it runs afresh, once
    let mut b = Body::connect(&stub);
    assert_eq!(b.call(1, op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (3, b"abc".to_vec()));
    write_fd(pw, b"def");
    assert_eq!(b.call(2, op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (3, b"def".to_vec()));

    // a completed call resent (its answer was lost) is answered from memory
    write_fd(pw, b"ghi");
    let mut c = Body::connect(&stub);
    assert_eq!(c.call(2, op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (3, b"def".to_vec()), "replayed, not re-read");
    assert_eq!(c.call(3, op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (3, b"ghi".to_vec()), "nothing lost");
    assert_eq!(c.call(4, op::WRITE, [1, 0, 0, 0, 0, 0], b"once", 0).0, 4);
    let mut e = Body::connect(&stub);
    assert_eq!(e.call(4, op::WRITE, [1, 0, 0, 0, 0, 0], b"once", 0).0, 4);
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"once", "a replayed write is not done twice");
    // another channel has its own sequence
    e.chan = 8 << 8;
    assert_eq!(e.call(4, op::WRITE, [1, 0, 0, 0, 0, 0], b"+two", 0).0, 4);
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"once+two");
    close(pw);
}

/// op::CANCEL: a call still waiting ends with EINTR having consumed nothing; a cancel for
/// a call already answered is ignored (no answer of its own); bytes that are no cancel
/// abandon the waiting call (the connection is dropped).
#[test]
fn a_waiting_call_is_cancelled_with_eintr() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let (pr, pw) = pipe();
    let stub = open_session(&d, std::process::id(), dir.path(), &[(0, pr)]);
    let mut b = Body::connect(&stub);
    let poll_in = |fd: i32| {
        let mut p = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: p is a live array of one pollfd.
        unsafe { libc::poll(p.as_mut_ptr(), 1, 0) }
    };

    // a read waits on the empty pipe, and is cancelled
    b.send(1, op::READ, [0, 0, 100, 0, 0, 0], &[], 100);
    std::thread::sleep(Duration::from_millis(200));
    b.send(1, op::CANCEL, [0; 6], &[], 0);
    assert_eq!(b.answer(1), (-(libc::EINTR as i64), Vec::new()));
    write_fd(pw, b"xy");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(poll_in(pr), 1, "the cancelled read took nothing from the pipe");
    // a poll waiting for ever is cancelled the same way
    let pfd: Vec<u8> = [0i32.to_le_bytes().as_slice(), &libc::POLLOUT.to_le_bytes(), &0i16.to_le_bytes()].concat();
    let mut b2 = Body::connect(&stub);
    b2.chan = 9 << 8;
    // (stdin, asked for POLLOUT on a pipe's read end: never ready)
    b2.send(1, op::POLL, [0, 1, -1i64 as u64, 0, 0, 0], &pfd, 8);
    std::thread::sleep(Duration::from_millis(200));
    b2.send(1, op::CANCEL, [0; 6], &[], 0);
    assert_eq!(b2.answer(1).0, -(libc::EINTR as i64));

    // the next read finds the bytes; a late cancel for it changes nothing
    assert_eq!(b.call(2, op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (2, b"xy".to_vec()));
    b.send(2, op::CANCEL, [0; 6], &[], 0);
    write_fd(pw, b"z");
    assert_eq!(b.call(3, op::READ, [0, 0, 100, 0, 0, 0], &[], 100), (1, b"z".to_vec()));
    // and the call after it is served as usual
    write_fd(pw, b"w");
    b.send(4, op::READ, [0, 0, 100, 0, 0, 0], &[], 100);
    assert_eq!(b.answer(4), (1, b"w".to_vec()));

    // a write cancelled after part of it went answers that part
    let (qr, qw) = pipe();
    let stub2 = open_session(&d, std::process::id() + 1, dir.path(), &[(1, qw)]);
    let mut w = Body::connect(&stub2);
    write_fd(qw, &vec![b'f'; 65536]); // the pipe is full
    w.send(1, op::WRITE, [1, 0, 0, 0, 0, 0], &vec![b'x'; 10000], 0);
    std::thread::sleep(Duration::from_millis(200));
    let mut room = vec![0u8; 4096];
    // SAFETY: room is a live buffer of 4096 bytes.
    assert_eq!(unsafe { libc::read(qr, room.as_mut_ptr().cast(), 4096) }, 4096);
    std::thread::sleep(Duration::from_millis(200));
    w.send(1, op::CANCEL, [0; 6], &[], 0);
    assert_eq!(w.answer(1).0, 4096, "the part written before the cancel");
    close(qw);
    close(qr);

    // anything else while a call waits abandons it: the connection goes
    b.send(5, op::READ, [0, 0, 100, 0, 0, 0], &[], 100);
    std::thread::sleep(Duration::from_millis(200));
    b.send(9, op::WRITE, [1, 0, 0, 0, 0, 0], b"x", 0);
    let mut h = [0u8; wire::RESP_LEN];
    assert!(b.s.read(&mut h).map_or(true, |n| n == 0), "the connection is closed");
    close(pw);
    close(pr);
}

#[test]
fn bad_peers_are_dropped_and_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let stub = open_session(&d, std::process::id(), dir.path(), &[]);
    let mut good = Calls { b: Body::connect(&stub), seq: 0 };
    assert_eq!(good.call(op::PING, [0; 6], &[], 0).0, 0);

    // a wrong token
    let mut h = hello(&stub, wire::KIND_CALLS, "", 0);
    h.token[0] ^= 1;
    let (mut s, r) = connect_raw(&stub.rsys_addr, &h.encode());
    assert_eq!(r.status, -libc::EACCES);
    assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0, "then dropped");
    // garbage instead of a hello
    let (mut s, r) = connect_raw(&stub.rsys_addr, &[0x5a; wire::HELLO_LEN]);
    assert_eq!(r.status, -libc::EACCES);
    assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
    // a short hello, then gone
    let mut s = TcpStream::connect(&stub.rsys_addr).unwrap();
    s.write_all(b"MOSRSYS1 short").unwrap();
    drop(s);
    // an oversized request on an accepted connection
    let mut big = Body::connect(&stub);
    let req = Req { op: op::WRITE, flags: 0, chan: 1, seq: 1, args: [0; 6], bulk_len: u32::MAX, out_len: 0 };
    big.s.write_all(&req.encode()).unwrap();
    assert_eq!(big.s.read(&mut [0u8; 8]).unwrap(), 0, "dropped");
    // garbage on the local socket
    {
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let _ = c.send_to(b"junk", d.state.join("shadow.sock"));
    }

    // the good session still works, and a new one opens
    assert_eq!(good.call(op::PING, [0; 6], &[], 0).0, 0);
    let other = open_session(&d, std::process::id(), dir.path(), &[]);
    let mut c2 = Body::connect(&other);
    assert_eq!(c2.call(1, op::PING, [0; 6], &[], 0).0, 0);
    assert_ne!(other.token, stub.token);
}

fn read_ctl(s: &mut TcpStream) -> Ctl {
    let mut b = [0u8; wire::CTL_LEN];
    s.read_exact(&mut b).unwrap();
    Ctl::decode(&b)
}

fn where_is(d: &Daemon, pid: u32) -> Msg {
    let mut s = TcpStream::connect(&d.addr).unwrap();
    auth::client_handshake(&mut s, &d.key, &proto::Hello::new("cli", Role::Cli)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = FrameReader::new(s.try_clone().unwrap());
    let mut w = FrameWriter::new(proto::NoSigPipe::new(s));
    w.write_msg(&Msg::WhereIsBody { pid }, &[]).unwrap();
    r.read_msg::<Msg>().unwrap().0
}

#[test]
fn the_stub_learns_how_the_body_ended_and_signals_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    // the "home stub": a real process, so that its run state can be watched
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let spid = sleeper.id();
    let _k = Kill(&mut sleeper);
    let stub = open_session(&d, spid, dir.path(), &[]);
    assert!(matches!(where_is(&d, spid), Msg::Error { .. }), "no body yet");

    // a signal before the body is connected waits for it
    stub.send(&Msg::StubSignal { signal: libc::SIGUSR1 }).unwrap();
    let (mut ctl, r) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CONTROL, "n2", 4321).encode());
    assert_eq!((r.status, r.vpid), (0, spid));
    assert_eq!(read_ctl(&mut ctl), Ctl { what: wire::CTL_SIGNAL, arg: libc::SIGUSR1 as u32 });
    stub.send(&Msg::StubSignal { signal: libc::SIGINT }).unwrap();
    assert_eq!(read_ctl(&mut ctl), Ctl { what: wire::CTL_SIGNAL, arg: libc::SIGINT as u32 });
    assert_eq!(where_is(&d, spid), Msg::BodyAt { node: "n2".into(), body_pid: 4321 });

    // the stub stopped (Ctrl-Z) stops the body; continued, continues it
    // SAFETY: signalling our own child.
    unsafe { libc::kill(spid as i32, libc::SIGSTOP) };
    assert_eq!(read_ctl(&mut ctl), Ctl { what: wire::CTL_SIGNAL, arg: libc::SIGSTOP as u32 });
    // SAFETY: as above.
    unsafe { libc::kill(spid as i32, libc::SIGCONT) };
    assert_eq!(read_ctl(&mut ctl), Ctl { what: wire::CTL_SIGNAL, arg: libc::SIGCONT as u32 });

    // a body that leaves (CTL_LEAVING) and arrives elsewhere is not lost
    ctl.write_all(&Ctl { what: wire::CTL_LEAVING, arg: 0 }.encode()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(ctl);
    assert_eq!(stub.recv(Duration::from_millis(500)).unwrap(), None);
    let (ctl, r) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CONTROL, "n3", 99).encode());
    assert_eq!(r.status, 0);
    assert_eq!(where_is(&d, spid), Msg::BodyAt { node: "n3".into(), body_pid: 99 });

    // the body exits: the stub is told its status, once
    let mut c = Body::connect(&stub);
    assert_eq!(c.call(1, op::EXIT, [3 << 8, 0, 0, 0, 0, 0], &[], 0).0, 0);
    assert_eq!(stub.recv(Duration::from_secs(10)).unwrap(), Some(Msg::BodyExited { status: 3 << 8 }));
    drop(ctl);
    assert_eq!(stub.recv(Duration::from_millis(300)).unwrap(), None, "told once");

    // the stub goes away: the session ends, the body's control connection is closed and
    // its token is refused from now on
    let (mut ctl, _) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CONTROL, "n3", 99).encode());
    let h = hello(&stub, wire::KIND_CALLS, "", 0).encode();
    let addr = stub.rsys_addr.clone();
    drop(stub);
    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(ctl.read(&mut [0u8; 8]).unwrap(), 0, "control connection closed");
    let (_, r) = connect_raw(&addr, &h);
    assert_eq!(r.status, -libc::EACCES);
}

#[test]
fn a_body_gone_without_leaving_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let stub = open_session(&d, std::process::id(), dir.path(), &[]);
    let (ctl, r) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CONTROL, "n2", 55).encode());
    assert_eq!(r.status, 0);
    drop(ctl);
    match stub.recv(Duration::from_secs(10)).unwrap() {
        Some(Msg::BodyLost { reason }) => assert!(reason.contains("node n2") && reason.contains("lost"), "{reason}"),
        other => panic!("expected BodyLost, got {other:?}"),
    }
}

#[test]
fn migrate_and_where_is_refuse_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    match where_is(&d, 999_999) {
        Msg::Error { msg } => assert!(msg.contains("999999"), "{msg}"),
        other => panic!("expected Error, got {other:?}"),
    }
    // a process not running under the shim cannot be migrated; it is left alone
    let mut plain = Command::new("sleep").arg("60").spawn().unwrap();
    let mut s = TcpStream::connect(&d.addr).unwrap();
    auth::client_handshake(&mut s, &d.key, &proto::Hello::new("cli", Role::Cli)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = FrameReader::new(s.try_clone().unwrap());
    let mut w = FrameWriter::new(proto::NoSigPipe::new(s));
    w.write_msg(&Msg::MigrateProcess { pid: plain.id(), to: d.addr.clone(), mode: proto::msg::MoveMode::StopAndCopy, progress: false, compress: None }, &[]).unwrap();
    let answer = r.read_msg::<Msg>().unwrap().0;
    let alive = plain.try_wait().unwrap().is_none();
    let _ = plain.kill();
    let _ = plain.wait();
    match answer {
        Msg::Error { msg } => assert!(msg.contains("libmosshim"), "{msg}"),
        other => panic!("expected Error, got {other:?}"),
    }
    assert!(alive);
}

/// Reads of 64 KiB and more from a regular file are spliced to the body: the data, the
/// file offset a read advances (and a pread leaves), and a resent request (same seq:
/// answered again, not executed again) must be those of the ordinary path. The hello
/// reply names the local listener, where a body on this host gets the same service.
#[test]
fn large_reads_are_spliced_replayed_and_served_locally() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let pat: Vec<u8> = (0..(1u32 << 20) + 4321).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(home.join("big"), &pat).unwrap();
    let big = std::fs::File::open(home.join("big")).unwrap();
    let stub = open_session(&d, std::process::id(), &home, &[(4, big.as_raw_fd())]);
    drop(big);
    let (s, reply) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CALLS, "", 0).encode());
    assert_eq!(reply.status, 0);
    let name = reply.local[..reply.local_len()].to_vec();
    assert!(name.starts_with(b"mos-rsys-"), "{:?}", String::from_utf8_lossy(&name));
    let mut b = Body { s, chan: 7 << 8 };

    // pread at an odd offset, then resent: the same bytes twice
    let off = 12345u64;
    let want = pat[off as usize..off as usize + (300 << 10)].to_vec();
    assert_eq!(b.call(1, op::PREAD64, [4, 0, 300 << 10, off, 0, 0], &[], 300 << 10), ((300 << 10) as i64, want.clone()));
    assert_eq!(b.call(1, op::PREAD64, [4, 0, 300 << 10, off, 0, 0], &[], 300 << 10), ((300 << 10) as i64, want));
    // read: 1 MiB from the start, resent (the offset moves once), then the short tail
    assert_eq!(b.call(2, op::READ, [4, 0, 1 << 20, 0, 0, 0], &[], 1 << 20), ((1 << 20) as i64, pat[..1 << 20].to_vec()));
    assert_eq!(b.call(2, op::READ, [4, 0, 1 << 20, 0, 0, 0], &[], 1 << 20), ((1 << 20) as i64, pat[..1 << 20].to_vec()));
    assert_eq!(b.call(3, op::LSEEK, [4, 0, libc::SEEK_CUR as u64, 0, 0, 0], &[], 0).0, 1 << 20, "the resent read moved the offset again");
    assert_eq!(b.call(4, op::READ, [4, 0, 1 << 20, 0, 0, 0], &[], 1 << 20), (4321, pat[1 << 20..].to_vec()));
    assert_eq!(b.call(5, op::READ, [4, 0, 1 << 20, 0, 0, 0], &[], 1 << 20), (0, vec![]));

    // the local listener: same hello, same calls
    let addr = SocketAddr::from_abstract_name(&name).unwrap();
    let mut u = UnixStream::connect_addr(&addr).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    u.write_all(&hello(&stub, wire::KIND_CALLS, "", 0).encode()).unwrap();
    let mut r = [0u8; wire::HELLO_REPLY_LEN];
    u.read_exact(&mut r).unwrap();
    assert_eq!(HelloReply::decode(&r).status, 0);
    let req = Req { op: op::PREAD64, flags: 0, chan: 8 << 8, seq: 1, args: [4, 0, 1 << 20, 7, 0, 0], bulk_len: 0, out_len: 1 << 20 };
    u.write_all(&req.encode()).unwrap();
    let mut h = [0u8; wire::RESP_LEN];
    u.read_exact(&mut h).unwrap();
    let resp = Resp::decode(&h);
    assert_eq!((resp.ret, resp.data_len), (1 << 20, 1 << 20));
    let mut data = vec![0u8; 1 << 20];
    u.read_exact(&mut data).unwrap();
    assert!(data == pat[7..(1 << 20) + 7], "spliced data over the local listener");
    // a wrong token is refused there too
    let mut u2 = UnixStream::connect_addr(&addr).unwrap();
    let mut bad = hello(&stub, wire::KIND_CALLS, "", 0);
    bad.token[0] ^= 1;
    u2.write_all(&bad.encode()).unwrap();
    u2.read_exact(&mut r).unwrap();
    assert_eq!(HelloReply::decode(&r).status, -libc::EACCES);
}

/// Pass `fds` with one byte over `s`, as the shim does for an answer socket and pipe.
fn send_with_fds(s: &std::os::unix::net::UnixStream, fds: &[i32]) {
    let byte = 0u8;
    let mut iov = libc::iovec { iov_base: &byte as *const u8 as *mut libc::c_void, iov_len: 1 };
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let len = (fds.len() * 4) as u32;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(len) } as usize;
        // SAFETY: the control buffer (32 bytes) holds one cmsg with up to 3 descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut i32, fds.len());
        }
    }
    // SAFETY: sendmsg of the live msghdr above.
    assert_eq!(unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) }, 1);
}

/// A local calls connection may pass an answer socket (and a data pipe) after its hello:
/// requests still come on the connection, answers go to the socket, and the data of large
/// reads into the pipe. A connection that promises them and sends something else is
/// dropped; the listener keeps serving.
#[test]
fn local_answers_come_on_the_answer_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let pat: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(home.join("f"), &pat).unwrap();
    let f = std::fs::File::open(home.join("f")).unwrap();
    let stub = open_session(&d, std::process::id(), &home, &[(4, f.as_raw_fd())]);
    drop(f);
    let (_tcp, reply) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CALLS, "", 0).encode());
    let addr = SocketAddr::from_abstract_name(&reply.local[..reply.local_len()]).unwrap();
    let mut with_answers = hello(&stub, wire::KIND_CALLS, "", 0);
    with_answers.flags = wire::HELLO_ANSWER_SOCKET;
    let connect = |fds: &[i32]| {
        let mut u = UnixStream::connect_addr(&addr).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        u.write_all(&with_answers.encode()).unwrap();
        let mut r = [0u8; wire::HELLO_REPLY_LEN];
        u.read_exact(&mut r).unwrap();
        assert_eq!(HelloReply::decode(&r).status, 0);
        send_with_fds(&u, fds);
        u
    };
    let ask = |u: &mut UnixStream, seq: u64, n: u64, off: u64| {
        let req = Req { op: op::PREAD64, flags: 0, chan: 9 << 8, seq, args: [4, 0, n, off, 0, 0], bulk_len: 0, out_len: n as u32 };
        u.write_all(&req.encode())
    };

    let mut h = [0u8; wire::RESP_LEN];
    // promised, but a byte without a descriptor, or a pipe's read end as the data pipe:
    // dropped
    let mut p = [0i32; 2];
    // SAFETY: pipe writes two descriptors into p.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    let (sock, _other) = UnixStream::pair().unwrap();
    for fds in [&[][..], &[sock.as_raw_fd(), p[0]][..]] {
        let mut bad = connect(fds);
        // (the shadowd may have dropped it already: then the request cannot even go)
        let _ = ask(&mut bad, 1, 16, 0);
        assert!(matches!(bad.read(&mut h), Ok(0) | Err(_)), "a connection without a proper answer socket is served");
    }
    close(p[0]);
    close(p[1]);

    // the real thing, without and with a data pipe: a small pread answered on the socket,
    // a spliced 1 MiB one there or in the pipe
    for with_pipe in [false, true] {
        let (mine, theirs) = UnixStream::pair().unwrap();
        mine.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut p = [-1i32; 2];
        // SAFETY: pipe writes two descriptors into p.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        let mut u = if with_pipe { connect(&[theirs.as_raw_fd(), p[1]]) } else { connect(&[theirs.as_raw_fd()]) };
        drop(theirs);
        close(p[1]);
        // SAFETY: p[0] is our pipe's read end; the File owns it from here on.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(p[0]) };
        let mut answers = &mine;
        for (seq, n, off) in [(1u64, 4096u64, 100u64), (2, 1 << 20, 0)] {
            ask(&mut u, seq, n, off).unwrap();
            answers.read_exact(&mut h).unwrap();
            let resp = Resp::decode(&h);
            assert_eq!((resp.seq, resp.ret, resp.data_len as u64), (seq, n as i64, n));
            let piped = with_pipe && n >= 64 << 10;
            assert_eq!(resp.flags == wire::RESP_DATA_IN_PIPE, piped, "where the data of {n} bytes is");
            let mut data = vec![0u8; n as usize];
            if piped {
                pipe.read_exact(&mut data).unwrap();
            } else {
                answers.read_exact(&mut data).unwrap();
            }
            assert!(data == pat[off as usize..(off + n) as usize], "pread of {n} at {off}");
        }
        // nothing came on the connection itself
        u.set_nonblocking(true).unwrap();
        assert!(u.read(&mut h).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock));
    }
}

/// One step of [`answer_sequence`]: (op, args, out_len) and the answer it must get.
type Step = (u32, [u64; 6], u32, (i64, Vec<u8>));

/// Error answers, spliced large reads and small reads (what the shim's readv becomes)
/// one after the other on one channel: fd 4 reads `pat`, fd 5 is write-only.
fn answer_sequence(pat: &[u8]) -> Vec<Step> {
    let ebadf = (-(libc::EBADF as i64), vec![]);
    let mb = 1u64 << 20;
    let at = |o: usize, n: usize| (n as i64, pat[o..o + n].to_vec());
    vec![
        // from the start of the file
        (op::LSEEK, [4, 0, libc::SEEK_SET as u64, 0, 0, 0], 0, (0, vec![])),
        // an error answer on the spliced path (a large read of a write-only fd), then a
        // small read: the read's own bytes
        (op::READ, [5, 0, mb, 0, 0, 0], mb as u32, ebadf.clone()),
        (op::READ, [4, 0, 13, 0, 0, 0], 13, at(0, 13)),
        // a small error answer, then a small read
        (op::READ, [5, 0, 16, 0, 0, 0], 16, ebadf.clone()),
        (op::READ, [4, 0, 7, 0, 0, 0], 7, at(13, 7)),
        // a spliced large read, then a small read at the offset it left
        (op::READ, [4, 0, mb, 0, 0, 0], mb as u32, at(20, mb as usize)),
        (op::READ, [4, 0, 7, 0, 0, 0], 7, at(20 + mb as usize, 7)),
        // a spliced pread that fails, a spliced pread that works, small preads after both
        (op::PREAD64, [5, 0, mb, 0, 0, 0], mb as u32, ebadf.clone()),
        (op::PREAD64, [4, 0, 7, 100, 0, 0], 7, at(100, 7)),
        (op::PREAD64, [4, 0, mb, 4096, 0, 0], mb as u32, at(4096, mb as usize)),
        (op::PREAD64, [4, 0, 5, 3, 0, 0], 5, at(3, 5)),
        // the offset moved by the reads only
        (op::LSEEK, [4, 0, libc::SEEK_CUR as u64, 0, 0, 0], 0, ((27 + mb) as i64, vec![])),
        // an error without data (a descriptor the session does not have), then a read at
        // the end of the file
        (op::LSEEK, [99, 0, libc::SEEK_CUR as u64, 0, 0, 0], 0, ebadf.clone()),
        (op::PREAD64, [4, 0, 64, pat.len() as u64 - 5, 0, 0], 64, at(pat.len() - 5, 5)),
    ]
}

/// Every answer belongs to its own call: after an error answer (on the spliced path or
/// not), after a spliced large read, a small read gets its own bytes, over TCP and over
/// the local connection with an answer socket and a data pipe, each answer resent once
/// (the exactly-once memory must give the same answer, not its neighbour's). Nothing is
/// left over in the pipe or on the sockets after any answer.
#[test]
fn answers_follow_their_calls_after_errors_and_splices() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let pat: Vec<u8> = (0..(1u32 << 20) + 8192).map(|i| (i.wrapping_mul(40503) >> 7) as u8).collect();
    std::fs::write(home.join("f"), &pat).unwrap();
    let ro = std::fs::File::open(home.join("f")).unwrap();
    let wo = std::fs::OpenOptions::new().write(true).open(home.join("f")).unwrap();
    let stub = open_session(&d, std::process::id(), &home, &[(4, ro.as_raw_fd()), (5, wo.as_raw_fd())]);
    drop((ro, wo));
    let steps = answer_sequence(&pat);

    // over TCP: the answer and its data on the connection
    let mut b = Body::connect(&stub);
    b.chan = 3 << 8;
    let mut seq = 0;
    for (i, (op, args, out_len, want)) in steps.iter().enumerate() {
        seq += 1;
        assert!(&b.call(seq, *op, *args, &[], *out_len) == want, "tcp step {i} (op {op}): not its own answer");
        // resent: answered again from the channel's memory, not executed again
        assert!(&b.call(seq, *op, *args, &[], *out_len) == want, "tcp step {i} (op {op}) resent");
    }
    b.s.set_nonblocking(true).unwrap();
    let mut h = [0u8; wire::RESP_LEN];
    assert!(b.s.read(&mut h).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "bytes left on the TCP connection");

    // locally, with an answer socket and a data pipe (the shim's transport on one host)
    let (_tcp, reply) = connect_raw(&stub.rsys_addr, &hello(&stub, wire::KIND_CALLS, "", 0).encode());
    let addr = SocketAddr::from_abstract_name(&reply.local[..reply.local_len()]).unwrap();
    let mut hl = hello(&stub, wire::KIND_CALLS, "", 0);
    hl.flags = wire::HELLO_ANSWER_SOCKET;
    let mut u = UnixStream::connect_addr(&addr).unwrap();
    u.write_all(&hl.encode()).unwrap();
    let mut r = [0u8; wire::HELLO_REPLY_LEN];
    u.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    u.read_exact(&mut r).unwrap();
    assert_eq!(HelloReply::decode(&r).status, 0);
    let (mut mine, theirs) = UnixStream::pair().unwrap();
    mine.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (pr, pw) = pipe();
    send_with_fds(&u, &[theirs.as_raw_fd(), pw]);
    drop(theirs);
    close(pw);
    // SAFETY: pr is this test's pipe read end; the File owns it from here on.
    let mut data_pipe = unsafe { std::fs::File::from_raw_fd(pr) };
    let mut seq = 0;
    for (i, (op, args, out_len, want)) in steps.iter().enumerate() {
        seq += 1;
        for round in 0..2 {
            let req = Req { op: *op, flags: 0, chan: 4 << 8, seq, args: *args, bulk_len: 0, out_len: *out_len };
            u.write_all(&req.encode()).unwrap();
            mine.read_exact(&mut h).unwrap();
            let resp = Resp::decode(&h);
            assert_eq!(resp.seq, seq, "local step {i}: the answer of another call");
            let mut got = vec![0u8; resp.data_len as usize];
            if resp.flags & wire::RESP_DATA_IN_PIPE != 0 {
                data_pipe.read_exact(&mut got).unwrap();
            } else {
                mine.read_exact(&mut got).unwrap();
            }
            assert!(&(resp.ret, got) == want, "local step {i} (op {op}, round {round}): not its own answer");
            // nothing left behind, on the answer socket or in the pipe
            mine.set_nonblocking(true).unwrap();
            assert!(mine.read(&mut h).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "local step {i}: bytes left on the answer socket");
            mine.set_nonblocking(false).unwrap();
            let mut fl = [0u8; 1];
            // SAFETY: fcntl and read on this test's own pipe and a live one-byte buffer.
            let left = unsafe {
                let o = libc::fcntl(pr, libc::F_GETFL);
                libc::fcntl(pr, libc::F_SETFL, o | libc::O_NONBLOCK);
                let n = libc::read(pr, fl.as_mut_ptr().cast(), 1);
                libc::fcntl(pr, libc::F_SETFL, o);
                n
            };
            assert_eq!(left, -1, "local step {i}: bytes left in the data pipe");
        }
    }
}
