//! What a checkpoint saves. `capture_process` runs in the manager while application
//! threads are frozen (kernel state that the running parent would change: fd offsets,
//! itimers, dispositions). `writer_child_main` runs in the raw-forked child: it reads the
//! child's own (= the snapshot's) mappings and streams the image; it allocates only from
//! the scratch area and never writes to memory that is part of the snapshot.

use crate::alloc;
use crate::rawfs;
use ckpt::image::*;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::ffi::CString;

/// Everything the writer child needs, prepared by the manager before the fork.
pub struct Plan {
    pub meta: ImageMeta,
    pub tmp: CString,
    pub dest: CString,
    pub dir: CString,
    pub result_fd: i32,
    /// Where a streamed image goes (a pipe; -1: the file `tmp`, renamed to `dest`).
    pub sink: i32,
    pub scratch: (u64, u64),
    /// MAP_SHARED anonymous regions: (start, end, private copy taken while frozen)
    pub shared: Vec<(u64, u64, u64)>,
}

fn is_shared_anon(m: &ckpt::maps::MapEntry) -> bool {
    m.shared && (m.path == "/dev/zero (deleted)" || m.path == "[anon_shmem]" || m.path.is_empty() || m.path.starts_with("[anon_shmem:"))
}

/// Copy every MAP_SHARED anonymous region while the process is frozen: the writer runs
/// after the threads are released, and these pages are not copy-on-write.
pub fn copy_shared() -> Result<Vec<(u64, u64, u64)>, String> {
    let maps = ckpt::maps::parse(&read_str("/proc/self/maps")?);
    let mut out = Vec::new();
    for m in maps.iter().filter(|m| is_shared_anon(m)) {
        let len = (m.end - m.start) as usize;
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("cannot copy shared memory {:#x}-{:#x}", m.start, m.end));
        }
        if m.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: making our own view readable for the copy; restored after.
            unsafe { libc::mprotect(m.start as *mut _, len, libc::PROT_READ) };
        }
        // SAFETY: both ranges are mapped and `len` long.
        unsafe { core::ptr::copy_nonoverlapping(m.start as *const u8, p as *mut u8, len) };
        if m.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: restoring the original protection.
            unsafe { libc::mprotect(m.start as *mut _, len, m.prot as i32) };
        }
        out.push((m.start, m.end, p as u64));
    }
    Ok(out)
}

pub fn free_shared(copies: &[(u64, u64, u64)]) {
    for (s, e, c) in copies {
        // SAFETY: unmapping the copies made by copy_shared.
        unsafe { libc::munmap(*c as *mut _, (e - s) as usize) };
    }
}

pub static PLAN: AtomicPtr<Plan> = AtomicPtr::new(core::ptr::null_mut());

