//! The restorer: turns this process (`mosrestart`) into the process of an image.
//!
//! Order: validate everything (nothing touched yet) -> make sure none of our own mappings
//! collide with the image (else re-exec to get a fresh random layout) -> files, cwd,
//! umask, rlimits, signal dispositions -> move the kernel's vdso/vvar to where the image
//! had them -> map every region at its old address -> kernel mm fields (brk) -> itimers
//! -> recreate threads and jump into their saved contexts. The shim's manager thread then
//! unmaps what is left of the restorer.

mod trampoline;

use crate::ctx::RestartInfo;
use crate::image::{FdKind, ImageFile, RegionKind, PAGE};
use crate::maps::{self, MapEntry};
use crate::sys;
use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// map page data from the image file (faulted in on demand) instead of copying it
    pub lazy: bool,
    /// check every region's page checksum before restoring
    pub verify: bool,
    /// remove the image file once its pages are mapped (a migration's image in memory:
    /// the restored process holds what it still needs, and the rest is freed as it goes)
    pub unlink: bool,
}

pub const RETRY_ENV: &str = "MOS_RESTORE_TRY";
const MAX_TRIES: u32 = 32;
/// Extents at least this long are mapped from the image in lazy mode; shorter ones copied.
const LAZY_MIN: u64 = 64 * 1024;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("path contains NUL: {s:?}"))
}

