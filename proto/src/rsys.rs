//! rsys: system calls forwarded from a process's body running on another node to the
//! shadow at its home node (DESIGN §2 "Remote execution").
//!
//! Why a protocol of its own: the body's side runs inside a SIGSYS handler of an
//! application thread (Syscall User Dispatch), where nothing may allocate or take a lock.
//! So every header here has a fixed size and is encoded into a stack buffer; bulk bytes
//! (paths, write data) follow the header raw, and answers (read data, stat buffers) follow
//! the answer header raw.
//!
//! # Connections
//! The body opens TCP connections to the home shadowd's rsys listener (its address is in
//! `<state>/rsys.addr`, and is handed to the process when its files are handed home).
//! The first bytes on a connection are a [`Hello`] (`HELLO_LEN` bytes); the server answers
//! with [`HelloReply`] (`HELLO_REPLY_LEN` bytes). The reply also names the shadowd's
//! second listener, an abstract unix socket with a random name: a body that runs on the
//! home host itself (in the same network namespace; for instance a process that migrated
//! back home, or every node of a localhost cluster) opens its further calls connections
//! there, which saves the TCP/IP stack on every call. A body elsewhere fails to connect
//! to that name and stays on TCP. The same hello and token are required on both. The 32-byte session token is the
//! credential: the home shadowd created it when the process handed its files home, and
//! only the process (its memory, its image) knows it. A wrong token, a wrong magic or a
//! short hello: the server logs the peer and closes the connection.
//!
//! Two kinds of connection:
//! - [`KIND_CALLS`]: one per (thread, signal-nesting depth). Strictly request/answer:
//!   [`Req`] (+ `bulk_len` bytes) then [`Resp`] (+ `data_len` bytes).
//! - [`KIND_CONTROL`]: one per body (opened by its manager thread). The server sends
//!   [`Ctl`] records (signals for the body); the body sends a [`Ctl`] with
//!   [`CTL_LEAVING`] just before it exits because it migrates, so that the closing
//!   connection is not taken as the loss of the body.
//!
//! # Exactly once
//! Every request carries `chan` (the body's virtual tid << 8 | nesting depth) and `seq`
//! (per `chan`, increasing by one per call). The session remembers, per `chan`, the last
//! `seq` executed and its answer. A request whose `seq` equals the remembered one is
//! answered again from memory without executing it (the body was checkpointed while
//! waiting for that answer and resent it from its new node). A call that is still
//! blocked (a read on a pipe or terminal, accept, poll, a lock wait) when its connection
//! closes is abandoned without effect (no byte consumed), so the resent request runs it
//! afresh. Blocking calls therefore wait with poll() on the file *and* the connection.
//!
//! # Calls
//! `op` is the x86-64 Linux system call number of the call performed at home (or one of
//! the `OP_*` values above 1000); [`op`] names every one, and both ends use those names. Results follow the kernel's convention: `ret` >= 0 on
//! success, `-errno` on failure. Descriptor arguments are the *application's* fd
//! numbers; the session maps them to its own descriptors (`EBADF` for an unknown one).
//! `AT_FDCWD` (-100) as a directory means the session's current directory, which starts
//! as the process's home cwd. Paths travel in the bulk as NUL-terminated byte strings,
//! in argument order. Calls that create a descriptor carry the fd number the body chose
//! (it keeps a placeholder descriptor at that number locally) and the session binds the
//! new descriptor to that number, replacing whatever it had there.
//!
//! | op | args | bulk | answer data |
//! | --- | --- | --- | --- |
//! | read 0 | a0 fd, a2 count | | bytes read |
//! | write 1 | a0 fd | bytes | |
//! | pread64 17 | a0 fd, a2 count, a3 offset | | bytes read |
//! | pwrite64 18 | a0 fd, a3 offset | bytes | |
//! | close 3 | a0 fd | | |
//! | fstat 5 | a0 fd | | struct stat (144) |
//! | poll 7 | a1 nfds, a2 timeout ms (as i32) | struct pollfd x nfds | struct pollfd x nfds (revents set) |
//! | lseek 8 | a0 fd, a1 offset, a2 whence | | |
//! | ioctl 16 | a0 fd, a1 request | input struct (setters) | output struct (getters) |
//! | socket 41 | a0 domain, a1 type, a2 protocol, a3 fd to bind | | |
//! | connect 42 | a0 fd | sockaddr | |
//! | sendto 44 | a0 fd, a3 flags, a4 address length (0: none) | payload then address | |
//! | recvfrom 45 | a0 fd, a2 len, a3 flags, a4 1 = want address | | see [`RECV_ADDR_AREA`] |
//! | shutdown 48 | a0 fd, a1 how | | |
//! | bind 49 | a0 fd | sockaddr | |
//! | listen 50 | a0 fd, a1 backlog | | |
//! | getsockname 51 / getpeername 52 | a0 fd | | sockaddr |
//! | setsockopt 54 | a0 fd, a1 level, a2 name | value | |
//! | getsockopt 55 | a0 fd, a1 level, a2 name, a3 length | | value |
//! | fcntl 72 | a0 fd, a1 cmd, a2 int arg | struct flock (32) for lock cmds | struct flock for lock cmds |
//! | flock 73 | a0 fd, a1 operation | | |
//! | fsync 74 / fdatasync 75 | a0 fd | | |
//! | truncate 76 | a1 length | path | |
//! | ftruncate 77 | a0 fd, a1 length | | |
//! | getcwd 79 | a1 size | | path with NUL; ret = its length |
//! | chdir 80 | | path | |
//! | fchdir 81 | a0 fd | | |
//! | fchmod 91 | a0 fd, a1 mode | | |
//! | fchown 93 | a0 fd, a1 uid, a2 gid | | |
//! | statfs 137 | | path | struct statfs (120) |
//! | fstatfs 138 | a0 fd | | struct statfs (120) |
//! | getdents64 217 | a0 fd, a2 count | | dirents |
//! | fadvise64 221 | a0 fd, a1 offset, a2 len, a3 advice | | |
//! | openat 257 | a0 dirfd, a2 flags, a3 mode, a4 fd to bind | path | |
//! | mkdirat 258 | a0 dirfd, a2 mode | path | |
//! | mknodat 259 | a0 dirfd, a2 mode, a3 dev | path | |
//! | fchownat 260 | a0 dirfd, a2 uid, a3 gid, a4 flags | path | |
//! | newfstatat 262 | a0 dirfd, a3 flags | path | struct stat (144) |
//! | unlinkat 263 | a0 dirfd, a2 flags | path | |
//! | linkat 265 | a0 olddirfd, a2 newdirfd, a4 flags | old, new | |
//! | symlinkat 266 | a1 newdirfd | target, linkpath | |
//! | readlinkat 267 | a0 dirfd, a3 size | path | link text (no NUL) |
//! | fchmodat 268 | a0 dirfd, a2 mode | path | |
//! | utimensat 280 | a0 dirfd, a2 1 = times given, a3 flags | 32-byte timespec[2] if a2 = 1, then path ("" = the fd a0 itself) | |
//! | fallocate 285 | a0 fd, a1 mode, a2 offset, a3 len | | |
//! | accept4 288 | a0 fd, a2 flags, a3 fd to bind, a4 1 = want address | | sockaddr if a4 = 1 |
//! | dup3 292 | a0 oldfd, a1 newfd | | |
//! | renameat2 316 | a0 olddirfd, a2 newdirfd, a4 flags | old, new | |
//! | statx 332 | a0 dirfd, a2 flags, a3 mask | path | struct statx (256) |
//! | faccessat2 439 | a0 dirfd, a2 mode, a3 flags | path | |
//! | [`OP_EXIT`] | a0 wait status (as waitpid reports it) | | |
//! | [`OP_PING`] | | | |
//! | [`OP_RESYNC`] | a0 channel, a1 its sequence number in the image | | |
//! | [`OP_CANCEL`] | chan and seq name the call to give up (no answer of its own) | | |
//!
//! ioctl requests served: TCGETS, TCSETS, TCSETSW, TCSETSF (the kernel's struct termios, 36 bytes),
//! TIOCGWINSZ, TIOCSWINSZ (8), FIONREAD, TIOCGPGRP, TIOCSPGRP, FIONBIO (4), FIOCLEX,
//! FIONCLEX (none); any other gets `-ENOTTY`. fcntl lock commands: F_GETLK, F_SETLK,
//! F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW; F_DUPFD* never travel (the body
//! turns them into dup3 with a number it chose).

