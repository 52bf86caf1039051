//! The per-thread context slots: one [`ThreadCtx`] per application thread, filled by the
//! thread itself in the freeze handler ([`capture_thread_state`]) and read by the manager
//! once it parked; the restorer hands each restored thread its slot back. A signal
//! handler's code: atomics and raw system calls only, no allocation, no locks.

use ckpt::ctx::ThreadCtx;
use ckpt::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, Ordering};

pub const MAX_THREADS: usize = 1024;

/// The slots: each one's context, and the tid of the thread the manager gave it.
struct Slots {
    ctx: UnsafeCell<[ThreadCtx; MAX_THREADS]>,
    tid: [AtomicI32; MAX_THREADS],
}
// SAFETY: slot i's context is written only by the thread whose tid the manager put in
// tid[i], and read by the manager after that thread reported it parked.
unsafe impl Sync for Slots {}
static SLOTS: Slots = Slots {
    ctx: UnsafeCell::new(
    [ThreadCtx {
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
    }; MAX_THREADS]),
    tid: [const { AtomicI32::new(0) }; MAX_THREADS],
};

pub fn slot_ptr(i: usize) -> *mut ThreadCtx {
    // SAFETY: i < MAX_THREADS is checked by callers; pointer into a static array.
    unsafe { (SLOTS.ctx.get() as *mut ThreadCtx).add(i) }
}

/// A new freeze: no slot is given to a thread yet.
pub fn clear_slot_tids() {
    for t in SLOTS.tid.iter() {
        t.store(0, Ordering::Relaxed);
    }
}

/// The manager gives slot `i` to thread `tid`.
pub fn set_slot_tid(i: usize, tid: i32) {
    SLOTS.tid[i].store(tid, Ordering::Release);
}

/// The slot the manager gave thread `tid` in this freeze, if any.
pub fn slot_of_tid(tid: i32) -> Option<usize> {
    SLOTS.tid.iter().position(|t| t.load(Ordering::Acquire) == tid)
}

/// Fill the per-thread kernel state a restart must re-establish.
pub fn capture_thread_state(ctx: &mut ThreadCtx) {
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS stores the fs base in fs.
    unsafe { ckpt::sc!(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    ctx.fs_base = fs;
    let mut tid_addr: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS stores the clear_child_tid pointer.
    if unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut tid_addr as *mut u64) } != 0 {
        tid_addr = 0;
    }
    ctx.tid_addr = tid_addr;
    let mut head: u64 = 0;
    let mut len: u64 = 0;
    // SAFETY: get_robust_list(0) for the calling thread, valid out-pointers.
    if unsafe {
        ckpt::sc!(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut u64,
            &mut len as *mut u64,
        )
    } == 0
    {
        ctx.robust_head = head;
        ctx.robust_len = len;
    }
    if crate::identity::rseq_size() > 0 {
        ctx.rseq_addr = fs.wrapping_add(crate::identity::rseq_offset());
        ctx.rseq_len = 32;
        ctx.rseq_sig = 0x5305_3053;
    } else {
        ctx.rseq_addr = 0;
    }
    let mut ss = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: query only.
    unsafe { libc::sigaltstack(core::ptr::null(), &mut ss) };
    ctx.cpu_ns = crate::state::clocks::own_thread_cpu_ns();
    ctx.altstack_sp = ss.ss_sp as u64;
    ctx.altstack_flags = (ss.ss_flags & !libc::SS_ONSTACK) as u64;
    ctx.altstack_size = ss.ss_size as u64;
    let mut mask = 0u64;
    sys::rt_sigprocmask(libc::SIG_BLOCK, None, Some(&mut mask));
    ctx.mask = mask;
    let mut pend = 0u64;
    // SAFETY: rt_sigpending into an 8-byte set.
    unsafe { ckpt::sc!(libc::SYS_rt_sigpending, &mut pend as *mut u64, 8) };
    ctx.pending = pend;
    // SAFETY: PR_GET_NAME writes at most 16 bytes into ctx.name.
    unsafe { libc::prctl(libc::PR_GET_NAME, ctx.name.as_mut_ptr()) };
    ctx.tid = sys::gettid();
    ctx.vtid = if tid_addr != 0 {
        // SAFETY: glibc's pthread->tid of this thread, an aligned i32.
        unsafe { core::ptr::read_volatile(tid_addr as *const i32) }
    } else {
        ctx.tid
    };
    ctx.is_main = (ctx.tid == crate::identity::real_pid()) as i32;
}