#[cfg(target_arch = "x86_64")]
extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// glibc registered an rseq area in our TLS; the kernel would write into it after our
/// TLS is gone. Unregister it (the restored threads register their own).
fn unregister_own_rseq() {
    // SAFETY: glibc exports these read-only variables (glibc >= 2.35).
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes the fs base into fs.
    unsafe { crate::sc!(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    let area = (fs as i64 + off as i64) as u64;
    // SAFETY: unregistering the area glibc registered for this thread (len 32, glibc's sig).
    unsafe { crate::sc!(libc::SYS_rseq, area, 32u32, 1i32, 0x5305_3053u32) };
}

fn reexec_or_fail(why: String) -> Result<std::convert::Infallible, String> {
    use std::os::unix::process::CommandExt;
    let tries: u32 = std::env::var(RETRY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if tries >= MAX_TRIES {
        return Err(format!(
            "cannot find a free address layout after {tries} tries: {why}"
        ));
    }
    let args: Vec<String> = std::env::args().collect();
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(&args[0])
        .args(&args[1..])
        .env(RETRY_ENV, (tries + 1).to_string())
        .exec();
    Err(format!("re-exec failed: {err}"))
}

/// Restore the image at `path` into this process. Returns only on error.
pub fn run(path: &Path, opts: Options) -> Result<std::convert::Infallible, String> {
    let img = ImageFile::open(path).map_err(|e| e.to_string())?;
    if opts.verify {
        img.verify_data().map_err(|e| e.to_string())?;
    }
    let meta = &img.meta;

    // Our own layout, before anything is changed.
    let own = maps::read_self().map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    check_vdso(meta, &own)?;
    let mut targets: Vec<(u64, u64)> = meta.regions.iter().map(|r| (r.start, r.end)).collect();
    targets.extend(meta.special.iter().map(|s| (s.start, s.end)));
    for m in own.iter().filter(|m| !m.is_special()) {
        if let Some(t) = targets.iter().find(|t| m.overlaps(t.0, t.1)) {
            return reexec_or_fail(format!(
                "restorer mapping {:#x}-{:#x} {} overlaps image range {:#x}-{:#x}",
                m.start, m.end, m.path, t.0, t.1
            ));
        }
    }

    // Files that must exist: open them now so a missing one fails before any damage.
    let mut shared_fds = Vec::new();
    for r in meta
        .regions
        .iter()
        .filter(|r| r.kind == RegionKind::FileSharedRo)
    {
        let c = cstr(&r.path)?;
        // SAFETY: c is a valid NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(os_err(&format!("cannot reopen shared mapping {}", r.path)));
        }
        shared_fds.push(fd);
    }

    unregister_own_rseq();
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(!0u64), None);

    // ---- file descriptors ----
    let max_app_fd = meta.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2);
    let raw = img
        .file
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

    // ---- process-wide state ----
    let cwd = cstr(&meta.cwd)?;
    // SAFETY: valid path.
    if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
        // a migrated body's cwd is its home's (paths are resolved there); here any will do
        let remote = meta.fds.iter().any(|f| f.kind == crate::image::FdKind::Remote);
        // SAFETY: chdir to a NUL-terminated literal.
        if remote && unsafe { libc::chdir(c"/".as_ptr()) } == 0 {
            // fine
        } else {
            return Err(os_err(&format!("cannot chdir to {}", meta.cwd)));
        }
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(meta.umask) };
    for rl in &meta.rlimits {
        let l = libc::rlimit {
            rlim_cur: rl.cur,
            rlim_max: rl.max,
        };
        // SAFETY: valid rlimit struct. Raising a hard limit may be refused: then keep ours.
        if unsafe { libc::setrlimit(rl.resource, &l) } != 0 {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: valid out-pointer.
            unsafe { libc::getrlimit(rl.resource, &mut cur) };
            let l2 = libc::rlimit {
                rlim_cur: rl.cur.min(cur.rlim_max),
                rlim_max: cur.rlim_max,
            };
            // SAFETY: valid rlimit struct.
            unsafe { libc::setrlimit(rl.resource, &l2) };
        }
    }

    // Everything allocated from here on must already exist: snapshot our mappings now.
    let mut info = RestartInfo::zeroed();
    info.lazy = opts.lazy as u64;
    info.pid = sys::getpid_real() as i64;
    if let Some(addr) = std::env::var_os("MOS_NODE_ADDR") {
        for (d, b) in info.node_addr.iter_mut().zip(addr.as_encoded_bytes().iter().take(31)) {
            *d = *b;
        }
    }
    let now = maps::read_self().map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let mine: Vec<(u64, u64)> = now
        .iter()
        .filter(|m| !m.is_special())
        .map(|m| (m.start, m.end))
        .collect();
    for m in now.iter().filter(|m| !m.is_special()) {
        if let Some(t) = targets.iter().find(|t| m.overlaps(t.0, t.1)) {
            return Err(format!(
                "restorer mapping {:#x}-{:#x} {} overlaps image range {:#x}-{:#x}",
                m.start, m.end, m.path, t.0, t.1
            ));
        }
    }
    fill_ranges(&mut info, &mine);
    let own_special: Vec<MapEntry> = now
        .iter()
        .filter(|m| m.is_special() && m.path != "[vsyscall]")
        .cloned()
        .collect();

    // Rust's runtime gave this thread a sigaltstack and signal handlers: drop both.
    let ss = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: disabling the alternate signal stack.
    unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let a = match meta.sigactions.iter().find(|a| a.signo == sig) {
            Some(a) => sys::KSigAction {
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            },
            None => sys::KSigAction::default(),
        };
        sys::rt_sigaction(sig, Some(&a), None);
    }

    let unlink_path = if opts.unlink { Some(cstr(&path.to_string_lossy())?) } else { None };
    // ---- point of no return: the address space changes ----
    move_specials(meta, &own_special, &targets)?;
    map_regions(meta, imgfd, &shared_fds, opts.lazy)?;

    // SAFETY: restart_info points into the restored shim's writable data (validated as
    // inside a mapped region by the image's consistency check is not possible here; the
    // address came from the shim itself when it wrote the image).
    // SAFETY: the shim's RestartInfo static is mapped writable in the restored image.
    unsafe { core::ptr::write_volatile(meta.restart_info as *mut RestartInfo, info) };

    set_mm(meta);
    for t in &meta.itimers {
        let v = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: t.interval_us / 1_000_000,
                tv_usec: t.interval_us % 1_000_000,
            },
            it_value: libc::timeval {
                tv_sec: t.value_us / 1_000_000,
                tv_usec: t.value_us % 1_000_000,
            },
        };
        // SAFETY: valid itimerval.
        unsafe {
            crate::sc!(
                libc::SYS_setitimer,
                t.which as i64,
                &v as *const libc::itimerval,
                0usize,
            )
        };
    }
    if let Some(p) = &unlink_path {
        // SAFETY: a NUL-terminated path made before the address space changed (the
        // restorer's own heap is outside every image range).
        unsafe { crate::sc!(libc::SYS_unlink, p.as_ptr()) };
    }
    // SAFETY: closing our own fds; the mappings keep the image file referenced.
    unsafe {
        libc::close(imgfd);
        for fd in &shared_fds {
            libc::close(*fd);
        }
    }

    const FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS) as u64;
    for t in meta.threads.iter().filter(|t| !t.is_main) {
        let mut flags = FLAGS;
        if t.tid_addr != 0 {
            flags |= (libc::CLONE_PARENT_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        }
        // SAFETY: ctx_addr/fs_base/tid_addr point into the restored address space; the new
        // thread jumps straight into the shim's resume entry on its own saved stack.
        let r = unsafe {
            let rsp = (*(t.ctx_addr as *const crate::ctx::ThreadCtx)).regs[6];
            trampoline::mos_restore_clone(
                flags,
                rsp - 1024,
                t.tid_addr,
                t.tid_addr,
                t.fs_base,
                t.ctx_addr,
                meta.resume_entry,
            )
        };
        if r < 0 {
            die("cannot create thread");
        }
    }
    let main = meta
        .threads
        .iter()
        .find(|t| t.is_main)
        .expect("checked by ImageFile::open");
    // SAFETY: jumps into the main thread's saved context in the restored shim.
    unsafe { trampoline::mos_restore_jump(main.ctx_addr, main.fs_base, meta.resume_entry) }
}

