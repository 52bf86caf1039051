//! Blocking calls that a checkpoint's freeze signal interrupted. The kernel restarts
//! SA_RESTART-able calls by itself (read, write, wait, ...), but sleeps, poll/select,
//! epoll_wait, sem_wait, pause and sigsuspend return EINTR whenever any handler ran. A
//! checkpoint must not be visible to the application, so when such a call fails with
//! EINTR and a freeze happened meanwhile (`signals::freeze_gen` moved), it is resumed with what is
//! left of its timeout. (If an application signal arrived in the same instant, its EINTR
//! is absorbed too: documented limitation.) In a restarted process the same path resumes
//! the call the thread was blocked in when the image was taken.

use crate::rt::user;


type ClockNanosleep =
    unsafe extern "C" fn(libc::clockid_t, i32, *const libc::timespec, *mut libc::timespec) -> i32;
type Poll = unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, i32) -> i32;
type Ppoll = unsafe extern "C" fn(
    *mut libc::pollfd,
    libc::nfds_t,
    *const libc::timespec,
    *const libc::sigset_t,
) -> i32;
type Select = unsafe extern "C" fn(
    i32,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::timeval,
) -> i32;
type EpollWait = unsafe extern "C" fn(i32, *mut libc::epoll_event, i32, i32) -> i32;
type EpollPwait =
    unsafe extern "C" fn(i32, *mut libc::epoll_event, i32, i32, *const libc::sigset_t) -> i32;
type SemWait = unsafe extern "C" fn(*mut libc::sem_t) -> i32;
type SemTimedwait = unsafe extern "C" fn(*mut libc::sem_t, *const libc::timespec) -> i32;
type Pause = unsafe extern "C" fn() -> i32;
type Sleep = unsafe extern "C" fn(u32) -> u32;
type Usleep = unsafe extern "C" fn(libc::useconds_t) -> i32;

fn gen() -> u32 {
    crate::signals::freeze_gen()
}

fn interrupted_by_freeze(r: i32, g: u32) -> bool {
    r == -1 && ckpt::sys::errno() == libc::EINTR && gen() != g
}

fn mono_ms() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec * 1000 + t.tv_nsec / 1_000_000
}

/// Run a poll-style call (`timeout` in ms, negative = infinite) until it ends for a
/// reason other than a freeze, with the remaining time on each retry.
fn retry_ms(timeout: i32, mut call: impl FnMut(i32) -> i32) -> i32 {
    let start = mono_ms();
    let mut t = timeout;
    loop {
        let g = gen();
        let r = call(t);
        if !interrupted_by_freeze(r, g) {
            return r;
        }
        t = left(timeout, start);
    }
}

/// Remaining milliseconds of a poll-style timeout (negative = infinite).
fn left(timeout: i32, start: i64) -> i32 {
    if timeout < 0 {
        timeout
    } else {
        (timeout as i64 - (mono_ms() - start)).max(0) as i32
    }
}

