//! Remote mode: the process's body runs away from its home node (DESIGN §2, §4).
//!
//! Every application thread runs under Syscall User Dispatch: any system call made
//! outside the shim's own code raises SIGSYS, and [`sigsys_handler`] decides.
//! - Calls on the process's home files (fds marked in [`FD_REMOTE`]) and every call that
//!   names a path are forwarded to the home shadowd (`proto::rsys`) and their result is
//!   returned as the kernel would. Locally such an fd is a placeholder (`/dev/null`) that
//!   keeps its number taken, so fd numbering follows the kernel's lowest-free rule.
//! - Everything else (memory, futexes, clocks, threads, local pipes...) runs natively: the
//!   handler sends the thread to a trampoline inside the shim (allowed by SUD) that makes
//!   the very same system call with the thread's own registers and signal mask once the
//!   handler has returned, then jumps back to the instruction after the original one.
//!   One trampoline per calling site (return address), claimed on first use.
//!
//! The handler runs with every signal blocked except SIGSYS (SA_NODEFER, so nested traps
//! from an application signal handler work). While it waits for the shadow's answer it
//! unblocks the application's own mask (`ppoll`), so signals, and the checkpoint freeze,
//! still get through; a thread checkpointed while waiting resends its request (same
//! sequence number) from wherever it is restarted, and the shadow answers it exactly once.
//!
//! Nothing here allocates or takes a lock: raw system calls (inline `syscall` from the
//! shim's text, which SUD allows), atomics, and stack buffers.
//!
//! Application pointers: a forwarded call reads and writes the buffers its caller passed,
//! where the kernel would have. That is sound as long as the caller keeps the call's
//! contract (the argument points at an object of the type and size that call takes), and
//! the buffer stays valid because the calling thread is held in this handler until the
//! call is answered; each SAFETY line names the contract it relies on. A pointer that
//! breaks the contract faults here, where the kernel would have answered EFAULT.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use proto::rsys::{self, op, Req, Resp};

/// Call sites that can have a native trampoline.
const NTRAMP: usize = 1024;
/// Distinct sites of clone/clone3 calls.
const NCLONE: usize = 16;

// Trampolines: `syscall; jmp *ret[i]` (8 bytes each), clone trampolines that also switch
// SUD on in the new thread (32 bytes each), and a no-return one.
global_asm!(
    ".text",
    ".p2align 6",
    ".globl mos_sud_tramp",
    ".hidden mos_sud_tramp",
    "mos_sud_tramp:",
    ".set mos_sud_i, 0",
    ".rept 1024",
    "syscall",
    "jmp *mos_sud_ret+8*mos_sud_i(%rip)",
    ".set mos_sud_i, mos_sud_i+1",
    ".endr",
    ".globl mos_sud_tramp_end",
    ".hidden mos_sud_tramp_end",
    "mos_sud_tramp_end:",
    ".p2align 7",
    ".globl mos_sud_clone",
    ".hidden mos_sud_clone",
    "mos_sud_clone:",
    ".set mos_sud_k, 0",
    ".rept 16",
    ".p2align 7",
    "syscall",
    "test %rax, %rax",
    "jnz 1f",
    "mov %rsp, %r11",
    "and $-16, %rsp",
    "push %r11",
    "push %rdi",
    "push %rsi",
    "push %rdx",
    "push %r8",
    "push %r9",
    "push %r10",
    "sub $8, %rsp",
    "call {child}",
    "add $8, %rsp",
    "pop %r10",
    "pop %r9",
    "pop %r8",
    "pop %rdx",
    "pop %rsi",
    "pop %rdi",
    "pop %rsp",
    "xor %eax, %eax",
    "1:",
    "jmp *mos_sud_clone_ret+8*mos_sud_k(%rip)",
    ".set mos_sud_k, mos_sud_k+1",
    ".endr",
    ".p2align 4",
    ".globl mos_sud_noret",
    ".hidden mos_sud_noret",
    "mos_sud_noret:",
    "syscall",
    "ud2",
    ".section .bss.mos_sud,\"aw\",@nobits",
    ".p2align 3",
    ".globl mos_sud_ret",
    ".hidden mos_sud_ret",
    "mos_sud_ret:",
    ".zero 8*1024",
    ".globl mos_sud_clone_ret",
    ".hidden mos_sud_clone_ret",
    "mos_sud_clone_ret:",
    ".zero 8*16",
    ".text",
    child = sym mos_sud_child_entry,
    options(att_syntax)
);

extern "C" {
    fn mos_sud_tramp();
    fn mos_sud_clone();
    fn mos_sud_noret();
    static mos_sud_ret: [AtomicU64; NTRAMP];
    static mos_sud_clone_ret: [AtomicU64; NCLONE];
}

/// The process runs away from home (set by the restart of a migration image).
pub static REMOTE: AtomicBool = AtomicBool::new(false);
/// The session this process belongs to (token, shadow address): set when its files were
/// handed home; lives in memory, so every image taken afterwards carries it.
pub static SESSION_SET: AtomicBool = AtomicBool::new(false);
pub struct Session {
    pub token: [u8; rsys::TOKEN_LEN],
    pub addr: libc::sockaddr_in,
    pub node: [u8; 32],
}
pub struct SessionCell(pub core::cell::UnsafeCell<Session>);
// SAFETY: written by the manager while every application thread is frozen, read after.
unsafe impl Sync for SessionCell {}
pub static SESSION: SessionCell = SessionCell(core::cell::UnsafeCell::new(Session {
    token: [0; rsys::TOKEN_LEN],
    addr: libc::sockaddr_in { sin_family: 0, sin_port: 0, sin_addr: libc::in_addr { s_addr: 0 }, sin_zero: [0; 8] },
    node: [0; 32],
}));

/// Trap every call but run them all natively (`MOS_SUD_SELFTEST=1`): exercises the
/// dispatch machinery at home, and measures its cost.
pub static SELFTEST: AtomicBool = AtomicBool::new(false);

/// Start self-test mode on the calling (main) thread; threads created later follow.
pub fn selftest_enable() {
    SELFTEST.store(true, Ordering::Release);
    REMOTE.store(true, Ordering::Release);
    install_handler();
    enable_thread();
}

/// The home shadow is gone: forwarded calls fail with EIO.
pub static HOME_LOST: AtomicBool = AtomicBool::new(false);
/// Bumped at every restart: channel descriptors of an older incarnation are void.
pub static GEN: AtomicU32 = AtomicU32::new(1);
/// Placeholder source (`/dev/null`), an internal descriptor.
pub static PLACEHOLDER: AtomicI32 = AtomicI32::new(-1);
/// SUD selector: always "block"; the shim's own text is the allowed range.
static SELECTOR: AtomicU8 = AtomicU8::new(1);
static TEXT_START: AtomicU64 = AtomicU64::new(0);
static TEXT_LEN: AtomicU64 = AtomicU64::new(0);

const MAXFD: usize = 65536;
static FD_REMOTE: [AtomicU64; MAXFD / 64] = [const { AtomicU64::new(0) }; MAXFD / 64];
static FD_INTERNAL: [AtomicU64; MAXFD / 64] = [const { AtomicU64::new(0) }; MAXFD / 64];

fn bit_get(t: &[AtomicU64], fd: i64) -> bool {
    fd >= 0 && (fd as usize) < MAXFD && t[fd as usize / 64].load(Ordering::Relaxed) & (1 << (fd % 64)) != 0
}
fn bit_set(t: &[AtomicU64], fd: i64, on: bool) {
    if fd >= 0 && (fd as usize) < MAXFD {
        if on {
            t[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::Relaxed);
        } else {
            t[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::Relaxed);
        }
    }
}
/// Is `fd` one of the home files?
pub fn is_remote(fd: i64) -> bool {
    bit_get(&FD_REMOTE, fd)
}
/// Mark `fd` as a home file (or not).
pub fn set_remote(fd: i64, on: bool) {
    bit_set(&FD_REMOTE, fd, on);
    if fd >= 0 && (fd as usize) < MAXFD {
        FD_KIND[fd as usize].store(0, Ordering::Relaxed);
    }
}
/// Per home fd: 0 not known yet, 1 a regular file or directory (calls finish at once),
/// 2 anything that may block (pipe, socket, terminal, device).
static FD_KIND: [AtomicU8; MAXFD] = [const { AtomicU8::new(0) }; MAXFD];

/// May a read or write on home fd `fd` block for ever? (asked home once per fd)
fn may_block(fd: i64, m: u64) -> bool {
    if fd < 0 || fd as usize >= MAXFD {
        return true;
    }
    let k = FD_KIND[fd as usize].load(Ordering::Relaxed);
    if k != 0 {
        return k == 2;
    }
    let mut st = [0u8; 144];
    let r = call(op::FSTAT, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: st.as_mut_ptr() as u64, n: 144 }], m);
    if r < 0 {
        return true;
    }
    let mode = u32::from_ne_bytes([st[24], st[25], st[26], st[27]]) & libc::S_IFMT;
    let blocks = mode != libc::S_IFREG && mode != libc::S_IFDIR;
    FD_KIND[fd as usize].store(if blocks { 2 } else { 1 }, Ordering::Relaxed);
    blocks
}

fn is_internal(fd: i64) -> bool {
    bit_get(&FD_INTERNAL, fd)
}
/// The descriptors remote mode uses for itself (never saved in an image).
pub fn internal_fds() -> Vec<i32> {
    let mut v = Vec::new();
    for (i, w) in FD_INTERNAL.iter().enumerate() {
        let mut x = w.load(Ordering::Relaxed);
        while x != 0 {
            let b = x.trailing_zeros();
            v.push((i * 64) as i32 + b as i32);
            x &= x - 1;
        }
    }
    v
}

/// A raw system call from the shim's text (allowed by SUD); returns -errno on failure and
/// leaves errno alone.
#[inline(always)]
fn raw(nr: i64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: callers pass arguments valid for `nr`; syscall clobbers rcx and r11 only.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
            in("r10") a3, in("r8") a4, in("r9") a5, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}