/// First 8 bytes of every rsys connection.
pub const MAGIC: [u8; 8] = *b"MOSRSYS1";
/// Session token length.
pub const TOKEN_LEN: usize = 32;
/// Connection kind: forwarded calls.
pub const KIND_CALLS: u32 = 1;
/// Connection kind: the body's control connection.
pub const KIND_CONTROL: u32 = 2;

/// The process's exit: `a0` is the wait status (`code << 8`, or the signal number).
pub const OP_EXIT: u32 = 1000;
/// No-op round trip (benchmarks, liveness).
pub const OP_PING: u32 = 1001;
/// A body restarted from an image: channel `a0` had reached sequence number `a1` when the
/// image was taken. The session forgets that channel's remembered answer if it is newer
/// (the body is re-executing from an older point: a node died and the job restarts from
/// its last checkpoint). Never remembered or replayed itself.
pub const OP_RESYNC: u32 = 1002;

/// The body took a signal whose handler must end call `seq` of channel `chan` with EINTR
/// (a handler without SA_RESTART, or any handler for poll). Sent on the connection while
/// that call waits at home. If the call is still waiting, the shadow gives it up and its
/// answer is `-EINTR` (nothing was read or written); if it has finished, its answer
/// stands and the cancel is ignored. Never answered itself.
pub const OP_CANCEL: u32 = 1003;

