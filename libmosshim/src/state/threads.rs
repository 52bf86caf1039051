//! The application's threads. At checkpoint each thread captures its own context and
//! kernel state in the freeze handler (`process::slots::capture_thread_state`: a signal handler, so
//! atomics and raw system calls only: no allocation, no locks), and the manager turns the
//! parked slots into the image's thread records ([`capture_threads`]). The restorer
//! recreates the threads (`ckpt/src/restore/threads.rs`); each one first runs
//! [`mos_thread_resumed`] on its own saved stack (raw system calls only, no allocation, no
//! locks) and waits for the manager's release. Nothing to do on restart (the manager's
//! part is `restart::restarted`) or fork: [`Threads`] keeps the lifecycle's defaults.

use super::StateKind;
use crate::process::slots::capture_thread_state;
use crate::signals::*;
use ckpt::ctx::ThreadCtx;
use ckpt::image::{ImageMeta, ThreadRec};
use ckpt::sys;

/// Threads in the lifecycle of [`StateKind`].
pub struct Threads;

impl StateKind for Threads {}


/// The image's thread records: every parked thread's slot, then the manager (`me`),
/// whose context is captured here. Manager thread, application threads parked.
pub fn capture_threads(meta: &mut ImageMeta, me: i32, slots: &[usize]) -> Result<(), String> {
    for &i in slots {
        // SAFETY: thread i parked, so its slot is complete and no longer written.
        let c = unsafe { &*slot_ptr(i) };
        meta.threads.push(ThreadRec {
            old_tid: c.vtid,
            ctx_addr: slot_ptr(i) as u64,
            fs_base: c.fs_base,
            tid_addr: c.tid_addr,
            is_main: c.is_main != 0,
            is_manager: false,
        });
    }
    // SAFETY: only the manager thread touches its saved context.
    let mc = unsafe { &mut *crate::process::ctx::manager_ctx() };
    capture_thread_state(mc);
    meta.threads.push(ThreadRec {
        old_tid: me,
        ctx_addr: mc as *mut ThreadCtx as u64,
        fs_base: mc.fs_base,
        tid_addr: mc.tid_addr,
        is_main: false,
        is_manager: true,
    });
    if !meta.threads.iter().any(|t| t.is_main) {
        return Err("the main thread has exited; such a process cannot be restarted yet".into());
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
    crate::tids::register(ctx, c.fs_base, c.vtid, tid, c.cpu_ns);
    if c.name[0] != 0 {
        // SAFETY: the saved name is NUL-terminated within 16 bytes (PR_GET_NAME wrote it).
        unsafe { libc::prctl(libc::PR_SET_NAME, c.name.as_ptr()) };
    }
    let remote = crate::remote::session_set();
    let mask = if remote { c.mask & !sys::sigbit(libc::SIGSYS) } else { c.mask };
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(mask), None);
    if ctx == crate::process::ctx::manager_ctx() {
        return;
    }
    if remote {
        // every system call of this thread outside the shim now traps (see crate::remote)
        crate::remote::set_away();
        crate::remote::enable_thread();
    }
    resumed_wait(crate::signals::release_gen());
}
