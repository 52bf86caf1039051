//! The restorer: turns this process (`mosrestart`) into the process of an image.
//!
//! Order: validate everything (nothing touched yet) -> make sure none of our own mappings
//! collide with the image (else re-exec to get a fresh random layout) -> files, cwd,
//! umask, rlimits, signal dispositions -> move the kernel's vdso/vvar to where the image
//! had them -> map every region at its old address -> kernel mm fields (brk) -> itimers
//! -> recreate threads and jump into their saved contexts. The shim's manager thread then
//! unmaps what is left of the restorer.
//!
//! Here: [`run`], which keeps that order, and the process-wide state (cwd, umask,
//! rlimits). Each kind of state has its file, named as the shim's half in
//! `libmosshim/src/state/`: `fds.rs`, `memory.rs` (regions, vdso, mm fields),
//! `signals.rs` (dispositions), `timers.rs` (itimers), `threads.rs` (recreating the
//! threads; `trampoline.rs` their first instructions).

mod fds;
mod memory;
mod signals;
mod threads;
mod timers;
mod trampoline;

use crate::ctx::RestartInfo;
use crate::image::ImageFile;
use crate::maps::{self, MapEntry};
use crate::sys;
use std::ffi::CString;
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
/// Post-copy: the unix socket of the shadowd that serves the restored process's page
/// faults (set by `mos restart --lazy-pages`).
pub const LAZY_PAGES_ENV: &str = "MOS_LAZY_PAGES";
const MAX_TRIES: u32 = 32;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("path contains NUL: {s:?}"))
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
    // Every other try, the legacy (bottom-up) layout: with an unlimited stack limit the
    // kernel puts mmaps low instead of just under the stack, away from an image range
    // that covers the top of the address space (a 2 TiB reservation of a JIT or Go
    // runtime covers all of mmap_base's random range). The image's own limits are set
    // again before it runs.
    if tries % 2 == 1 {
        let inf = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: setrlimit with a valid struct; refused without the privilege, then no change.
        unsafe { libc::setrlimit(libc::RLIMIT_STACK, &inf) };
    }
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
    // post-copy: where the node's shadowd serves the page faults of the lazy regions
    let lazy_pages = match std::env::var_os(LAZY_PAGES_ENV) {
        Some(p) => Some(memory::unix_addr(&p)?),
        None => None,
    };
    if lazy_pages.is_none() && img.region_hashes.contains(&crate::image::live::LAZY) {
        return Err("this image is a post-copy migration's: its memory comes from the source node after the restart, so it cannot be restarted on its own".into());
    }
    if opts.verify {
        img.verify_data().map_err(|e| e.to_string())?;
    }
    let meta = &img.meta;

    // Our own layout, before anything is changed.
    let own = maps::read_self().map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    memory::check_vdso(meta, &own)?;
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
    let shared_fds = memory::open_shared_files(meta)?;

    threads::unregister_own_rseq();
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(!0u64), None);

    // ---- file descriptors ----
    let imgfd = fds::restore_all(meta, &img.file, &shared_fds)?;

    // ---- process-wide state ----
    let cwd = cstr(&meta.cwd)?;
    if let Some(gone) = fds::deleted_dir(&meta.cwd) {
        // a current directory that was deleted: an empty one, deleted as well
        fds::ghost_dir(gone, |d| {
            // SAFETY: valid path.
            (unsafe { libc::chdir(d.as_ptr()) } == 0).then_some(()).ok_or_else(|| os_err(&format!("cannot chdir to a stand-in for {}", meta.cwd)))
        })?;
    // SAFETY: valid path.
    } else if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
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
    if opts.lazy {
        // SAFETY: stat is plain data; fstat of the image fd we hold fills it.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(imgfd, &mut st) } == 0 {
            info.image_ino = st.st_ino;
        }
    }
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
    memory::fill_ranges(&mut info, &mine);
    let own_special: Vec<MapEntry> = now
        .iter()
        .filter(|m| m.is_special() && m.path != "[vsyscall]")
        .cloned()
        .collect();

    signals::restore_dispositions(meta);
    restore_attrs(meta);

    let unlink_path = if opts.unlink { Some(cstr(&path.to_string_lossy())?) } else { None };
    // ---- point of no return: the address space changes ----
    memory::move_specials(meta, &own_special, &targets)?;
    memory::map_regions(meta, imgfd, &shared_fds, opts.lazy)?;
    if let Some(addr) = &lazy_pages {
        memory::hand_over_lazy(meta, &img.region_hashes, addr);
    }

    // SAFETY: restart_info points into the restored shim's writable data (validated as
    // inside a mapped region by the image's consistency check is not possible here; the
    // address came from the shim itself when it wrote the image).
    // SAFETY: the shim's RestartInfo static is mapped writable in the restored image.
    unsafe { core::ptr::write_volatile(meta.restart_info as *mut RestartInfo, info) };

    memory::set_mm(meta);
    timers::restore_itimers(meta);
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
    threads::start(meta)
}

/// prctl attributes and oom_score_adj as the image had them, before the threads are
/// recreated (no_new_privs is per thread and inherited). Best effort: a value this
/// process may not set (a lower oom_score_adj without CAP_SYS_RESOURCE) stays as it is.
fn restore_attrs(meta: &crate::image::ImageMeta) {
    let a = &meta.attrs;
    // SAFETY: prctl calls with plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, a.child_subreaper as libc::c_ulong, 0, 0, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, a.thp_disable as libc::c_ulong, 0, 0, 0);
        if a.no_new_privs {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, a.dumpable as libc::c_ulong, 0, 0, 0);
    }
    let _ = std::fs::write("/proc/self/oom_score_adj", a.oom_score_adj.to_string());
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
