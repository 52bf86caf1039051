//! What a checkpoint saves of the application's file descriptors: for each fd its
//! target, flags, offset and kind (from /proc/self/fd and fdinfo, reached through the
//! manager's own table with `app_fd`), pipe contents peeked without consuming them, and
//! which fds share one open file description. Runs in the manager while the threads are
//! frozen; allocates freely (never in the writer child).
//!
//! At restart the restorer reopens them (`ckpt/src/restore/fds.rs`); a migrated body's
//! forwarded fds are the remote mode's (`migrate::enter_remote`). [`Fds`] captures in the
//! lifecycle's capture phase; nothing to do on resume, restart or fork.

use super::{link, read_str, StateKind};
use crate::rawfs;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use ckpt::image::*;

/// File descriptors below this number can be noted as inherited.
const MAX_NOTED: usize = 4096;

/// The descriptors open when the program started (its parent's: a make jobserver's pipe,
/// a CI runner's socket...), by number: (st_dev, st_ino + 1), 0 when not inherited.
/// Noted once at start-up and again for what a restart rebound them to; read by the
/// capture. Atomics only.
static INHERITED: [(AtomicU64, AtomicU64); MAX_NOTED] = [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_NOTED];

/// `mos ckpt --strict`: an inherited descriptor that could not be reopened is refused, as
/// any other, instead of being recorded as inherited.
static STRICT: AtomicBool = AtomicBool::new(false);

/// `mos ckpt --strict` for the checkpoint being taken (false again after it).
pub fn set_strict(on: bool) {
    STRICT.store(on, Ordering::Relaxed);
}

fn note(fd: i32) {
    let Some(slot) = usize::try_from(fd).ok().and_then(|i| INHERITED.get(i)) else { return };
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat of a descriptor number into our struct (EBADF if it is closed).
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        slot.0.store(st.st_dev, Ordering::Relaxed);
        slot.1.store(st.st_ino.wrapping_add(1), Ordering::Release);
    }
}

/// In a forked child: the pipes and sockets it holds came from its parent (the fork is
/// its start), so they are rebound at restart like inherited ones; files and the kernel
/// objects it shares with the parent are restored as usual.
pub fn note_inherited_streams() {
    if let Ok(fds) = rawfs::list_dir_numbers("/proc/self/fd") {
        for fd in fds {
            // SAFETY: stat is plain data; fstat fills it.
            let mut st: libc::stat = unsafe { core::mem::zeroed() };
            // SAFETY: fstat of a descriptor number into our struct.
            if unsafe { libc::fstat(fd as i32, &mut st) } == 0 && matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK) {
                note(fd as i32);
            }
        }
    }
}

/// Note every descriptor open now as inherited: at start-up, before the shim opens any of
/// its own (the program's own fds are not open yet either).
pub fn note_inherited() {
    if let Ok(fds) = rawfs::list_dir_numbers("/proc/self/fd") {
        for fd in fds {
            note(fd as i32);
        }
    }
}

/// The largest deleted-but-open file a checkpoint saves (`MOS_DELETED_MAX` bytes, default
/// 64 MiB): its contents go into the image's metadata.
static DELETED_MAX_BYTES: AtomicU64 = AtomicU64::new(64 << 20);

/// Read the limit from the environment, at start-up.
pub fn read_deleted_max() {
    if let Some(v) = std::env::var(crate::config::DELETED_MAX).ok().and_then(|v| v.trim().parse().ok()) {
        DELETED_MAX_BYTES.store(v, Ordering::Relaxed);
    }
}

fn deleted_max() -> u64 {
    DELETED_MAX_BYTES.load(Ordering::Relaxed)
}

/// The whole contents of the deleted file open as the application's `fd`, within the limit.
fn deleted_contents(fd: i32, target: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    // a new read-only open of it (the application's own may be write-only), through the
    // thread group leader's table
    let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).map_err(|e| format!("opening the deleted file on fd {fd} ({target}): {e}"))?;
    let len = f.metadata().map_err(|e| format!("fd {fd} ({target}): {e}"))?.len();
    let max = deleted_max();
    if len > max {
        return Err(format!(
            "fd {fd} refers to a deleted file ({target}) of {len} bytes, above the {max}-byte limit for saving deleted files (raise {} or close it)",
            crate::config::DELETED_MAX
        ));
    }
    let mut data = vec![0u8; len as usize];
    f.read_exact_at(&mut data, 0).map_err(|e| format!("reading the deleted file on fd {fd} ({target}): {e}"))?;
    Ok(data)
}