macro_rules! r {
    ($nr:expr) => { raw($nr as i64, 0, 0, 0, 0, 0, 0) };
    ($nr:expr, $a:expr) => { raw($nr as i64, $a as u64, 0, 0, 0, 0, 0) };
    ($nr:expr, $a:expr, $b:expr) => { raw($nr as i64, $a as u64, $b as u64, 0, 0, 0, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr) => { raw($nr as i64, $a as u64, $b as u64, $c as u64, 0, 0, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr) => { raw($nr as i64, $a as u64, $b as u64, $c as u64, $d as u64, 0, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr) => { raw($nr as i64, $a as u64, $b as u64, $c as u64, $d as u64, $e as u64, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr) => { raw($nr as i64, $a as u64, $b as u64, $c as u64, $d as u64, $e as u64, $f as u64) };
}

pub mod epoll;

// ---------------------------------------------------------------- channels

const DEPTHS: usize = 4;
const NCHAN: usize = 512;

struct Chan {
    key: AtomicI32,
    depth: AtomicU32,
    fd: [AtomicI32; DEPTHS],
    /// where answers come from, when not on `fd` (local connections: an answer socket)
    ans: [AtomicI32; DEPTHS],
    /// the read end of the data pipe of a local connection (large reads come there)
    pipe: [AtomicI32; DEPTHS],
    gen: [AtomicU32; DEPTHS],
    seq: [AtomicU64; DEPTHS],
    /// per-thread copy of a signal mask handed to the kernel (sigsuspend, ppoll)
    mask: AtomicU64,
}
#[allow(clippy::declare_interior_mutable_const)]
const CHAN0: Chan = Chan {
    key: AtomicI32::new(0),
    depth: AtomicU32::new(0),
    fd: [const { AtomicI32::new(-1) }; DEPTHS],
    ans: [const { AtomicI32::new(-1) }; DEPTHS],
    pipe: [const { AtomicI32::new(-1) }; DEPTHS],
    gen: [const { AtomicU32::new(0) }; DEPTHS],
    seq: [const { AtomicU64::new(0) }; DEPTHS],
    mask: AtomicU64::new(0),
};
static CHANS: [Chan; NCHAN] = [CHAN0; NCHAN];

fn my_chan() -> Option<&'static Chan> {
    let me = crate::tids::self_vtid();
    if let Some(c) = CHANS.iter().find(|c| c.key.load(Ordering::Acquire) == me) {
        return Some(c);
    }
    for c in CHANS.iter() {
        if c.key.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            c.depth.store(0, Ordering::Relaxed);
            for d in 0..DEPTHS {
                c.fd[d].store(-1, Ordering::Relaxed);
                c.ans[d].store(-1, Ordering::Relaxed);
                c.pipe[d].store(-1, Ordering::Relaxed);
                c.seq[d].store(0, Ordering::Relaxed);
            }
            return Some(c);
        }
    }
    None
}

/// The calling thread ends: its channels go.
fn release_chan() {
    let me = crate::tids::self_vtid();
    if let Some(c) = CHANS.iter().find(|c| c.key.load(Ordering::Acquire) == me) {
        let g = GEN.load(Ordering::Acquire);
        for d in 0..DEPTHS {
            let fd = c.fd[d].swap(-1, Ordering::AcqRel);
            let ans = c.ans[d].swap(-1, Ordering::AcqRel);
            let pipe = c.pipe[d].swap(-1, Ordering::AcqRel);
            if c.gen[d].load(Ordering::Relaxed) == g {
                for f in [fd, ans, pipe].into_iter().filter(|&f| f >= 0) {
                    bit_set(&FD_INTERNAL, f as i64, false);
                    r!(libc::SYS_close, f);
                }
            }
        }
        c.key.store(0, Ordering::Release);
    }
}

fn high_base() -> i64 {
    let mut lim = [0u64; 2];
    r!(libc::SYS_prlimit64, 0, libc::RLIMIT_NOFILE, 0, lim.as_mut_ptr());
    (lim[0] as i64 - 64).clamp(64, 4000)
}

/// Forget the internal descriptors of an earlier incarnation (after a restart).
pub fn reset_internal() {
    for w in FD_INTERNAL.iter() {
        w.store(0, Ordering::Relaxed);
    }
}

/// [`internal_high`] for the manager.
pub fn internal_high_pub(fd: i64) -> i64 {
    internal_high(fd)
}

/// The manager thread's kernel tid while it has a table of its own (0: it shares the
/// application's).
pub static MANAGER_OWN_TABLE_TID: AtomicI32 = AtomicI32::new(0);

/// Move an fd of ours high and mark it internal: the application must not see or close
/// it. An fd the manager opens in its own table is not the application's business at all.
fn internal_high(fd: i64) -> i64 {
    let h = r!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, high_base());
    r!(libc::SYS_close, fd);
    let own_table = MANAGER_OWN_TABLE_TID.load(Ordering::Relaxed) == r!(libc::SYS_gettid) as i32;
    if h >= 0 && !own_table {
        bit_set(&FD_INTERNAL, h, true);
    }
    h
}

/// Move exactly `n` bytes at address `p` with `op(address, count)`, one system call per
/// piece (EINTR retried); false if the descriptor failed or reached its end.
fn exact(mut p: u64, mut n: usize, op: impl Fn(u64, usize) -> i64) -> bool {
    while n > 0 {
        let k = op(p, n);
        if k == -(libc::EINTR as i64) {
            continue;
        }
        if k <= 0 {
            return false;
        }
        p += k as u64;
        n -= k as usize;
    }
    true
}

fn write_all(fd: i64, p: *const u8, n: usize) -> bool {
    exact(p as u64, n, |p, n| r!(libc::SYS_write, fd, p, n))
}

/// Read exactly n bytes from a connection (MSG_WAITALL: one call, however many pieces the
/// data arrives in).
fn read_all(fd: i64, p: *mut u8, n: usize) -> bool {
    exact(p as u64, n, |p, n| r!(libc::SYS_recvfrom, fd, p, n, libc::MSG_WAITALL, 0, 0))
}

/// Read exactly `n` bytes from the pipe `fd`.
fn read_pipe(fd: i64, p: *mut u8, n: usize) -> bool {
    exact(p as u64, n, |p, n| r!(libc::SYS_read, fd, p, n))
}

/// The home shadowd's local listener (proto::rsys: an abstract unix socket), learnt from
/// a hello reply: its name, NUL-padded, in 4 words.
static LOCAL_NAME: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// 0: no local listener known; 1: known, calls connections try it first; 2: it could not
/// be reached from here (another host or network namespace): TCP only.
static LOCAL_STATE: AtomicU32 = AtomicU32::new(0);
/// `MOS_RSYS_TCP=1`: never use the local listener (set at start-up, kept in images).
pub static LOCAL_OFF: AtomicBool = AtomicBool::new(false);

/// The body may have moved to another host: learn the local listener afresh.
pub fn forget_local() {
    LOCAL_STATE.store(0, Ordering::Release);
}

fn learn_local(rep: &rsys::HelloReply) {
    if rep.local_len() == 0 || LOCAL_STATE.load(Ordering::Acquire) != 0 {
        return;
    }
    for (i, w) in LOCAL_NAME.iter().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rep.local[i * 8..i * 8 + 8]);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    let _ = LOCAL_STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed);
}

/// Connect one channel of `kind` to the home shadow; returns the fd (internal, high).
pub fn connect(kind: u32) -> i64 {
    let mut side = [-1; 2];
    connect_x(kind, &mut side)
}

/// [`connect`]. Calls connections go to the home shadowd's local listener when it is on
/// this host; their answers then come on a socket of their own and large reads through a
/// pipe, left in `side` (answer socket, data pipe's read end).
fn connect_x(kind: u32, side: &mut [i64; 2]) -> i64 {
    *side = [-1; 2];
    if !SESSION_SET.load(Ordering::Acquire) {
        return -(libc::EIO as i64);
    }
    if kind == rsys::KIND_CALLS && !LOCAL_OFF.load(Ordering::Relaxed) && LOCAL_STATE.load(Ordering::Acquire) == 1 {
        let fd = connect_local(side);
        if fd >= 0 {
            return fd;
        }
        let _ = LOCAL_STATE.compare_exchange(1, 2, Ordering::AcqRel, Ordering::Relaxed);
    }
    // SAFETY: SESSION is written only while the application is frozen.
    let s = unsafe { &*SESSION.0.get() };
    let fd = dial(libc::AF_INET, &s.addr as *const libc::sockaddr_in as u64, core::mem::size_of::<libc::sockaddr_in>());
    if fd < 0 {
        return fd;
    }
    let one: i32 = 1;
    r!(libc::SYS_setsockopt, fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one as *const i32, 4);
    hello(fd, kind, 0)
}

/// A connected stream socket of `domain` to the address at `addr` (`len` bytes), as an
/// internal high descriptor; or -errno.
fn dial(domain: i32, addr: u64, len: usize) -> i64 {
    let fd = r!(libc::SYS_socket, domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return fd;
    }
    let fd = internal_high(fd);
    if fd < 0 {
        return fd;
    }
    let rc = r!(libc::SYS_connect, fd, addr, len);
    if rc < 0 {
        return close_failed(fd, rc);
    }
    fd
}

fn close_failed(fd: i64, e: i64) -> i64 {
    bit_set(&FD_INTERNAL, fd, false);
    r!(libc::SYS_close, fd);
    e
}

fn connect_local(side: &mut [i64; 2]) -> i64 {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let mut len = 0;
    for (i, w) in LOCAL_NAME.iter().enumerate() {
        for (j, b) in w.load(Ordering::Relaxed).to_ne_bytes().into_iter().enumerate() {
            // abstract: sun_path[0] stays NUL, the name follows
            a.sun_path[1 + i * 8 + j] = b as libc::c_char;
            if b != 0 && len == i * 8 + j {
                len += 1;
            }
        }
    }
    if len == 0 {
        return -(libc::ENOENT as i64);
    }
    let fd = dial(libc::AF_UNIX, &a as *const libc::sockaddr_un as u64, core::mem::size_of::<libc::sa_family_t>() + 1 + len);
    if fd < 0 {
        return fd;
    }
    // an answer socket and a data pipe: our ends stay here (internal, high), the others go
    let mut sp = [-1i32; 2];
    let mut pp = [-1i32; 2];
    let r = r!(libc::SYS_socketpair, libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sp.as_mut_ptr());
    if r < 0 {
        return close_failed(fd, r);
    }
    let r = r!(libc::SYS_pipe2, pp.as_mut_ptr(), libc::O_CLOEXEC);
    if r < 0 {
        r!(libc::SYS_close, sp[0]);
        r!(libc::SYS_close, sp[1]);
        return close_failed(fd, r);
    }
    let ans = internal_high(sp[0] as i64);
    let pipe = internal_high(pp[0] as i64);
    let theirs = [sp[1], pp[1]];
    let fd = if ans < 0 || pipe < 0 { close_failed(fd, -(libc::EMFILE as i64)) } else { hello(fd, rsys::KIND_CALLS, rsys::HELLO_ANSWER_SOCKET) };
    let sent = fd >= 0 && send_fds(fd, &theirs);
    for t in theirs {
        r!(libc::SYS_close, t);
    }
    if !sent {
        for m in [ans, pipe].into_iter().filter(|&m| m >= 0) {
            close_failed(m, 0);
        }
        return if fd >= 0 { close_failed(fd, -(libc::EIO as i64)) } else { fd };
    }
    *side = [ans, pipe];
    fd
}

/// Pass `fds` (one or two) over the unix connection `conn` (one byte carrying them).
fn send_fds(conn: i64, fds: &[i32; 2]) -> bool {
    let byte = 0u8;
    let mut iov = libc::iovec { iov_base: &byte as *const u8 as *mut _, iov_len: 1 };
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(8) } as usize;
    // SAFETY: the control buffer holds one cmsg with 8 bytes of data (CMSG_SPACE(8) <= 32).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(8) as usize;
        core::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut [i32; 2], *fds);
    }
    loop {
        let r = r!(libc::SYS_sendmsg, conn, &msg as *const libc::msghdr, libc::MSG_NOSIGNAL);
        if r == -(libc::EINTR as i64) {
            continue;
        }
        return r == 1;
    }
}

/// Say hello on a fresh connection; the fd, or -errno (the connection closed).
fn hello(fd: i64, kind: u32, flags: u32) -> i64 {
    // SAFETY: SESSION is written only while the application is frozen.
    let s = unsafe { &*SESSION.0.get() };
    let h = rsys::Hello {
        token: s.token,
        kind,
        vpid: crate::signals::VPID.load(Ordering::Relaxed) as u32,
        body_pid: crate::signals::REAL_PID.load(Ordering::Relaxed) as u32,
        flags,
        node: s.node,
    }
    .encode();
    if !write_all(fd, h.as_ptr(), h.len()) {
        return close_failed(fd, -(libc::EIO as i64));
    }
    let mut rb = [0u8; rsys::HELLO_REPLY_LEN];
    if !read_all(fd, rb.as_mut_ptr(), rb.len()) {
        return close_failed(fd, -(libc::EIO as i64));
    }
    let rep = rsys::HelloReply::decode(&rb);
    if rep.status != 0 {
        return close_failed(fd, rep.status as i64);
    }
    learn_local(&rep);
    fd
}

#[derive(Clone, Copy)]
struct Io {
    p: u64,
    n: usize,
}
const NOIO: Io = Io { p: 0, n: 0 };

fn send_req(fd: i64, req: &Req, bulk: &[Io]) -> bool {
    let h = req.encode();
    let mut iov = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; 6];
    iov[0] = libc::iovec { iov_base: h.as_ptr() as *mut _, iov_len: h.len() };
    let mut k = 1;
    for b in bulk.iter().filter(|b| b.n > 0) {
        iov[k] = libc::iovec { iov_base: b.p as *mut _, iov_len: b.n };
        k += 1;
    }
    let mut first = 0;
    while first < k {
        let w = r!(libc::SYS_writev, fd, iov[first..].as_ptr(), k - first);
        if w == -(libc::EINTR as i64) {
            continue;
        }
        if w <= 0 {
            return false;
        }
        let mut w = w as usize;
        while first < k && w >= iov[first].iov_len {
            w -= iov[first].iov_len;
            first += 1;
        }
        if first < k {
            iov[first].iov_base = (iov[first].iov_base as usize + w) as *mut _;
            iov[first].iov_len -= w;
        }
    }
    true
}

