//! The restart path after the restorer: the manager cleans up, recreates what lives
//! outside memory (pipe, sockets, pending signals, POSIX timers) and releases the
//! threads ([`restarted`]); every restored thread first re-establishes its own kernel
//! state in [`mos_thread_resumed`] (raw system calls only: no allocation, no locks).

use crate::freeze::{release_threads, NTHREADS};
use crate::log::log;
use crate::process::ctx::{MANAGER_CTX, RESTART_INFO};
use crate::process::fds::{detach_fd_table, open_channels};
use crate::signals::*;
use ckpt::ctx::ThreadCtx;
use ckpt::sys;
use core::sync::atomic::Ordering;

/// Restart path of the manager: every thread is back; clean up and let them go.
pub fn restarted(meta: &ckpt::image::ImageMeta) {
    // the restorer made this thread share the application's table again (until the end)
    crate::remote::MANAGER_OWN_TABLE_TID.store(0, Ordering::Relaxed);
    // SAFETY: the restorer wrote RESTART_INFO before any thread ran.
    let info = unsafe { *RESTART_INFO.0.get() };
    REAL_PID.store(
        if info.pid > 0 {
            info.pid as i32
        } else {
            sys::getpid_real()
        },
        Ordering::Release,
    );
    let n = NTHREADS.load(Ordering::Acquire);
    loop {
        let k = RESUMED_COUNT.load(Ordering::Acquire);
        if k >= n {
            break;
        }
        sys::futex_wait(&RESUMED_COUNT, k, Some(10));
    }
    for r in &info.ranges[..info.nranges as usize] {
        // SAFETY: these were the restorer's own mappings; no thread runs there any more.
        unsafe { libc::munmap(r[0] as *mut _, (r[1] - r[0]) as usize) };
    }
    open_channels();
    crate::process::fds::CONTROL.store(-1, Ordering::Release);
    crate::process::fds::STUB_CONN.store(-1, Ordering::Release);
    if crate::remote::SESSION_SET.load(Ordering::Acquire) {
        crate::migrate::enter_remote(&meta.fds);
    }
    raise_pending(meta);
    if let Err(e) = restore_timers(meta) {
        log(&format!("restart: {e}"));
    }
    release_threads();
    detach_fd_table();
    log(&format!(
        "restarted as pid {}",
        REAL_PID.load(Ordering::Relaxed)
    ));
}

/// Signals that were pending when the image was taken are raised again (once each: the
/// kernel's queue of real-time signal instances and their siginfo are not saved).
fn raise_pending(meta: &ckpt::image::ImageMeta) {
    let ours = sys::sigbit(TRIGGER_SIG.load(Ordering::Relaxed)) | sys::sigbit(FREEZE_SIG.load(Ordering::Relaxed)) | sys::sigbit(crate::config::SIG_CANCEL) | sys::sigbit(crate::config::SIG_SETXID);
    let pid = REAL_PID.load(Ordering::Relaxed);
    for t in meta.threads.iter().filter(|t| !t.is_manager) {
        // SAFETY: the restored thread's context (read only).
        let c = unsafe { &*(t.ctx_addr as *const ThreadCtx) };
        let own = c.pending & !meta.shared_pending & !ours;
        for sig in (1..=64).filter(|&s| own & sys::sigbit(s) != 0) {
            // SAFETY: signal to a thread of our own process.
            unsafe { ckpt::sc!(libc::SYS_tgkill, pid, crate::tids::to_real(c.vtid), sig) };
        }
    }
    for sig in (1..=64).filter(|&s| meta.shared_pending & !ours & sys::sigbit(s) != 0) {
        // SAFETY: process-directed signal to ourselves.
        unsafe { ckpt::sc!(libc::SYS_kill, pid, sig) };
    }
}