/// nanosleep is clock_nanosleep on CLOCK_REALTIME with errno instead of a returned error
/// (what glibc does too).
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const libc::timespec, rem: *mut libc::timespec) -> i32 {
    // SAFETY: the caller's arguments, passed on.
    match unsafe { clock_nanosleep(libc::CLOCK_REALTIME, 0, req, rem) } {
        0 => 0,
        e => {
            // SAFETY: this thread's errno slot.
            unsafe { *libc::__errno_location() = e };
            -1
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clk: libc::clockid_t,
    flags: i32,
    req: *const libc::timespec,
    rem: *mut libc::timespec,
) -> i32 {
    let f = real!(clock_nanosleep, ClockNanosleep);
    let mut left = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut cur = req;
    loop {
        let g = gen();
        // SAFETY: the caller's arguments; `left` receives the remainder.
        let r = unsafe { f(clk, flags, cur, &mut left) };
        // clock_nanosleep returns the error number instead of setting errno
        if !(r == libc::EINTR && gen() != g) {
            if !rem.is_null() && r == libc::EINTR {
                // clock_nanosleep's contract: a non-null rem (checked) points at a writable
                // struct timespec
                user::write::<libc::timespec>(rem as u64, left);
            }
            return r;
        }
        if flags & libc::TIMER_ABSTIME == 0 {
            cur = &left;
        }
    }
}

#[no_mangle]
pub extern "C" fn usleep(us: libc::useconds_t) -> i32 {
    let req = libc::timespec {
        tv_sec: (us / 1_000_000) as i64,
        tv_nsec: (us % 1_000_000) as i64 * 1000,
    };
    // SAFETY: valid timespec; glibc's usleep is nanosleep(req, NULL).
    unsafe { nanosleep(&req, core::ptr::null_mut()) }
}

#[no_mangle]
pub extern "C" fn sleep(secs: u32) -> u32 {
    let req = libc::timespec {
        tv_sec: secs as i64,
        tv_nsec: 0,
    };
    let mut rem = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointers; glibc's sleep is nanosleep plus rounding of the remainder.
    if unsafe { nanosleep(&req, &mut rem) } == 0 {
        0
    } else {
        (rem.tv_sec + (rem.tv_nsec >= 500_000_000) as i64) as u32
    }
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: i32) -> i32 {
    let f = real!(poll, Poll);
    // SAFETY: the caller's arguments, the timeout possibly shortened.
    retry_ms(timeout, |t| unsafe { f(fds, n, t) })
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> i32 {
    let f = real!(ppoll, Ppoll);
    let start = mono_ms();
    // ppoll's contract: ts is null or points at a struct timespec
    let total = (!ts.is_null()).then(|| user::read::<libc::timespec>(ts as u64)).map(|t| t.tv_sec * 1000 + t.tv_nsec / 1_000_000);
    let mut cur = ts;
    let mut buf = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let _ = buf.tv_sec;
    loop {
        let g = gen();
        // SAFETY: the caller's arguments (timeout possibly shortened).
        let r = unsafe { f(fds, n, cur, mask) };
        if !interrupted_by_freeze(r, g) {
            return r;
        }
        if let Some(ms) = total {
            let l = (ms - (mono_ms() - start)).max(0);
            buf = libc::timespec {
                tv_sec: l / 1000,
                tv_nsec: (l % 1000) * 1_000_000,
            };
            cur = &buf;
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn select(
    n: i32,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> i32 {
    let f = real!(select, Select);
    // The sets are in/out: keep the caller's copies to retry with.
    // select's contract: each set is null or points at a writable fd_set
    let copy = |s: *mut libc::fd_set| (!s.is_null()).then(|| user::read::<libc::fd_set>(s as u64));
    let (r0, w0, e0) = (copy(r), copy(w), copy(e));
    loop {
        let g = gen();
        // SAFETY: the caller's arguments; Linux updates *tv with the time left.
        let ret = unsafe { f(n, r, w, e, tv) };
        if !interrupted_by_freeze(ret, g) {
            return ret;
        }
        // restoring the caller's sets before retrying
        if let Some(s) = r0 {
            user::write::<libc::fd_set>(r as u64, s);
        }
        if let Some(s) = w0 {
            user::write::<libc::fd_set>(w as u64, s);
        }
        if let Some(s) = e0 {
            user::write::<libc::fd_set>(e as u64, s);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(ep: i32, ev: *mut libc::epoll_event, max: i32, timeout: i32) -> i32 {
    let f = real!(epoll_wait, EpollWait);
    // SAFETY: the caller's arguments, the timeout possibly shortened.
    retry_ms(timeout, |t| unsafe { f(ep, ev, max, t) })
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(ep: i32, ev: *mut libc::epoll_event, max: i32, timeout: i32, mask: *const libc::sigset_t) -> i32 {
    let f = real!(epoll_pwait, EpollPwait);
    // SAFETY: the caller's arguments, the timeout possibly shortened.
    retry_ms(timeout, |t| unsafe { f(ep, ev, max, t, mask) })
}

#[no_mangle]
pub unsafe extern "C" fn sem_wait(s: *mut libc::sem_t) -> i32 {
    let f = real!(sem_wait, SemWait);
    loop {
        let g = gen();
        // SAFETY: sem_wait's contract, passed on unchanged: s points at an initialised sem_t.
        let r = unsafe { f(s) };
        if !interrupted_by_freeze(r, g) {
            return r;
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sem_timedwait(s: *mut libc::sem_t, abs: *const libc::timespec) -> i32 {
    let f = real!(sem_timedwait, SemTimedwait);
    loop {
        let g = gen();
        // SAFETY: the caller's arguments (absolute deadline: retry as is).
        let r = unsafe { f(s, abs) };
        if !interrupted_by_freeze(r, g) {
            return r;
        }
    }
}

#[no_mangle]
pub extern "C" fn pause() -> i32 {
    let f = real!(pause, Pause);
    loop {
        let g = gen();
        // SAFETY: no arguments.
        let r = unsafe { f() };
        if !interrupted_by_freeze(r, g) {
            return r;
        }
    }
}

#[allow(dead_code)]
fn _types(_: Sleep, _: Usleep) {}
