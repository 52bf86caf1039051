//! The shadow role over a real connection: a "remote process" (this test) registers and
//! has its file calls performed at home: open/read/write/pread/pwrite/lseek/fstat/stat/
//! access/rename/mkdir/readlink/getdents/ftruncate/fsync/dup/fcntl/poll/chdir/getcwd/
//! unlink/close, with errno as the home kernel set it. A bad peer changes nothing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proto::auth;
use proto::msg::{CallDetail, FileCall, OsBytes, PollFd, SyscallReq, SyscallResp};
use proto::{FrameReader, FrameWriter, Hello, JobId, Msg, Role};

struct Daemon(Child, String);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Daemon, auth::ClusterKey) {
    let key_path = dir.join("cluster.key");
    let key = auth::create_key_file(&key_path, false).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowd"))
        .args(["--node", "home", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--key")
        .arg(&key_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    (Daemon(child, addr), key)
}

struct Remote {
    r: FrameReader<TcpStream>,
    w: FrameWriter<proto::NoSigPipe<TcpStream>>,
    seq: u64,
}

impl Remote {
    fn connect(d: &Daemon, key: &auth::ClusterKey) -> Remote {
        let mut s = TcpStream::connect(&d.1).unwrap();
        auth::client_handshake(&mut s, key, &Hello::new("away", Role::Shim)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = FrameReader::new(s.try_clone().unwrap());
        let mut w = FrameWriter::new(proto::NoSigPipe::new(s));
        w.write_msg(&Msg::ShimRegister { pid: 4242, job: Some(JobId(9)) }, &[]).unwrap();
        let (m, _): (Msg, Vec<u8>) = r.read_msg().unwrap();
        assert_eq!(m, Msg::ShimRegistered { job: JobId(9) });
        Remote { r, w, seq: 0 }
    }

    fn call(&mut self, call: FileCall, bulk: &[u8]) -> (SyscallResp, Vec<u8>) {
        self.seq += 1;
        self.w.write_msg(&Msg::SyscallReq(SyscallReq { seq: self.seq, call }), bulk).unwrap();
        let (m, data): (Msg, Vec<u8>) = self.r.read_msg().unwrap();
        match m {
            Msg::SyscallResp(r) => {
                assert_eq!(r.seq, self.seq);
                assert_eq!(r.data_len as usize, data.len());
                (r, data)
            }
            other => panic!("expected SyscallResp, got {other:?}"),
        }
    }

    fn ok(&mut self, call: FileCall, bulk: &[u8]) -> (i64, CallDetail, Vec<u8>) {
        let what = format!("{call:?}");
        let (r, data) = self.call(call, bulk);
        assert_eq!(r.errno, 0, "{what} failed with errno {}", r.errno);
        (r.ret, r.detail, data)
    }
}

fn p(s: &str) -> OsBytes {
    OsBytes(s.as_bytes().to_vec())
}

#[test]
fn file_calls_are_performed_at_home() {
    let dir = tempfile::tempdir().unwrap();
    let (d, key) = start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("input.txt"), b"hello from home\n").unwrap();
    std::os::unix::fs::symlink("input.txt", home.join("link")).unwrap();
    let mut rp = Remote::connect(&d, &key);
    const CWD: i32 = libc::AT_FDCWD;

    rp.ok(FileCall::Chdir { path: OsBytes(home.as_os_str().as_encoded_bytes().to_vec()) }, &[]);
    let (n, _, cwd) = rp.ok(FileCall::Getcwd { len: 4096 }, &[]);
    assert_eq!(&cwd[..n as usize - 1], home.as_os_str().as_encoded_bytes());

    // relative open against the remote process's home cwd
    let (fd, _, _) = rp.ok(FileCall::Open { dirfd: CWD, path: p("input.txt"), flags: libc::O_RDONLY, mode: 0 }, &[]);
    let (n, _, data) = rp.ok(FileCall::Read { fd: fd as i32, len: 5 }, &[]);
    assert_eq!((n, &data[..]), (5, &b"hello"[..]));
    let (_, _, data) = rp.ok(FileCall::Pread { fd: fd as i32, len: 4, offset: 11 }, &[]);
    assert_eq!(data, b"home");
    let (pos, _, _) = rp.ok(FileCall::Lseek { fd: fd as i32, offset: 0, whence: libc::SEEK_CUR }, &[]);
    assert_eq!(pos, 5, "pread does not move the offset");
    let (_, st, _) = rp.ok(FileCall::Fstat { fd: fd as i32 }, &[]);
    assert!(matches!(st, CallDetail::Stat(s) if s.size == 16));
    let (_, _, target) = rp.ok(FileCall::Readlink { dirfd: CWD, path: p("link"), len: 256 }, &[]);
    assert_eq!(target, b"input.txt");
    let (dup, _, _) = rp.ok(FileCall::Dup { fd: fd as i32, newfd: None, flags: 0 }, &[]);
    let (pos, _, _) = rp.ok(FileCall::Lseek { fd: dup as i32, offset: 0, whence: libc::SEEK_CUR }, &[]);
    assert_eq!(pos, 5, "a dup shares the offset");
    let (fl, _, _) = rp.ok(FileCall::Fcntl { fd: dup as i32, cmd: libc::F_GETFL, arg: 0 }, &[]);
    assert_eq!(fl as i32 & libc::O_ACCMODE, libc::O_RDONLY);
    let (n, det, _) = rp.ok(FileCall::Poll { fds: vec![PollFd { fd: fd as i32, events: libc::POLLIN }], timeout_ms: 0 }, &[]);
    assert_eq!(n, 1);
    assert!(matches!(det, CallDetail::Poll(v) if v[0] & libc::POLLIN != 0));

    // create, write, pwrite, truncate, fsync: the file appears at home
    let flags = libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC;
    let (out, _, _) = rp.ok(FileCall::Open { dirfd: CWD, path: p("out.txt"), flags, mode: 0o644 }, &[]);
    let out = out as i32;
    assert_eq!(rp.ok(FileCall::Write { fd: out, len: 11 }, b"written by ").0, 11);
    assert_eq!(rp.ok(FileCall::Write { fd: out, len: 6 }, b"remote").0, 6);
    rp.ok(FileCall::Pwrite { fd: out, len: 1, offset: 0 }, b"W");
    rp.ok(FileCall::Fsync { fd: out, datasync: false }, &[]);
    assert_eq!(std::fs::read(home.join("out.txt")).unwrap(), b"Written by remote");
    rp.ok(FileCall::Ftruncate { fd: out, len: 7 }, &[]);
    assert_eq!(std::fs::read(home.join("out.txt")).unwrap(), b"Written");

    // directories and names
    rp.ok(FileCall::Mkdir { dirfd: CWD, path: p("sub"), mode: 0o755 }, &[]);
    rp.ok(FileCall::Rename { olddirfd: CWD, old: p("out.txt"), newdirfd: CWD, new: p("sub/moved.txt"), flags: 0 }, &[]);
    assert!(home.join("sub/moved.txt").is_file());
    rp.ok(FileCall::Access { dirfd: CWD, path: p("sub/moved.txt"), mode: libc::R_OK, flags: 0 }, &[]);
    let (_, st, _) = rp.ok(FileCall::Stat { dirfd: CWD, path: p("sub"), flags: 0 }, &[]);
    assert!(matches!(st, CallDetail::Stat(s) if s.mode & libc::S_IFMT == libc::S_IFDIR));
    let (dfd, _, _) = rp.ok(FileCall::Open { dirfd: CWD, path: p("sub"), flags: libc::O_RDONLY | libc::O_DIRECTORY, mode: 0 }, &[]);
    let (_, _, ents) = rp.ok(FileCall::Getdents { fd: dfd as i32, len: 4096 }, &[]);
    assert!(ents.windows(9).any(|w| w == b"moved.txt"), "getdents lists the file");
    rp.ok(FileCall::Unlink { dirfd: CWD, path: p("sub/moved.txt"), flags: 0 }, &[]);
    assert!(!home.join("sub/moved.txt").exists());

    // errors come back as the home kernel's errno
    let (r, _) = rp.call(FileCall::Open { dirfd: CWD, path: p("missing"), flags: libc::O_RDONLY, mode: 0 }, &[]);
    assert_eq!((r.ret, r.errno), (-1, libc::ENOENT));
    let (r, _) = rp.call(FileCall::Read { fd: 12345, len: 1 }, &[]);
    assert_eq!(r.errno, libc::EBADF, "a handle the session does not own is EBADF");
    let (r, _) = rp.call(FileCall::Mkdir { dirfd: CWD, path: p("sub"), mode: 0o755 }, &[]);
    assert_eq!(r.errno, libc::EEXIST);
    rp.ok(FileCall::Close { fd: fd as i32 }, &[]);
    let (r, _) = rp.call(FileCall::Close { fd: fd as i32 }, &[]);
    assert_eq!(r.errno, libc::EBADF);

    // a garbage peer is dropped; a second remote process is still served
    let mut g = TcpStream::connect(&d.1).unwrap();
    let _ = g.write_all(b"\xff\xff\xff\x7fgarbage");
    drop(g);
    let mut rp2 = Remote::connect(&d, &key);
    rp2.ok(FileCall::Chdir { path: OsBytes(home.as_os_str().as_encoded_bytes().to_vec()) }, &[]);
    let (fd2, _, _) = rp2.ok(FileCall::Open { dirfd: CWD, path: p("input.txt"), flags: libc::O_RDONLY, mode: 0 }, &[]);
    assert_eq!(rp2.ok(FileCall::Read { fd: fd2 as i32, len: 100 }, &[]).2, b"hello from home\n");
    // the first session still works too
    assert_eq!(rp.ok(FileCall::Read { fd: dup as i32, len: 3 }, &[]).2, b" fr");
}

/// A process hands its open files home (SCM_RIGHTS over the local socket): a pipe, a
/// deleted file with an offset, and a file it appended to. Its remote session then uses
/// them by the process's own fd numbers: same open file descriptions, so the offset, the
/// deleted file and the pipe all survive; data written into the pipe at home reaches it.
#[test]
fn handed_off_files_survive() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let (d, key) = start(dir.path());
    let sock = dir.path().join("state/shadow.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "no hand-off socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut pipe = [0i32; 2];
    // SAFETY: pipe fills the array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let tmp_path = dir.path().join("scratch");
    let mut tmp = std::fs::File::options().create(true).truncate(true).read(true).write(true).open(&tmp_path).unwrap();
    tmp.write_all(b"0123456789").unwrap();
    use std::io::Seek;
    tmp.seek(std::io::SeekFrom::Start(4)).unwrap();
    std::fs::remove_file(&tmp_path).unwrap(); // deleted, still open
    shadowd::handoff::hand_off(&sock, JobId(77), &[(0, pipe[0]), (5, tmp.as_raw_fd())]).unwrap();
    // SAFETY: closing our copy of the read end; the shadowd holds its own.
    unsafe { libc::close(pipe[0]) };
    drop(tmp);

    let mut s = TcpStream::connect(&d.1).unwrap();
    auth::client_handshake(&mut s, &key, &Hello::new("away", Role::Shim)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = FrameReader::new(s.try_clone().unwrap());
    let mut w = FrameWriter::new(proto::NoSigPipe::new(s));
    w.write_msg(&Msg::ShimRegister { pid: 1, job: Some(JobId(77)) }, &[]).unwrap();
    let mut rp = Remote { r, w, seq: 0 };
    let (m, _): (Msg, Vec<u8>) = rp.r.read_msg().unwrap();
    assert_eq!(m, Msg::ShimRegistered { job: JobId(77) });

    // the deleted file, at its offset
    let (pos, _, _) = rp.ok(FileCall::Lseek { fd: 5, offset: 0, whence: libc::SEEK_CUR }, &[]);
    assert_eq!(pos, 4, "offset survives the hand-off");
    assert_eq!(rp.ok(FileCall::Read { fd: 5, len: 3 }, &[]).2, b"456");
    // stdin is the pipe: what home writes reaches the remote process
    // SAFETY: writing to the pipe's write end we still hold.
    assert_eq!(unsafe { libc::write(pipe[1], b"typed after migration\n".as_ptr().cast(), 22) }, 22);
    assert_eq!(rp.ok(FileCall::Read { fd: 0, len: 100 }, &[]).2, b"typed after migration\n");
    // SAFETY: closing the write end: the remote read then sees end of file.
    unsafe { libc::close(pipe[1]) };
    assert_eq!(rp.ok(FileCall::Read { fd: 0, len: 100 }, &[]).0, 0);
    // a job that handed off nothing has no such files
    let mut other = Remote::connect(&d, &key);
    let (r, _) = other.call(FileCall::Read { fd: 5, len: 1 }, &[]);
    assert_eq!(r.errno, libc::EBADF);
}
