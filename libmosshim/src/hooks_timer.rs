//! SIGEV_THREAD POSIX timers. glibc runs them from a helper thread that blocks every
//! signal, so a freeze could never stop it (issue: "1 of 2 threads did not stop"). The
//! shim runs them itself, the way glibc does but checkpointable: `timer_create` with
//! SIGEV_THREAD makes a kernel timer that signals SIGTIMER (32, glibc's) to the shim's
//! own helper thread ([`helper`]), which blocks only that signal, waits for it, and runs
//! each expiry's function on a new detached thread, as glibc does. The timer's id is the
//! kernel's, so glibc's timer_settime, timer_gettime, timer_getoverrun and timer_delete
//! work on it unchanged. At checkpoint the kernel timer is saved like any other (its
//! value is the [`Notify`] record's address, in memory restored with the image) and the
//! helper like any thread; at restart the timer is recreated aimed at the helper's new
//! tid (`state/timers.rs`). The notification thread gets the timer's stack size, not the
//! rest of a caller's `sigev_notify_attributes`.

use core::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

type TimerCreate = unsafe extern "C" fn(libc::clockid_t, *mut libc::sigevent, *mut libc::timer_t) -> i32;
type TimerDelete = unsafe extern "C" fn(libc::timer_t) -> i32;

/// glibc's SIGTIMER (= SIGCANCEL).
const SIGTIMER: i32 = crate::config::SIG_CANCEL;
const SI_TIMER: i32 = -2;
/// SIGEV_THREAD timers at once, at most.
const MAX: usize = 256;

/// One SIGEV_THREAD timer: the function to run, its argument, the stack size.
struct Notify {
    /// the kernel timer id + 1 (0: free)
    id: AtomicI32,
    func: AtomicUsize,
    value: AtomicU64,
    stack: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const N: Notify = Notify { id: AtomicI32::new(0), func: AtomicUsize::new(0), value: AtomicU64::new(0), stack: AtomicUsize::new(0) };
static RECORDS: [Notify; MAX] = [N; MAX];

/// The helper's `pthread_t` (0: not started; 1: starting).
static HELPER: AtomicUsize = AtomicUsize::new(0);

/// The helper: SIGTIMER blocked, waited for; each timer expiry starts its function.
extern "C" fn helper(_: *mut libc::c_void) -> *mut libc::c_void {
    let set: u64 = 1 << (SIGTIMER - 1);
    // SAFETY: blocking SIGTIMER in this thread only (raw: glibc refuses to block it).
    unsafe { ckpt::sc!(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &set as *const u64, 0usize, 8usize) };
    loop {
        // SAFETY: siginfo_t is plain data the kernel fills.
        let mut si: libc::siginfo_t = unsafe { core::mem::zeroed() };
        // SAFETY: waiting for SIGTIMER into our siginfo (a freeze interrupts it: EINTR).
        let r = unsafe { ckpt::sc!(libc::SYS_rt_sigtimedwait, &set as *const u64, &mut si as *mut libc::siginfo_t, 0usize, 8usize) };
        if r != i64::from(SIGTIMER) || si.si_code != SI_TIMER {
            continue;
        }
        // SAFETY: a SI_TIMER siginfo carries the timer's sigval.
        let rec = unsafe { si.si_value() }.sival_ptr as usize;
        let base = RECORDS.as_ptr() as usize;
        let size = core::mem::size_of::<Notify>();
        if rec < base || rec >= base + MAX * size || !(rec - base).is_multiple_of(size) {
            continue;
        }
        run_notification(rec);
    }
}

/// Start the function of the record at `rec` on a new detached thread.
fn run_notification(rec: usize) {
    // SAFETY: rec is one of RECORDS (checked by the caller).
    let n = unsafe { &*(rec as *const Notify) };
    // SAFETY: attr is initialised before use and destroyed after.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let stack = n.stack.load(Ordering::Relaxed);
        if stack != 0 {
            libc::pthread_attr_setstacksize(&mut attr, stack);
        }
        let mut t: libc::pthread_t = 0;
        libc::pthread_create(&mut t, &attr, notification, rec as *mut libc::c_void);
        libc::pthread_attr_destroy(&mut attr);
    }
}

