//! Who this process is, as the shim sees it: its real pid, the virtual pid the
//! application sees (the first real pid, kept across restarts), and where glibc keeps each
//! thread's rseq area. Plain atomics, read from signal handlers too; below everything.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

/// The real pid (the kernel's, of the current incarnation).
pub static REAL_PID: AtomicI32 = AtomicI32::new(0);
/// The pid the application sees (its first real pid).
pub static VPID: AtomicI32 = AtomicI32::new(0);
/// glibc's rseq offset from the thread pointer, and whether rseq is registered
pub static RSEQ_OFFSET: AtomicU64 = AtomicU64::new(0);
pub static RSEQ_SIZE: AtomicU32 = AtomicU32::new(0);
