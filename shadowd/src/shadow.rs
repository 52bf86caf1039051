//! The shadow role: serves the file system calls of a process homed here whose body runs
//! on another node (DESIGN §2 "Remote execution"). One authenticated connection per
//! remote process: `ShimRegister`, then `SyscallReq` -> `SyscallResp` (+ bulk data) until
//! the connection closes, which closes everything the session opened.
//!
//! Handles are this daemon's own descriptors for the session's open files; the remote
//! shim maps its fd numbers onto them. Paths are resolved against the session's cwd
//! (the process's home cwd). Every call is performed with the daemon's credentials on
//! behalf of a peer that proved the cluster key.

use proto::msg::{CallDetail, FileCall, FileLock, FileStat, Msg, SyscallReq, SyscallResp};
use std::collections::HashMap;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::ffi::CString;
use std::io::{Read, Write};

/// `dirfd` value meaning "the session's current directory".
pub const AT_FDCWD: i32 = libc::AT_FDCWD;

pub struct Session {
    /// handle (as the remote process names it) -> our descriptor
    fds: HashMap<i32, i32>,
    /// next handle for files opened during the session (above any fd number a process
    /// hands off, so the two never collide)
    next: i32,
    /// the remote process's current directory, as an open directory
    cwd: i32,
}

/// Handles for files opened by the session start here.
pub const FIRST_HANDLE: i32 = 1 << 20;

