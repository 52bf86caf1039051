//! libmosshim: preloaded into an unmodified program (`LD_PRELOAD=libmosshim.so`).
//!
//! At start-up it installs the checkpoint trigger (SIGUSR2, or `MOS_CKPT_SIGNAL`), a
//! private freeze signal, a scratch area for the image writer, and one manager thread
//! (like DMTCP's checkpoint thread). At home every libc call goes straight to libc; the
//! hooks are pid virtualisation, keeping the shim's signals its own, and file I/O calls
//! that a migrated body forwards without a trap (at home: a flag test and a jump).
//!
//! Environment (every name is in [`config`]): `MOS_CKPT_DIR` (default image directory,
//! else the start cwd), `MOS_CKPT_SIGNAL` (trigger signal), `MOS_LOG_FILE` (where the shim
//! logs; never the application's stderr), `MOS_DISABLE=1` (do nothing), `MOS_SHADOW_SOCK`
//! (the node's shadowd, to register with for load balancing; `MOS_NO_MIGRATE=1`: as never
//! movable).

/// The original libc symbol `name` with C type `ty` (dlsym RTLD_NEXT). Every name has one
/// slot in [`reals`], filled for all of them at start-up ([`reals::resolve_all`]), so a
/// hook never calls dlsym later (not async-signal-safe; `read` or `write` may run in a
/// signal handler). Only a hook called before the shim's constructor resolves lazily.
macro_rules! real {
    ($name:ident, $ty:ty) => {{
        let mut p = crate::reals::$name.load(core::sync::atomic::Ordering::Relaxed);
        if p == 0 {
            p = crate::reals::lookup(&crate::reals::$name, concat!(stringify!($name), "\0"));
        }
        // SAFETY: the symbol has this C signature in glibc.
        unsafe { core::mem::transmute::<usize, $ty>(p) }
    }};
}

/// One slot per original symbol the hooks call.
macro_rules! declare_reals {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        pub(crate) mod reals {
            use core::sync::atomic::{AtomicUsize, Ordering};
            $(pub static $name: AtomicUsize = AtomicUsize::new(0);)*

            /// Resolve `name` (NUL-terminated) into `slot`.
            pub fn lookup(slot: &AtomicUsize, name: &str) -> usize {
                // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
                let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
                slot.store(p, Ordering::Relaxed);
                p
            }

            /// Resolve every slot (the constructor, before any hook can run in a handler).
            pub fn resolve_all() {
                $(lookup(&$name, concat!(stringify!($name), "\0"));)*
            }
        }
    };
}

declare_reals!(
    sigaction, sigprocmask, pthread_sigmask, sigsuspend, sigqueue, signal, bsd_signal, sysv_signal, pthread_kill, inotify_add_watch, inotify_rm_watch, madvise,
    syscall, clock_nanosleep, poll, ppoll, select, epoll_wait, epoll_pwait, sem_wait, sem_timedwait, pause, read,
    write, pread64, pwrite64, readv, writev, preadv64, pwritev64, lseek64, clock_gettime, clock_getres, timer_create, timer_delete,
    open, open64, __open_2, __open64_2, openat, openat64, __openat_2, __openat64_2, fopen, fopen64, opendir, stat, stat64, lstat, lstat64,
    fstatat, fstatat64, statx, access, faccessat, chdir, readlink, readlinkat,
    sched_setaffinity, sched_getaffinity, sched_setparam, sched_getparam, sched_setscheduler, sched_getscheduler, sched_rr_get_interval,
    pidfd_open, prlimit, prlimit64, process_vm_readv, process_vm_writev, getpriority, setpriority, pthread_cancel, readdir, readdir64, getdents64,
);

mod config;
mod ctxasm;
mod dump;
mod freeze;
mod hooks;
mod hooks_clock;
mod hooks_eintr;
mod hooks_timer;
mod hooks_io;
mod hooks_proc;
mod identity;
mod log;
mod manager;
mod migrate;
mod precopy;
mod process;
mod rawfs;
mod register;
mod restart;
mod remote;
mod rt;
mod signals;
mod state;
mod tids;


#[global_allocator]
static ALLOC: rt::alloc::ShimAlloc = rt::alloc::ShimAlloc;

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = mos_init;

extern "C" fn atfork_prepare() {
    rt::alloc::lock_for_fork();
}

extern "C" fn atfork_parent() {
    rt::alloc::unlock_after_fork();
}

extern "C" fn atfork_child() {
    rt::alloc::unlock_after_fork();
    // A forked child is a new process: it sees its own pid, and gets a manager thread of
    // its own (the parent's did not come along), so it checkpoints like any process once
    // it has no children itself (a daemon after its double fork, a worker whose launcher
    // exited). Exec'd programs start their own shim.
    let pid = ckpt::sys::getpid_real();
    identity::set_pids(pid, pid);
    // the trigger's wake-up pipe is the parent's (see state::signals)
    state::atfork_child();
    // no timer and no helper thread crossed the fork
    hooks_timer::atfork_child();
    for fd in remote::shim_fds() {
        if fd >= 0 {
            // SAFETY: these fds are the shim's own.
            unsafe { libc::close(fd) };
        }
    }
    if remote::went_away() || rt::alloc::scratch_base() == 0 {
        // a body away from home does not fork (ENOSYS), and a shim without its scratch
        // area never checkpoints
        return;
    }
    state::fds::note_inherited_streams();
    process::fds::open_channels();
    manager::forked();
    register::forked_child();
    let spawned = std::thread::Builder::new().name("mos-manager".into()).stack_size(256 * 1024).spawn(manager::run);
    match spawned {
        Err(e) => log::log(&format!("forked child: cannot start the manager thread: {e}")),
        Ok(_) => {
            let t0 = std::time::Instant::now();
            while !manager::detached() && t0.elapsed() < std::time::Duration::from_secs(2) {
                manager::wait_detached(10);
            }
            single_threaded_again();
        }
    }
}

