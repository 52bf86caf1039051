//! The restorer's half of file descriptors (the shim captures them in
//! `libmosshim/src/state/fds.rs`): the image's own fd is moved above every number the
//! application uses, each saved fd is reopened or recreated at its old number (files at
//! their offsets, pipes refilled, eventfds, timerfds, signalfds, placeholders for
//! forwarded fds, duplicates, epoll sets), and whatever the restarting command had open
//! that the application did not is closed. Runs before the point of no return: errors are
//! returned, nothing is half-done in the address space.

use super::{cstr, os_err};
use crate::image::FdKind;
use std::os::fd::IntoRawFd;

/// Every fd of the image at its number; returns the image file's own fd (above all of
/// them, close-on-exec). `shared_fds` (files of shared mappings) are kept open too.
pub(super) fn restore_all(
    meta: &crate::image::ImageMeta,
    file: &std::fs::File,
    shared_fds: &[i32],
) -> Result<i32, String> {
    let max_app_fd = meta.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2);
    let raw = file
        .try_clone()
        .map_err(|e| format!("dup image fd: {e}"))?
        .into_raw_fd();
    // SAFETY: raw is an fd we own; F_DUPFD_CLOEXEC returns a new fd >= max_app_fd + 1.
    let imgfd = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, max_app_fd + 1) };
    // SAFETY: closing the fd we own.
    unsafe { libc::close(raw) };
    if imgfd < 0 {
        return Err(os_err("dup image fd"));
    }
    // Grow the fd table now, while single-threaded: the shim keeps its own fds near 800,
    // and growing a table shared by threads waits for an RCU grace period (~15 ms).
    // SAFETY: duplicate and close our own fd.
    unsafe {
        let t = libc::fcntl(imgfd, libc::F_DUPFD_CLOEXEC, 1000);
        if t >= 0 {
            libc::close(t);
        }
    }
    let keep_above = imgfd.max(shared_fds.iter().copied().max().unwrap_or(0));
    restore_fds(meta, imgfd + 1)?;
    // Close what the restarting command had open that the app did not.
    for fd in 0..=keep_above {
        let ours = fd == imgfd || shared_fds.contains(&fd) || meta.fds.iter().any(|f| f.fd == fd);
        if !ours {
            // SAFETY: closing an fd number that is not the app's and not ours is harmless.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: closes every fd above the ones we still need.
    unsafe { crate::sc!(libc::SYS_close_range, keep_above as u32 + 1, u32::MAX, 0u32) };
    Ok(imgfd)
}

/// Put `fd` at number `target` with FD_CLOEXEC as saved; `fd` is consumed.
fn place(fd: i32, target: i32, cloexec: bool) -> Result<(), String> {
    if fd != target {
        // SAFETY: dup3 onto the app's fd number, then drop the temporary.
        let r = unsafe { libc::dup3(fd, target, if cloexec { libc::O_CLOEXEC } else { 0 }) };
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        if r < 0 {
            return Err(os_err(&format!("cannot place fd {target}")));
        }
    } else {
        // SAFETY: setting FD_CLOEXEC as saved on our fd.
        unsafe {
            libc::fcntl(
                fd,
                libc::F_SETFD,
                if cloexec { libc::FD_CLOEXEC } else { 0 },
            )
        };
    }
    Ok(())
}

/// A deleted file's contents as a new unlinked file (O_TMPFILE in its old directory, else
/// in /tmp): its read-write fd (close-on-exec), from which each fd of it is reopened.
fn recreate_deleted(path: &str, data: &[u8]) -> Result<i32, String> {
    let old = path.strip_suffix(" (deleted)").unwrap_or(path);
    if let Some(name) = old.strip_prefix("/memfd:") {
        // a memfd comes back as one, with its name (its seals do not)
        let c = cstr(name)?;
        // SAFETY: memfd_create with a NUL-terminated name; a new fd, ours.
        let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(os_err(&format!("cannot recreate the memfd {name}")));
        }
        return write_all_to(fd, data, old);
    }
    let dir = std::path::Path::new(old).parent().filter(|d| d.is_dir()).map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|| "/tmp".into());
    let c = cstr(&dir)?;
    // SAFETY: valid directory path; a new anonymous file, ours.
    let mut tmp = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600) };
    if tmp < 0 {
        // SAFETY: as above, in /tmp.
        tmp = unsafe { libc::open(c"/tmp".as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600) };
    }
    if tmp < 0 {
        return Err(os_err(&format!("cannot recreate the deleted file {old}")));
    }
    write_all_to(tmp, data, old)
}