/// After the address space was changed nothing can be undone: report and exit.
fn die(msg: &str) -> ! {
    let line = format!("mos restart: {msg}: {}\n", std::io::Error::last_os_error());
    // SAFETY: writing a buffer to stderr, then exiting without running any destructor.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        crate::sc!(libc::SYS_exit_group, 2);
    }
    unreachable!()
}

fn fill_ranges(info: &mut RestartInfo, mine: &[(u64, u64)]) {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in mine {
        match merged.last_mut() {
            Some(l) if l.1 == s => l.1 = e,
            _ => merged.push((s, e)),
        }
    }
    // More ranges than slots: leave the rest mapped (harmless, only wasted space).
    for (i, r) in merged.iter().take(info.ranges.len()).enumerate() {
        info.ranges[i] = [r.0, r.1];
        info.nranges = i as u64 + 1;
    }
}

fn check_vdso(meta: &crate::image::ImageMeta, own: &[MapEntry]) -> Result<(), String> {
    for s in &meta.special {
        match own.iter().find(|m| m.path == s.name) {
            Some(m) if m.end - m.start == s.end - s.start => {}
            _ => {
                return Err(format!(
                    "this kernel's {} differs from the image's (image taken under another kernel)",
                    s.name
                ))
            }
        }
    }
    if let Some(v) = own.iter().find(|m| m.path == "[vdso]") {
        // SAFETY: [vdso] is mapped readable for its whole length.
        let bytes = unsafe {
            core::slice::from_raw_parts(v.start as *const u8, (v.end - v.start) as usize)
        };
        if xxhash_rust::xxh3::xxh3_64(bytes) != meta.vdso_hash {
            return Err(
                "this kernel's vdso differs from the image's (image taken under another kernel)"
                    .into(),
            );
        }
    }
    Ok(())
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
    // 1: everything that is created or opened
    for f in &meta.fds {
        let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
        let status = (f.flags as i32) & STATUS_FLAGS;
        match &f.kind {
            FdKind::Inherit => {
                // SAFETY: F_GETFD/F_SETFD on an fd number only inspect or change its flags.
                unsafe {
                    if libc::fcntl(f.fd, libc::F_GETFD) >= 0 {
                        libc::fcntl(
                            f.fd,
                            libc::F_SETFD,
                            if cloexec { libc::FD_CLOEXEC } else { 0 },
                        );
                    }
                }
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

/// Move [vvar], [vvar_vclock] and [vdso] to where the image had them, keeping their
/// relative layout (libc caches pointers into the vdso).
fn move_specials(
    meta: &crate::image::ImageMeta,
    own: &[MapEntry],
    targets: &[(u64, u64)],
) -> Result<(), String> {
    let dest = |m: &MapEntry| {
        meta.special
            .iter()
            .find(|s| s.name == m.path)
            .map(|s| s.start)
    };
    // If a destination overlaps one of our specials, park everything elsewhere first.
    let clash = own
        .iter()
        .any(|m| meta.special.iter().any(|s| m.overlaps(s.start, s.end)));
    let mut cur: Vec<(u64, u64, Option<u64>)> =
        own.iter().map(|m| (m.start, m.end, dest(m))).collect();
    if clash {
        let lo = cur.iter().map(|c| c.0).min().unwrap_or(0);
        let hi = cur.iter().map(|c| c.1).max().unwrap_or(0);
        let span = (hi - lo) as usize;
        let mut park = 0u64;
        for _ in 0..16 {
            // SAFETY: reserving address space somewhere the kernel chooses.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    span,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            } as u64;
            if p == libc::MAP_FAILED as u64 {
                return Err(os_err("reserve for vdso"));
            }
            if targets.iter().all(|t| !(p < t.1 && t.0 < p + span as u64))
                && own.iter().all(|m| !m.overlaps(p, p + span as u64))
            {
                park = p;
                break;
            }
        }
        if park == 0 {
            return Err("no room to move the vdso".into());
        }
        for c in cur.iter_mut() {
            let to = park + (c.0 - lo);
            // SAFETY: moving a kernel special mapping into our reservation.
            let r = unsafe {
                libc::mremap(
                    c.0 as *mut _,
                    (c.1 - c.0) as usize,
                    (c.1 - c.0) as usize,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    to as *mut libc::c_void,
                )
            };
            if r == libc::MAP_FAILED {
                die("cannot move vdso");
            }
            c.1 = to + (c.1 - c.0);
            c.0 = to;
        }
    }
    for c in &cur {
        match c.2 {
            Some(to) => {
                // SAFETY: destination is free (checked against our mappings above).
                let r = unsafe {
                    libc::mremap(
                        c.0 as *mut _,
                        (c.1 - c.0) as usize,
                        (c.1 - c.0) as usize,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        to as *mut libc::c_void,
                    )
                };
                if r == libc::MAP_FAILED {
                    die("cannot move vdso");
                }
            }
            None => {
                // The image had no such mapping: get rid of ours.
                // SAFETY: unmapping a special mapping the restored process does not use.
                unsafe { libc::munmap(c.0 as *mut _, (c.1 - c.0) as usize) };
            }
        }
    }
    Ok(())
}

fn map_regions(
    meta: &crate::image::ImageMeta,
    imgfd: i32,
    shared_fds: &[i32],
    lazy: bool,
) -> Result<(), String> {
    let mut shared = shared_fds.iter();
    for r in &meta.regions {
        let len = (r.end - r.start) as usize;
        let prot = r.prot as i32;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        let map = |addr: u64, len: usize, prot: i32, flags: i32, fd: i32, off: u64| {
            // SAFETY: addr range was checked free; MAP_FIXED_NOREPLACE refuses to clobber.
            let p = unsafe { libc::mmap(addr as *mut _, len, prot, flags, fd, off as i64) };
            if p == libc::MAP_FAILED || p as u64 != addr {
                die(&format!(
                    "cannot map {:#x}-{:#x} {}",
                    addr,
                    addr + len as u64,
                    r.path
                ));
            }
        };
        match r.kind {
            RegionKind::Scratch => map(r.start, len, prot, anon | libc::MAP_NORESERVE, -1, 0),
            RegionKind::SharedAnon => {
                let fl = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
                map(r.start, len, libc::PROT_READ | libc::PROT_WRITE, fl, -1, 0);
                for e in &r.extents {
                    read_into(imgfd, r.start + e.off, e.len, e.file_off);
                }
                // SAFETY: setting the saved protection on the region we just mapped.
                if unsafe { libc::mprotect(r.start as *mut _, len, prot) } != 0 {
                    die(&format!("mprotect {:#x}", r.start));
                }
            }
            RegionKind::FileSharedRo => {
                let fd = *shared.next().expect("one fd per shared region");
                map(
                    r.start,
                    len,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                    fd,
                    r.file_off,
                )
            }
            _ => {
                let mut flags = anon;
                if r.kind == RegionKind::Stack {
                    flags |= libc::MAP_GROWSDOWN;
                }
                map(
                    r.start,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    -1,
                    0,
                );
                if !lazy && r.data_bytes() >= 2 << 20 {
                    // Fewer, larger page faults while copying big regions in.
                    // SAFETY: advice on the anonymous mapping we just created.
                    unsafe { libc::madvise(r.start as *mut _, len, libc::MADV_HUGEPAGE) };
                }
                for e in &r.extents {
                    if lazy && r.kind != RegionKind::Stack && e.len >= LAZY_MIN {
                        map(
                            r.start + e.off,
                            e.len as usize,
                            prot | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_FIXED,
                            imgfd,
                            e.file_off,
                        );
                    } else {
                        read_into(imgfd, r.start + e.off, e.len, e.file_off);
                    }
                }
                // SAFETY: setting the saved protection on the region we just mapped.
                if unsafe { libc::mprotect(r.start as *mut _, len, prot) } != 0 {
                    die(&format!("mprotect {:#x}", r.start));
                }
            }
        }
    }
    let _ = PAGE;
    Ok(())
}

fn read_into(fd: i32, addr: u64, len: u64, off: u64) {
    let mut done = 0u64;
    while done < len {
        // SAFETY: [addr, addr+len) is a writable mapping we created.
        let n = unsafe {
            libc::pread(
                fd,
                (addr + done) as *mut _,
                (len - done) as usize,
                (off + done) as i64,
            )
        };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            die("reading image data");
        }
        done += n as u64;
    }
}

fn set_mm(meta: &crate::image::ImageMeta) {
    #[repr(C)]
    struct PrctlMmMap {
        start_code: u64,
        end_code: u64,
        start_data: u64,
        end_data: u64,
        start_brk: u64,
        brk: u64,
        start_stack: u64,
        arg_start: u64,
        arg_end: u64,
        env_start: u64,
        env_end: u64,
        auxv: u64,
        auxv_size: u32,
        exe_fd: u32,
    }
    let m = &meta.mm;
    if m.brk == 0 {
        return;
    }
    let map = PrctlMmMap {
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    };
    // SAFETY: PR_SET_MM_MAP with a correctly sized struct; failure leaves the restorer's
    // brk (glibc malloc then falls back to mmap).
    unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP,
            &map as *const PrctlMmMap,
            core::mem::size_of::<PrctlMmMap>(),
            0,
        );
    }
}
