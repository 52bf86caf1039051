//! State handed between the manager and the restorer: the manager thread's own saved
//! context ([`MANAGER_CTX`]) and what the restorer tells the restarted process
//! ([`RESTART_INFO`]). Plain statics, no code: read from the restart path and by
//! `mos_thread_resumed`, so nothing here may allocate or lock.

use ckpt::ctx::{RestartInfo, ThreadCtx};
use core::cell::UnsafeCell;

pub struct Cell<T>(pub UnsafeCell<T>);
// SAFETY: MANAGER_CTX is written by the manager thread only; RESTART_INFO by the
// restorer before any thread runs, then read by the manager.
unsafe impl<T> Sync for Cell<T> {}
pub static MANAGER_CTX: Cell<ThreadCtx> = Cell(UnsafeCell::new(ThreadCtx {
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
}));
pub static RESTART_INFO: Cell<RestartInfo> = Cell(UnsafeCell::new(RestartInfo::zeroed()));