/// `data` into our new file `tmp` (named `old` in errors); `tmp`, or an error (closed).
fn write_all_to(tmp: i32, data: &[u8], old: &str) -> Result<i32, String> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writing our buffer to our fd.
        let n = unsafe { libc::write(tmp, data[off..].as_ptr().cast(), data.len() - off) };
        if n <= 0 {
            // SAFETY: closing our fd.
            unsafe { libc::close(tmp) };
            return Err(os_err(&format!("cannot write the recreated deleted file {old}")));
        }
        off += n as usize;
    }
    Ok(tmp)
}

/// One fd of a recreated deleted file, with its saved open flags (access mode,
/// O_APPEND...): a description of its own, through /proc.
fn reopen_deleted(tmp: i32, path: &str, flags: i32) -> Result<i32, String> {
    let old = path.strip_suffix(" (deleted)").unwrap_or(path);
    let keep = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_TMPFILE);
    let via = cstr(&format!("/proc/self/fd/{tmp}"))?;
    // SAFETY: reopening our own fd through /proc with valid flags.
    let fd = unsafe { libc::open(via.as_ptr(), keep | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_err(&format!("cannot reopen the recreated deleted file {old}")));
    }
    Ok(fd)
}

/// Move a freshly created fd above every fd number the application uses, so that it
/// cannot be clobbered while the other fds are being placed.
fn park_fd(fd: i32, above: i32) -> Result<i32, String> {
    if fd < 0 {
        return Err(os_err("creating fd"));
    }
    // SAFETY: duplicating our own fd upwards and closing the original.
    let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if h < 0 {
        return Err(os_err("moving fd"));
    }
    Ok(h)
}

const STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_NOATIME;