/// Was `fd` open when the program started, on the same file (`dev`, `ino`)?
fn inherited(fd: i32, dev: u64, ino: u64) -> bool {
    usize::try_from(fd).ok().and_then(|i| INHERITED.get(i)).is_some_and(|s| s.1.load(Ordering::Acquire) == ino.wrapping_add(1) && s.0.load(Ordering::Relaxed) == dev)
}

struct FdInfo {
    fd: i32,
    target: String,
    flags: u32,
    offset: i64,
    dev: u64,
    ino: u64,
    fmt: u32,
    info: String,
}

/// Same open file description? (kcmp; without it, distinct fds are distinct files)
fn same_file(a: i32, b: i32) -> bool {
    let pid = ckpt::sys::getpid_real();
    // SAFETY: kcmp compares two of our own fds (KCMP_FILE = 0).
    unsafe { ckpt::sc!(libc::SYS_kcmp, pid, pid, 0, a, b) == 0 }
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim())
}

/// Bytes buffered in a pipe, read without consuming them (tee into a scratch pipe).
fn peek_pipe(app: i32) -> Result<(u32, Vec<u8>), String> {
    use std::os::fd::AsRawFd;
    let own = crate::process::fds::app_fd(app)?;
    let fd = own.as_raw_fd();
    // SAFETY: fcntl/pipe2/tee/read/close on our own fds.
    unsafe {
        let size = libc::fcntl(fd, libc::F_GETPIPE_SZ);
        let mut p = [0i32; 2];
        if size < 0 || libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
            return Err(format!(
                "cannot inspect pipe fd {fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::fcntl(p[1], libc::F_SETPIPE_SZ, size);
        let n = libc::tee(fd, p[1], size as usize, libc::SPLICE_F_NONBLOCK);
        let mut data = Vec::new();
        if n > 0 {
            data.resize(n as usize, 0);
            let mut off = 0;
            while off < data.len() {
                let k = libc::read(p[0], data[off..].as_mut_ptr().cast(), data.len() - off);
                if k <= 0 {
                    break;
                }
                off += k as usize;
            }
            data.truncate(off);
        }
        libc::close(p[0]);
        libc::close(p[1]);
        Ok((size as u32, data))
    }
}

fn hex(v: Option<&str>) -> u64 {
    v.and_then(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

/// "(sec, nsec)" as timerfd's fdinfo prints it.
fn timespec_ns(v: Option<&str>) -> u64 {
    let Some(v) = v else { return 0 };
    let nums: Vec<u64> = v
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    match nums.as_slice() {
        [s, ns] => s * 1_000_000_000 + ns,
        _ => 0,
    }
}

pub fn capture_fds(internal: &[i32]) -> Result<Vec<FdEntry>, String> {
    let mut fds = rawfs::list_dir_numbers("/proc/self/fd")
        .map_err(|e| format!("listing /proc/self/fd: {e}"))?;
    fds.sort_unstable();
    let mut infos = Vec::new();
    for fd in fds {
        let fd = fd as i32;
        if internal.contains(&fd) {
            continue;
        }
        let target = link(&format!("/proc/self/fd/{fd}"));
        if target.is_empty() {
            continue; // the listing's own fd, already closed
        }
        let info = read_str(&format!("/proc/self/fdinfo/{fd}"))?;
        // SAFETY: stat is plain data; stat fills it.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // the application's fd, seen from the manager's own table (see detach_fd_table)
        let Ok(p) = std::ffi::CString::new(format!("/proc/self/fd/{fd}")) else { continue };
        // SAFETY: stat of a NUL-terminated path into our struct.
        if unsafe { libc::stat(p.as_ptr(), &mut st) } != 0 {
            continue;
        }
        infos.push(FdInfo {
            fd,
            offset: field(&info, "pos:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            flags: field(&info, "flags:")
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .unwrap_or(0),
            target,
            dev: st.st_dev,
            ino: st.st_ino,
            fmt: st.st_mode & libc::S_IFMT,
            info,
        });
    }
    let acc = |f: &FdInfo| f.flags & libc::O_ACCMODE as u32;
    let strict = STRICT.load(Ordering::Relaxed);
    let mut out = Vec::new();
    for (i, f) in infos.iter().enumerate() {
        let fd = f.fd;
        let target = &f.target;
        let entry = |kind| FdEntry {
            fd,
            kind,
            path: target.clone(),
            flags: f.flags,
            offset: f.offset,
            target: target.clone(),
        };
        if crate::remote::is_remote(fd as i64) {
            // a home file: only its number lives here (and its offset, for a restart)
            let mut e = entry(FdKind::Remote);
            if crate::remote::went_away() {
                e.offset = crate::remote::remote_offset(fd);
            }
            out.push(e);
            continue;
        }
        let is_pipe = f.fmt == libc::S_IFIFO && target.starts_with("pipe:");
        let other_end = |want: u32| {
            infos
                .iter()
                .any(|o| o.fd != fd && o.ino == f.ino && o.dev == f.dev && acc(o) == want)
        };
        let internal_pipe = is_pipe
            && other_end(if acc(f) == libc::O_RDONLY as u32 {
                libc::O_WRONLY as u32
            } else {
                libc::O_RDONLY as u32
            });
        let std_stream =
            fd <= 2 && f.fmt != libc::S_IFREG && f.fmt != libc::S_IFDIR && !internal_pipe;
        if std_stream {
            out.push(entry(FdKind::Inherit));
            continue;
        }
        if let Some(p) = infos[..i]
            .iter()
            .find(|p| p.dev == f.dev && p.ino == f.ino && same_file(p.fd, fd))
        {
            out.push(entry(FdKind::Dup { of: p.fd }));
            continue;
        }
        // what the program's parent left open and mos cannot reopen is rebound at restart
        // like a std stream (to the restarting command's fd, else a placeholder)
        let from_parent = !strict && inherited(fd, f.dev, f.ino);
        let kind = if from_parent && (f.fmt == libc::S_IFIFO || f.fmt == libc::S_IFSOCK || target.starts_with("anon_inode:")) && !internal_pipe {
            FdKind::Inherit
        } else if target.starts_with("anon_inode:") {
            match target.as_str() {
                "anon_inode:[eventfd]" => FdKind::EventFd {
                    count: field(&f.info, "eventfd-count:")
                        .and_then(|v| u64::from_str_radix(v, 16).ok().or_else(|| v.parse().ok()))
                        .unwrap_or(0),
                    semaphore: field(&f.info, "eventfd-semaphore:") == Some("1"),
                },
                "anon_inode:[eventpoll]" => {
                    let mut targets = Vec::new();
                    for l in f.info.lines().filter(|l| l.starts_with("tfd:")) {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        let get = |k: &str| {
                            w.iter()
                                .position(|x| *x == k)
                                .and_then(|i| w.get(i + 1))
                                .copied()
                        };
                        let tfd: i32 = get("tfd:").and_then(|v| v.parse().ok()).unwrap_or(-1);
                        targets.push((tfd, hex(get("events:")) as u32, hex(get("data:"))));
                    }
                    FdKind::Epoll { targets }
                }
                "anon_inode:[pidfd]" => match field(&f.info, "Pid:").and_then(|v| v.parse::<i32>().ok()) {
                    Some(p) if p == crate::identity::real_pid() => FdKind::PidFdSelf,
                    p => return Err(format!("fd {fd} is a pidfd of another process (pid {}), which mos cannot restore yet", p.unwrap_or(-1))),
                },
                "anon_inode:[timerfd]" => FdKind::TimerFd {
                    clockid: field(&f.info, "clockid:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    value_ns: timespec_ns(field(&f.info, "it_value:")),
                    interval_ns: timespec_ns(field(&f.info, "it_interval:")),
                    ticks: field(&f.info, "ticks:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                },
                "anon_inode:inotify" => {
                    let mut watches = Vec::new();
                    for (wd, ino, mask) in super::inotify::watches_of(&f.info) {
                        let path = super::inotify::path_of(fd, wd)?.ok_or_else(|| format!("fd {fd} is an inotify instance whose watch {wd} was not added through the shim (its path is unknown)"))?;
                        match std::fs::metadata(&path) {
                            Ok(m) if std::os::unix::fs::MetadataExt::ino(&m) == ino => watches.push((wd, mask, path)),
                            _ => return Err(format!("fd {fd}: inotify watch {wd} was on {path}, which is no longer that file")),
                        }
                    }
                    FdKind::Inotify { watches }
                }
                "anon_inode:[signalfd]" => FdKind::SignalFd {
                    mask: hex(field(&f.info, "sigmask:")),
                },
                _ => return Err(format!("fd {fd} is {target}, which mos cannot restore yet")),
            }
        } else {
            match f.fmt {
                // a deleted file, or a memfd (`/memfd:NAME (deleted)`): its contents are saved
                libc::S_IFREG if target.ends_with(" (deleted)") => {
                    // the contents go with the first fd of the file; the others share them
                    let first = !infos[..i].iter().any(|p| p.ino == f.ino && p.dev == f.dev);
                    FdKind::Deleted { id: f.ino, data: if first { deleted_contents(fd, target)? } else { Vec::new() } }
                }
                libc::S_IFREG => FdKind::File,
                libc::S_IFDIR => FdKind::Dir,
                libc::S_IFCHR => terminal_kind(fd, target, &infos)?,
                libc::S_IFIFO if internal_pipe && acc(f) == libc::O_RDONLY as u32 => {
                    // the first read end carries the buffered bytes
                    let first = !infos[..i].iter().any(|p| p.ino == f.ino && acc(p) == libc::O_RDONLY as u32);
                    let (size, data) = if first { peek_pipe(fd)? } else { (0, Vec::new()) };
                    FdKind::PipeRead { id: f.ino, size, data }
                }
                libc::S_IFIFO if internal_pipe => FdKind::PipeWrite { id: f.ino },
                libc::S_IFIFO if is_pipe => {
                    return Err(format!("fd {fd} is a pipe to another process ({target}); such pipes cannot be restored yet"))
                }
                libc::S_IFIFO if !target.starts_with('/') || target.ends_with(" (deleted)") => {
                    return Err(format!("fd {fd} is a FIFO ({target}) with no path to reopen, which cannot be restored yet"))
                }
                libc::S_IFIFO => {
                    // a named FIFO: its buffered bytes with the first fd that reads it
                    let reads = |p: &FdInfo| acc(p) != libc::O_WRONLY as u32;
                    let first = reads(f) && !infos[..i].iter().any(|p| p.ino == f.ino && p.dev == f.dev && reads(p));
                    FdKind::Fifo { id: f.ino, data: if first { peek_pipe(fd)?.1 } else { Vec::new() } }
                }
                libc::S_IFSOCK if let Some(sotype) = lone_socket(fd) => FdKind::LoneSocket { sotype },
                libc::S_IFSOCK => {
                    return Err(format!("fd {fd} is a socket ({target}); sockets other than stdin/stdout/stderr, and unix sockets whose peer is gone, cannot be restored yet"))
                }
                _ => return Err(format!("fd {fd} ({target}) is of a kind mos cannot restore yet")),
            }
        };
        if matches!(kind, FdKind::File | FdKind::Dir | FdKind::CharDev) && !target.starts_with('/')
        {
            return Err(format!("fd {fd} ({target}) has no path to reopen"));
        }
        out.push(entry(kind));
    }
    Ok(out)
}

/// File descriptors in the lifecycle of [`StateKind`]: captured in its capture phase,
/// restored by the restorer.
pub struct Fds;

impl StateKind for Fds {
    fn capture(&self, meta: &mut ImageMeta, cx: &super::CaptureCx<'_>) -> Result<(), String> {
        meta.fds = capture_fds(cx.internal_fds)?;
        Ok(())
    }

    /// The inherited descriptors now stand for what the restart rebound them to (so a
    /// later checkpoint records them as inherited again); the log says what each became.
    fn restarted(&self, meta: &ImageMeta) -> Result<(), String> {
        for f in meta.fds.iter().filter(|f| f.kind == FdKind::Inherit) {
            note(f.fd);
            if f.fd > 2 {
                crate::log::log(&format!("restart: fd {} was inherited ({}); it is now {}", f.fd, f.target, link(&format!("/proc/self/fd/{}", f.fd))));
            }
        }
        Ok(())
    }
}

/// A connected AF_UNIX stream or seqpacket socket whose peer has closed (POLLHUP) and
/// that holds no unread bytes: its type. Such a socket only ever reads end-of-file and
/// fails writes, which a socketpair with its other end closed does the same.
fn lone_socket(app: i32) -> Option<i32> {
    use std::os::fd::AsRawFd;
    // the application's fd, seen from the manager's own table (see detach_fd_table)
    let own = crate::process::fds::app_fd(app).ok()?;
    let fd = own.as_raw_fd();
    // raw calls: libc's poll is the shim's own hook
    let opt = |name: i32| -> Option<i32> {
        let mut v: i32 = 0;
        let mut len = core::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt of an int option into our locals.
        let r = unsafe { ckpt::sc!(libc::SYS_getsockopt, fd, libc::SOL_SOCKET, name, &mut v as *mut i32, &mut len as *mut libc::socklen_t) };
        (r == 0).then_some(v)
    };
    if opt(libc::SO_DOMAIN)? != libc::AF_UNIX {
        return None;
    }
    let sotype = opt(libc::SO_TYPE)?;
    if sotype != libc::SOCK_STREAM && sotype != libc::SOCK_SEQPACKET {
        return None;
    }
    let mut p = libc::pollfd { fd, events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    // SAFETY: poll of one fd, no wait.
    if unsafe { ckpt::sc!(libc::SYS_poll, &mut p as *mut libc::pollfd, 1usize, 0i32) } != 1 || p.revents & libc::POLLHUP == 0 {
        return None;
    }
    let mut queued: i32 = 0;
    // SAFETY: FIONREAD (SIOCINQ) into our local.
    if unsafe { ckpt::sc!(libc::SYS_ioctl, fd, libc::FIONREAD, &mut queued as *mut i32) } != 0 || queued != 0 {
        return None;
    }
    Some(sotype)
}

/// The pts number of pty master `app` (the application's fd).
fn pty_index(app: i32) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let own = crate::process::fds::app_fd(app).ok()?;
    let mut n: u32 = 0;
    // SAFETY: TIOCGPTN into our local.
    (unsafe { libc::ioctl(own.as_raw_fd(), libc::TIOCGPTN, &mut n) } == 0).then_some(n)
}

fn is_master(target: &str) -> bool {
    target == "/dev/ptmx" || target == "/dev/pts/ptmx"
}

/// A character device fd: a pty master or slave of a pair the process holds, another
/// terminal, or any other device (reopened by path).
fn terminal_kind(fd: i32, target: &str, infos: &[FdInfo]) -> Result<FdKind, String> {
    use std::os::fd::AsRawFd;
    if is_master(target) {
        let index = pty_index(fd).ok_or_else(|| format!("fd {fd} ({target}): cannot read its pts number"))?;
        let own = crate::process::fds::app_fd(fd)?;
        // SAFETY: termios and winsize are plain data the ioctls fill.
        let (mut t, mut w): (libc::termios, libc::winsize) = unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
        // SAFETY: tcgetattr and TIOCGWINSZ of the pty master into our locals.
        unsafe {
            libc::tcgetattr(own.as_raw_fd(), &mut t);
            libc::ioctl(own.as_raw_fd(), libc::TIOCGWINSZ, &mut w);
        }
        // SAFETY: the bytes of a plain C struct.
        let termios = unsafe { core::slice::from_raw_parts((&t as *const libc::termios).cast::<u8>(), core::mem::size_of::<libc::termios>()) }.to_vec();
        return Ok(FdKind::PtyMaster { index, termios, rows: w.ws_row, cols: w.ws_col });
    }
    if let Some(n) = target.strip_prefix("/dev/pts/").and_then(|n| n.parse::<u32>().ok()) {
        // a slave whose master the process holds
        if infos.iter().any(|p| is_master(&p.target) && pty_index(p.fd) == Some(n)) {
            return Ok(FdKind::PtySlave { index: n });
        }
        return Ok(FdKind::Terminal);
    }
    let tty = target == "/dev/tty" || target == "/dev/console" || target.strip_prefix("/dev/tty").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    Ok(if tty { FdKind::Terminal } else { FdKind::CharDev })
}