/// The `op` of every forwarded call ([`Req::op`]), by name; the table in the module header
/// says what each takes and answers. Below 1000 an op is the x86-64 Linux system call number
/// of the call performed at home; from 1000 on it is one of mos's own (the `OP_*` values).
pub mod op {
    /// `read(fd, buf, count)`.
    pub const READ: u32 = 0;
    /// `write(fd, buf, count)`.
    pub const WRITE: u32 = 1;
    /// `close(fd)`.
    pub const CLOSE: u32 = 3;
    /// `fstat(fd, statbuf)`.
    pub const FSTAT: u32 = 5;
    /// `poll(fds, nfds, timeout)`.
    pub const POLL: u32 = 7;
    /// `lseek(fd, offset, whence)`.
    pub const LSEEK: u32 = 8;
    /// `ioctl(fd, request, arg)`, for the requests [`ioctl_shape`] serves.
    pub const IOCTL: u32 = 16;
    /// `pread64(fd, buf, count, offset)`.
    pub const PREAD64: u32 = 17;
    /// `pwrite64(fd, buf, count, offset)`.
    pub const PWRITE64: u32 = 18;
    /// `socket(domain, type, protocol)`.
    pub const SOCKET: u32 = 41;
    /// `connect(fd, addr, addrlen)`.
    pub const CONNECT: u32 = 42;
    /// `sendto(fd, buf, len, flags, addr, addrlen)`.
    pub const SENDTO: u32 = 44;
    /// `recvfrom(fd, buf, len, flags, addr, addrlen)`.
    pub const RECVFROM: u32 = 45;
    /// `shutdown(fd, how)`.
    pub const SHUTDOWN: u32 = 48;
    /// `bind(fd, addr, addrlen)`.
    pub const BIND: u32 = 49;
    /// `listen(fd, backlog)`.
    pub const LISTEN: u32 = 50;
    /// `getsockname(fd, addr, addrlen)`.
    pub const GETSOCKNAME: u32 = 51;
    /// `getpeername(fd, addr, addrlen)`.
    pub const GETPEERNAME: u32 = 52;
    /// `setsockopt(fd, level, name, value, len)`.
    pub const SETSOCKOPT: u32 = 54;
    /// `getsockopt(fd, level, name, value, len)`.
    pub const GETSOCKOPT: u32 = 55;
    /// `fcntl(fd, cmd, arg)`: integer commands and the lock commands.
    pub const FCNTL: u32 = 72;
    /// `flock(fd, operation)`.
    pub const FLOCK: u32 = 73;
    /// `fsync(fd)`.
    pub const FSYNC: u32 = 74;
    /// `fdatasync(fd)`.
    pub const FDATASYNC: u32 = 75;
    /// `truncate(path, length)`.
    pub const TRUNCATE: u32 = 76;
    /// `ftruncate(fd, length)`.
    pub const FTRUNCATE: u32 = 77;
    /// `getcwd(buf, size)`: the session's current directory.
    pub const GETCWD: u32 = 79;
    /// `chdir(path)`: the session's current directory.
    pub const CHDIR: u32 = 80;
    /// `fchdir(fd)`: the session's current directory.
    pub const FCHDIR: u32 = 81;
    /// `fchmod(fd, mode)`.
    pub const FCHMOD: u32 = 91;
    /// `fchown(fd, uid, gid)`.
    pub const FCHOWN: u32 = 93;
    /// `statfs(path, buf)`.
    pub const STATFS: u32 = 137;
    /// `fstatfs(fd, buf)`.
    pub const FSTATFS: u32 = 138;
    /// `getdents64(fd, dirp, count)`.
    pub const GETDENTS64: u32 = 217;
    /// `fadvise64(fd, offset, len, advice)`.
    pub const FADVISE64: u32 = 221;
    /// `openat(dirfd, path, flags, mode)`, bound at the fd number the body chose.
    pub const OPENAT: u32 = 257;
    /// `mkdirat(dirfd, path, mode)`.
    pub const MKDIRAT: u32 = 258;
    /// `mknodat(dirfd, path, mode, dev)`.
    pub const MKNODAT: u32 = 259;
    /// `fchownat(dirfd, path, uid, gid, flags)`.
    pub const FCHOWNAT: u32 = 260;
    /// `newfstatat(dirfd, path, statbuf, flags)`.
    pub const NEWFSTATAT: u32 = 262;
    /// `unlinkat(dirfd, path, flags)`.
    pub const UNLINKAT: u32 = 263;
    /// `linkat(olddirfd, old, newdirfd, new, flags)`.
    pub const LINKAT: u32 = 265;
    /// `symlinkat(target, newdirfd, linkpath)`.
    pub const SYMLINKAT: u32 = 266;
    /// `readlinkat(dirfd, path, buf, size)`.
    pub const READLINKAT: u32 = 267;
    /// `fchmodat(dirfd, path, mode)`.
    pub const FCHMODAT: u32 = 268;
    /// `utimensat(dirfd, path, times, flags)`.
    pub const UTIMENSAT: u32 = 280;
    /// `fallocate(fd, mode, offset, len)`.
    pub const FALLOCATE: u32 = 285;
    /// `accept4(fd, addr, addrlen, flags)`, bound at the fd number the body chose.
    pub const ACCEPT4: u32 = 288;
    /// `dup3(oldfd, newfd, flags)`: the session's copy of `oldfd` bound at `newfd`.
    pub const DUP3: u32 = 292;
    /// `renameat2(olddirfd, old, newdirfd, new, flags)`.
    pub const RENAMEAT2: u32 = 316;
    /// `statx(dirfd, path, flags, mask, buf)`.
    pub const STATX: u32 = 332;
    /// `faccessat2(dirfd, path, mode, flags)`.
    pub const FACCESSAT2: u32 = 439;
    /// The process's exit ([`super::OP_EXIT`]).
    pub const EXIT: u32 = super::OP_EXIT;
    /// No-op round trip ([`super::OP_PING`]).
    pub const PING: u32 = super::OP_PING;
    /// A restarted body's channel position ([`super::OP_RESYNC`]).
    pub const RESYNC: u32 = super::OP_RESYNC;
    /// Give up a waiting call with EINTR ([`super::OP_CANCEL`]).
    pub const CANCEL: u32 = super::OP_CANCEL;
}