fn restore_fds(meta: &crate::image::ImageMeta, above: i32) -> Result<(), String> {
    use std::collections::HashMap;
    let mut pipes: HashMap<u64, (i32, i32)> = HashMap::new();
    let mut pipe_data: Vec<(u64, u32, &[u8])> = Vec::new();
    // recreated deleted files by id, their temporary fds (closed at the end)
    let mut deleted: HashMap<u64, i32> = HashMap::new();
    // named FIFOs by id: a read-write keeper (so opens do not wait for a peer), closed
    // at the end, and the bytes to put back
    let mut fifos: HashMap<u64, i32> = HashMap::new();
    let mut fifo_data: Vec<(u64, &[u8])> = Vec::new();
    // the process's own pty pairs by their old pts number: (parked new master, new number)
    let mut ptys: HashMap<u32, (i32, u32)> = HashMap::new();
    // 1: everything that is created or opened
    for f in &meta.fds {
        let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
        let status = (f.flags as i32) & STATUS_FLAGS;
        match &f.kind {
            FdKind::Inherit => {
                // Rebound like a std stream: the restarting command's fd of that number if
                // it has one, else a placeholder of the same access mode (/dev/null), so
                // the number stays valid for the program.
                // SAFETY: F_GETFD/F_SETFD on an fd number only inspect or change its flags.
                let open = unsafe { libc::fcntl(f.fd, libc::F_GETFD) } >= 0;
                if open {
                    // SAFETY: as above.
                    unsafe { libc::fcntl(f.fd, libc::F_SETFD, if cloexec { libc::FD_CLOEXEC } else { 0 }) };
                } else {
                    let acc = (f.flags as i32) & libc::O_ACCMODE;
                    // SAFETY: a constant path; O_CLOEXEC so the temporary fd never leaks.
                    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), acc | libc::O_CLOEXEC) };
                    if fd < 0 {
                        return Err(os_err(&format!("cannot open a placeholder for inherited fd {}", f.fd)));
                    }
                    place(fd, f.fd, cloexec)?;
                }
            }
            FdKind::Dir if deleted_dir(&f.path).is_some() => {
                // a directory deleted while open: an empty one, opened, then deleted
                let flags = (f.flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
                let fd = ghost_dir(deleted_dir(&f.path).unwrap_or("/tmp"), |d| {
                    // SAFETY: valid path; O_CLOEXEC so the temporary fd never leaks.
                    let fd = unsafe { libc::open(d.as_ptr(), flags | libc::O_CLOEXEC) };
                    if fd < 0 {
                        Err(os_err(&format!("cannot open a stand-in for fd {} ({})", f.fd, f.path)))
                    } else {
                        Ok(fd)
                    }
                })?;
                place(fd, f.fd, cloexec)?;
            }
            FdKind::File | FdKind::Dir | FdKind::CharDev => {
                let c = cstr(&f.path)?;
                let flags = (f.flags as i32)
                    & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC);
                // SAFETY: valid path; O_CLOEXEC so the temporary fd never leaks.
                let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
                if fd < 0 {
                    if f.fd <= 2 {
                        // A std stream whose file cannot be reopened (gone, or not ours):
                        // keep the restarting command's own, as for ttys and pipes.
                        continue;
                    }
                    return Err(os_err(&format!("cannot reopen fd {} ({})", f.fd, f.path)));
                }
                place(fd, f.fd, cloexec)?;
                if f.kind == FdKind::File {
                    // SAFETY: lseek on the fd we just placed.
                    if unsafe { libc::lseek(f.fd, f.offset, libc::SEEK_SET) } < 0 {
                        return Err(os_err(&format!(
                            "cannot seek fd {} ({}) to {}",
                            f.fd, f.path, f.offset
                        )));
                    }
                }
            }
            FdKind::Deleted { id, data } => {
                let tmp = match deleted.get(id) {
                    Some(&t) => t,
                    None => {
                        // above every number the application uses: placing its fds must
                        // not land on it
                        let t = park_fd(recreate_deleted(&f.path, data)?, above)?;
                        deleted.insert(*id, t);
                        t
                    }
                };
                let fd = reopen_deleted(tmp, &f.path, f.flags as i32)?;
                place(fd, f.fd, cloexec)?;
                // SAFETY: lseek on the fd we just placed.
                if unsafe { libc::lseek(f.fd, f.offset, libc::SEEK_SET) } < 0 {
                    return Err(os_err(&format!("cannot seek the recreated deleted file on fd {} to {}", f.fd, f.offset)));
                }
            }
            FdKind::PipeRead { id, .. } | FdKind::PipeWrite { id } => {
                let (r, w) = match pipes.get(id) {
                    Some(p) => *p,
                    None => {
                        let mut p = [0i32; 2];
                        // SAFETY: pipe2 fills p.
                        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                            return Err(os_err("pipe"));
                        }
                        let pr = (park_fd(p[0], above)?, park_fd(p[1], above)?);
                        pipes.insert(*id, pr);
                        pr
                    }
                };
                let end = if matches!(f.kind, FdKind::PipeRead { .. }) {
                    r
                } else {
                    w
                };
                // SAFETY: duplicating the pipe end we created onto the app's number.
                let d = unsafe { libc::fcntl(end, libc::F_DUPFD_CLOEXEC, 0) };
                place(d, f.fd, cloexec)?;
                // SAFETY: status flags (O_NONBLOCK...) of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
                if let FdKind::PipeRead { size, data, .. } = &f.kind {
                    if *size > 0 {
                        pipe_data.push((*id, *size, data));
                    }
                }
            }
            FdKind::EventFd { count, semaphore } => {
                let flags = if *semaphore { libc::EFD_SEMAPHORE } else { 0 } | libc::EFD_CLOEXEC;
                // SAFETY: creating an eventfd; count fits (the kernel keeps u64 counts).
                let fd = unsafe { libc::eventfd(0, flags) };
                let fd = park_fd(fd, above)?;
                if *count > 0 {
                    // SAFETY: writing the saved counter into our eventfd.
                    unsafe { libc::write(fd, count as *const u64 as *const _, 8) };
                }
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::TimerFd {
                clockid,
                value_ns,
                interval_ns,
                ticks,
            } => {
                // SAFETY: creating a timerfd and arming it with the remaining time.
                let fd = unsafe { libc::timerfd_create(*clockid, libc::TFD_CLOEXEC) };
                let fd = park_fd(fd, above)?;
                let ts = |ns: u64| libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as i64,
                    tv_nsec: (ns % 1_000_000_000) as i64,
                };
                // expirations not yet read come back as one immediate expiration
                let value = if *ticks > 0 { 1 } else { *value_ns };
                let its = libc::itimerspec {
                    it_interval: ts(*interval_ns),
                    it_value: ts(value),
                };
                // SAFETY: valid itimerspec.
                unsafe { libc::timerfd_settime(fd, 0, &its, core::ptr::null_mut()) };
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::Fifo { id, data } => {
                let c = cstr(&f.path)?;
                if !fifos.contains_key(id) {
                    // SAFETY: valid path; a read-write open of a FIFO never waits.
                    let k = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
                    if k < 0 {
                        return Err(os_err(&format!("cannot reopen the FIFO {} of fd {}", f.path, f.fd)));
                    }
                    fifos.insert(*id, park_fd(k, above)?);
                }
                let mode = (f.flags as i32) & libc::O_ACCMODE;
                // SAFETY: valid path; non-blocking, then the app's status flags below.
                let fd = unsafe { libc::open(c.as_ptr(), mode | libc::O_NONBLOCK | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(os_err(&format!("cannot reopen the FIFO {} of fd {}", f.path, f.fd)));
                }
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
                if !data.is_empty() {
                    fifo_data.push((*id, data));
                }
            }
            FdKind::Terminal => {
                let fd = restarting_terminal((f.flags as i32) & libc::O_ACCMODE);
                if fd < 0 {
                    return Err(os_err(&format!("cannot give fd {} ({}) a terminal or a placeholder", f.fd, f.path)));
                }
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::PtyMaster { index, .. } | FdKind::PtySlave { index } => {
                let (master, n) = match ptys.get(index) {
                    Some(p) => *p,
                    None => {
                        let p = new_pty(meta, *index, above)?;
                        ptys.insert(*index, p);
                        p
                    }
                };
                let fd = if matches!(f.kind, FdKind::PtyMaster { .. }) {
                    // SAFETY: duplicating the master we made onto a new number.
                    unsafe { libc::fcntl(master, libc::F_DUPFD_CLOEXEC, 0) }
                } else {
                    let c = cstr(&format!("/dev/pts/{n}"))?;
                    // SAFETY: valid path; the slave of the pair we made.
                    unsafe { libc::open(c.as_ptr(), ((f.flags as i32) & libc::O_ACCMODE) | libc::O_NOCTTY | libc::O_CLOEXEC) }
                };
                if fd < 0 {
                    return Err(os_err(&format!("cannot remake the pty of fd {} ({})", f.fd, f.path)));
                }
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::PidFdSelf => {
                // SAFETY: pidfd_open of this very process (the restored one).
                let fd = unsafe { crate::sc!(libc::SYS_pidfd_open, libc::getpid(), 0) } as i32;
                if fd < 0 {
                    return Err(os_err("pidfd_open of the restored process"));
                }
                // SAFETY: our new pidfd: close-on-exec until placed.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                let fd = park_fd(fd, above)?;
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::LoneSocket { sotype } => {
                let mut p = [0i32; 2];
                // SAFETY: socketpair fills p.
                if unsafe { libc::socketpair(libc::AF_UNIX, *sotype | libc::SOCK_CLOEXEC, 0, p.as_mut_ptr()) } != 0 {
                    return Err(os_err("socketpair"));
                }
                // SAFETY: closing the far end we just made: its peer is gone, as it was.
                unsafe { libc::close(p[1]) };
                let fd = park_fd(p[0], above)?;
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::Inotify { watches } => {
                // SAFETY: a new inotify instance, ours.
                let fd = park_fd(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) }, above)?;
                let mut sorted = watches.clone();
                sorted.sort_by_key(|w| w.0);
                for (wd, mask, path) in &sorted {
                    add_watch_as(fd, *wd, *mask, path)?;
                }
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::SignalFd { mask } => {
                // SAFETY: sigset_t is plain data; its first word holds signals 1..64.
                let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
                // SAFETY: as above.
                unsafe { *(&mut set as *mut libc::sigset_t as *mut u64) = *mask };
                // SAFETY: creating a signalfd for the saved mask.
                let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
                let fd = park_fd(fd, above)?;
                place(fd, f.fd, cloexec)?;
                // SAFETY: status flags of the app's fd.
                unsafe { libc::fcntl(f.fd, libc::F_SETFL, status) };
            }
            FdKind::Remote => {
                // SAFETY: opening /dev/null as the placeholder for a forwarded fd.
                let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(os_err("cannot open /dev/null for a forwarded fd"));
                }
                place(fd, f.fd, cloexec)?;
            }
            FdKind::Dup { .. } | FdKind::Epoll { .. } => {}
        }
    }
    for (_, t) in deleted {
        // SAFETY: closing the temporary fds of recreated deleted files (each fd placed has
        // its own description of the file).
        unsafe { libc::close(t) };
    }
    // 2: bytes that were buffered in pipes
    for (id, size, data) in pipe_data {
        let (_, w) = pipes[&id];
        // SAFETY: sizing and filling the pipe we created; it holds `size` bytes.
        unsafe {
            libc::fcntl(w, libc::F_SETPIPE_SZ, size as i32);
            if !data.is_empty()
                && libc::write(w, data.as_ptr().cast(), data.len()) != data.len() as isize
            {
                return Err(os_err("refilling a pipe"));
            }
        }
    }
    for (id, data) in fifo_data {
        let k = fifos[&id];
        let mut queued: i32 = 0;
        // SAFETY: FIONREAD into our local, then a write of the saved bytes into the FIFO
        // through our read-write keeper (only if nothing kept them meanwhile).
        unsafe {
            if libc::ioctl(k, libc::FIONREAD, &mut queued) == 0 && queued == 0 && libc::write(k, data.as_ptr().cast(), data.len()) != data.len() as isize {
                return Err(os_err("refilling a FIFO"));
            }
        }
    }
    for (m, _) in ptys.values() {
        // SAFETY: our parked masters; the app's fds hold their own dups.
        unsafe { libc::close(*m) };
    }
    for k in fifos.values() {
        // SAFETY: our keeper fds; the app's fds are their own opens.
        unsafe { libc::close(*k) };
    }
    for (r, w) in pipes.values() {
        // SAFETY: the parked pipe ends are ours; the app's fds hold their own dups.
        unsafe {
            libc::close(*r);
            libc::close(*w);
        }
    }
    // 3: duplicates of restored fds
    for f in &meta.fds {
        if let FdKind::Dup { of } = f.kind {
            let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
            // SAFETY: dup3 of an fd restored above onto the app's number.
            if unsafe { libc::dup3(of, f.fd, if cloexec { libc::O_CLOEXEC } else { 0 }) } < 0 {
                return Err(os_err(&format!(
                    "cannot restore fd {} as a duplicate of {of}",
                    f.fd
                )));
            }
        }
    }
    // 4: epoll sets, once their targets exist
    for f in &meta.fds {
        if let FdKind::Epoll { targets } = &f.kind {
            let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
            // SAFETY: creating an epoll instance.
            let ep = park_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, above)?;
            for (tfd, events, data) in targets {
                // a home fd (forwarded): the shim watches it, the kernel cannot
                if meta.fds.iter().any(|e| e.fd == *tfd && e.kind == FdKind::Remote) {
                    continue;
                }
                let mut ev = libc::epoll_event {
                    events: *events,
                    u64: *data,
                };
                // SAFETY: adding a restored fd with its saved events and data.
                if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, *tfd, &mut ev) } != 0 {
                    return Err(os_err(&format!(
                        "cannot re-add fd {tfd} to epoll fd {}",
                        f.fd
                    )));
                }
            }
            place(ep, f.fd, cloexec)?;
        }
    }
    Ok(())
}

