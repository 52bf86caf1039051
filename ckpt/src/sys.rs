//! Small raw-syscall helpers used by the shim and the restorer. Everything here is
//! async-signal-safe: no allocation, no locks.

/// A raw system call that does not go through libc's `syscall()` (which the shim hooks
/// to virtualise tids). Returns like `syscall(2)`: -1 with errno set on failure.
#[macro_export]
macro_rules! sc {
    ($nr:expr $(, $a:expr)* $(,)?) => {
        $crate::sys::sc_impl($nr as usize, &[$(($a) as usize),*])
    };
}

/// # Safety
/// The caller guarantees the arguments are valid for system call `nr`.
// SAFETY: (contract) callers pass arguments valid for `nr`; see `sc!`.
#[inline]
pub unsafe fn sc_impl(nr: usize, a: &[usize]) -> i64 {
    // SAFETY: the caller vouches for the arguments (this function's contract).
    let ret = unsafe { sc_ret(nr as i64, a) };
    if (-4095..0).contains(&ret) {
        // SAFETY: this thread's errno slot.
        unsafe { *libc::__errno_location() = -ret as i32 };
        -1
    } else {
        ret as i64
    }
}

/// A system call's raw result: the value, or minus the errno (errno itself untouched).
///
/// # Safety
/// The caller guarantees the arguments are valid for system call `nr`.
// SAFETY: (contract) callers pass arguments valid for `nr`, as for `sc!`.
#[inline]
pub unsafe fn sc_ret(nr: i64, a: &[usize]) -> isize {
    let mut v = [0usize; 6];
    v[..a.len()].copy_from_slice(a);
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; the syscall instruction clobbers
    // rcx and r11 only.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") v[0], in("rsi") v[1],
            in("rdx") v[2], in("r10") v[3], in("r8") v[4], in("r9") v[5],
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Kernel sigaction layout for rt_sigaction on x86_64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KSigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

pub const SA_RESTORER: u64 = 0x0400_0000;

pub fn rt_sigaction(sig: i32, new: Option<&KSigAction>, old: Option<&mut KSigAction>) -> i64 {
    let np = new.map_or(core::ptr::null(), |n| n as *const KSigAction);
    let op = old.map_or(core::ptr::null_mut(), |o| o as *mut KSigAction);
    // SAFETY: pointers are null or point to valid KSigAction; sigsetsize 8 matches the kernel.
    unsafe { crate::sc!(libc::SYS_rt_sigaction, sig as i64, np, op, 8i64) }
}

pub fn rt_sigprocmask(how: i32, new: Option<u64>, old: Option<&mut u64>) -> i64 {
    let n = new.unwrap_or(0);
    let np = if new.is_some() {
        &n as *const u64
    } else {
        core::ptr::null()
    };
    let op = old.map_or(core::ptr::null_mut(), |o| o as *mut u64);
    // SAFETY: pointers are null or valid 8-byte sigsets.
    unsafe { crate::sc!(libc::SYS_rt_sigprocmask, how as i64, np, op, 8i64) }
}

pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { crate::sc!(libc::SYS_gettid) as i32 }
}

pub fn getpid_real() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { crate::sc!(libc::SYS_getpid) as i32 }
}

pub fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

pub fn futex_wait(addr: &core::sync::atomic::AtomicU32, val: u32, timeout_ms: Option<u64>) {
    let ts = timeout_ms.map(|ms| libc::timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    });
    let tp = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: addr is a valid aligned u32; FUTEX_WAIT_PRIVATE only reads it.
    unsafe {
        crate::sc!(
            libc::SYS_futex,
            addr.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            val,
            tp,
        );
    }
}

pub fn futex_wake(addr: &core::sync::atomic::AtomicU32) {
    // SAFETY: addr is a valid aligned u32.
    unsafe {
        crate::sc!(
            libc::SYS_futex,
            addr.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}