/// Server -> body: deliver signal `arg` to the body.
pub const CTL_SIGNAL: u32 = 1;
/// Body -> server: the body is leaving this node (migration); a new control connection
/// from its next node follows.
pub const CTL_LEAVING: u32 = 2;

/// recvfrom answers with `a4 = 1`: the data starts with a 4-byte little-endian address
/// length and this many bytes of address area, then the payload.
pub const RECV_ADDR_AREA: usize = 128;

/// Largest data one call moves (the body splits larger reads and writes).
pub const MAX_IO: usize = 4 << 20;

/// Encoded sizes.
pub const HELLO_LEN: usize = 8 + TOKEN_LEN + 4 + 4 + 4 + 4 + 32;
/// Encoded size of [`HelloReply`].
pub const HELLO_REPLY_LEN: usize = 8 + LOCAL_NAME_LEN;
/// Size of the abstract unix socket name in [`HelloReply`] (NUL-padded).
pub const LOCAL_NAME_LEN: usize = 32;
/// Encoded size of [`Req`].
pub const REQ_LEN: usize = 4 + 4 + 8 + 8 + 6 * 8 + 4 + 4;
/// Encoded size of [`Resp`].
pub const RESP_LEN: usize = 8 + 8 + 4 + 4;
/// Encoded size of [`Ctl`].
pub const CTL_LEN: usize = 8;