/// Wait for the answer on `fd` with the application's mask `mask` (signals get through).
/// Returns 1 when readable, 0 when interrupted.
fn wait_readable(fd: i64, mask: u64) -> i64 {
    let mut p = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
    let m = mask & !ckpt::sys::sigbit(libc::SIGSYS);
    let r = r!(libc::SYS_ppoll, &mut p as *mut libc::pollfd, 1, 0, &m as *const u64, 8);
    if r > 0 {
        1
    } else {
        0
    }
}

/// How a wait for an answer ended.
enum Waited {
    /// the answer is there
    Ready,
    /// a signal's handler ran (one that restarts the call)
    Interrupted,
    /// a signal is pending whose handler must end the call with EINTR
    Cancel,
    /// the local fd watched beside the answer became readable
    Also,
}

/// Wait for the answer on `fd` with the application's mask `mask`. The signals of
/// `eintr` that `mask` lets through are held back meanwhile and watched with a signalfd
/// (when `watch`): one pending ends the wait with [`Waited::Cancel`]; it is delivered
/// once the call has returned, as the kernel does for a call it does not restart. Local
/// fd `also` (when `watch`, and not -1) becoming readable cancels the call too.
fn wait_answer(fd: i64, mask: u64, eintr: u64, watch: bool, also: i64) -> Waited {
    let held = eintr & !mask & !sigsys_bit();
    let also = if watch { also } else { -1 };
    if held == 0 && also < 0 {
        return if wait_readable(fd, mask) == 1 { Waited::Ready } else { Waited::Interrupted };
    }
    let sfd = if watch && held != 0 { r!(libc::SYS_signalfd4, -1i64, &held as *const u64, 8, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) } else { -1 };
    let mut p = [
        libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: sfd as i32, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: also as i32, events: libc::POLLIN, revents: 0 },
    ];
    let m = (mask | held) & !sigsys_bit();
    let r = r!(libc::SYS_ppoll, p.as_mut_ptr(), 3, 0, &m as *const u64, 8);
    if sfd >= 0 {
        r!(libc::SYS_close, sfd);
    }
    if r > 0 && p[0].revents != 0 {
        Waited::Ready
    } else if r > 0 && p[1].revents != 0 {
        Waited::Cancel
    } else if r > 0 && p[2].revents != 0 {
        Waited::Also
    } else {
        Waited::Interrupted
    }
}

/// Signal actions as the kernel holds them, read before a forwarded call waits: bit
/// `sig - 1` of `SIG_HANDLED` when `sig` has an application handler, of `SIG_NORESTART`
/// when that handler lacks SA_RESTART. Read again whenever `SIGACT_GEN` moved since the
/// last reading (a handler changed, or the body was restarted from an image).
static SIG_HANDLED: AtomicU64 = AtomicU64::new(0);
static SIG_NORESTART: AtomicU64 = AtomicU64::new(0);
static SIGACT_GEN: AtomicU32 = AtomicU32::new(1);
static SIGACT_READ: AtomicU32 = AtomicU32::new(0);

/// A signal action may have changed: read them all again before the next wait.
pub fn sigactions_changed() {
    SIGACT_GEN.fetch_add(1, Ordering::AcqRel);
}

/// The signals whose handler ends an interrupted call `op` with EINTR: poll is never
/// restarted, the others are unless the handler lacks SA_RESTART (signal(7)). The shim's
/// own signals (checkpoint trigger, freeze), glibc's internal ones and SIGSYS never are.
fn eintr_signals(op: u32) -> u64 {
    let g = SIGACT_GEN.load(Ordering::Acquire);
    if SIGACT_READ.load(Ordering::Acquire) != g {
        let (mut handled, mut norestart) = (0u64, 0u64);
        for sig in 1..=64 {
            if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGSYS | 32 | 33) || crate::signals::app_action_slot(sig).is_some() {
                continue;
            }
            let mut k = ckpt::sys::KSigAction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            if r!(libc::SYS_rt_sigaction, sig, 0, &mut k as *mut ckpt::sys::KSigAction, 8) != 0 {
                continue;
            }
            if k.handler > libc::SIG_IGN as u64 {
                handled |= ckpt::sys::sigbit(sig);
                if k.flags & libc::SA_RESTART as u64 == 0 {
                    norestart |= ckpt::sys::sigbit(sig);
                }
            }
        }
        SIG_HANDLED.store(handled, Ordering::Release);
        SIG_NORESTART.store(norestart, Ordering::Release);
        SIGACT_READ.store(g, Ordering::Release);
    }
    if op == op::POLL {
        SIG_HANDLED.load(Ordering::Acquire)
    } else {
        SIG_NORESTART.load(Ordering::Acquire)
    }
}

/// Forward one call that completes quickly at home (files, paths): the wait for the
/// answer lets the application's signals through, but not the checkpoint freeze, so an
/// image never catches a file call half done (its effect on the file offset and the
/// offset recorded in the image always agree).
fn call(op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64) -> i64 {
    call_x(op, args, bulk, out, mask, false)
}

/// Forward one call; `out` receives the answer data in order. The thread's application
/// signal mask is `mask`. `intr`: the call may block for ever (a pipe, a terminal, a
/// socket, poll, a lock): a checkpoint may freeze the thread while it waits.
fn call_x(op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64, intr: bool) -> i64 {
    call_also(op, args, bulk, out, mask, intr, -1)
}

