//! Large file reads, spliced (file -> pipe -> connection or the body's data pipe): the data
//! never passes through this process. Owns the per-thread pipe, the body's data pipe and
//! re-reading a spliced answer that is asked for again. Falls back (None) rather than fail
//! a read it cannot splice.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use proto::rsys::{op, Req};

use super::exec::{cap, file_type, read_buf, sys, with_data};
use super::serve::Spliced;
use super::Session;

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
pub(super) fn spliced_read(s: &Session, req: &Req, into: Option<&DataPipe>) -> Option<Spliced> {
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

/// The body's data pipe ([`proto::rsys::RESP_DATA_IN_PIPE`]): its write end, and its capacity.
pub(super) struct DataPipe {
    fd: OwnedFd,
    cap: usize,
}

/// Move `n` bytes from this thread's pipe to the connection `sock`.
pub(super) fn splice_out(sock: RawFd, mut n: usize) -> io::Result<()> {
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

/// Check that `p` is the write end of a pipe and make it as large as splices need.
pub(super) fn data_pipe(p: OwnedFd) -> io::Result<DataPipe> {
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

/// The answer of a spliced read asked for again: `len` bytes of `file` from `off`, read
/// again (the file shrank since: the rest reads as zeros, the length stays the one given).
pub(super) fn read_again(file: &OwnedFd, off: i64, len: usize) -> Vec<u8> {
    let mut buf = read_buf(len);
    // SAFETY: buf has room for len bytes.
    let r = unsafe { sys(libc::SYS_pread64, [file.as_raw_fd() as i64, buf.as_mut_ptr() as i64, len as i64, off, 0, 0]) };
    let (_, mut data) = with_data(r, buf).unwrap_or_default();
    data.resize(len, 0);
    data
}