/// The manager thread is the shim's, not the program's: a program that has no thread of
/// its own keeps glibc's single-threaded fast paths (no asynchronous-cancellation toggling
/// around every read and write, no atomics in its own refcounts), as without the shim.
/// Sound because the manager never uses glibc state the program's thread shares (its
/// memory comes from the shim's own allocator, its I/O is plain system calls) and never
/// cancels a thread; the program's first pthread_create sets both flags again.
fn single_threaded_again() {
    // only the main thread and the manager: nothing else may rely on the flags
    match rawfs::list_dir_numbers("/proc/self/task") {
        Ok(t) if t.len() == 2 => {}
        _ => return,
    }
    // SAFETY: glibc's public flag (a char), found by name; absent before glibc 2.32.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) as *mut u8;
        if !p.is_null() {
            core::ptr::write_volatile(p, 1);
        }
    }
    // x86_64 glibc keeps `header.multiple_threads` (an int) at %fs:0x18 of each thread's
    // TCB (tcbhead_t: tcb, dtv, self, multiple_threads).
    // SAFETY: a write to the calling main thread's own TCB field, described above.
    unsafe { core::arch::asm!("mov dword ptr fs:[0x18], 0", options(nostack, preserves_flags)) };
}

extern "C" fn mos_init() {
    // first, whatever happens next: the hooks stay exported even when the shim is disabled
    reals::resolve_all();
    if config::flag(config::DISABLE) {
        return;
    }
    let pid = ckpt::sys::getpid_real();
    identity::set_pids(pid, pid);
    ctxasm::set_resumed_hook(state::threads::mos_thread_resumed);
    let log_file = std::env::var(config::LOG_FILE).ok();
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| ".".into());
    let ckpt_dir = std::env::var(config::CKPT_DIR)
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or(cwd);
    config::set(config::Config { ckpt_dir, log_file });
    // what the program's parent left open, before the shim opens anything of its own
    state::fds::note_inherited();
    state::fds::read_deleted_max();
    if let Ok(s) = std::env::var(config::CKPT_SIGNAL) {
        match signals::parse_signal(&s) {
            Some(sig) if sig != libc::SIGKILL && sig != libc::SIGSTOP && sig != config::SIG_CANCEL && sig != config::SIG_SETXID => {
                signals::set_trigger_sig(sig)
            }
            _ => log::log(&format!(
                "MOS_CKPT_SIGNAL={s:?} is not a usable signal; using SIGUSR2"
            )),
        }
    }
    if crate::signals::trigger_sig() == config::FREEZE_SIG_DEFAULT {
        signals::set_freeze_sig(config::FREEZE_SIG_ALT);
    }
    // SAFETY: dlsym of glibc's exported rseq variables (absent before glibc 2.35).
    unsafe {
        let off = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if !off.is_null() && !size.is_null() {
            identity::set_rseq(*(off as *const isize) as u64, *(size as *const u32));
        }
    }
    // SAFETY: reserving the scratch area (never saved in an image).
    let scratch = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            rt::alloc::SCRATCH_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if scratch == libc::MAP_FAILED {
        log::log("cannot reserve the scratch area; checkpointing disabled");
        return;
    }
    rt::alloc::set_scratch_base(scratch as usize);
    process::fds::open_channels();
    tids::init();
    signals::install();
    remote::learn_text();
    // SAFETY: registering a plain function as fork child handler.
    unsafe { libc::pthread_atfork(Some(atfork_prepare), Some(atfork_parent), Some(atfork_child)) };
    // a batch job placed away from its home runs in remote mode from the start
    let remote_start = match std::env::var(config::REMOTE_HOME) {
        Ok(v) if !v.is_empty() => match migrate::start_remote(&v) {
            Ok(()) => true,
            Err(e) => {
                // its files are not here: running on would write them in the wrong place
                let line = format!("mos: {e}\n");
                // SAFETY: writing to stderr, then exiting before the program runs.
                unsafe {
                    libc::write(2, line.as_ptr().cast(), line.len());
                    libc::_exit(126);
                }
            }
        },
        _ => false,
    };
    let spawned = std::thread::Builder::new()
        .name("mos-manager".into())
        .stack_size(256 * 1024)
        .spawn(manager::run);
    match spawned {
        Err(e) => log::log(&format!("cannot start the manager thread: {e}")),
        Ok(_) => {
            // the program starts once the manager holds its own copies of the shim's fds
            let t0 = std::time::Instant::now();
            while !manager::detached() && t0.elapsed() < std::time::Duration::from_secs(2) {
                manager::wait_detached(10);
            }
            single_threaded_again();
        }
    }
    if remote_start {
        // every call of the main thread from here on goes through the dispatcher
        remote::enable_thread();
    }
    if config::flag(config::RSYS_TCP) {
        remote::set_local_off();
    }
    if let Some(n) = std::env::var(config::RSYS_SPIN_US).ok().and_then(|v| v.parse().ok()) {
        remote::set_spin_us(n);
    }
    if config::flag(config::SUD_SELFTEST) {
        remote::selftest_enable();
    }
}