/// [`call_x`]; a call that may block is also cancelled (see [`op::CANCEL`]) when local
/// fd `also` (not -1) becomes readable: a wait on home and local fds at once. Such a call
/// given up at home returns -ECANCELED.
fn call_also(op: u32, args: [u64; 6], bulk: &[Io], out: &[Io], mask: u64, intr: bool, also: i64) -> i64 {
    if HOME_LOST.load(Ordering::Acquire) {
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
        if HOME_LOST.load(Ordering::Acquire) || failures > 3 {
            return -(libc::EIO as i64);
        }
        let g = GEN.load(Ordering::Acquire);
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
                bit_set(&FD_INTERNAL, f, false);
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
        let frz = ckpt::sys::sigbit(crate::signals::FREEZE_SIG.load(Ordering::Relaxed));
        let eintr = if intr { eintr_signals(op) & !frz } else { 0 };
        let (mut cancelled, mut by_also) = (false, false);
        while intr && !stale {
            let w = wait_answer(afd, mask & !frz, eintr, !cancelled, also);
            match w {
                Waited::Ready => break,
                Waited::Interrupted => stale = GEN.load(Ordering::Acquire) != g,
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
        let spin = SPIN_US.load(Ordering::Relaxed);
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

/// Reads from this size up carry the CPU hint (the server splices them).
const HINT_MIN: usize = 64 * 1024;

/// Microseconds a large read over a local connection polls its answer socket before it
/// sleeps (`MOS_RSYS_SPIN_US`, read at start-up; 0: never). When the serving thread runs
/// on another CPU, sleeping costs a cross-CPU wake-up per call (tens of us on a VM); the
/// poll catches the answer instead, and yields the CPU between looks to a serving thread
/// that shares it. A 1 MiB read's answer comes in 30 to 100 us.
pub static SPIN_US: AtomicU32 = AtomicU32::new(150);

/// CLOCK_MONOTONIC in ns (a raw call from the shim's own code).
fn mono_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    r!(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts as *mut libc::timespec);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn mono_ms() -> i64 {
    mono_ns() / 1_000_000
}

/// Poll `fd` for up to `ns`, yielding the CPU between looks (to a serving thread that
/// shares it; on an otherwise idle CPU the yield returns at once).
fn spin_for(fd: i64, ns: i64) {
    let end = mono_ns() + ns;
    loop {
        let mut p = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
        if r!(libc::SYS_poll, &mut p as *mut libc::pollfd, 1, 0) != 0 || mono_ns() >= end {
            return;
        }
        r!(libc::SYS_sched_yield);
    }
}

/// [`rsys::REQ_CPU_HINT`] with the calling thread's CPU, or 0 if it is not known.
fn cpu_hint() -> u32 {
    let mut cpu = 0u32;
    if r!(libc::SYS_getcpu, &mut cpu as *mut u32, 0, 0) == 0 && cpu < 0x10000 {
        rsys::REQ_CPU_HINT | cpu
    } else {
        0
    }
}

/// Read the answer to call `seq`: its header and data come in one readv when they are
/// there already (the connection carries nothing else, so nothing past the answer can be
/// read). `None`: the connection failed, or the answer is not that of call `seq` (the
/// channel is then dropped and the call resent: a call never returns another's answer).
fn read_resp(fd: i64, pipe: i64, out: &[Io], out_len: usize, seq: u64) -> Option<Resp> {
    let mut hb = [0u8; rsys::RESP_LEN];
    let mut iov = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; 9];
    iov[0] = libc::iovec { iov_base: hb.as_mut_ptr() as *mut _, iov_len: hb.len() };
    let mut k = 1;
    for o in out.iter().filter(|o| o.n > 0) {
        if k == iov.len() {
            break;
        }
        iov[k] = libc::iovec { iov_base: o.p as *mut _, iov_len: o.n };
        k += 1;
    }
    let got = loop {
        let n = r!(libc::SYS_readv, fd, iov.as_ptr(), k);
        if n == -(libc::EINTR as i64) {
            continue;
        }
        if n <= 0 {
            return None;
        }
        break n as usize;
    };
    if got < hb.len() && !read_all(fd, hb[got..].as_mut_ptr(), hb.len() - got) {
        return None;
    }
    let resp = Resp::decode(&hb);
    if resp.seq != seq {
        return None;
    }
    let want = (resp.data_len as usize).min(out_len);
    // the data bytes already in place, then the rest where it belongs
    let mut have = got.saturating_sub(hb.len());
    if have > want {
        return None; // more than the header announced: not our shadow
    }
    let in_pipe = resp.flags & rsys::RESP_DATA_IN_PIPE != 0;
    if in_pipe && (pipe < 0 || have > 0 || resp.data_len as usize > out_len) {
        return None;
    }
    let fill = |p: *mut u8, n: usize| if in_pipe { read_pipe(pipe, p, n) } else { read_all(fd, p, n) };
    let mut skip = have;
    for o in out {
        if have >= want {
            break;
        }
        if skip >= o.n {
            skip -= o.n;
            continue;
        }
        let n = (o.n - skip).min(want - have);
        if !fill((o.p as usize + skip) as *mut u8, n) {
            return None;
        }
        have += n;
        skip = 0;
    }
    // (a well-behaved shadow never sends more than out_len)
    let mut extra = resp.data_len as usize - want;
    let mut sink = [0u8; 256];
    while extra > 0 {
        let n = extra.min(sink.len());
        if !read_all(fd, sink.as_mut_ptr(), n) {
            return None;
        }
        extra -= n;
    }
    Some(resp)
}

/// After a restart from an image: tell the home shadow where every channel stood when
/// the image was taken (answers remembered from later calls are forgotten).
pub fn resync_channels() {
    let mut at: Vec<(u64, u64)> = Vec::new();
    for c in CHANS.iter() {
        let key = c.key.load(Ordering::Acquire);
        if key == 0 {
            continue;
        }
        for d in 0..DEPTHS {
            let seq = c.seq[d].load(Ordering::Acquire);
            if seq > 0 {
                at.push((((key as u32 as u64) << 8) | d as u64, seq));
            }
        }
    }
    for (chan, seq) in at {
        manager_call(op::RESYNC, [chan, seq, 0, 0, 0, 0]);
    }
}

/// A forwarded call from the manager thread (no data moved); -errno on failure.
pub fn manager_call(op: u32, args: [u64; 6]) -> i64 {
    call(op, args, &[], &[], !0)
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

/// The process has reported its end and is on its way out: the session closing under it
/// is no loss of home (it must not stop itself then, or it would stay stopped for ever).
pub static EXITING: AtomicBool = AtomicBool::new(false);

/// The manager's calls (not under SUD): exit reports.
pub fn report_exit(status: i32) {
    EXITING.store(true, Ordering::Release);
    if SESSION_SET.load(Ordering::Acquire) {
        call(op::EXIT, [status as u32 as u64, 0, 0, 0, 0, 0], &[], &[], !0);
    }
}

// ---------------------------------------------------------------- enabling

const PR_SET_SYSCALL_USER_DISPATCH: i64 = 59;
const PR_SYS_DISPATCH_ON: u64 = 1;

/// Find the shim's executable mapping (the SUD allowed range). Manager thread, at start.
pub fn learn_text() -> bool {
    let me = sigsys_handler as *const () as u64;
    let Ok(maps) = crate::rawfs::read_to_string("/proc/self/maps") else { return false };
    for line in maps.lines() {
        let Some((range, _)) = line.split_once(' ') else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        if a <= me && me < b {
            TEXT_START.store(a, Ordering::Relaxed);
            TEXT_LEN.store(b - a, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Switch SUD on for the calling thread (raw calls only).
pub fn enable_thread() {
    if !REMOTE.load(Ordering::Acquire) {
        return;
    }
    let r = r!(libc::SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, TEXT_START.load(Ordering::Relaxed), TEXT_LEN.load(Ordering::Relaxed), SELECTOR.as_ptr());
    SUD_ON.with(|f| f.set(r == 0));
}

/// First code of a thread created while remote (from a clone trampoline).
extern "C" fn mos_sud_child_entry() {
    enable_thread();
}

/// Install the SIGSYS handler (raw rt_sigaction, our restorer, SA_NODEFER).
pub fn install_handler() {
    let a = ckpt::sys::KSigAction {
        handler: sigsys_handler as *const () as u64,
        flags: (libc::SA_SIGINFO | libc::SA_NODEFER) as u64 | ckpt::sys::SA_RESTORER,
        restorer: crate::ctxasm::mos_sigreturn as *const () as u64,
        mask: !ckpt::sys::sigbit(libc::SIGSYS),
    };
    ckpt::sys::rt_sigaction(libc::SIGSYS, Some(&a), None);
}

/// No application handler may block SIGSYS (a trap while it is blocked kills the
/// process): strip it from every installed handler's mask.
pub fn strip_sigsys_from_handlers() {
    let bit = ckpt::sys::sigbit(libc::SIGSYS);
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGSYS {
            continue;
        }
        let mut old = ckpt::sys::KSigAction::default();
        if ckpt::sys::rt_sigaction(sig, None, Some(&mut old)) == 0 && old.mask & bit != 0 {
            old.mask &= !bit;
            ckpt::sys::rt_sigaction(sig, Some(&old), None);
        }
    }
}

// ---------------------------------------------------------------- the handler

const EBADF: i64 = -(libc::EBADF as i64);
const ENOSYS: i64 = -(libc::ENOSYS as i64);
// x86_64 numbers of calls newer than the libc crate's table (Linux 6.13 .. 6.17)
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;
const SYS_OPEN_TREE_ATTR: i64 = 467;
const SYS_FILE_GETATTR: i64 = 468;
const SYS_FILE_SETATTR: i64 = 469;
const EINVAL: i64 = -(libc::EINVAL as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);

fn strlen(p: u64) -> Option<usize> {
    if p == 0 {
        return None;
    }
    let mut n = 0;
    // SAFETY: the call's contract: a non-null path (checked) is a NUL-terminated string;
    // read byte by byte up to its NUL (at most 8 KiB), as the kernel reads it.
    while unsafe { *((p + n as u64) as *const u8) } != 0 {
        n += 1;
        if n > 8192 {
            return None;
        }
    }
    Some(n)
}

fn path_io(p: u64) -> Option<Io> {
    strlen(p).map(|n| Io { p, n: n + 1 })
}

/// Paths that name this node's own kernel objects or devices and stay local.
fn local_path(p: u64) -> bool {
    let Some(n) = strlen(p) else { return false };
    // SAFETY: n bytes were just read by strlen.
    let s = unsafe { core::slice::from_raw_parts(p as *const u8, n) };
    // the process's name for one of its fds: where that fd is
    if let Some((fd, _)) = rsys::own_fd_path(s) {
        return !is_remote(fd as i64);
    }
    const LOCAL: [&[u8]; 8] = [
        b"/proc/self/",
        b"/proc/thread-self/",
        b"/sys/devices/system/cpu/",
        b"/proc/cpuinfo",
        b"/proc/meminfo",
        b"/dev/null",
        b"/dev/zero",
        b"/dev/urandom",
    ];
    LOCAL.iter().any(|l| s.starts_with(l)) || s == b"/dev/random" || s == b"/proc/self"
}

fn dir_ok(dirfd: i64, p: u64) -> Result<(), i64> {
    // absolute paths ignore dirfd; otherwise AT_FDCWD or a home directory
    // SAFETY: p is a NUL-terminated path (checked by the caller).
    let abs = p != 0 && unsafe { *(p as *const u8) } == b'/';
    if abs || dirfd == libc::AT_FDCWD as i64 || is_remote(dirfd) {
        Ok(())
    } else {
        Err(EBADF)
    }
}

/// A placeholder at the lowest free number >= `min`.
fn placeholder(min: i64) -> i64 {
    let src = PLACEHOLDER.load(Ordering::Relaxed);
    if src < 0 {
        return -(libc::EMFILE as i64);
    }
    r!(libc::SYS_fcntl, src, libc::F_DUPFD, min)
}

fn drop_placeholder(fd: i64) {
    set_remote(fd, false);
    r!(libc::SYS_close, fd);
}

fn bind_new(op: u32, mut args: [u64; 6], slot: usize, bulk: &[Io], out: &[Io], mask: u64) -> i64 {
    let n = placeholder(0);
    if n < 0 {
        return n;
    }
    args[slot] = n as u64;
    let r = call_x(op, args, bulk, out, mask, op == op::ACCEPT4);
    if r < 0 {
        r!(libc::SYS_close, n);
        return r;
    }
    set_remote(n, true);
    n
}

/// What the handler does with one call.
enum Act {
    /// return this result
    Ret(i64),
    /// run it natively (trampoline)
    Native,
}

/// Is this process a migrated body (its home fds forwarded)?
#[inline(always)]
pub fn away() -> bool {
    REMOTE.load(Ordering::Relaxed)
}

thread_local! {
    /// The calling thread runs under Syscall User Dispatch (set by [`enable_thread`]).
    /// Only such threads forward from the libc hooks: the manager thread and the image
    /// writer's process read and write their own descriptors, whose numbers may be home
    /// fd numbers of the application.
    static SUD_ON: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// A file call the application made through one of the libc functions the shim exports
/// (`read`, `pread64`, `write`, ... see hooks_io.rs), on a home fd of a migrated body:
/// forwarded here directly, without the Syscall User Dispatch trap (a SIGSYS frame and
/// its sigreturn, about 2 us of a 9 us forwarded 4 KiB read). Everything else is as on
/// the trap path: all signals but SIGSYS are blocked while the call is forwarded, as in
/// the SIGSYS handler, and `dispatch` gets the application's mask for the waits that let
/// signals through. `None`: not such a call (the caller runs libc's own function, whose
/// system call then traps as usual).
/// Callers test [`away`] first: at home a hook costs one load and a branch.
#[inline(never)]
pub fn fast_call(nr: i64, a: [u64; 6]) -> Option<i64> {
    if !is_remote(a[0] as i32 as i64) || SELFTEST.load(Ordering::Relaxed) || !SUD_ON.with(|f| f.get()) {
        return None;
    }
    let block = !sigsys_bit();
    let mut app = 0u64;
    if r!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &block as *const u64, &mut app as *mut u64, 8) != 0 {
        return None;
    }
    // no register frame here: the fd calls below never use it
    let mut g = [0i64; 23];
    let mut m = app;
    let act = dispatch(nr, a, &mut g, &mut m);
    r!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &m as *const u64, 0, 8);
    match act {
        Act::Ret(r) => Some(r),
        Act::Native => None,
    }
}

fn sigsys_bit() -> u64 {
    ckpt::sys::sigbit(libc::SIGSYS)
}

#[allow(clippy::too_many_lines)]
fn dispatch(nr: i64, a: [u64; 6], g: &mut [i64; 23], mask: &mut u64) -> Act {
    use Act::{Native, Ret};
    let m = *mask;
    let fd = a[0] as i32 as i64;
    let rem = is_remote(fd);
    let zero = [0u64; 6];
    let _ = g;
    match nr {
        // ---------------------------------------------------- fd calls
        libc::SYS_read if rem => {
            let intr = may_block(fd, m);
            Ret(call_x(op::READ, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), 0, 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m, intr))
        }
        libc::SYS_write if rem => Ret(write_loop(fd, a[1], a[2] as usize, None, m)),
        libc::SYS_pread64 if rem => Ret(call(op::PREAD64, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), a[3], 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m)),
        libc::SYS_pwrite64 if rem => Ret(write_loop(fd, a[1], a[2] as usize, Some(a[3] as i64), m)),
        libc::SYS_readv | libc::SYS_preadv | libc::SYS_preadv2 if rem => {
            let off = if nr == libc::SYS_readv || (nr == libc::SYS_preadv2 && a[3] as i64 == -1) { None } else { Some(a[3] as i64) };
            Ret(readv_fwd(fd, a[1], a[2] as usize, off, m))
        }
        libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2 if rem => {
            let off = if nr == libc::SYS_writev || (nr == libc::SYS_pwritev2 && a[3] as i64 == -1) { None } else { Some(a[3] as i64) };
            Ret(writev_fwd(fd, a[1], a[2] as usize, off, m))
        }
        libc::SYS_close => {
            if is_internal(fd) {
                Ret(0)
            } else if rem {
                let r = call(op::CLOSE, [fd as u64, 0, 0, 0, 0, 0], &[], &[], m);
                drop_placeholder(fd);
                epoll::forget_fd(fd);
                Ret(r)
            } else {
                epoll::forget_ep(fd, fd);
                Native
            }
        }
        libc::SYS_close_range => Ret(close_range(a[0] as u32, a[1] as u32, a[2] as u32, m)),
        libc::SYS_fstat if rem => Ret(call(op::FSTAT, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: a[1], n: 144 }], m)),
        libc::SYS_lseek | libc::SYS_ftruncate | libc::SYS_fsync | libc::SYS_fdatasync | libc::SYS_fchmod | libc::SYS_fchown
        | libc::SYS_fallocate | libc::SYS_fadvise64 | libc::SYS_flock | libc::SYS_shutdown | libc::SYS_listen
            if rem =>
        {
            let lock_wait = nr == libc::SYS_flock && a[1] & libc::LOCK_NB as u64 == 0;
            // each of these is forwarded as itself: its op is its system call number
            // (op::LSEEK, op::FTRUNCATE, op::FSYNC, ... op::LISTEN)
            Ret(call_x(nr as u32, a, &[], &[], m, lock_wait))
        }
        libc::SYS_fchdir if rem => Ret(call(op::FCHDIR, a, &[], &[], m)),
        libc::SYS_fchdir => Ret(EBADF),
        libc::SYS_fstatfs if rem => Ret(call(op::FSTATFS, a, &[], &[Io { p: a[1], n: 120 }], m)),
        libc::SYS_getdents64 if rem => Ret(call(op::GETDENTS64, [fd as u64, 0, a[2].min(rsys::MAX_IO as u64), 0, 0, 0], &[], &[Io { p: a[1], n: (a[2] as usize).min(rsys::MAX_IO) }], m)),
        libc::SYS_ioctl if rem => Ret(ioctl_fwd(fd, a[1], a[2], m)),
        libc::SYS_fcntl if rem => Ret(fcntl_fwd(fd, a[1] as i32, a[2], m)),
        libc::SYS_fcntl => match a[1] as i32 {
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => Native,
            _ => Native,
        },
        libc::SYS_dup if rem => {
            let n = placeholder(0);
            if n < 0 {
                return Ret(n);
            }
            let r = call(op::DUP3, [fd as u64, n as u64, 0, 0, 0, 0], &[], &[], m);
            if r < 0 {
                r!(libc::SYS_close, n);
                return Ret(r);
            }
            set_remote(n, true);
            Ret(n)
        }
        libc::SYS_dup2 | libc::SYS_dup3 => {
            let new = a[1] as i32 as i64;
            let flags = if nr == libc::SYS_dup3 { a[2] } else { 0 };
            if is_internal(new) {
                return Ret(-(libc::EBUSY as i64));
            }
            if fd == new {
                return if nr == libc::SYS_dup3 { Ret(EINVAL) } else if rem { Ret(new) } else { Native };
            }
            if !rem && !is_remote(new) {
                return Native;
            }
            if is_remote(new) {
                call(op::CLOSE, [new as u64, 0, 0, 0, 0, 0], &[], &[], m);
                set_remote(new, false);
            }
            if !rem {
                return Ret(r!(nr, a[0], a[1], a[2]));
            }
            let src = PLACEHOLDER.load(Ordering::Relaxed);
            let p = r!(libc::SYS_dup3, src, new, flags);
            if p < 0 {
                return Ret(p);
            }
            let r = call(op::DUP3, [fd as u64, new as u64, 0, 0, 0, 0], &[], &[], m);
            if r < 0 {
                r!(libc::SYS_close, new);
                return Ret(r);
            }
            set_remote(new, true);
            Ret(new)
        }
        libc::SYS_mmap if rem && a[3] & libc::MAP_ANONYMOUS as u64 == 0 => Ret(mmap_fwd(a, m)),
        libc::SYS_sendfile | libc::SYS_copy_file_range | libc::SYS_splice | libc::SYS_tee
            if rem || is_remote(a[1] as i32 as i64) || (nr == libc::SYS_copy_file_range && is_remote(a[2] as i32 as i64)) =>
        {
            Ret(EINVAL)
        }
        libc::SYS_epoll_ctl if is_remote(a[2] as i32 as i64) => Ret(epoll::ctl(fd, a[1] as i32, a[2] as i32 as i64, a[3])),
        libc::SYS_epoll_wait if epoll::has(fd) => Ret(epoll::wait(fd, a[1], a[2] as i32 as i64, a[3] as i32 as i64, m)),
        libc::SYS_epoll_pwait if epoll::has(fd) => {
            // SAFETY: epoll_pwait's contract: a non-null sigmask (checked) points at a sigset; its
            // first 8 bytes are read.
            let wm = if a[4] != 0 { (unsafe { *(a[4] as *const u64) }) & !sigsys_bit() } else { m };
            Ret(epoll::wait(fd, a[1], a[2] as i32 as i64, a[3] as i32 as i64, wm))
        }
        libc::SYS_epoll_pwait2 if epoll::has(fd) => {
            let t = if a[3] == 0 { -1 } else {
                // SAFETY: epoll_pwait2's contract: a non-null timeout (checked) points at a struct
                // timespec.
                let ts = unsafe { &*(a[3] as *const libc::timespec) };
                ts.tv_sec.saturating_mul(1000).saturating_add(ts.tv_nsec / 1_000_000)
            };
            // SAFETY: epoll_pwait2's contract: a non-null sigmask (checked) points at a sigset; its
            // first 8 bytes are read.
            let wm = if a[4] != 0 { (unsafe { *(a[4] as *const u64) }) & !sigsys_bit() } else { m };
            Ret(epoll::wait(fd, a[1], a[2] as i32 as i64, t, wm))
        }
        libc::SYS_poll => Ret(poll_mixed(a[0], a[1] as usize, a[2] as i32 as i64, m, g, nr)),
        libc::SYS_ppoll => {
            let t = if a[2] == 0 { -1 } else {
                // SAFETY: ppoll's contract: a non-null timeout (checked) points at a struct timespec.
                let ts = unsafe { &*(a[2] as *const libc::timespec) };
                ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
            };
            if !any_remote_pollfd(a[0], a[1] as usize) {
                return strip_mask_arg(g, libc::REG_R10 as usize, a[3]);
            }
            Ret(poll_mixed(a[0], a[1] as usize, t, m, g, nr))
        }
        libc::SYS_select | libc::SYS_pselect6 => Ret(select_fwd(nr, a, m, g)),
        // sockets
        libc::SYS_socket => Ret(bind_new(op::SOCKET, [a[0], a[1], a[2], 0, 0, 0], 3, &[], &[], m)),
        // op::CONNECT, op::BIND: the system call numbers
        libc::SYS_connect | libc::SYS_bind if rem => Ret(call_x(nr as u32, [fd as u64, 0, 0, 0, 0, 0], &[Io { p: a[1], n: a[2] as usize }], &[], m, nr == libc::SYS_connect)),
        libc::SYS_accept | libc::SYS_accept4 if rem => {
            let flags = if nr == libc::SYS_accept4 { a[3] } else { 0 };
            let mut ab = [0u8; 128];
            let want = a[1] != 0 && a[2] != 0;
            let r = bind_new(op::ACCEPT4, [fd as u64, 0, flags, 0, want as u64, 0], 3, &[], &[Io { p: ab.as_mut_ptr() as u64, n: 128 }], m);
            if r >= 0 && want {
                copy_addr(&ab, 128, a[1], a[2]);
            }
            Ret(r)
        }
        libc::SYS_getsockname | libc::SYS_getpeername if rem => {
            let mut ab = [0u8; 128];
            // op::GETSOCKNAME, op::GETPEERNAME: the system call numbers
            let r = call(nr as u32, [fd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: ab.as_mut_ptr() as u64, n: 128 }], m);
            if r >= 0 {
                copy_addr(&ab, addr_len(&ab), a[1], a[2]);
            }
            Ret(r.min(0))
        }
        libc::SYS_setsockopt if rem => Ret(call(op::SETSOCKOPT, [fd as u64, a[1], a[2], 0, 0, 0], &[Io { p: a[3], n: a[4] as usize }], &[], m)),
        libc::SYS_getsockopt if rem => {
            if a[4] == 0 {
                return Ret(EFAULT);
            }
            // SAFETY: getsockopt's contract: a non-null optlen (checked) points at a writable socklen_t.
            let lp = unsafe { &mut *(a[4] as *mut u32) };
            let mut buf = [0u8; 256];
            let want = (*lp as usize).min(256);
            let r = call(op::GETSOCKOPT, [fd as u64, a[1], a[2], want as u64, 0, 0], &[], &[Io { p: buf.as_mut_ptr() as u64, n: want }], m);
            if r >= 0 {
                // SAFETY: getsockopt's contract: optval has room for *lp bytes, and want <= *lp.
                unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), a[3] as *mut u8, want) };
                *lp = want as u32;
            }
            Ret(r.min(0))
        }
        libc::SYS_sendto if rem => Ret(sendto_fwd(fd, &[Io { p: a[1], n: a[2] as usize }], a[3], a[4], a[5] as usize, m)),
        libc::SYS_recvfrom if rem => Ret(recvfrom_fwd(fd, &[Io { p: a[1], n: a[2] as usize }], a[3], a[4], a[5], m)),
        libc::SYS_sendmsg if rem => {
            // SAFETY: sendmsg's contract: msg points at a struct msghdr (only read).
            Ret(sendmsg_fwd(fd, unsafe { &*(a[1] as *const libc::msghdr) }, a[2], m))
        }
        libc::SYS_recvmsg if rem => {
            // SAFETY: recvmsg's contract: msg points at a writable struct msghdr.
            Ret(recvmsg_fwd(fd, unsafe { &mut *(a[1] as *mut libc::msghdr) }, a[2], m))
        }
        libc::SYS_sendmmsg if rem => Ret(mmsg_fwd(fd, a[1], a[2] as u32, a[3], m, true)),
        libc::SYS_recvmmsg if rem => Ret(mmsg_fwd(fd, a[1], a[2] as u32, a[3], m, false)),
        // ---------------------------------------------------- paths
        libc::SYS_open | libc::SYS_creat | libc::SYS_openat | libc::SYS_openat2 => {
            let (dirfd, p, flags, mode) = match nr {
                libc::SYS_open => (libc::AT_FDCWD as i64, a[0], a[1], a[2]),
                libc::SYS_creat => (libc::AT_FDCWD as i64, a[0], (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64, a[1]),
                libc::SYS_openat => (a[0] as i32 as i64, a[1], a[2], a[3]),
                _ => {
                    // struct open_how { u64 flags, mode, resolve }
                    // SAFETY: openat2's contract: how points at a struct open_how, whose first
                    // three u64 are flags, mode, resolve.
                    let how = unsafe { core::slice::from_raw_parts(a[2] as *const u64, 3) };
                    if how[2] != 0 {
                        return Ret(-(libc::EOPNOTSUPP as i64));
                    }
                    (a[0] as i32 as i64, a[1], how[0], how[1])
                }
            };
            if local_path(p) {
                return Native;
            }
            let Some(pi) = path_io(p) else { return Ret(EFAULT) };
            if let Err(e) = dir_ok(dirfd, p) {
                return Ret(e);
            }
            Ret(bind_new(op::OPENAT, [dirfd as u64, 0, flags, mode, 0, 0], 4, &[pi], &[], m))
        }
        libc::SYS_stat | libc::SYS_lstat | libc::SYS_newfstatat => {
            let (dirfd, p, buf, flags) = match nr {
                libc::SYS_stat => (libc::AT_FDCWD as i64, a[0], a[1], 0),
                libc::SYS_lstat => (libc::AT_FDCWD as i64, a[0], a[1], libc::AT_SYMLINK_NOFOLLOW as u64),
                _ => (a[0] as i32 as i64, a[1], a[2], a[3]),
            };
            if strlen(p) == Some(0) && flags & libc::AT_EMPTY_PATH as u64 != 0 {
                return if is_remote(dirfd) { Ret(call(op::FSTAT, [dirfd as u64, 0, 0, 0, 0, 0], &[], &[Io { p: buf, n: 144 }], m)) } else { Native };
            }
            path_call(op::NEWFSTATAT, dirfd, p, [0, 0, 0, flags], &[Io { p: buf, n: 144 }], m)
        }
        libc::SYS_statx => {
            let dirfd = a[0] as i32 as i64;
            if strlen(a[1]) == Some(0) && a[2] & libc::AT_EMPTY_PATH as u64 != 0 && !is_remote(dirfd) {
                return Native;
            }
            if strlen(a[1]) != Some(0) && local_path(a[1]) {
                return Native;
            }
            let Some(pi) = path_io(a[1]) else { return Ret(EFAULT) };
            if strlen(a[1]) != Some(0) {
                if let Err(e) = dir_ok(dirfd, a[1]) {
                    return Ret(e);
                }
            }
            Ret(call(op::STATX, [dirfd as u64, 0, a[2], a[3], 0, 0], &[pi], &[Io { p: a[4], n: 256 }], m))
        }
        libc::SYS_access => path_call(op::FACCESSAT2, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_faccessat => path_call(op::FACCESSAT2, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_faccessat2 => path_call(op::FACCESSAT2, a[0] as i32 as i64, a[1], [0, 0, a[2], a[3]], &[], m),
        libc::SYS_unlink => path_call(op::UNLINKAT, libc::AT_FDCWD as i64, a[0], [0, 0, 0, 0], &[], m),
        libc::SYS_rmdir => path_call(op::UNLINKAT, libc::AT_FDCWD as i64, a[0], [0, 0, libc::AT_REMOVEDIR as u64, 0], &[], m),
        libc::SYS_unlinkat => path_call(op::UNLINKAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_mkdir => path_call(op::MKDIRAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_mkdirat => path_call(op::MKDIRAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_mknod => path_call(op::MKNODAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], a[2]], &[], m),
        libc::SYS_mknodat => path_call(op::MKNODAT, a[0] as i32 as i64, a[1], [0, 0, a[2], a[3]], &[], m),
        libc::SYS_chmod => path_call(op::FCHMODAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], 0], &[], m),
        libc::SYS_fchmodat => path_call(op::FCHMODAT, a[0] as i32 as i64, a[1], [0, 0, a[2], 0], &[], m),
        libc::SYS_fchmodat2 => {
            let (d, flags) = (a[0] as i32 as i64, a[3] as i32);
            // (an empty path with AT_EMPTY_PATH names dirfd itself)
            let empty = a[1] == 0 || strlen(a[1]) == Some(0);
            if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
                Ret(EINVAL)
            } else if flags & libc::AT_EMPTY_PATH != 0 && empty {
                if is_remote(d) {
                    Ret(call(op::FCHMOD, [d as u64, a[2], 0, 0, 0, 0], &[], &[], m))
                } else {
                    Native
                }
            } else if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
                // (a symlink's own mode cannot be changed on Linux)
                Ret(-(libc::EOPNOTSUPP as i64))
            } else {
                path_call(op::FCHMODAT, d, a[1], [0, 0, a[2], 0], &[], m)
            }
        }
        libc::SYS_chown => path_call(op::FCHOWNAT, libc::AT_FDCWD as i64, a[0], [0, 0, a[1], a[2]], &[], m),
        libc::SYS_lchown => path_call2(op::FCHOWNAT, libc::AT_FDCWD as i64, a[0], [a[1], a[2], libc::AT_SYMLINK_NOFOLLOW as u64], m),
        libc::SYS_fchownat => path_call2(op::FCHOWNAT, a[0] as i32 as i64, a[1], [a[2], a[3], a[4]], m),
        libc::SYS_truncate => {
            if local_path(a[0]) {
                return Native;
            }
            let Some(pi) = path_io(a[0]) else { return Ret(EFAULT) };
            Ret(call(op::TRUNCATE, [0, a[1], 0, 0, 0, 0], &[pi], &[], m))
        }
        libc::SYS_chdir => {
            let Some(pi) = path_io(a[0]) else { return Ret(EFAULT) };
            Ret(call(op::CHDIR, zero, &[pi], &[], m))
        }
        libc::SYS_getcwd => Ret(call(op::GETCWD, [0, a[1], 0, 0, 0, 0], &[], &[Io { p: a[0], n: a[1] as usize }], m)),
        libc::SYS_readlink => readlink_fwd(libc::AT_FDCWD as i64, a[0], a[1], a[2], m),
        libc::SYS_readlinkat => readlink_fwd(a[0] as i32 as i64, a[1], a[2], a[3], m),
        libc::SYS_rename => two_paths(op::RENAMEAT2, libc::AT_FDCWD as i64, a[0], libc::AT_FDCWD as i64, a[1], 0, m),
        libc::SYS_renameat => two_paths(op::RENAMEAT2, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], 0, m),
        libc::SYS_renameat2 => two_paths(op::RENAMEAT2, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4], m),
        libc::SYS_link => two_paths(op::LINKAT, libc::AT_FDCWD as i64, a[0], libc::AT_FDCWD as i64, a[1], 0, m),
        libc::SYS_linkat => two_paths(op::LINKAT, a[0] as i32 as i64, a[1], a[2] as i32 as i64, a[3], a[4], m),
        libc::SYS_symlink | libc::SYS_symlinkat => {
            let (t, d, l) = if nr == libc::SYS_symlink { (a[0], libc::AT_FDCWD as i64, a[1]) } else { (a[0], a[1] as i32 as i64, a[2]) };
            let (Some(ti), Some(li)) = (path_io(t), path_io(l)) else { return Ret(EFAULT) };
            if let Err(e) = dir_ok(d, l) {
                return Ret(e);
            }
            Ret(call(op::SYMLINKAT, [0, d as u64, 0, 0, 0, 0], &[ti, li], &[], m))
        }
        libc::SYS_utimensat | libc::SYS_utimes | libc::SYS_utime | libc::SYS_futimesat => Ret(utime_fwd(nr, a, m)),
        libc::SYS_statfs => {
            if local_path(a[0]) {
                return Native;
            }
            let Some(pi) = path_io(a[0]) else { return Ret(EFAULT) };
            Ret(call(op::STATFS, zero, &[pi], &[Io { p: a[1], n: 120 }], m))
        }
        libc::SYS_getxattr | libc::SYS_lgetxattr | libc::SYS_listxattr | libc::SYS_llistxattr | libc::SYS_setxattr
        | libc::SYS_lsetxattr | libc::SYS_removexattr | libc::SYS_lremovexattr => Ret(-(libc::EOPNOTSUPP as i64)),
        libc::SYS_fgetxattr | libc::SYS_flistxattr | libc::SYS_fsetxattr | libc::SYS_fremovexattr if rem => Ret(-(libc::EOPNOTSUPP as i64)),
        libc::SYS_inotify_add_watch | libc::SYS_fanotify_mark | libc::SYS_name_to_handle_at | libc::SYS_open_by_handle_at
        | libc::SYS_chroot | libc::SYS_mount | libc::SYS_umount2 | libc::SYS_pivot_root | libc::SYS_acct | libc::SYS_swapon
        | libc::SYS_swapoff | libc::SYS_uselib | libc::SYS_open_tree | libc::SYS_move_mount | libc::SYS_fsopen
        | libc::SYS_fspick | libc::SYS_mount_setattr | libc::SYS_quotactl | SYS_OPEN_TREE_ATTR
        | libc::SYS_execve | libc::SYS_execveat | libc::SYS_fork | libc::SYS_vfork => Ret(ENOSYS),
        // newer path-based calls without a forwarded form: extended attributes and inode
        // flags by path (setxattrat .. removexattrat, file_getattr, file_setattr)
        SYS_SETXATTRAT..=SYS_REMOVEXATTRAT | SYS_FILE_GETATTR | SYS_FILE_SETATTR => Ret(-(libc::EOPNOTSUPP as i64)),
        // asynchronous I/O the kernel would do on this node's files (an io_uring can open
        // files by path; both would read and write the placeholders of home fds): refused,
        // and callers fall back to plain calls
        libc::SYS_io_uring_setup | libc::SYS_io_setup => Ret(ENOSYS),
        // ---------------------------------------------------- signals
        libc::SYS_rt_sigprocmask => {
            // emulated on the saved mask, which the return from this handler installs
            let old = *mask;
            if a[1] != 0 {
                // SAFETY: rt_sigprocmask's contract: a non-null set (checked) points at a sigset;
                // its first word (signals 1..64) is read.
                let set = unsafe { *(a[1] as *const u64) };
                let frz = ckpt::sys::sigbit(crate::signals::FREEZE_SIG.load(Ordering::Relaxed));
                let set = set & !sigsys_bit() & !frz;
                match a[0] as i32 {
                    libc::SIG_BLOCK => *mask |= set,
                    libc::SIG_UNBLOCK => *mask &= !set,
                    libc::SIG_SETMASK => *mask = set,
                    _ => return Ret(EINVAL),
                }
            }
            if a[2] != 0 {
                // SAFETY: rt_sigprocmask's contract: a non-null oldset (checked) points at a
                // writable sigset; its first word is written.
                unsafe { *(a[2] as *mut u64) = old };
            }
            Ret(0)
        }
        libc::SYS_rt_sigaction => {
            if a[0] as i32 == libc::SIGSYS {
                return Ret(0);
            }
            if a[1] == 0 {
                return Native;
            }
            // SAFETY: rt_sigaction's contract: a non-null act (checked) points at a kernel struct
            // sigaction, which KSigAction mirrors.
            let mut k = unsafe { *(a[1] as *const ckpt::sys::KSigAction) };
            k.mask &= !sigsys_bit();
            let r = r!(libc::SYS_rt_sigaction, a[0], &k as *const ckpt::sys::KSigAction, a[2], a[3]);
            sigactions_changed();
            Ret(r)
        }
        libc::SYS_rt_sigsuspend => strip_mask_arg(g, libc::REG_RDI as usize, a[0]),
        _ => Native,
    }
}