/// What a forwarded ioctl moves, the one table both ends use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlShape {
    /// Served at home: bytes the caller's argument supplies, bytes it receives.
    Forward {
        /// Input bytes.
        input: usize,
        /// Output bytes.
        output: usize,
    },
    /// Close-on-exec of the fd number: the body's own business, never forwarded.
    FdFlag,
    /// Not served (`-ENOTTY`).
    Unsupported,
}

/// A path by which a process names one of its own descriptors: `/proc/self/fd/N`,
/// `/proc/thread-self/fd/N`, `/dev/fd/N`, `/dev/stdin`, `/dev/stdout` or `/dev/stderr`,
/// maybe followed by `/more`. Returns N and the rest (empty, or starting with '/'). The
/// body forwards such a path when N is a home fd, and the shadow turns it into its own
/// name for that file (so `open("/dev/stdin")` reopens the process's stdin, not the
/// shadow's). Allocation-free: the shim calls it in its SIGSYS handler.
pub fn own_fd_path(p: &[u8]) -> Option<(i32, &[u8])> {
    let cut = |rest: &[u8]| rest.is_empty() || rest[0] == b'/';
    for (name, fd) in [(b"/dev/stdin" as &[u8], 0), (b"/dev/stdout", 1), (b"/dev/stderr", 2)] {
        if let Some(rest) = p.strip_prefix(name) {
            if cut(rest) {
                return Some((fd, rest));
            }
        }
    }
    let tail = [b"/proc/self/fd/" as &[u8], b"/proc/thread-self/fd/", b"/dev/fd/"].iter().find_map(|pre| p.strip_prefix(*pre))?;
    let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || !cut(&tail[digits..]) {
        return None;
    }
    let n = tail[..digits].iter().fold(0i32, |n, c| n * 10 + i32::from(c - b'0'));
    Some((n, &tail[digits..]))
}

/// The shape of ioctl `request` on a home fd.
pub fn ioctl_shape(request: u64) -> IoctlShape {
    // struct termios as the kernel has it on x86-64: 4 flag words, c_line, 19 c_cc
    const TERMIOS: usize = 36;
    let fwd = |input, output| IoctlShape::Forward { input, output };
    match request as libc::Ioctl {
        libc::TCGETS => fwd(0, TERMIOS),
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => fwd(TERMIOS, 0),
        libc::TIOCGWINSZ => fwd(0, 8),
        libc::TIOCSWINSZ => fwd(8, 0),
        libc::FIONREAD | libc::TIOCGPGRP => fwd(0, 4),
        libc::TIOCSPGRP | libc::FIONBIO => fwd(4, 0),
        libc::FIOCLEX | libc::FIONCLEX => IoctlShape::FdFlag,
        _ => IoctlShape::Unsupported,
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// First message of a connection, body -> server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Session token.
    pub token: [u8; TOKEN_LEN],
    /// [`KIND_CALLS`] or [`KIND_CONTROL`].
    pub kind: u32,
    /// The body's virtual pid (its pid at home).
    pub vpid: u32,
    /// The body's real pid on its node.
    pub body_pid: u32,
    /// [`HELLO_ANSWER_SOCKET`] or zero.
    pub flags: u32,
    /// The body's node name, NUL-padded (control connections; may be empty).
    pub node: [u8; 32],
}

impl Hello {
    /// Encode.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..8 + TOKEN_LEN].copy_from_slice(&self.token);
        let o = 8 + TOKEN_LEN;
        put_u32(&mut b, o, self.kind);
        put_u32(&mut b, o + 4, self.vpid);
        put_u32(&mut b, o + 8, self.body_pid);
        put_u32(&mut b, o + 12, self.flags);
        b[o + 16..o + 48].copy_from_slice(&self.node);
        b
    }
    /// Decode; `None` if the magic is wrong.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Option<Hello> {
        if b[..8] != MAGIC {
            return None;
        }
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&b[8..8 + TOKEN_LEN]);
        let o = 8 + TOKEN_LEN;
        let mut node = [0u8; 32];
        node.copy_from_slice(&b[o + 16..o + 48]);
        Some(Hello {
            token,
            kind: get_u32(b, o),
            vpid: get_u32(b, o + 4),
            body_pid: get_u32(b, o + 8),
            flags: get_u32(b, o + 12),
            node,
        })
    }
    /// The node name as text.
    pub fn node_name(&self) -> String {
        let end = self.node.iter().position(|&c| c == 0).unwrap_or(self.node.len());
        String::from_utf8_lossy(&self.node[..end]).into_owned()
    }
}