/// Recreate POSIX timers with their old ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+;
/// older kernels hand out ids in order, so gaps are filled with placeholders).
fn restore_timers(meta: &ckpt::image::ImageMeta) -> Result<(), String> {
    let timers = &meta.timers;
    #[repr(C)]
    struct KSigevent {
        value: u64,
        signo: i32,
        notify: i32,
        tid: i32,
        pad: [i32; 11],
    }
    if timers.is_empty() {
        return Ok(());
    }
    const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;
    // SAFETY: prctl with integer arguments.
    let by_id = unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0) } == 0;
    let mut sorted: Vec<_> = timers.to_vec();
    sorted.sort_by_key(|t| t.id);
    let mut fillers = Vec::new();
    for t in &sorted {
        // the thread a SIGEV_THREAD_ID timer notifies, by its old kernel tid
        let tid = if t.notify & libc::SIGEV_THREAD_ID != 0 {
            meta.threads
                .iter()
                // SAFETY: contexts of the restored threads (read only).
                .map(|r| unsafe { &*(r.ctx_addr as *const ThreadCtx) })
                
                .find(|c| c.tid == t.tid)
                .map(|c| crate::tids::to_real(c.vtid))
                .unwrap_or(0)
        } else {
            0
        };
        let sev = KSigevent { value: t.sival, signo: t.signo, notify: t.notify, tid, pad: [0; 11] };
        let mut id: i32 = t.id;
        loop {
            // SAFETY: timer_create with a valid sigevent and id out-pointer.
            if unsafe { ckpt::sc!(libc::SYS_timer_create, t.clockid, &sev as *const KSigevent, &mut id as *mut i32) } != 0 {
                return Err(format!("cannot recreate POSIX timer {}: {}", t.id, std::io::Error::last_os_error()));
            }
            if by_id || id >= t.id {
                break;
            }
            fillers.push(id);
            id = t.id;
        }
        if id != t.id {
            return Err(format!("POSIX timer {} came back as {id}", t.id));
        }
        let ns = |v: u64| [(v / 1_000_000_000) as i64, (v % 1_000_000_000) as i64];
        let [is, ins] = ns(t.interval_ns);
        let [vs, vns] = ns(t.value_ns);
        let its = [is, ins, vs, vns];
        // SAFETY: arming our timer with a 4-word itimerspec.
        unsafe { ckpt::sc!(libc::SYS_timer_settime, id, 0, its.as_ptr(), 0usize) };
    }
    for id in fillers {
        // SAFETY: deleting a placeholder timer we created.
        unsafe { ckpt::sc!(libc::SYS_timer_delete, id) };
    }
    if by_id {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0) };
    }
    Ok(())
}

/// Per-thread kernel state after a restart; called by `mos_ctx_resume_entry` on every
/// restored thread, on its own saved stack. Raw syscalls only.
#[no_mangle]
pub extern "C" fn mos_thread_resumed(ctx: *mut ThreadCtx) {
    // SAFETY: ctx is a slot of the restored process, filled at checkpoint time.
    let c = unsafe { &*ctx };
    let tid = sys::gettid();
    // SAFETY: raw syscalls re-establishing this thread's kernel state at addresses that
    // were valid for it when the image was taken (same memory now).
    unsafe {
        if c.tid_addr != 0 {
            ckpt::sc!(libc::SYS_set_tid_address, c.tid_addr);
            // glibc keeps the tid it knew (mutex owners, recursion counts compare it);
            // the kernel's tid is mapped by crate::tids.
            core::ptr::write_volatile(c.tid_addr as *mut i32, c.vtid);
        }
        if c.robust_head != 0 {
            ckpt::sc!(libc::SYS_set_robust_list, c.robust_head, c.robust_len);
        }
        if c.rseq_addr != 0 {
            // struct rseq: cpu_id_start u32, cpu_id u32, rseq_cs u64, flags u32
            core::ptr::write_volatile((c.rseq_addr + 4) as *mut u32, u32::MAX);
            core::ptr::write_volatile((c.rseq_addr + 8) as *mut u64, 0);
            ckpt::sc!(libc::SYS_rseq, c.rseq_addr, c.rseq_len, 0, c.rseq_sig);
        }
        if c.altstack_size != 0 {
            let ss = libc::stack_t {
                ss_sp: c.altstack_sp as *mut _,
                ss_flags: c.altstack_flags as i32,
                ss_size: c.altstack_size as usize,
            };
            libc::sigaltstack(&ss, core::ptr::null_mut());
        }
    }
    crate::tids::register(ctx, c.fs_base, c.vtid, tid);
    if c.name[0] != 0 {
        // SAFETY: the saved name is NUL-terminated within 16 bytes (PR_GET_NAME wrote it).
        unsafe { libc::prctl(libc::PR_SET_NAME, c.name.as_ptr()) };
    }
    let remote = crate::remote::SESSION_SET.load(Ordering::Acquire);
    let mask = if remote { c.mask & !sys::sigbit(libc::SIGSYS) } else { c.mask };
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(mask), None);
    if ctx == MANAGER_CTX.0.get() {
        return;
    }
    if remote {
        // every system call of this thread outside the shim now traps (see crate::remote)
        crate::remote::REMOTE.store(true, Ordering::Release);
        crate::remote::enable_thread();
    }
    resumed_wait(RELEASE.load(Ordering::Acquire));
}