/// Point the mask argument in register `reg` at a per-thread copy without SIGSYS.
fn strip_mask_arg(g: &mut [i64; 23], reg: usize, p: u64) -> Act {
    if p == 0 {
        return Act::Native;
    }
    // SAFETY: the contract of the call whose mask argument this is: non-null (checked) points at a
    // sigset; its first word is read.
    let v = unsafe { *(p as *const u64) };
    if v & sigsys_bit() == 0 {
        return Act::Native;
    }
    if let Some(c) = my_chan() {
        c.mask.store(v & !sigsys_bit(), Ordering::Relaxed);
        g[reg] = c.mask.as_ptr() as i64;
    }
    Act::Native
}

fn path_call(op: u32, dirfd: i64, p: u64, extra: [u64; 4], out: &[Io], m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(call(op, [dirfd as u64, 0, extra[2], extra[3], 0, 0], &[pi], out, m))
}

fn path_call2(op: u32, dirfd: i64, p: u64, x: [u64; 3], m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(call(op, [dirfd as u64, 0, x[0], x[1], x[2], 0], &[pi], &[], m))
}

fn two_paths(op: u32, d1: i64, p1: u64, d2: i64, p2: u64, flags: u64, m: u64) -> Act {
    let (Some(i1), Some(i2)) = (path_io(p1), path_io(p2)) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(d1, p1).and(dir_ok(d2, p2)) {
        return Act::Ret(e);
    }
    Act::Ret(call(op, [d1 as u64, 0, d2 as u64, 0, flags, 0], &[i1, i2], &[], m))
}

