//! The one raw system-call primitive: the `syscall` instruction from the shim's own text
//! (the range Syscall User Dispatch allows), returning -errno on failure and leaving errno
//! alone. Async-signal-safe: no allocation, no lock, no errno.
//!
//! (`ckpt::sys::sc_impl`, the restorer crate's twin that sets errno the way libc does,
//! serves the shim's code outside the SIGSYS handler.)

use core::arch::asm;

/// System call `nr` with six arguments; its result, -errno on failure (errno untouched).
///
/// # Safety
/// The arguments must be valid for system call `nr`: every pointer among them points at
/// memory of the size and access that call reads or writes, for the whole call.
#[inline(always)]
// SAFETY: (contract) callers pass arguments valid for `nr`, as the # Safety section says.
pub unsafe fn raw(nr: i64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments (see above); the syscall instruction
    // clobbers rcx and r11 only, which are declared.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
            in("r10") a3, in("r8") a4, in("r9") a5, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// `r!(nr, args...)`: [`raw`] with up to six arguments of any integer or pointer type.
///
/// Used by remote mode only (the SIGSYS handler and the calls it forwards), whose every
/// call passes plain numbers, pointers to the shim's own live buffers (stack arrays,
/// statics), or the arguments of the application's own trapped call passed on as it
/// passed them (their validity is then the application's contract with the kernel, which
/// checks them and answers EFAULT).
macro_rules! r {
    ($nr:expr) => { $crate::rt::syscall::r!(@ $nr, 0, 0, 0, 0, 0, 0) };
    ($nr:expr, $a:expr) => { $crate::rt::syscall::r!(@ $nr, $a, 0, 0, 0, 0, 0) };
    ($nr:expr, $a:expr, $b:expr) => { $crate::rt::syscall::r!(@ $nr, $a, $b, 0, 0, 0, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr) => { $crate::rt::syscall::r!(@ $nr, $a, $b, $c, 0, 0, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr) => { $crate::rt::syscall::r!(@ $nr, $a, $b, $c, $d, 0, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr) => { $crate::rt::syscall::r!(@ $nr, $a, $b, $c, $d, $e, 0) };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr) => { $crate::rt::syscall::r!(@ $nr, $a, $b, $c, $d, $e, $f) };
    (@ $nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr) => {
        // SAFETY: r!'s rule (above): plain numbers, the shim's own live buffers, or the
        // application's trapped call's own arguments, which the kernel checks.
        unsafe { $crate::rt::syscall::raw($nr as i64, $a as u64, $b as u64, $c as u64, $d as u64, $e as u64, $f as u64) }
    };
}
pub(crate) use r;