/// [`Hello::flags`] of a calls connection to the local listener: right after the accepted
/// [`HelloReply`] the body sends one byte carrying (`SCM_RIGHTS`) one end of a unix socket
/// pair, and the server writes its answers there instead of on the connection. With
/// requests and answers on two sockets neither side is woken when the other frees buffer
/// space (a unix socket wakes every sleeper on it then), so both can sleep in a plain
/// blocking read: a forwarded 4 KiB read costs ~1.4 us less.
pub const HELLO_ANSWER_SOCKET: u32 = 1;

/// [`Resp::flags`]: the answer's data is not on the answer socket but in the data pipe,
/// the second descriptor a local calls connection may pass with its answer socket (the
/// write end of a pipe whose read end the body keeps). The server splices a large file
/// read straight from the page cache into that pipe and then sends the header: the body
/// is woken once, when all the data is there, and copies it out of the pipe (the only
/// copy). Over the answer socket every queued piece of a spliced answer woke it.
pub const RESP_DATA_IN_PIPE: u32 = 1;

/// [`Req::flags`] of a large read on a local connection: the low 16 bits name the CPU the
/// body's thread made the call on. A server thread running elsewhere moves there once
/// (it is not bound: its affinity is given back at once). A waker and a wakee that sleeps
/// right after are kept on one CPU by the scheduler, but a wakee whose previous CPU is
/// idle goes back there: two threads that start apart stay apart, and every call pays two
/// cross-CPU wake-ups (tens of microseconds each on a virtual machine whose idle CPU
/// halts). Binding the server to the body's CPU made the pair chase each other instead.
pub const REQ_CPU_HINT: u32 = 1 << 31;

/// Server -> body answer to [`Hello`]: `status` 0 = accepted, else `-errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloReply {
    /// 0 or -errno.
    pub status: i32,
    /// The virtual pid the session belongs to.
    pub vpid: u32,
    /// The abstract unix socket name (without its leading NUL) of the server's local
    /// listener, NUL-padded; all zero when it has none.
    pub local: [u8; LOCAL_NAME_LEN],
}

impl HelloReply {
    /// Encode.
    pub fn encode(&self) -> [u8; HELLO_REPLY_LEN] {
        let mut b = [0u8; HELLO_REPLY_LEN];
        put_u32(&mut b, 0, self.status as u32);
        put_u32(&mut b, 4, self.vpid);
        b[8..].copy_from_slice(&self.local);
        b
    }
    /// Decode.
    pub fn decode(b: &[u8; HELLO_REPLY_LEN]) -> HelloReply {
        let mut local = [0u8; LOCAL_NAME_LEN];
        local.copy_from_slice(&b[8..]);
        HelloReply { status: get_u32(b, 0) as i32, vpid: get_u32(b, 4), local }
    }
    /// The length of the local listener's name (0: none).
    pub fn local_len(&self) -> usize {
        self.local.iter().position(|&c| c == 0).unwrap_or(LOCAL_NAME_LEN)
    }
}

/// A forwarded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Req {
    /// What to perform: one of [`op`].
    pub op: u32,
    /// Zero, or [`REQ_CPU_HINT`] | the CPU the body runs on.
    pub flags: u32,
    /// Channel: virtual tid << 8 | nesting depth.
    pub chan: u64,
    /// Sequence number within the channel.
    pub seq: u64,
    /// Arguments per the table above.
    pub args: [u64; 6],
    /// Bytes following the header.
    pub bulk_len: u32,
    /// Most answer data the body accepts.
    pub out_len: u32,
}