fn readlink_fwd(dirfd: i64, p: u64, buf: u64, size: u64, m: u64) -> Act {
    if local_path(p) {
        return Act::Native;
    }
    let Some(pi) = path_io(p) else { return Act::Ret(EFAULT) };
    if let Err(e) = dir_ok(dirfd, p) {
        return Act::Ret(e);
    }
    Act::Ret(call(op::READLINKAT, [dirfd as u64, 0, 0, size, 0, 0], &[pi], &[Io { p: buf, n: size as usize }], m))
}

fn utime_fwd(nr: i64, a: [u64; 6], m: u64) -> i64 {
    // everything becomes utimensat(dirfd, path, times, flags)
    let mut ts = [0i64; 4];
    let (dirfd, p, given, flags) = match nr {
        libc::SYS_utimensat => {
            if a[2] != 0 {
                // SAFETY: utimensat's contract: non-null times (checked) points at struct
                // timespec[2], 4 i64.
                unsafe { core::ptr::copy_nonoverlapping(a[2] as *const i64, ts.as_mut_ptr(), 4) };
            }
            (a[0] as i32 as i64, a[1], a[2] != 0, a[3])
        }
        libc::SYS_utime => {
            if a[1] != 0 {
                // SAFETY: utime's contract: non-null times (checked) points at struct utimbuf
                // {actime, modtime}, 2 i64.
                let u = unsafe { core::slice::from_raw_parts(a[1] as *const i64, 2) };
                ts = [u[0], 0, u[1], 0];
            }
            (libc::AT_FDCWD as i64, a[0], a[1] != 0, 0)
        }
        _ => {
            let (d, p, tv) = if nr == libc::SYS_utimes { (libc::AT_FDCWD as i64, a[0], a[1]) } else { (a[0] as i32 as i64, a[1], a[2]) };
            if tv != 0 {
                // SAFETY: utimes'/futimesat's contract: non-null times (checked) points at struct
                // timeval[2], 4 i64.
                let u = unsafe { core::slice::from_raw_parts(tv as *const i64, 4) };
                ts = [u[0], u[1] * 1000, u[2], u[3] * 1000];
            }
            (d, p, tv != 0, 0)
        }
    };
    let empty = [0u8; 1];
    let pi = if p == 0 {
        if !is_remote(dirfd) {
            return r!(libc::SYS_utimensat, dirfd, 0, if given { ts.as_ptr() as u64 } else { 0 }, flags);
        }
        Io { p: empty.as_ptr() as u64, n: 1 }
    } else {
        if local_path(p) {
            return r!(libc::SYS_utimensat, dirfd, p, if given { ts.as_ptr() as u64 } else { 0 }, flags);
        }
        if let Err(e) = dir_ok(dirfd, p) {
            return e;
        }
        match path_io(p) {
            Some(x) => x,
            None => return EFAULT,
        }
    };
    let ti = Io { p: ts.as_ptr() as u64, n: if given { 32 } else { 0 } };
    call(op::UTIMENSAT, [dirfd as u64, 0, given as u64, flags, 0, 0], &[ti, pi], &[], m)
}

