//! CPU-time clocks across a restart. A restarted process is a new kernel process with
//! new threads: their CPU clocks start again near zero, and a clock id that names the
//! process or a thread (`clock_getcpuclockid`, `pthread_getcpuclockid`: the pid or tid
//! is in the id) names the old incarnation. The shim keeps what each clock had counted
//! when the image was taken and adds it to what the kernel says; the hooks in
//! `hooks_clock.rs` translate the ids (see there).
//!
//! The process's base lives in the shim's own memory, so it travels in the image: at
//! capture the snapshot (base + the CPU time so far) is written, and a restarted
//! process takes it as its base. Each thread's goes in its context
//! (`ThreadCtx::cpu_ns`, written by the thread itself in the freeze handler) and, at
//! restart, into the tid table (`crate::tids`).

use core::sync::atomic::{AtomicU64, Ordering};

use ckpt::image::ImageMeta;

use super::{CaptureCx, StateKind};

/// The process's CPU time in earlier incarnations, ns.
static PROC_BASE: AtomicU64 = AtomicU64::new(0);
/// At capture: the process's CPU time so far, all incarnations (a restart's base).
static PROC_SNAPSHOT: AtomicU64 = AtomicU64::new(0);

/// The kernel's reading of CPU clock `clk`, ns (0 if it cannot be read). Raw system
/// call: async-signal-safe.
pub fn kernel_ns(clk: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills ts.
    let r = unsafe { ckpt::sc!(libc::SYS_clock_gettime, clk, &mut ts as *mut libc::timespec) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The calling thread's CPU time, every incarnation. Freeze handler: no allocation.
pub fn own_thread_cpu_ns() -> u64 {
    crate::tids::own_cpu_base() + kernel_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The process's CPU time in earlier incarnations, ns.
pub fn process_base() -> u64 {
    PROC_BASE.load(Ordering::Relaxed)
}

pub struct Clocks;

impl StateKind for Clocks {
    fn capture(&self, _meta: &mut ImageMeta, _cx: &CaptureCx<'_>) -> Result<(), String> {
        PROC_SNAPSHOT.store(process_base() + kernel_ns(libc::CLOCK_PROCESS_CPUTIME_ID), Ordering::Relaxed);
        Ok(())
    }

    fn restarted(&self, _meta: &ImageMeta) -> Result<(), String> {
        PROC_BASE.store(PROC_SNAPSHOT.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(())
    }

    fn atfork_child(&self) {
        // a new process: its CPU time starts at zero
        PROC_BASE.store(0, Ordering::Relaxed);
    }
}