/// Watch `path` with `mask` on inotify `fd` as watch descriptor `wd`: the kernel hands out
/// wds in increasing order, so a watch that comes back with a smaller one is removed and
/// added again until it has `wd`. A path that no longer exists is not watched (the kernel
/// would have removed that watch too, with IN_IGNORED).
fn add_watch_as(fd: i32, wd: i32, mask: u32, path: &str) -> Result<(), String> {
    let c = cstr(path)?;
    for _ in 0..=wd.max(1) + 8 {
        // SAFETY: adding a watch on a NUL-terminated path to our inotify fd.
        let w = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
        if w < 0 {
            return if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) { Ok(()) } else { Err(os_err(&format!("cannot watch {path} again")) ) };
        }
        if w == wd {
            return Ok(());
        }
        if w > wd {
            return Err(format!("cannot give the inotify watch on {path} its descriptor {wd} again (got {w})"));
        }
        // SAFETY: removing the watch we just added.
        unsafe { libc::inotify_rm_watch(fd, w) };
    }
    Err(format!("cannot give the inotify watch on {path} its descriptor {wd} again"))
}

/// The path a deleted directory had (`/proc` shows "PATH (deleted)"), if `path` names
/// one that is not there any more.
pub(super) fn deleted_dir(path: &str) -> Option<&str> {
    let p = path.strip_suffix(" (deleted)")?;
    (!std::path::Path::new(path).is_dir()).then_some(p)
}