fn write_loop(fd: i64, mut p: u64, mut n: usize, off: Option<i64>, m: u64) -> i64 {
    let mut done = 0i64;
    loop {
        let k = n.min(rsys::MAX_IO);
        let r = match off {
            None => call_x(op::WRITE, [fd as u64, 0, 0, 0, 0, 0], &[Io { p, n: k }], &[], m, may_block(fd, m)),
            Some(o) => call(op::PWRITE64, [fd as u64, 0, 0, (o + done) as u64, 0, 0], &[Io { p, n: k }], &[], m),
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        done += r;
        n -= r as usize;
        p += r as u64;
        if n == 0 || (r as usize) < k {
            return done;
        }
    }
}

fn iovs(iov: u64, cnt: usize, v: &mut [Io; 8]) -> Option<usize> {
    if cnt > v.len() && iov != 0 {
        // more than 8: the caller handles them one by one
        return None;
    }
    for (i, slot) in v.iter_mut().enumerate().take(cnt) {
        // SAFETY: readv's (and sendmsg's / recvmsg's msg_iov) contract: iov points at cnt
        // struct iovec, and i < cnt.
        let e = unsafe { &*((iov as *const libc::iovec).add(i)) };
        *slot = Io { p: e.iov_base as u64, n: e.iov_len };
    }
    Some(cnt)
}

fn writev_fwd(fd: i64, iov: u64, cnt: usize, off: Option<i64>, m: u64) -> i64 {
    let mut done = 0i64;
    for i in 0..cnt {
        // SAFETY: writev's contract: iov points at cnt struct iovec, and i < cnt.
        let e = unsafe { &*((iov as *const libc::iovec).add(i)) };
        if e.iov_len == 0 {
            continue;
        }
        let r = write_loop(fd, e.iov_base as u64, e.iov_len, off.map(|o| o + done), m);
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        done += r;
        if (r as usize) < e.iov_len {
            break;
        }
    }
    done
}

fn readv_fwd(fd: i64, iov: u64, cnt: usize, off: Option<i64>, m: u64) -> i64 {
    let mut v = [NOIO; 8];
    if let Some(k) = iovs(iov, cnt, &mut v) {
        let total: usize = v[..k].iter().map(|x| x.n).sum::<usize>().min(rsys::MAX_IO);
        let mut left = total;
        for x in v[..k].iter_mut() {
            x.n = x.n.min(left);
            left -= x.n;
        }
        return match off {
            None => call_x(op::READ, [fd as u64, 0, total as u64, 0, 0, 0], &[], &v[..k], m, may_block(fd, m)),
            Some(o) => call(op::PREAD64, [fd as u64, 0, total as u64, o as u64, 0, 0], &[], &v[..k], m),
        };
    }
    // many buffers: one call per buffer, stop at a short read
    let mut done = 0i64;
    for i in 0..cnt {
        // SAFETY: readv's contract: iov points at cnt struct iovec, and i < cnt.
        let e = unsafe { &*((iov as *const libc::iovec).add(i)) };
        let n = e.iov_len.min(rsys::MAX_IO);
        let out = [Io { p: e.iov_base as u64, n }];
        let r = match off {
            None => call_x(op::READ, [fd as u64, 0, n as u64, 0, 0, 0], &[], &out, m, may_block(fd, m)),
            Some(o) => call(op::PREAD64, [fd as u64, 0, n as u64, (o + done) as u64, 0, 0], &[], &out, m),
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        done += r;
        if (r as usize) < n {
            break;
        }
    }
    done
}

fn close_range(first: u32, last: u32, flags: u32, m: u64) -> i64 {
    // home files in the range are closed at home; our own descriptors are skipped
    let hi = last.min(MAXFD as u32 - 1);
    let mut start = first as i64;
    let mut fd = first as i64;
    while fd <= hi as i64 {
        if is_remote(fd) && flags & libc::CLOSE_RANGE_CLOEXEC == 0 {
            call(op::CLOSE, [fd as u64, 0, 0, 0, 0, 0], &[], &[], m);
            set_remote(fd, false);
            epoll::forget_fd(fd);
        }
        if is_internal(fd) {
            if fd > start {
                r!(libc::SYS_close_range, start, fd - 1, flags);
            }
            start = fd + 1;
        }
        fd += 1;
    }
    if flags & libc::CLOSE_RANGE_CLOEXEC == 0 {
        epoll::forget_ep(first as i64, last as i64);
    }
    if start <= last as i64 {
        return r!(libc::SYS_close_range, start, last, flags);
    }
    0
}

fn fcntl_fwd(fd: i64, cmd: i32, arg: u64, m: u64) -> i64 {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let n = placeholder(arg as i64);
            if n < 0 {
                return n;
            }
            let r = call(op::DUP3, [fd as u64, n as u64, 0, 0, 0, 0], &[], &[], m);
            if r < 0 {
                r!(libc::SYS_close, n);
                return r;
            }
            if cmd == libc::F_DUPFD_CLOEXEC {
                r!(libc::SYS_fcntl, n, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            set_remote(n, true);
            n
        }
        // close-on-exec belongs to the fd number: the placeholder keeps it
        libc::F_GETFD | libc::F_SETFD => r!(libc::SYS_fcntl, fd, cmd, arg),
        libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => {
            let io = [Io { p: arg, n: 32 }];
            call_x(op::FCNTL, [fd as u64, cmd as u64, 0, 0, 0, 0], &io, &io, m, cmd == libc::F_SETLKW || cmd == libc::F_OFD_SETLKW)
        }
        _ => call(op::FCNTL, [fd as u64, cmd as u64, arg, 0, 0, 0], &[], &[], m),
    }
}

fn ioctl_fwd(fd: i64, req: u64, arg: u64, m: u64) -> i64 {
    let (inl, outl) = match rsys::ioctl_shape(req) {
        rsys::IoctlShape::Forward { input, output } => (input, output),
        rsys::IoctlShape::FdFlag => return r!(libc::SYS_ioctl, fd, req, arg),
        rsys::IoctlShape::Unsupported => return -(libc::ENOTTY as i64),
    };
    call(op::IOCTL, [fd as u64, req, 0, 0, 0, 0], &[Io { p: arg, n: inl }], &[Io { p: arg, n: outl }], m)
}

fn mmap_fwd(a: [u64; 6], m: u64) -> i64 {
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i32 as i64, a[5]);
    let shared = flags & libc::MAP_SHARED as u64 != 0;
    if shared && prot & libc::PROT_WRITE as u64 != 0 {
        crate::manager::log("remote: a writable shared mapping of a home file is refused (ENODEV)");
        return -(libc::ENODEV as i64);
    }
    // a private copy of the file's bytes (read at home), then the asked protection
    let keep = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE | libc::MAP_POPULATE | libc::MAP_NORESERVE) as u64;
    let p = r!(libc::SYS_mmap, addr, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE as u64 | libc::MAP_ANONYMOUS as u64 | keep, -1i64, 0);
    if p < 0 {
        return p;
    }
    let mut done = 0u64;
    while done < len {
        let k = (len - done).min(rsys::MAX_IO as u64);
        let r = call(op::PREAD64, [fd as u64, 0, k, off + done, 0, 0], &[], &[Io { p: p as u64 + done, n: k as usize }], m);
        if r < 0 {
            r!(libc::SYS_munmap, p, len);
            return r;
        }
        if r == 0 {
            break;
        }
        done += r as u64;
    }
    r!(libc::SYS_mprotect, p, len, prot);
    p
}

fn addr_len(ab: &[u8; 128]) -> usize {
    match u16::from_ne_bytes([ab[0], ab[1]]) as i32 {
        libc::AF_INET => 16,
        libc::AF_INET6 => 28,
        libc::AF_UNIX => 110,
        _ => 128,
    }
}

fn copy_addr(ab: &[u8], n: usize, addr: u64, lenp: u64) {
    if addr == 0 || lenp == 0 {
        return;
    }
    // SAFETY: accept's, getsockname's and recvfrom's contract: a non-null addrlen (checked)
    // points at a writable socklen_t and a non-null addr at *addrlen writable bytes; k <= *addrlen.
    unsafe {
        let l = &mut *(lenp as *mut u32);
        let k = (*l as usize).min(n).min(ab.len());
        core::ptr::copy_nonoverlapping(ab.as_ptr(), addr as *mut u8, k);
        *l = n as u32;
    }
}

fn sendto_fwd(fd: i64, data: &[Io], flags: u64, addr: u64, alen: usize, m: u64) -> i64 {
    let mut b = [NOIO; 9];
    let mut k = 0;
    let mut total = 0usize;
    for d in data {
        b[k] = *d;
        k += 1;
        total += d.n;
    }
    if total > rsys::MAX_IO {
        return -(libc::EMSGSIZE as i64);
    }
    let al = if addr != 0 { alen } else { 0 };
    b[k] = Io { p: addr, n: al };
    k += 1;
    call_x(op::SENDTO, [fd as u64, 0, 0, flags, al as u64, 0], &b[..k], &[], m, true)
}

fn recvfrom_fwd(fd: i64, data: &[Io], flags: u64, addr: u64, lenp: u64, m: u64) -> i64 {
    let want = addr != 0 && lenp != 0;
    let mut area = [0u8; 4 + rsys::RECV_ADDR_AREA];
    let mut out = [NOIO; 9];
    let mut k = 0;
    if want {
        out[0] = Io { p: area.as_mut_ptr() as u64, n: area.len() };
        k = 1;
    }
    let mut total = 0usize;
    for d in data {
        let n = d.n.min(rsys::MAX_IO - total);
        out[k] = Io { p: d.p, n };
        k += 1;
        total += n;
    }
    let r = call_x(op::RECVFROM, [fd as u64, 0, total as u64, flags, want as u64, 0], &[], &out[..k], m, true);
    if r >= 0 && want {
        let n = u32::from_le_bytes([area[0], area[1], area[2], area[3]]) as usize;
        copy_addr(&area[4..], n.min(rsys::RECV_ADDR_AREA), addr, lenp);
    }
    r
}

fn sendmsg_fwd(fd: i64, h: &libc::msghdr, flags: u64, m: u64) -> i64 {
    if h.msg_controllen != 0 {
        return -(libc::EOPNOTSUPP as i64);
    }
    let mut v = [NOIO; 8];
    let Some(k) = iovs(h.msg_iov as u64, h.msg_iovlen, &mut v) else { return EINVAL };
    sendto_fwd(fd, &v[..k], flags, h.msg_name as u64, h.msg_namelen as usize, m)
}

fn recvmsg_fwd(fd: i64, h: &mut libc::msghdr, flags: u64, m: u64) -> i64 {
    let mut v = [NOIO; 8];
    let Some(k) = iovs(h.msg_iov as u64, h.msg_iovlen, &mut v) else { return EINVAL };
    let nl = &mut h.msg_namelen as *mut u32 as u64;
    let r = recvfrom_fwd(fd, &v[..k], flags, h.msg_name as u64, if h.msg_name.is_null() { 0 } else { nl }, m);
    h.msg_controllen = 0;
    h.msg_flags = 0;
    r
}

/// sendmmsg / recvmmsg on a home socket: one forwarded sendmsg / recvmsg per message.
/// The count done so far, or the first call's error. recvmmsg waits for every message
/// (for the first only with MSG_WAITFORONE); its timeout argument is not applied.
fn mmsg_fwd(fd: i64, vec: u64, n: u32, flags: u64, m: u64, send: bool) -> i64 {
    let wait_one = flags & libc::MSG_WAITFORONE as u64 != 0;
    let base = flags & !(libc::MSG_WAITFORONE as u64);
    let mut done = 0i64;
    for i in 0..n.min(1024) as usize {
        // SAFETY: sendmmsg's/recvmmsg's contract: vec points at n struct mmsghdr, and i < n.
        let e = unsafe { &mut *(vec as *mut libc::mmsghdr).add(i) };
        let r = if send {
            sendmsg_fwd(fd, &e.msg_hdr, base, m)
        } else {
            let fl = if wait_one && i > 0 { base | libc::MSG_DONTWAIT as u64 } else { base };
            recvmsg_fwd(fd, &mut e.msg_hdr, fl, m)
        };
        if r < 0 {
            return if done > 0 { done } else { r };
        }
        e.msg_len = r as u32;
        done += 1;
    }
    done
}

fn any_remote_pollfd(p: u64, n: usize) -> bool {
    (0..n).any(|i| {
        // SAFETY: poll's contract (select_fwd passes its own array): p points at n struct
        // pollfd, and i < n.
        let f = unsafe { &*((p as *const libc::pollfd).add(i)) };
        is_remote(f.fd as i64)
    })
}

/// poll over home and local descriptors: local ones natively, home ones at home, in
/// short turns until something is ready or the time is up.
/// A fresh epoll fd watching the local entries of a pollfd array (-1 if none can be made).
fn local_watch(fds: &[libc::pollfd]) -> i64 {
    let ep = r!(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC);
    if ep < 0 {
        return -1;
    }
    for f in fds.iter().filter(|f| f.fd >= 0 && !is_remote(f.fd as i64)) {
        let mut ev = libc::epoll_event { events: f.events as u16 as u32, u64: 0 };
        r!(libc::SYS_epoll_ctl, ep, libc::EPOLL_CTL_ADD, f.fd, &mut ev as *mut libc::epoll_event);
    }
    ep
}