impl Drop for Session {
    fn drop(&mut self) {
        for (_, fd) in self.fds.drain() {
            // SAFETY: closing descriptors this session owns.
            unsafe { libc::close(fd) };
        }
        if self.cwd >= 0 {
            // SAFETY: as above.
            unsafe { libc::close(self.cwd) };
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn cpath(p: &proto::msg::OsBytes) -> Result<CString, i32> {
    CString::new(p.as_bytes().to_vec()).map_err(|_| libc::EINVAL)
}

fn to_stat(st: &libc::stat) -> FileStat {
    FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size,
        blksize: st.st_blksize,
        blocks: st.st_blocks,
        atime: st.st_atime,
        atime_nsec: st.st_atime_nsec,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec,
        ctime: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec,
    }
}

/// Longest single read/getdents/readlink the shadow answers (the shim splits larger ones).
pub const MAX_IO: u32 = 8 << 20;

impl Session {
    /// A session whose cwd is `cwd` (the process's home cwd).
    pub fn new(cwd: &std::path::Path) -> Result<Session, String> {
        let c = CString::new(cwd.as_os_str().as_encoded_bytes()).map_err(|_| "cwd contains NUL".to_string())?;
        // SAFETY: opening a directory by a valid path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("cannot open cwd {}: {}", cwd.display(), std::io::Error::last_os_error()));
        }
        Ok(Session { fds: HashMap::new(), next: FIRST_HANDLE, cwd: fd })
    }

    /// Adopt the files a process handed off before its body left: the remote process
    /// keeps naming them by its own fd numbers.
    pub fn adopt(&mut self, files: Vec<(i32, OwnedFd)>) {
        for (num, fd) in files {
            if let Some(old) = self.fds.insert(num, fd.into_raw_fd()) {
                // SAFETY: closing a descriptor the session owned under the same number.
                unsafe { libc::close(old) };
            }
        }
    }

    fn handle(&self, fd: i32) -> Result<i32, i32> {
        self.fds.get(&fd).copied().ok_or(libc::EBADF)
    }

    /// A new handle for a descriptor we just opened.
    fn add(&mut self, real: i32) -> i64 {
        let h = self.next;
        self.next += 1;
        self.fds.insert(h, real);
        h as i64
    }

    fn dir(&self, dirfd: i32) -> Result<i32, i32> {
        if dirfd == AT_FDCWD {
            Ok(self.cwd)
        } else {
            self.handle(dirfd)
        }
    }

    /// Perform one call; returns (result, errno, detail, data for the caller).
    pub fn execute(&mut self, call: &FileCall, bulk: &[u8]) -> (i64, i32, CallDetail, Vec<u8>) {
        match self.run(call, bulk) {
            Ok((ret, detail, data)) => (ret, 0, detail, data),
            Err(e) => (-1, e, CallDetail::None, Vec::new()),
        }
    }

    fn run(&mut self, call: &FileCall, bulk: &[u8]) -> Result<(i64, CallDetail, Vec<u8>), i32> {
        let none = CallDetail::None;
        // SAFETY (whole match): every libc call below gets descriptors this session owns
        // (checked by handle/dir), NUL-terminated paths, and buffers of the stated length.
        let check = |r: i64| if r < 0 { Err(errno()) } else { Ok(r) };
        Ok(match call {
            FileCall::Open { dirfd, path, flags, mode } => {
                let (d, p) = (self.dir(*dirfd)?, cpath(path)?);
                // SAFETY: see above.
                let fd = check(unsafe { libc::openat(d, p.as_ptr(), flags | libc::O_CLOEXEC, *mode) } as i64)? as i32;
                (self.add(fd), none, vec![])
            }
            FileCall::Close { fd } => {
                let h = self.handle(*fd)?;
                self.fds.remove(fd);
                // SAFETY: see above.
                (check(unsafe { libc::close(h) } as i64)?, none, vec![])
            }
            FileCall::Read { fd, len } | FileCall::Getdents { fd, len } => {
                let h = self.handle(*fd)?;
                let mut buf = vec![0u8; (*len).min(MAX_IO) as usize];
                let n = if matches!(call, FileCall::Read { .. }) {
                    // SAFETY: see above.
                    check(unsafe { libc::read(h, buf.as_mut_ptr().cast(), buf.len()) } as i64)?
                } else {
                    // SAFETY: see above.
                    check(unsafe { libc::syscall(libc::SYS_getdents64, h, buf.as_mut_ptr(), buf.len()) })?
                };
                buf.truncate(n as usize);
                (n, none, buf)
            }
            FileCall::Pread { fd, len, offset } => {
                let h = self.handle(*fd)?;
                let mut buf = vec![0u8; (*len).min(MAX_IO) as usize];
                // SAFETY: see above.
                let n = check(unsafe { libc::pread(h, buf.as_mut_ptr().cast(), buf.len(), *offset) } as i64)?;
                buf.truncate(n as usize);
                (n, none, buf)
            }
            FileCall::Write { fd, .. } => {
                let h = self.handle(*fd)?;
                // SAFETY: see above.
                (check(unsafe { libc::write(h, bulk.as_ptr().cast(), bulk.len()) } as i64)?, none, vec![])
            }
            FileCall::Pwrite { fd, offset, .. } => {
                let h = self.handle(*fd)?;
                // SAFETY: see above.
                (check(unsafe { libc::pwrite(h, bulk.as_ptr().cast(), bulk.len(), *offset) } as i64)?, none, vec![])
            }
            FileCall::Lseek { fd, offset, whence } => {
                let h = self.handle(*fd)?;
                // SAFETY: see above.
                (check(unsafe { libc::lseek(h, *offset, *whence) })?, none, vec![])
            }
            FileCall::Fstat { fd } => {
                let h = self.handle(*fd)?;
                // SAFETY: stat is plain data filled by fstat.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: see above.
                check(unsafe { libc::fstat(h, &mut st) } as i64)?;
                (0, CallDetail::Stat(to_stat(&st)), vec![])
            }
            FileCall::Stat { dirfd, path, flags } => {
                let (d, p) = (self.dir(*dirfd)?, cpath(path)?);
                // SAFETY: stat is plain data filled by fstatat.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: see above.
                check(unsafe { libc::fstatat(d, p.as_ptr(), &mut st, *flags) } as i64)?;
                (0, CallDetail::Stat(to_stat(&st)), vec![])
            }
            FileCall::Access { dirfd, path, mode, flags } => {
                let (d, p) = (self.dir(*dirfd)?, cpath(path)?);
                // SAFETY: see above.
                (check(unsafe { libc::faccessat(d, p.as_ptr(), *mode, *flags) } as i64)?, none, vec![])
            }
            FileCall::Unlink { dirfd, path, flags } => {
                let (d, p) = (self.dir(*dirfd)?, cpath(path)?);
                // SAFETY: see above.
                (check(unsafe { libc::unlinkat(d, p.as_ptr(), *flags) } as i64)?, none, vec![])
            }
            FileCall::Rename { olddirfd, old, newdirfd, new, flags } => {
                let (od, op, nd, np) = (self.dir(*olddirfd)?, cpath(old)?, self.dir(*newdirfd)?, cpath(new)?);
                // SAFETY: see above.
                let r = unsafe { libc::syscall(libc::SYS_renameat2, od, op.as_ptr(), nd, np.as_ptr(), *flags) };
                (check(r)?, none, vec![])
            }
            FileCall::Mkdir { dirfd, path, mode } => {
                let (d, p) = (self.dir(*dirfd)?, cpath(path)?);
                // SAFETY: see above.
                (check(unsafe { libc::mkdirat(d, p.as_ptr(), *mode) } as i64)?, none, vec![])
            }
            FileCall::Readlink { dirfd, path, len } => {
                let (d, p) = (self.dir(*dirfd)?, cpath(path)?);
                let mut buf = vec![0u8; (*len).min(MAX_IO) as usize];
                // SAFETY: see above.
                let n = check(unsafe { libc::readlinkat(d, p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as i64)?;
                buf.truncate(n as usize);
                (n, none, buf)
            }
            FileCall::Ftruncate { fd, len } => {
                let h = self.handle(*fd)?;
                // SAFETY: see above.
                (check(unsafe { libc::ftruncate(h, *len) } as i64)?, none, vec![])
            }
            FileCall::Fsync { fd, datasync } => {
                let h = self.handle(*fd)?;
                // SAFETY: see above.
                let r = unsafe { if *datasync { libc::fdatasync(h) } else { libc::fsync(h) } };
                (check(r as i64)?, none, vec![])
            }
            FileCall::Dup { fd, newfd: _, flags } => {
                // the remote side chooses its own numbers; here a dup is a new handle
                let h = self.handle(*fd)?;
                let cloexec = libc::F_DUPFD_CLOEXEC;
                // SAFETY: see above.
                let d = check(unsafe { libc::fcntl(h, cloexec, 0) } as i64)? as i32;
                let _ = flags;
                (self.add(d), none, vec![])
            }
            FileCall::Fcntl { fd, cmd, arg } => {
                let h = self.handle(*fd)?;
                match *cmd {
                    libc::F_GETFL | libc::F_SETFL | libc::F_GETFD | libc::F_SETFD => {
                        // SAFETY: see above.
                        (check(unsafe { libc::fcntl(h, *cmd, *arg as libc::c_int) } as i64)?, none, vec![])
                    }
                    _ => return Err(libc::EINVAL),
                }
            }
            FileCall::FcntlLock { fd, cmd, lock } => {
                let h = self.handle(*fd)?;
                // SAFETY: flock is plain data.
                let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                fl.l_type = lock.kind;
                fl.l_whence = lock.whence;
                fl.l_start = lock.start;
                fl.l_len = lock.len;
                // SAFETY: see above.
                check(unsafe { libc::fcntl(h, *cmd, &mut fl) } as i64)?;
                let out = FileLock { kind: fl.l_type, whence: fl.l_whence, start: fl.l_start, len: fl.l_len, pid: fl.l_pid };
                (0, CallDetail::Lock(out), vec![])
            }
            FileCall::Poll { fds, timeout_ms } => {
                let mut p: Vec<libc::pollfd> = Vec::with_capacity(fds.len());
                for f in fds {
                    p.push(libc::pollfd { fd: self.handle(f.fd)?, events: f.events, revents: 0 });
                }
                // a remote poll must not hold the connection forever
                let t = (*timeout_ms).clamp(-1, 60_000);
                let t = if t < 0 { 60_000 } else { t };
                // SAFETY: see above.
                let n = check(unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, t) } as i64)?;
                (n, CallDetail::Poll(p.iter().map(|x| x.revents).collect()), vec![])
            }
            FileCall::Ioctl { fd, request, out_len, .. } => {
                let h = self.handle(*fd)?;
                // only the read-only queries programs make on files and terminals
                let ok = [libc::TCGETS, libc::TIOCGWINSZ, libc::FIONREAD, libc::TIOCGPGRP];
                if !ok.contains(&(*request as libc::Ioctl)) {
                    return Err(libc::ENOTTY);
                }
                let mut buf = vec![0u8; (*out_len).clamp(8, 256) as usize];
                // SAFETY: see above; the buffer is larger than any of these results.
                let r = check(unsafe { libc::ioctl(h, *request as libc::Ioctl, buf.as_mut_ptr()) } as i64)?;
                buf.truncate((*out_len).min(256) as usize);
                (r, none, buf)
            }
            FileCall::Chdir { path } => {
                let p = cpath(path)?;
                // SAFETY: see above.
                let d = check(unsafe { libc::openat(self.cwd, p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) } as i64)? as i32;
                // SAFETY: replacing our cwd descriptor.
                unsafe { libc::close(self.cwd) };
                self.cwd = d;
                (0, none, vec![])
            }
            FileCall::Fchdir { fd } => {
                let h = self.handle(*fd)?;
                // SAFETY: see above.
                let d = check(unsafe { libc::fcntl(h, libc::F_DUPFD_CLOEXEC, 0) } as i64)? as i32;
                // SAFETY: replacing our cwd descriptor.
                unsafe { libc::close(self.cwd) };
                self.cwd = d;
                (0, none, vec![])
            }
            FileCall::Getcwd { len } => {
                let p = std::fs::read_link(format!("/proc/self/fd/{}", self.cwd)).map_err(|_| libc::ENOENT)?;
                let mut b = p.into_os_string().into_encoded_bytes();
                b.push(0);
                if b.len() > *len as usize {
                    return Err(libc::ERANGE);
                }
                (b.len() as i64, none, b)
            }
        })
    }
}

/// Serve one registered remote process until its connection closes.
pub fn serve<R: Read, W: Write>(
    r: &mut proto::FrameReader<R>,
    w: &mut proto::FrameWriter<W>,
    mut session: Session,
) -> Result<(), proto::FrameError> {
    loop {
        let (msg, bulk): (Msg, Vec<u8>) = match r.read_msg() {
            Ok(m) => m,
            Err(proto::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Msg::SyscallReq(SyscallReq { seq, call }) = msg else {
            w.write_msg(&Msg::Error { msg: format!("expected SyscallReq, got {}", msg.name()) }, &[])?;
            continue;
        };
        let (ret, errno, detail, data) = session.execute(&call, &bulk);
        let resp = SyscallResp { seq, ret, errno, detail, data_len: data.len() as u32 };
        w.write_msg(&Msg::SyscallResp(resp), &data)?;
    }
}