/// A stand-in for deleted directory `was`: an empty directory made beside where it was
/// (or in /tmp when its parent is gone too), given to `use_it`, then removed again, so
/// what `use_it` opened or entered is a deleted, empty directory as before.
pub(super) fn ghost_dir<T>(was: &str, use_it: impl FnOnce(&std::ffi::CStr) -> Result<T, String>) -> Result<T, String> {
    let parent = std::path::Path::new(was).parent().filter(|p| p.is_dir()).map_or("/tmp".into(), |p| p.to_string_lossy().into_owned());
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    for n in 0..100 {
        let d = cstr(&format!("{}/.mos-deleted-{pid}-{n}", parent.trim_end_matches('/')))?;
        // SAFETY: valid path.
        if unsafe { libc::mkdir(d.as_ptr(), 0o700) } != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
                continue;
            }
            return Err(os_err(&format!("cannot make a stand-in for the deleted directory {was}")));
        }
        let r = use_it(&d);
        // SAFETY: valid path; removing the directory we just made.
        unsafe { libc::rmdir(d.as_ptr()) };
        return r;
    }
    Err(format!("cannot make a stand-in for the deleted directory {was}: names taken"))
}

/// A terminal for a restarted process's terminal fd, opened `mode`: the restarting
/// command's controlling terminal, else a dup of one of its std streams that is a
/// terminal, else /dev/null (a placeholder, as for inherited fds). -1 if none.
fn restarting_terminal(mode: i32) -> i32 {
    // SAFETY: a literal path; O_NOCTTY: never a new controlling terminal.
    let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), mode | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd >= 0 {
        return fd;
    }
    for s in 0..=2 {
        // SAFETY: isatty and F_DUPFD_CLOEXEC on the restarting command's std streams.
        unsafe {
            if libc::isatty(s) == 1 {
                return libc::fcntl(s, libc::F_DUPFD_CLOEXEC, 0);
            }
        }
    }
    // SAFETY: a literal path.
    unsafe { libc::open(c"/dev/null".as_ptr(), mode | libc::O_CLOEXEC) }
}