impl Req {
    /// Encode.
    pub fn encode(&self) -> [u8; REQ_LEN] {
        let mut b = [0u8; REQ_LEN];
        put_u32(&mut b, 0, self.op);
        put_u32(&mut b, 4, self.flags);
        put_u64(&mut b, 8, self.chan);
        put_u64(&mut b, 16, self.seq);
        for (i, a) in self.args.iter().enumerate() {
            put_u64(&mut b, 24 + 8 * i, *a);
        }
        put_u32(&mut b, 72, self.bulk_len);
        put_u32(&mut b, 76, self.out_len);
        b
    }
    /// Decode.
    pub fn decode(b: &[u8; REQ_LEN]) -> Req {
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = get_u64(b, 24 + 8 * i);
        }
        Req {
            op: get_u32(b, 0),
            flags: get_u32(b, 4),
            chan: get_u64(b, 8),
            seq: get_u64(b, 16),
            args,
            bulk_len: get_u32(b, 72),
            out_len: get_u32(b, 76),
        }
    }
}

/// The answer to a [`Req`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Resp {
    /// Result or -errno.
    pub ret: i64,
    /// The request's sequence number.
    pub seq: u64,
    /// Bytes of answer data: following the header, or in the data pipe
    /// ([`RESP_DATA_IN_PIPE`]).
    pub data_len: u32,
    /// Zero or [`RESP_DATA_IN_PIPE`].
    pub flags: u32,
}

impl Resp {
    /// Encode.
    pub fn encode(&self) -> [u8; RESP_LEN] {
        let mut b = [0u8; RESP_LEN];
        put_u64(&mut b, 0, self.ret as u64);
        put_u64(&mut b, 8, self.seq);
        put_u32(&mut b, 16, self.data_len);
        put_u32(&mut b, 20, self.flags);
        b
    }
    /// Decode.
    pub fn decode(b: &[u8; RESP_LEN]) -> Resp {
        Resp { ret: get_u64(b, 0) as i64, seq: get_u64(b, 8), data_len: get_u32(b, 16), flags: get_u32(b, 20) }
    }
}

/// A control record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctl {
    /// `CTL_*`.
    pub what: u32,
    /// Argument (signal number).
    pub arg: u32,
}