fn poll_mixed(p: u64, n: usize, timeout_ms: i64, m: u64, g: &mut [i64; 23], nr: i64) -> i64 {
    if !any_remote_pollfd(p, n) {
        if nr == libc::SYS_poll {
            return r!(libc::SYS_poll, p, n, timeout_ms);
        }
        return r!(libc::SYS_ppoll, g[libc::REG_RDI as usize], g[libc::REG_RSI as usize], g[libc::REG_RDX as usize], 0, 8);
    }
    // SAFETY: poll's contract (select_fwd passes its own array): p points at n writable
    // struct pollfd.
    let fds = unsafe { core::slice::from_raw_parts_mut(p as *mut libc::pollfd, n) };
    let all_remote = fds.iter().all(|f| f.fd < 0 || is_remote(f.fd as i64));
    let io = [Io { p, n: n * 8 }];
    if all_remote {
        return call_x(op::POLL, [0, n as u64, timeout_ms as u64, 0, 0, 0], &io, &io, m, true);
    }
    if n > 1024 {
        return EINVAL;
    }
    let start = mono_ms();
    // hide one class of entries by negating their fd (poll ignores negative fds)
    let hide = |fds: &mut [libc::pollfd], hid: &mut [u64; 16], remote: bool| {
        for (i, f) in fds.iter_mut().enumerate() {
            if f.fd >= 0 && is_remote(f.fd as i64) == remote {
                f.fd = !f.fd;
                hid[i / 64] |= 1 << (i % 64);
            }
        }
    };
    let unhide = |fds: &mut [libc::pollfd], hid: &mut [u64; 16]| {
        for (i, f) in fds.iter_mut().enumerate() {
            if hid[i / 64] & (1 << (i % 64)) != 0 {
                f.fd = !f.fd;
                f.revents = 0;
            }
        }
        *hid = [0; 16];
    };
    let mut hid = [0u64; 16];
    let mut stash = [0i16; 1024];
    loop {
        // local entries, non-blocking
        hide(fds, &mut hid, true);
        let lr = r!(libc::SYS_poll, p, n, 0);
        unhide(fds, &mut hid);
        if lr < 0 {
            return lr;
        }
        for (i, f) in fds.iter().enumerate() {
            stash[i] = f.revents;
        }
        // home entries: no wait if something local is ready already; else wait at home
        // while an epoll set of the local entries watches them (should one become ready
        // first, the home wait is cancelled and the loop looks again)
        let left = if timeout_ms < 0 { -1 } else { (timeout_ms - (mono_ms() - start)).max(0) };
        let watch = if lr > 0 || left == 0 { -1 } else { local_watch(fds) };
        // (without a watch, for want of an epoll fd: slices of 20 ms)
        let t = if lr > 0 { 0 } else if watch < 0 { if left < 0 { 20 } else { left.min(20) } } else { left };
        hide(fds, &mut hid, false);
        let rr = call_also(op::POLL, [0, n as u64, t as u64, 0, 0, 0], &io, &io, m, true, watch);
        unhide(fds, &mut hid);
        if watch >= 0 {
            r!(libc::SYS_close, watch);
        }
        if rr == -(libc::ECANCELED as i64) {
            continue;
        }
        if rr < 0 {
            return rr;
        }
        for (i, f) in fds.iter_mut().enumerate() {
            if f.fd >= 0 && !is_remote(f.fd as i64) {
                f.revents = stash[i];
            }
        }
        if lr + rr > 0 {
            return lr + rr;
        }
        if timeout_ms >= 0 && mono_ms() - start >= timeout_ms {
            return 0;
        }
    }
}

fn select_fwd(nr: i64, a: [u64; 6], m: u64, g: &mut [i64; 23]) -> i64 {
    let nfds = (a[0] as usize).min(1024);
    let sets = [a[1], a[2], a[3]];
    let isset = |s: u64, fd: usize| s != 0 && {
        // SAFETY: select's contract: a non-null set (checked) holds at least nfds bits in
        // 64-bit words, as the kernel reads it, and fd < nfds.
        let w = unsafe { *((s as *const u64).add(fd / 64)) };
        w & (1 << (fd % 64)) != 0
    };
    let any = (0..nfds).any(|fd| is_remote(fd as i64) && sets.iter().any(|&s| isset(s, fd)));
    if !any {
        return r!(nr, a[0], a[1], a[2], a[3], a[4], if nr == libc::SYS_pselect6 { 0 } else { a[5] });
    }
    let timeout_ms: i64 = if a[4] == 0 {
        -1
    } else if nr == libc::SYS_select {
        // SAFETY: select's contract: a non-null timeout (checked) points at a struct timeval.
        let tv = unsafe { &*(a[4] as *const libc::timeval) };
        tv.tv_sec * 1000 + tv.tv_usec / 1000
    } else {
        // SAFETY: pselect6's contract: a non-null timeout (checked) points at a struct timespec.
        let ts = unsafe { &*(a[4] as *const libc::timespec) };
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    };
    let mut pf = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 256];
    let mut k = 0;
    for fd in 0..nfds {
        let ev = (if isset(sets[0], fd) { libc::POLLIN } else { 0 }) | (if isset(sets[1], fd) { libc::POLLOUT } else { 0 }) | (if isset(sets[2], fd) { libc::POLLPRI } else { 0 });
        if ev != 0 {
            if k == pf.len() {
                return EINVAL;
            }
            pf[k] = libc::pollfd { fd: fd as i32, events: ev, revents: 0 };
            k += 1;
        }
    }
    let r = poll_mixed(pf.as_mut_ptr() as u64, k, timeout_ms, m, g, libc::SYS_poll);
    if r < 0 {
        return r;
    }
    for s in sets.iter().filter(|s| **s != 0) {
        // SAFETY: select's contract: each non-null set is writable for nfds bits in 64-bit
        // words, as the kernel writes it; exactly those words are cleared.
        unsafe { core::ptr::write_bytes(*s as *mut u8, 0, nfds.div_ceil(64) * 8) };
    }
    let set = |s: u64, fd: i32| {
        if s != 0 {
            // SAFETY: select's contract: a non-null set (checked) is writable for nfds bits in
            // 64-bit words, and the ready fd came from pf, so fd < nfds.
            unsafe { *((s as *mut u64).add(fd as usize / 64)) |= 1 << (fd % 64) };
        }
    };
    let mut count = 0;
    for f in &pf[..k] {
        if f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && f.events & libc::POLLIN != 0 {
            set(sets[0], f.fd);
            count += 1;
        }
        if f.revents & (libc::POLLOUT | libc::POLLERR) != 0 && f.events & libc::POLLOUT != 0 {
            set(sets[1], f.fd);
            count += 1;
        }
        if f.revents & libc::POLLPRI != 0 && f.events & libc::POLLPRI != 0 {
            set(sets[2], f.fd);
            count += 1;
        }
    }
    count
}

/// Claim (or find) the native trampoline for the call site returning to `ret`.
fn tramp_for(ret: u64) -> Option<u64> {
    // SAFETY: a static table defined in the asm above.
    let t = unsafe { &mos_sud_ret };
    let mut i = ((ret ^ (ret >> 12)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % NTRAMP;
    for _ in 0..NTRAMP {
        let v = t[i].load(Ordering::Acquire);
        if v == ret {
            return Some(mos_sud_tramp as *const () as u64 + 8 * i as u64);
        }
        if v == 0 && t[i].compare_exchange(0, ret, Ordering::AcqRel, Ordering::Acquire).map_or_else(|x| x == ret, |_| true) {
            return Some(mos_sud_tramp as *const () as u64 + 8 * i as u64);
        }
        i = (i + 1) % NTRAMP;
    }
    None
}

fn clone_tramp_for(ret: u64) -> Option<u64> {
    // SAFETY: a static table defined in the asm above.
    let t = unsafe { &mos_sud_clone_ret };
    for (i, s) in t.iter().enumerate() {
        let v = s.load(Ordering::Acquire);
        if v == ret || (v == 0 && s.compare_exchange(0, ret, Ordering::AcqRel, Ordering::Acquire).map_or_else(|x| x == ret, |_| true)) {
            return Some(mos_sud_clone as *const () as u64 + 128 * i as u64);
        }
    }
    None
}

/// The SIGSYS handler (Syscall User Dispatch).
extern "C" fn sigsys_handler(_sig: i32, info: *mut libc::siginfo_t, ucv: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo (SIGSYS layout) and ucontext.
    let (nr, uc) = unsafe { (*((info as *const u8).add(24) as *const i32) as i64, &mut *(ucv as *mut libc::ucontext_t)) };
    if uc.uc_mcontext.gregs.len() < 23 {
        return;
    }
    // SAFETY: gregs has 23 entries (checked); viewing it as an array of that size.
    let g = unsafe { &mut *(uc.uc_mcontext.gregs.as_mut_ptr() as *mut [i64; 23]) };
    use libc::{REG_R10, REG_R8, REG_R9, REG_RAX, REG_RDI, REG_RDX, REG_RIP, REG_RSI};
    let a = [g[REG_RDI as usize], g[REG_RSI as usize], g[REG_RDX as usize], g[REG_R10 as usize], g[REG_R8 as usize], g[REG_R9 as usize]].map(|x| x as u64);
    // SAFETY: the first word of the saved sigset holds signals 1..64.
    let maskp = unsafe { &mut *(&mut uc.uc_sigmask as *mut libc::sigset_t as *mut u64) };
    let ret_addr = g[REG_RIP as usize] as u64;
    let native = |g: &mut [i64; 23]| {
        g[REG_RAX as usize] = nr;
        match tramp_for(ret_addr) {
            Some(t) => g[REG_RIP as usize] = t as i64,
            None => {
                // table full: run it here (signal mask and restart semantics are ours)
                g[REG_RAX as usize] = raw(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
            }
        }
    };
    match nr {
        libc::SYS_rt_sigreturn => {
            g[REG_RAX as usize] = nr;
            g[REG_RIP as usize] = mos_sud_noret as *const () as i64;
        }
        libc::SYS_exit_group => {
            if !SELFTEST.load(Ordering::Relaxed) {
                report_exit(((a[0] as i32) & 0xff) << 8);
            }
            g[REG_RAX as usize] = nr;
            g[REG_RIP as usize] = mos_sud_noret as *const () as i64;
        }
        libc::SYS_exit => {
            release_chan();
            g[REG_RAX as usize] = nr;
            g[REG_RIP as usize] = mos_sud_noret as *const () as i64;
        }
        libc::SYS_clone | libc::SYS_clone3 => {
            let flags = if nr == libc::SYS_clone {
                a[0]
            } else {
                // SAFETY: struct clone_args starts with the flags word.
                unsafe { *(a[0] as *const u64) }
            };
            if SELFTEST.load(Ordering::Relaxed) && flags & libc::CLONE_VM as u64 == 0 {
                // a child process in self-test mode simply runs without SUD
                native(g);
                return;
            }
            if flags & libc::CLONE_VM as u64 == 0 || flags & libc::CLONE_VFORK as u64 != 0 {
                // a new process here would see this node's files: refused
                g[REG_RAX as usize] = ENOSYS;
                return;
            }
            match clone_tramp_for(ret_addr) {
                Some(t) => {
                    g[REG_RAX as usize] = nr;
                    g[REG_RIP as usize] = t as i64;
                }
                None => g[REG_RAX as usize] = -(libc::EAGAIN as i64),
            }
        }
        libc::SYS_rt_sigprocmask | libc::SYS_rt_sigaction | libc::SYS_rt_sigsuspend | libc::SYS_ppoll
            if SELFTEST.load(Ordering::Relaxed) =>
        {
            match dispatch(nr, a, g, maskp) {
                Act::Ret(r) => g[REG_RAX as usize] = r,
                Act::Native => native(g),
            }
        }
        _ if SELFTEST.load(Ordering::Relaxed) => native(g),
        _ => match dispatch(nr, a, g, maskp) {
            Act::Ret(r) => g[REG_RAX as usize] = r,
            Act::Native => native(g),
        },
    }
}