fn read_str(path: &str) -> Result<String, String> {
    rawfs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

fn link(path: &str) -> String {
    std::fs::read_link(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Process-wide kernel state, fds included. Errors name what cannot be checkpointed.
pub fn capture_process(internal_fds: &[i32]) -> Result<ImageMeta, String> {
    let comm = read_str("/proc/self/comm")?.trim_end().to_string();
    let cmdline = read_str("/proc/self/cmdline")?
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let status = read_str("/proc/self/status")?;
    let shared_pending = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022);
    let mut rlimits = Vec::new();
    for r in 0..16u32 {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        if unsafe { ckpt::sc!(libc::SYS_getrlimit, r, &mut l as *mut libc::rlimit) } == 0 {
            rlimits.push(Rlimit {
                resource: r,
                cur: l.rlim_cur,
                max: l.rlim_max,
            });
        }
    }
    let mut sigactions = Vec::new();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut a = ckpt::sys::KSigAction::default();
        if ckpt::sys::rt_sigaction(sig, None, Some(&mut a)) == 0
            && (a.handler != 0 || a.flags != 0 || a.mask != 0)
        {
            sigactions.push(SigAction {
                signo: sig,
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            });
        }
    }
    let mut itimers = Vec::new();
    for which in 0..3 {
        // SAFETY: itimerval is plain data; getitimer fills it.
        let mut v: libc::itimerval = unsafe { core::mem::zeroed() };
        // SAFETY: valid out-pointer.
        unsafe { ckpt::sc!(libc::SYS_getitimer, which, &mut v as *mut libc::itimerval) };
        let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
        if us(v.it_value) != 0 || us(v.it_interval) != 0 {
            itimers.push(ITimer {
                which,
                interval_us: us(v.it_interval),
                value_us: us(v.it_value),
            });
        }
    }
    let stat = read_str("/proc/self/stat")?;
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    // fields are numbered from 1; after ")" the first is field 3
    let fld = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    // SAFETY: brk(0) only queries the current break.
    let brk = unsafe { ckpt::sc!(libc::SYS_brk, 0) } as u64;
    let mm = MmFields {
        start_code: fld(26),
        end_code: fld(27),
        start_stack: fld(28),
        start_data: fld(45),
        end_data: fld(46),
        start_brk: fld(47),
        brk,
        arg_start: fld(48),
        arg_end: fld(49),
        env_start: fld(50),
        env_end: fld(51),
    };
    let fds = capture_fds(internal_fds)?;
    Ok(ImageMeta {
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        comm,
        vpid: 0,
        real_pid: ckpt::sys::getpid_real(),
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
        exe: link("/proc/self/exe"),
        cmdline,
        cwd: {
            let c = link("/proc/self/cwd");
            if c.ends_with(" (deleted)") {
                return Err(format!("the current directory {c} was deleted"));
            }
            c
        },
        umask,
        rlimits,
        sigactions,
        itimers,
        shared_pending,
        mm,
        special: Vec::new(),
        vdso_hash: 0,
        regions: Vec::new(),
        fds,
        threads: Vec::new(),
        timers: capture_timers()?,
        resume_entry: 0,
        restart_info: 0,
    })
}

/// POSIX timers from /proc/self/timers, with their remaining time.
fn capture_timers() -> Result<Vec<PosixTimer>, String> {
    let Ok(text) = rawfs::read_to_string("/proc/self/timers") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut cur: Option<PosixTimer> = None;
    let push = |t: Option<PosixTimer>, out: &mut Vec<PosixTimer>| -> Result<(), String> {
        if let Some(mut t) = t {
            let mut its = [0i64; 4];
            // SAFETY: timer_gettime on one of our timers into a 4-word itimerspec.
            if unsafe { ckpt::sc!(libc::SYS_timer_gettime, t.id, its.as_mut_ptr()) } != 0 {
                return Err(format!(
                    "reading POSIX timer {}: {}",
                    t.id,
                    std::io::Error::last_os_error()
                ));
            }
            t.interval_ns = (its[0] * 1_000_000_000 + its[1]) as u64;
            t.value_ns = (its[2] * 1_000_000_000 + its[3]) as u64;
            out.push(t);
        }
        Ok(())
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => {
                push(cur.take(), &mut out)?;
                cur = Some(PosixTimer {
                    id: v.parse().unwrap_or(0),
                    clockid: 0,
                    signo: 0,
                    sival: 0,
                    notify: 0,
                    tid: 0,
                    value_ns: 0,
                    interval_ns: 0,
                });
            }
            "signal" => {
                if let (Some(t), Some((sig, val))) = (cur.as_mut(), v.split_once('/')) {
                    t.signo = sig.parse().unwrap_or(0);
                    t.sival = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let (Some(t), Some((how, who))) = (cur.as_mut(), v.split_once('/')) {
                    let thread = who.starts_with("tid.");
                    t.tid = who
                        .rsplit('.')
                        .next()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                    t.notify = match how {
                        "none" => libc::SIGEV_NONE,
                        "thread" => return Err(format!("POSIX timer {} uses SIGEV_THREAD notification, which cannot be restored yet", t.id)),
                        _ => libc::SIGEV_SIGNAL,
                    } | if thread { libc::SIGEV_THREAD_ID } else { 0 };
                }
            }
            "ClockID" => {
                if let Some(t) = cur.as_mut() {
                    t.clockid = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    push(cur.take(), &mut out)?;
    Ok(out)
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

fn capture_fds(internal: &[i32]) -> Result<Vec<FdEntry>, String> {
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
            if crate::remote::REMOTE.load(core::sync::atomic::Ordering::Acquire) {
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
        let kind = if target.starts_with("anon_inode:") {
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
                "anon_inode:[signalfd]" => FdKind::SignalFd {
                    mask: hex(field(&f.info, "sigmask:")),
                },
                _ => return Err(format!("fd {fd} is {target}, which mos cannot restore yet")),
            }
        } else {
            match f.fmt {
                libc::S_IFREG if target.starts_with("/memfd:") => {
                    return Err(format!("fd {fd} is a memfd ({target}); memfds cannot be restored yet"))
                }
                libc::S_IFREG if target.ends_with(" (deleted)") => {
                    return Err(format!("fd {fd} refers to a deleted file ({target}); deleted files cannot be restored yet"))
                }
                libc::S_IFREG => FdKind::File,
                libc::S_IFDIR => FdKind::Dir,
                libc::S_IFCHR => FdKind::CharDev,
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
                libc::S_IFIFO => return Err(format!("fd {fd} is a named FIFO ({target}), which cannot be restored yet")),
                libc::S_IFSOCK => {
                    return Err(format!("fd {fd} is a socket ({target}); sockets other than stdin/stdout/stderr cannot be restored yet"))
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

/// Entry point of the writer child (on the scratch stack). Never returns.
pub extern "C" fn writer_child_main() -> ! {
    alloc::enter_child_mode();
    // The kernel keeps updating the rseq area (in the snapshot's memory) of the thread
    // that forked us: stop it before reading memory.
    // SAFETY: MANAGER_CTX was filled by the manager just before the fork.
    let mc = unsafe { &*crate::process::ctx::MANAGER_CTX.0.get() };
    if mc.rseq_addr != 0 {
        // SAFETY: unregistering the area inherited from the manager thread (flag 1 = UNREGISTER).
        unsafe { ckpt::sc!(libc::SYS_rseq, mc.rseq_addr, mc.rseq_len, 1, mc.rseq_sig) };
    }
    let plan = PLAN.load(Ordering::Acquire);
    // SAFETY: the manager set PLAN to a live Plan before forking; the child has a copy.
    let plan = unsafe { &*plan };
    let (code, msg) = match write_image(plan) {
        Ok(n) => (0, format!("OK {n}\n")),
        Err(e) => {
            // SAFETY: removing our own temp file.
            unsafe { libc::unlink(plan.tmp.as_ptr()) };
            (1, format!("ERR {}\n", e.replace('\n', " ")))
        }
    };
    // SAFETY: reporting to the manager, then leaving without running any destructor.
    unsafe {
        libc::write(plan.result_fd, msg.as_ptr().cast(), msg.len());
        ckpt::sc!(libc::SYS_exit_group, code);
    }
    unreachable!()
}

const MERGE_GAP: u64 = 16;

fn classify(m: &ckpt::maps::MapEntry, plan: &Plan) -> Result<Option<(RegionKind, bool)>, String> {
    // (kind, dense)
    if m.start == plan.scratch.0 && m.end == plan.scratch.1 {
        return Ok(Some((RegionKind::Scratch, false)));
    }
    if plan.shared.iter().any(|c| c.2 == m.start) {
        return Ok(None); // our own copy of a shared region
    }
    if is_shared_anon(m) && plan.shared.iter().any(|c| c.0 == m.start && c.1 == m.end) {
        return Ok(Some((RegionKind::SharedAnon, true)));
    }
    if m.shared && m.path.starts_with("/SYSV") {
        return Err(format!("SysV shared memory {:#x}-{:#x} {} may be shared with other processes; it cannot be checkpointed yet", m.start, m.end, m.path));
    }
    let p = m.path.as_str();
    let file_backed = p.starts_with('/') && m.inode != 0;
    if m.shared {
        if file_backed && m.prot & libc::PROT_WRITE as u32 == 0 && !p.ends_with(" (deleted)") {
            return Ok(Some((RegionKind::FileSharedRo, false)));
        }
        return Err(format!(
            "shared memory mapping {:#x}-{:#x} {} cannot be checkpointed yet",
            m.start, m.end, p
        ));
    }
    Ok(Some(match p {
        "[stack]" => (RegionKind::Stack, false),
        "[heap]" => (RegionKind::Heap, false),
        _ if file_backed => (RegionKind::FilePrivate, true),
        _ => (RegionKind::Anon, false),
    }))
}

fn file_size(path: &str) -> Option<u64> {
    let p = path.strip_suffix(" (deleted)").unwrap_or(path);
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// Present pages of [start, end) from /proc/self/pagemap, as merged extents.
fn present_extents(pm: &std::fs::File, start: u64, end: u64) -> Result<Vec<Extent>, String> {
    use std::os::unix::fs::FileExt;
    let npages = (end - start) / PAGE;
    let mut out: Vec<Extent> = Vec::new();
    let mut buf = vec![0u8; 8 * 8192];
    let mut i = 0u64;
    while i < npages {
        let n = (npages - i).min(8192);
        let bytes = &mut buf[..(n * 8) as usize];
        pm.read_exact_at(bytes, (start / PAGE + i) * 8)
            .map_err(|e| format!("reading pagemap: {e}"))?;
        for k in 0..n {
            let e = u64::from_le_bytes(
                bytes[(k * 8) as usize..(k * 8 + 8) as usize]
                    .try_into()
                    .unwrap(),
            );
            if e & (3 << 62) == 0 {
                continue;
            }
            let off = (i + k) * PAGE;
            match out.last_mut() {
                Some(l) if off <= l.off + l.len + MERGE_GAP * PAGE => l.len = off + PAGE - l.off,
                _ => out.push(Extent {
                    off,
                    len: PAGE,
                    file_off: 0,
                }),
            }
        }
        i += n;
    }
    Ok(out)
}

/// The image after its metadata was laid out: head, every region's pages (checksummed by
/// a helper process for big images), trailer. `ioerr` names a write error.
fn write_body(w: &mut ImageWriter, plan: &Plan, meta: &ImageMeta, hdr: &Header, mbytes: &[u8], ioerr: &dyn Fn(i32) -> String) -> Result<(), String> {
    w.write_head(hdr, mbytes).map_err(ioerr)?;
    for r in &meta.regions {
        if !r.extents.is_empty() && r.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: changes only this child's mapping so its bytes can be read.
            unsafe {
                libc::mprotect(
                    r.start as *mut _,
                    (r.end - r.start) as usize,
                    libc::PROT_READ,
                )
            };
        }
    }
    // SAFETY: every extent lies inside a readable mapping of this process.
    let mem = |a: u64, n: usize| -> &[u8] {
        let a = match plan.shared.iter().find(|c| a >= c.0 && a < c.1) {
            Some(c) => c.2 + (a - c.0),
            None => a,
        };
        // SAFETY: the extent lies inside a readable mapping (or its frozen copy).
        unsafe { core::slice::from_raw_parts(a as *const u8, n) }
    };
    // Big images: checksum in a second process (same snapshot, other core) while
    // this one writes. MOS_SERIAL_HASH=1 (for measurements) hashes inline instead.
    let hasher = if meta.data_bytes() >= PARALLEL_HASH_MIN
        && std::env::var_os(crate::config::SERIAL_HASH).is_none()
    {
        spawn_hasher(meta, &mem, plan.sink)
    } else {
        None
    };
    for r in &meta.regions {
        w.write_region(r, &mem, hasher.is_none()).map_err(ioerr)?;
    }
    if let Some((pid, rfd)) = hasher {
        w.set_hashes(collect_hashes(pid, rfd, meta.regions.len())?);
    }
    w.write_trailer().map_err(ioerr)
}

/// A streamed image ([`Plan::sink`]): written into the pipe, which is closed at the end so
/// its reader sees where the image ends. Nothing is synced or renamed: the image is safe
/// only when the requester has it where it goes (and says so to the manager).
fn stream_image(plan: &Plan, meta: &ImageMeta, hdr: &Header, mbytes: &[u8]) -> Result<u64, String> {
    let ioerr = |e: i32| format!("streaming the image: {}", std::io::Error::from_raw_os_error(e));
    let mut w = ImageWriter::into_pipe_by_reference(plan.sink);
    let r = write_body(&mut w, plan, meta, hdr, mbytes, &ioerr);
    // SAFETY: closing our copy of the sink.
    unsafe { libc::close(plan.sink) };
    r.map(|()| w.bytes_written())
}

const PARALLEL_HASH_MIN: u64 = 64 << 20;

/// Fork a child that checksums every region of the (unchanged) snapshot and sends the
/// hashes through a pipe. Returns its pid and the read end.
/// `sink`: a streamed image's pipe (-1: none), closed in the helper at once so that the
/// reader sees the image end when the writer is done, not when the helper has exited.
fn spawn_hasher<'a>(meta: &ImageMeta, mem: &dyn Fn(u64, usize) -> &'a [u8], sink: i32) -> Option<(i32, i32)> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills p.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: raw fork (no exit signal); the child only reads memory and writes the pipe.
    let pid = unsafe { ckpt::sc!(libc::SYS_clone, 0u64, 0u64, 0u64, 0u64, 0u64) };
    if pid == 0 {
        if sink >= 0 {
            // SAFETY: closing this helper's copy of the sink; it never writes there.
            unsafe { libc::close(sink) };
        }
        let mut out = Vec::with_capacity(meta.regions.len() * 8);
        for r in &meta.regions {
            out.extend_from_slice(&region_hash(r, mem).to_le_bytes());
        }
        // SAFETY: writing our buffer to the pipe, then leaving.
        unsafe {
            let mut off = 0;
            while off < out.len() {
                let n = ckpt::sc!(
                    libc::SYS_write,
                    p[1],
                    out.as_ptr().add(off),
                    out.len() - off
                );
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            ckpt::sc!(libc::SYS_exit_group, 0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(p[1]) };
    if pid < 0 {
        // SAFETY: closing the read end we own.
        unsafe { libc::close(p[0]) };
        return None;
    }
    Some((pid as i32, p[0]))
}

fn collect_hashes(pid: i32, rfd: i32, n: usize) -> Result<Vec<u64>, String> {
    let mut buf = vec![0u8; n * 8];
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: reading into our buffer.
        let k = unsafe { libc::read(rfd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if k < 0 && ckpt::sys::errno() == libc::EINTR {
            continue;
        }
        if k <= 0 {
            break;
        }
        off += k as usize;
    }
    // The hasher is not waited for: its exit (address-space teardown) would only delay
    // us, and this process exits right after; init reaps it.
    let _ = pid;
    // SAFETY: closing our fd.
    unsafe { libc::close(rfd) };
    if off != buf.len() {
        return Err("checksum helper process died".into());
    }
    Ok(buf
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

fn write_image(plan: &Plan) -> Result<u64, String> {
    let t0 = std::time::Instant::now();
    let mut meta = plan.meta.clone();
    let maps = ckpt::maps::parse(&read_str("/proc/self/maps")?);
    let pm =
        std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("opening pagemap: {e}"))?;
    for m in &maps {
        if m.path == "[vsyscall]" {
            continue;
        }
        if m.is_special() {
            if m.path == "[vdso]" {
                // SAFETY: [vdso] is readable for its whole length.
                let b = unsafe {
                    core::slice::from_raw_parts(m.start as *const u8, (m.end - m.start) as usize)
                };
                meta.vdso_hash = xxhash_rust::xxh3::xxh3_64(b);
            }
            meta.special.push(SpecialMap {
                name: m.path.clone(),
                start: m.start,
                end: m.end,
            });
            continue;
        }
        let Some((kind, dense)) = classify(m, plan)? else {
            continue;
        };
        let mut extents = Vec::new();
        if dense {
            if m.prot & libc::PROT_READ as u32 != 0 {
                let len = match if kind == RegionKind::SharedAnon { None } else { file_size(&m.path) } {
                    Some(sz) if sz > m.offset => page_up(sz - m.offset).min(m.end - m.start),
                    Some(_) => 0,
                    None => m.end - m.start,
                };
                if len > 0 {
                    extents.push(Extent {
                        off: 0,
                        len,
                        file_off: 0,
                    });
                }
            }
        } else if matches!(
            kind,
            RegionKind::Anon | RegionKind::Stack | RegionKind::Heap
        ) {
            extents = present_extents(&pm, m.start, m.end)?;
        }
        meta.regions.push(Region {
            start: m.start,
            end: m.end,
            prot: m.prot,
            kind,
            path: m.path.clone(),
            file_off: m.offset,
            extents,
        });
    }
    let t_scan = t0.elapsed();
    let (hdr, mbytes) = layout(&mut meta).map_err(|e| format!("encoding metadata: {e}"))?;
    if plan.sink >= 0 {
        return stream_image(plan, &meta, &hdr, &mbytes);
    }
    // SAFETY: valid path; a new private file.
    let fd = unsafe {
        libc::open(
            plan.tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot create {}: {}",
            plan.tmp.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    let ioerr = |what: &str, e: i32| {
        format!(
            "{what} {}: {}",
            plan.tmp.to_string_lossy(),
            std::io::Error::from_raw_os_error(e)
        )
    };
    let mut w = ImageWriter::new(fd);
    write_body(&mut w, plan, &meta, &hdr, &mbytes, &|e| ioerr("writing", e))?;
    // SAFETY: fsync/close our fd; rename within one directory; fsync the directory.
    unsafe {
        if libc::fsync(fd) != 0 {
            return Err(ioerr("fsync", ckpt::sys::errno()));
        }
        libc::close(fd);
        if libc::rename(plan.tmp.as_ptr(), plan.dest.as_ptr()) != 0 {
            return Err(ioerr("rename", ckpt::sys::errno()));
        }
        let d = libc::open(
            plan.dir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if d >= 0 {
            libc::fsync(d);
            libc::close(d);
        }
    }
    // MOS_DEBUG_TIMING=1 with MOS_LOG_FILE: how long the writer's phases took.
    if std::env::var_os(crate::config::DEBUG_TIMING).is_some() {
        crate::log::log(&format!(
            "writer: scan {:?}, total {:?}",
            t_scan,
            t0.elapsed()
        ));
    }
    Ok(w.bytes_written())
}