extern "C" fn notification(rec: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: rec is one of RECORDS (see run_notification).
    let n = unsafe { &*(rec as *const Notify) };
    let f = n.func.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: the function the application gave as sigev_notify_function, which
        // takes a union sigval (passed like a pointer-sized integer).
        let f: extern "C" fn(u64) = unsafe { core::mem::transmute::<usize, extern "C" fn(u64)>(f) };
        f(n.value.load(Ordering::Relaxed));
    }
    core::ptr::null_mut()
}

/// In a forked child: the parent's timers and helper thread did not come along.
pub fn atfork_child() {
    HELPER.store(0, Ordering::Relaxed);
    for n in &RECORDS {
        n.id.store(0, Ordering::Relaxed);
    }
}

/// The helper's kernel tid, the helper started on first use.
fn helper_tid() -> Option<i32> {
    loop {
        match HELPER.load(Ordering::Acquire) {
            0 => {
                if HELPER.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let mut t: libc::pthread_t = 0;
                    // SAFETY: a new thread running `helper`, which never returns.
                    if unsafe { libc::pthread_create(&mut t, core::ptr::null(), helper, core::ptr::null_mut()) } != 0 {
                        HELPER.store(0, Ordering::Release);
                        return None;
                    }
                    HELPER.store(t as usize, Ordering::Release);
                }
            }
            1 => core::hint::spin_loop(),
            // the tid glibc keeps for it (set before pthread_create returned), made real
            pd => return crate::tids::tid_of_pd(pd as u64).filter(|t| *t > 0).map(crate::tids::to_real),
        }
    }
}

/// glibc's `struct sigevent` on x86_64, its SIGEV_THREAD members named.
#[repr(C)]
struct SigEvent {
    value: u64,
    signo: i32,
    notify: i32,
    /// SIGEV_THREAD: `void (*)(union sigval)`; SIGEV_THREAD_ID: the tid (an int)
    function: usize,
    /// SIGEV_THREAD: `pthread_attr_t *`
    attributes: usize,
    pad: [u64; 4],
}

fn fail(e: i32) -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = e };
    -1
}

#[no_mangle]
pub unsafe extern "C" fn timer_create(clk: libc::clockid_t, sev: *mut libc::sigevent, out: *mut libc::timer_t) -> i32 {
    // SAFETY: the caller's sigevent, read only (glibc's layout, above).
    let Some(s) = (unsafe { sev.cast::<SigEvent>().as_ref() }).filter(|s| s.notify == libc::SIGEV_THREAD) else {
        let f = real!(timer_create, TimerCreate);
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(clk, sev, out) };
    };
    let Some(tid) = helper_tid() else { return fail(libc::EAGAIN) };
    let Some(i) = RECORDS.iter().position(|r| r.id.compare_exchange(0, -1, Ordering::AcqRel, Ordering::Relaxed).is_ok()) else {
        return fail(libc::EAGAIN);
    };
    let n = &RECORDS[i];
    n.func.store(s.function, Ordering::Relaxed);
    n.value.store(s.value, Ordering::Relaxed);
    let mut stack = 0usize;
    if s.attributes != 0 {
        // SAFETY: the caller's pthread_attr_t, read by glibc.
        unsafe { libc::pthread_attr_getstacksize(s.attributes as *const libc::pthread_attr_t, &mut stack) };
    }
    n.stack.store(stack, Ordering::Relaxed);
    let k = SigEvent { value: n as *const Notify as u64, signo: SIGTIMER, notify: libc::SIGEV_THREAD_ID, function: tid as usize, attributes: 0, pad: [0; 4] };
    let mut id: i32 = 0;
    // SAFETY: timer_create with our sigevent and id out-pointer.
    let r = unsafe { ckpt::sc!(libc::SYS_timer_create, clk, &k as *const SigEvent, &mut id as *mut i32) };
    if r != 0 {
        n.id.store(0, Ordering::Release);
        return fail(-r as i32);
    }
    n.id.store(id + 1, Ordering::Release);
    if !out.is_null() {
        // SAFETY: the caller's out-pointer; a timer_t glibc takes as the kernel's id.
        unsafe { *out = id as usize as libc::timer_t };
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn timer_delete(t: libc::timer_t) -> i32 {
    let f = real!(timer_delete, TimerDelete);
    // SAFETY: the caller's timer, passed on.
    let r = unsafe { f(t) };
    let id = t as isize;
    if r == 0 && (0..=i32::MAX as isize).contains(&id) {
        if let Some(n) = RECORDS.iter().find(|n| n.id.load(Ordering::Acquire) == id as i32 + 1) {
            n.id.store(0, Ordering::Release);
        }
    }
    r
}
