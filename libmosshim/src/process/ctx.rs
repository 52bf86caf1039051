//! State handed between the manager and the restorer ([`HANDOVER`]): the manager thread's
//! own saved context ([`manager_ctx`]) and what the restorer tells the restarted process
//! ([`restart_info`]). Plain data, no code: read from the restart path and by
//! `mos_thread_resumed`, so nothing here may allocate or lock.

use ckpt::ctx::{RestartInfo, ThreadCtx};
use core::cell::UnsafeCell;

/// What the manager and the restorer hand each other.
struct Handover {
    manager_ctx: UnsafeCell<ThreadCtx>,
    restart_info: UnsafeCell<RestartInfo>,
}
// SAFETY: manager_ctx is written by the manager thread only; restart_info by the
// restorer before any thread runs, then only read.
unsafe impl Sync for Handover {}
static HANDOVER: Handover = Handover {
    manager_ctx: UnsafeCell::new(ThreadCtx {
        regs: [0; 8],
        fs_base: 0,
        tid_addr: 0,
        robust_head: 0,
        robust_len: 0,
        rseq_addr: 0,
        rseq_len: 0,
        rseq_sig: 0,
        altstack_sp: 0,
        altstack_flags: 0,
        altstack_size: 0,
        mask: 0,
        tid: 0,
        is_main: 0,
        vtid: 0,
        _pad: 0,
        name: [0; 16],
        pending: 0,
        cpu_ns: 0,
    }),
    restart_info: UnsafeCell::new(RestartInfo::zeroed()),
};

/// The manager thread's own saved context (only the manager thread touches it, and the
/// image writer's child, forked from it, reads its copy).
pub fn manager_ctx() -> *mut ThreadCtx {
    HANDOVER.manager_ctx.get()
}

/// Where the restorer writes what it tells the restarted process (the image records
/// this address).
pub fn restart_info_ptr() -> *mut RestartInfo {
    HANDOVER.restart_info.get()
}

/// What the restorer told this process (all zero before a restart).
pub fn restart_info() -> RestartInfo {
    // SAFETY: the restorer writes it before any thread of the restarted process runs;
    // afterwards it is only read.
    unsafe { *HANDOVER.restart_info.get() }
}

/// The real pid the restorer gave (0: never restarted); read on hot paths (tids), so
/// without copying the whole [`RestartInfo`].
pub fn restart_pid() -> i64 {
    // SAFETY: as in restart_info: written before any thread runs, then only read.
    unsafe { (*HANDOVER.restart_info.get()).pid }
}
