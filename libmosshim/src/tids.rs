//! Virtual thread ids. After a restart every thread has a new kernel tid, but glibc keeps
//! the old one in `pthread->tid` (we write it back): mutex owners, recursive and
//! error-checking mutexes and pthread_join all compare that value, so they keep working.
//! Whatever passes a tid to the kernel goes through this table (hooks: gettid, syscall,
//! tgkill, pthread_kill, raise). Threads created after a restart have real == virtual.
//!
//! Async-signal-safe: atomics only. An entry is valid when its generation is the real pid
//! of the current incarnation (written by the restorer) and the thread still carries the
//! virtual tid (a new thread reusing the same `struct pthread` does not).

use crate::process::slots::{slot_ptr, MAX_THREADS};
use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};

struct Entry {
    pd: AtomicU64,
    vtid: AtomicI32,
    rtid: AtomicI32,
    gen: AtomicI64,
    /// the thread's CPU time in earlier incarnations, ns
    cpu_base: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const E: Entry = Entry {
    pd: AtomicU64::new(0),
    vtid: AtomicI32::new(0),
    rtid: AtomicI32::new(0),
    gen: AtomicI64::new(0),
    cpu_base: AtomicU64::new(0),
};
static TABLE: [Entry; MAX_THREADS + 1] = [E; MAX_THREADS + 1];

/// Offset of glibc's `pthread->tid` from `pthread_self()`, learned at start-up.
static TID_OFF: AtomicI64 = AtomicI64::new(-1);

fn generation() -> i64 {
    crate::process::ctx::restart_pid()
}

/// Called by each restored thread (see `mos_thread_resumed`).
pub fn register(ctx: *mut ckpt::ctx::ThreadCtx, pd: u64, vtid: i32, rtid: i32, cpu_ns: u64) {
    let base = slot_ptr(0) as usize;
    let i = (ctx as usize).wrapping_sub(base) / core::mem::size_of::<ckpt::ctx::ThreadCtx>();
    let i = if i < MAX_THREADS { i } else { MAX_THREADS };
    let e = &TABLE[i];
    e.pd.store(pd, Ordering::Relaxed);
    e.vtid.store(vtid, Ordering::Relaxed);
    e.rtid.store(rtid, Ordering::Relaxed);
    e.cpu_base.store(cpu_ns, Ordering::Relaxed);
    e.gen.store(generation(), Ordering::Release);
}

/// Run `f` with the kernel's tid in thread `pd`'s descriptor instead of the virtual one,
/// if the two differ (a thread restored with a new tid): for glibc functions that hand
/// that field to the kernel themselves (pthread_cancel). Compare-and-swap both ways, so
/// a thread that exits meanwhile (the kernel zeroes the field) stays exited. The thread
/// itself reading its tid in that instant (a mutex it locks then) would see the real one.
pub fn with_real_tid_in<R>(pd: u64, f: impl FnOnce() -> R) -> R {
    let off = TID_OFF.load(Ordering::Relaxed);
    let (Some(rtid), true) = (real_of_pthread(pd), off >= 0) else { return f() };
    // SAFETY: pd is a live struct pthread (the caller's thread handle), and its tid field
    // is an aligned i32 the kernel and glibc also access atomically.
    let field = unsafe { &*((pd + off as u64) as *const AtomicI32) };
    let vtid = field.load(Ordering::Acquire);
    if vtid <= 0 || vtid == rtid || field.compare_exchange(vtid, rtid, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return f();
    }
    let r = f();
    let _ = field.compare_exchange(rtid, vtid, Ordering::AcqRel, Ordering::Acquire);
    r
}

/// The tid glibc keeps in the thread descriptor `pd`.
pub fn tid_of_pd(pd: u64) -> Option<i32> {
    let off = TID_OFF.load(Ordering::Relaxed);
    if off < 0 || pd == 0 {
        return None;
    }
    // SAFETY: pd is a live struct pthread (the caller's own or one it names).
    Some(unsafe { core::ptr::read_volatile((pd + off as u64) as *const i32) })
}

fn valid(e: &Entry, gen: i64) -> bool {
    gen != 0
        && e.gen.load(Ordering::Acquire) == gen
        && tid_of_pd(e.pd.load(Ordering::Relaxed)) == Some(e.vtid.load(Ordering::Relaxed))
}

/// The tid the application knows for kernel tid `rtid` (itself if none).
pub fn to_virtual(rtid: i32) -> i32 {
    let gen = generation();
    if gen == 0 {
        return rtid;
    }
    TABLE
        .iter()
        .find(|e| e.rtid.load(Ordering::Relaxed) == rtid && valid(e, gen))
        .map_or(rtid, |e| e.vtid.load(Ordering::Relaxed))
}

/// Kernel tid for a tid the application knows.
pub fn to_real(vtid: i32) -> i32 {
    let gen = generation();
    if gen == 0 {
        return vtid;
    }
    if vtid == crate::identity::vpid() {
        return crate::identity::real_pid();
    }
    TABLE
        .iter()
        .find(|e| e.vtid.load(Ordering::Relaxed) == vtid && valid(e, gen))
        .map_or(vtid, |e| e.rtid.load(Ordering::Relaxed))
}

/// The CPU time of earlier incarnations of the thread the application knows as `vtid`
/// (0 if it was not restored), ns.
pub fn cpu_base_of(vtid: i32) -> u64 {
    let gen = generation();
    if gen == 0 {
        return 0;
    }
    TABLE
        .iter()
        .find(|e| e.vtid.load(Ordering::Relaxed) == vtid && valid(e, gen))
        .map_or(0, |e| e.cpu_base.load(Ordering::Relaxed))
}

/// [`cpu_base_of`] the calling thread.
pub fn own_cpu_base() -> u64 {
    let gen = generation();
    if gen == 0 {
        return 0;
    }
    // SAFETY: pthread_self cannot fail.
    let pd = unsafe { libc::pthread_self() } as u64;
    TABLE
        .iter()
        .find(|e| e.pd.load(Ordering::Relaxed) == pd && valid(e, gen))
        .map_or(0, |e| e.cpu_base.load(Ordering::Relaxed))
}

/// Kernel tid of the thread whose `pthread_t` is `pd`, if it was restored.
pub fn real_of_pthread(pd: u64) -> Option<i32> {
    let gen = generation();
    TABLE
        .iter()
        .find(|e| e.pd.load(Ordering::Relaxed) == pd && valid(e, gen))
        .map(|e| e.rtid.load(Ordering::Relaxed))
}

/// The calling thread's tid as the application knows it.
pub fn self_vtid() -> i32 {
    // SAFETY: pthread_self cannot fail.
    let pd = unsafe { libc::pthread_self() } as u64;
    match tid_of_pd(pd) {
        Some(t) if t > 0 => t,
        _ => ckpt::sys::gettid(),
    }
}

/// Learn where glibc keeps the tid (PR_GET_TID_ADDRESS = &pthread->tid for glibc threads).
pub fn init() {
    let mut addr: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS stores a pointer into addr; pthread_self cannot fail.
    unsafe {
        if libc::prctl(libc::PR_GET_TID_ADDRESS, &mut addr as *mut u64) == 0 && addr != 0 {
            let pd = libc::pthread_self() as u64;
            if addr > pd
                && addr - pd < 4096
                && core::ptr::read_volatile(addr as *const i32) == ckpt::sys::gettid()
            {
                TID_OFF.store((addr - pd) as i64, Ordering::Relaxed);
            }
        }
    }
}
