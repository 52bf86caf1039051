//! The forwarded calls, performed here on the session's real descriptors: one table that
//! sends each op to its family, and what they share (raw syscalls, answers, read buffers).
//! A call never half-happens: it answers (ret or -errno, remembered by [`super::serve`](mod@super::serve)),
//! or, if the body went away while it waited, is abandoned without effect.

use std::io;
use std::os::fd::RawFd;

use proto::rsys::{self as wire, op, Req};
use proto::Msg;

use crate::rsys::Session;

mod ctl;
mod fd;
mod path;
mod poll;
mod socket;
pub(super) mod wait;

pub(super) enum Outcome {
    Done(i64, Vec<u8>),
    Abandon,
}

pub(super) enum Stop {
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
pub(super) unsafe fn sys(nr: libc::c_long, a: [i64; 6]) -> i64 {
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

pub(super) fn with_data(r: i64, mut buf: Vec<u8>) -> Answer {
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
pub(super) fn read_buf(n: usize) -> Vec<u8> {
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

/// Hand back the buffer of an answer no longer remembered, for the next read to fill.
pub(super) fn recycle(old: Vec<u8>) {
    SPARE.with(|sp| sp.set(old));
}

pub(super) fn file_type(fd: RawFd) -> u32 {
    // SAFETY: stat is plain data, fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live struct stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_mode & libc::S_IFMT
}

fn struct_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain C struct (stat, statfs, flock...) fully initialised by the
    // caller; we copy its bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }.to_vec()
}

pub(super) fn cap(n: u64, out_len: u32) -> usize {
    (n as usize).min(out_len as usize).min(wire::MAX_IO)
}

pub(super) fn execute(s: &Session, req: &Req, bulk: &[u8], client: RawFd) -> Outcome {
    match call(s, req, bulk, client) {
        Ok((r, d)) => Outcome::Done(r, d),
        Err(Stop::Errno(e)) => Outcome::Done(e, Vec::new()),
        Err(Stop::Abandon) => Outcome::Abandon,
    }
}

fn call(s: &Session, req: &Req, bulk: &[u8], client: RawFd) -> Answer {
    let a = req.args;
    match req.op {
        op::PING => done(0),
        op::EXIT => {
            s.tell_stub(Msg::BodyExited { status: a[0] as i32 });
            done(0)
        }
        op::READ | op::WRITE | op::PREAD64 | op::PWRITE64 | op::CLOSE | op::FSTAT | op::LSEEK | op::FSTATFS | op::GETDENTS64 | op::DUP3 => fd::call(s, req, bulk, client),
        op::FSYNC | op::FDATASYNC | op::FTRUNCATE | op::FCHMOD | op::FCHOWN | op::FADVISE64 | op::FALLOCATE => fd::call(s, req, bulk, client),
        op::SOCKET | op::CONNECT | op::SENDTO | op::RECVFROM | op::SHUTDOWN | op::LISTEN | op::BIND | op::ACCEPT4 => socket::call(s, req, bulk, client),
        op::GETSOCKNAME | op::GETPEERNAME | op::SETSOCKOPT | op::GETSOCKOPT => socket::call(s, req, bulk, client),
        op::TRUNCATE | op::STATFS | op::GETCWD | op::CHDIR | op::FCHDIR | op::OPENAT | op::NEWFSTATAT | op::STATX => path::call(s, req, bulk),
        op::MKDIRAT | op::MKNODAT | op::FCHOWNAT | op::UNLINKAT | op::FCHMODAT | op::FACCESSAT2 => path::call(s, req, bulk),
        op::LINKAT | op::RENAMEAT2 | op::SYMLINKAT | op::READLINKAT | op::UTIMENSAT => path::call(s, req, bulk),
        op::POLL => poll::poll(s, a[1] as usize, a[2] as i64 as i32, bulk, client),
        op::IOCTL => ctl::ioctl(s, a[0], a[1], bulk, req.out_len),
        op::FCNTL => ctl::fcntl(s, a[0], a[1] as i64 as i32, a[2] as i64, bulk, client),
        op::FLOCK => ctl::flock(s, a[0], a[1] as i64 as i32, client),
        _ => done(-libc::ENOSYS as i64),
    }
}
