//! CPU-time clock hooks (`state/clocks.rs` keeps the bases). A CPU clock id is
//! `(!pid << 3) | kind`, kind bit 2 meaning a thread; the application holds ids with
//! the pid and tids it knows (virtual after a restart, see `crate::tids`). Each call
//! turns them into the kernel's and adds the time of earlier incarnations to the
//! process's and threads' scheduler clocks (CLOCK_PROCESS_CPUTIME_ID, _THREAD_,
//! and the ids `clock_getcpuclockid` and `pthread_getcpuclockid` give). Every other
//! clock goes straight to libc (vDSO). Async-signal-safe: atomics and raw calls only.

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> i32;

/// Kernel CPUCLOCK_SCHED kind.
const SCHED: libc::clockid_t = 2;
const PER_THREAD: libc::clockid_t = 4;

/// The kernel's id for `clk` and the base to add to its reading (ns).
fn translate(clk: libc::clockid_t) -> (libc::clockid_t, u64) {
    if clk == libc::CLOCK_PROCESS_CPUTIME_ID {
        return (clk, crate::state::clocks::process_base());
    }
    if clk == libc::CLOCK_THREAD_CPUTIME_ID {
        return (clk, crate::tids::own_cpu_base());
    }
    if clk >= 0 {
        return (clk, 0);
    }
    let id = !(clk >> 3);
    let kind = clk & 7;
    let sched = kind & 3 == SCHED;
    let (real, base) = if kind & PER_THREAD != 0 {
        match id {
            0 => (0, crate::tids::own_cpu_base()),
            t => (crate::tids::to_real(t), crate::tids::cpu_base_of(t)),
        }
    } else if id == 0 || id == crate::identity::vpid() {
        (if id == 0 { 0 } else { crate::identity::real_pid() }, crate::state::clocks::process_base())
    } else {
        (id, 0)
    };
    ((!real << 3) | kind, if sched { base } else { 0 })
}

fn add_ns(ts: &mut libc::timespec, ns: u64) {
    if ns == 0 {
        return;
    }
    let total = ts.tv_nsec as u64 + ns % 1_000_000_000;
    ts.tv_sec += (ns / 1_000_000_000 + total / 1_000_000_000) as i64;
    ts.tv_nsec = (total % 1_000_000_000) as i64;
}

#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> i32 {
    let f = real!(clock_gettime, ClockGettime);
    let (k, base) = translate(clk);
    // SAFETY: the caller's out-pointer, passed on.
    let r = unsafe { f(k, ts) };
    if r == 0 && base != 0 && !ts.is_null() {
        // SAFETY: the call above filled *ts.
        add_ns(unsafe { &mut *ts }, base);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn clock_getres(clk: libc::clockid_t, ts: *mut libc::timespec) -> i32 {
    let f = real!(clock_getres, ClockGettime);
    // SAFETY: the caller's out-pointer, passed on.
    unsafe { f(translate(clk).0, ts) }
}

/// glibc's checks the id with a raw system call, which knows no virtual pid.
#[no_mangle]
pub unsafe extern "C" fn clock_getcpuclockid(pid: libc::pid_t, out: *mut libc::clockid_t) -> i32 {
    let id = (!pid << 3) | SCHED;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: raw clock_getres of the kernel's id, into our local.
    if unsafe { ckpt::sc!(libc::SYS_clock_getres, translate(id).0, &mut ts as *mut libc::timespec) } != 0 {
        return libc::ESRCH;
    }
    if !out.is_null() {
        // SAFETY: the caller's out-pointer.
        unsafe { *out = id };
    }
    0
}

/// glibc's reads CLOCK_PROCESS_CPUTIME_ID inside libc, past this shim.
#[no_mangle]
pub extern "C" fn clock() -> libc::clock_t {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: our hook above, with a local out-pointer.
    if unsafe { clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return -1;
    }
    // CLOCKS_PER_SEC is 1000000 on Linux
    ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000
}