impl Ctl {
    /// Encode.
    pub fn encode(&self) -> [u8; CTL_LEN] {
        let mut b = [0u8; CTL_LEN];
        put_u32(&mut b, 0, self.what);
        put_u32(&mut b, 4, self.arg);
        b
    }
    /// Decode.
    pub fn decode(b: &[u8; CTL_LEN]) -> Ctl {
        Ctl { what: get_u32(b, 0), arg: get_u32(b, 4) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_fd_paths_are_recognised() {
        assert_eq!(own_fd_path(b"/dev/stdin"), Some((0, &b""[..])));
        assert_eq!(own_fd_path(b"/dev/stderr"), Some((2, &b""[..])));
        assert_eq!(own_fd_path(b"/proc/self/fd/12"), Some((12, &b""[..])));
        assert_eq!(own_fd_path(b"/proc/thread-self/fd/3/sub/f"), Some((3, &b"/sub/f"[..])));
        assert_eq!(own_fd_path(b"/dev/fd/7"), Some((7, &b""[..])));
        for no in [&b"/dev/stdinx"[..], b"/proc/self/fd", b"/proc/self/fd/", b"/proc/self/fd/1x", b"/proc/self/fdinfo/1", b"/dev/fd/1234567890", b"/tmp/dev/stdin"] {
            assert_eq!(own_fd_path(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn ioctl_shapes() {
        assert_eq!(ioctl_shape(libc::TCGETS), IoctlShape::Forward { input: 0, output: 36 });
        assert_eq!(ioctl_shape(libc::FIOCLEX), IoctlShape::FdFlag);
        assert_eq!(ioctl_shape(0x1234), IoctlShape::Unsupported);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn ops_are_the_x86_64_system_call_numbers() {
        let pairs: [(u32, libc::c_long); 52] = [
            (op::READ, libc::SYS_read),
            (op::WRITE, libc::SYS_write),
            (op::CLOSE, libc::SYS_close),
            (op::FSTAT, libc::SYS_fstat),
            (op::POLL, libc::SYS_poll),
            (op::LSEEK, libc::SYS_lseek),
            (op::IOCTL, libc::SYS_ioctl),
            (op::PREAD64, libc::SYS_pread64),
            (op::PWRITE64, libc::SYS_pwrite64),
            (op::SOCKET, libc::SYS_socket),
            (op::CONNECT, libc::SYS_connect),
            (op::SENDTO, libc::SYS_sendto),
            (op::RECVFROM, libc::SYS_recvfrom),
            (op::SHUTDOWN, libc::SYS_shutdown),
            (op::BIND, libc::SYS_bind),
            (op::LISTEN, libc::SYS_listen),
            (op::GETSOCKNAME, libc::SYS_getsockname),
            (op::GETPEERNAME, libc::SYS_getpeername),
            (op::SETSOCKOPT, libc::SYS_setsockopt),
            (op::GETSOCKOPT, libc::SYS_getsockopt),
            (op::FCNTL, libc::SYS_fcntl),
            (op::FLOCK, libc::SYS_flock),
            (op::FSYNC, libc::SYS_fsync),
            (op::FDATASYNC, libc::SYS_fdatasync),
            (op::TRUNCATE, libc::SYS_truncate),
            (op::FTRUNCATE, libc::SYS_ftruncate),
            (op::GETCWD, libc::SYS_getcwd),
            (op::CHDIR, libc::SYS_chdir),
            (op::FCHDIR, libc::SYS_fchdir),
            (op::FCHMOD, libc::SYS_fchmod),
            (op::FCHOWN, libc::SYS_fchown),
            (op::STATFS, libc::SYS_statfs),
            (op::FSTATFS, libc::SYS_fstatfs),
            (op::GETDENTS64, libc::SYS_getdents64),
            (op::FADVISE64, libc::SYS_fadvise64),
            (op::OPENAT, libc::SYS_openat),
            (op::MKDIRAT, libc::SYS_mkdirat),
            (op::MKNODAT, libc::SYS_mknodat),
            (op::FCHOWNAT, libc::SYS_fchownat),
            (op::NEWFSTATAT, libc::SYS_newfstatat),
            (op::UNLINKAT, libc::SYS_unlinkat),
            (op::LINKAT, libc::SYS_linkat),
            (op::SYMLINKAT, libc::SYS_symlinkat),
            (op::READLINKAT, libc::SYS_readlinkat),
            (op::FCHMODAT, libc::SYS_fchmodat),
            (op::UTIMENSAT, libc::SYS_utimensat),
            (op::FALLOCATE, libc::SYS_fallocate),
            (op::ACCEPT4, libc::SYS_accept4),
            (op::DUP3, libc::SYS_dup3),
            (op::RENAMEAT2, libc::SYS_renameat2),
            (op::STATX, libc::SYS_statx),
            (op::FACCESSAT2, libc::SYS_faccessat2),
        ];
        for (op, nr) in pairs {
            assert_eq!(i64::from(op), nr);
        }
        assert_eq!([op::EXIT, op::PING, op::RESYNC, op::CANCEL], [1000, 1001, 1002, 1003]);
    }

    #[test]
    fn round_trips() {
        let h = Hello { token: [7; 32], kind: KIND_CALLS, vpid: 42, body_pid: 99, flags: HELLO_ANSWER_SOCKET, node: [0; 32] };
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(Hello::decode(&bad), None);
        let r = Req { op: op::OPENAT, flags: 0, chan: 5 << 8, seq: 9, args: [1, 2, 3, 4, 5, 6], bulk_len: 10, out_len: 11 };
        assert_eq!(Req::decode(&r.encode()), r);
        let p = Resp { ret: -2, seq: 9, data_len: 3, flags: RESP_DATA_IN_PIPE };
        assert_eq!(Resp::decode(&p.encode()), p);
        let c = Ctl { what: CTL_SIGNAL, arg: 2 };
        assert_eq!(Ctl::decode(&c.encode()), c);
        let mut local = [0u8; LOCAL_NAME_LEN];
        local[..5].copy_from_slice(b"mos-x");
        let hr = HelloReply { status: -13, vpid: 4, local };
        assert_eq!(HelloReply::decode(&hr.encode()), hr);
        assert_eq!(hr.local_len(), 5);
    }
}