/// A new pty pair for the process's pair that had pts number `old`, with its saved
/// termios and window size: (master, parked above the app's fds; its pts number).
fn new_pty(meta: &crate::image::ImageMeta, old: u32, above: i32) -> Result<(i32, u32), String> {
    // SAFETY: posix_openpt/grantpt/unlockpt/TIOCGPTN on the master we open.
    let (m, n) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        let mut n: u32 = 0;
        if m < 0 || libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 || libc::ioctl(m, libc::TIOCGPTN, &mut n) != 0 {
            return Err(os_err("cannot open a new pty pair"));
        }
        (m, n)
    };
    let saved = meta.fds.iter().find_map(|f| match &f.kind {
        FdKind::PtyMaster { index, termios, rows, cols } if *index == old => Some((termios, *rows, *cols)),
        _ => None,
    });
    if let Some((t, rows, cols)) = saved {
        if t.len() == core::mem::size_of::<libc::termios>() {
            // SAFETY: t holds the bytes of a struct termios; copied into an aligned one.
            let mut tio: libc::termios = unsafe { core::mem::zeroed() };
            // SAFETY: as above, sizes checked.
            unsafe { core::ptr::copy_nonoverlapping(t.as_ptr(), (&mut tio as *mut libc::termios).cast::<u8>(), t.len()) };
            // SAFETY: setting the pair's termios through its master.
            unsafe { libc::tcsetattr(m, libc::TCSANOW, &tio) };
        }
        let w = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ with our winsize.
        unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &w) };
    }
    Ok((park_fd(m, above)?, n))
}
