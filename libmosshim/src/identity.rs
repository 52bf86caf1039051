//! Who this process is, as the shim sees it: its real pid, the virtual pid the
//! application sees (the first real pid, kept across restarts), and where glibc keeps each
//! thread's rseq area. Plain atomics, read from signal handlers too; below everything.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

struct Identity {
    /// the real pid (the kernel's, of the current incarnation)
    real_pid: AtomicI32,
    /// the pid the application sees (its first real pid)
    vpid: AtomicI32,
    /// glibc's rseq offset from the thread pointer, and whether rseq is registered
    rseq_offset: AtomicU64,
    rseq_size: AtomicU32,
}
static IDENTITY: Identity =
    Identity { real_pid: AtomicI32::new(0), vpid: AtomicI32::new(0), rseq_offset: AtomicU64::new(0), rseq_size: AtomicU32::new(0) };

/// The real pid (the kernel's, of the current incarnation).
pub fn real_pid() -> i32 {
    IDENTITY.real_pid.load(Ordering::Relaxed)
}

/// The pid the application sees (its first real pid; 0 before start-up).
pub fn vpid() -> i32 {
    IDENTITY.vpid.load(Ordering::Relaxed)
}

/// A new process (start-up, a forked child): both pids.
pub fn set_pids(real: i32, vpid: i32) {
    IDENTITY.real_pid.store(real, Ordering::Relaxed);
    IDENTITY.vpid.store(vpid, Ordering::Relaxed);
}

/// A restart: the real pid of the new incarnation (the virtual one stays).
pub fn set_real_pid(real: i32) {
    IDENTITY.real_pid.store(real, Ordering::Release);
}

/// glibc's rseq offset from the thread pointer.
pub fn rseq_offset() -> u64 {
    IDENTITY.rseq_offset.load(Ordering::Relaxed)
}

/// glibc's rseq area size (0: rseq not registered).
pub fn rseq_size() -> u32 {
    IDENTITY.rseq_size.load(Ordering::Relaxed)
}

/// What start-up learnt from glibc's `__rseq_offset` and `__rseq_size`.
pub fn set_rseq(offset: u64, size: u32) {
    IDENTITY.rseq_offset.store(offset, Ordering::Relaxed);
    IDENTITY.rseq_size.store(size, Ordering::Relaxed);
}
