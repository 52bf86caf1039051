//! The application's memory, through the pointers it passes in its calls: the only code
//! in the shim that dereferences them. The forwarders (`remote/`) and the libc hooks get
//! and put a call's buffers, iovecs, msghdrs, sockaddrs, pollfds, fd sets, sigsets,
//! timespecs and paths only through these functions, which read and write them as the
//! kernel would have.
//!
//! Why their signatures are safe: each takes an address that is an argument of a call the
//! application made (or a pointer found inside a structure such an argument points at),
//! together with the type and size that call's contract says is there. Keeping that
//! contract is the application's part, as with the kernel; and the memory stays put for
//! the call, because the calling thread is held in the shim until the call is answered.
//! A pointer that breaks the contract faults here, where the kernel would have answered
//! EFAULT (the one difference from a native call, and the same as in libc's own
//! functions that read such arguments). So: call these with call arguments only, never
//! with an address of unknown origin. Reads and writes are unaligned (the kernel accepts
//! any alignment) and copy plain data: nothing here allocates, locks or panics.

use core::mem::size_of;

/// The `T` at `addr`, an argument of the application's call that points at a `T`.
#[inline(always)]
pub fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: the call's contract (module header): addr points at a readable T, held for
    // the call; unaligned read, any alignment.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

/// Element `i` of the array of `T` at `addr` (the call's contract: more than `i` of them).
#[inline(always)]
pub fn read_at<T: Copy>(addr: u64, i: usize) -> T {
    read(addr + (i * size_of::<T>()) as u64)
}

/// Put `v` at `addr`, an argument of the application's call that points at a writable `T`.
#[inline(always)]
pub fn write<T: Copy>(addr: u64, v: T) {
    // SAFETY: the call's contract (module header): addr points at a writable T, held for
    // the call; unaligned write, any alignment.
    unsafe { core::ptr::write_unaligned(addr as *mut T, v) }
}

/// Put `v` as element `i` of the writable array of `T` at `addr` (more than `i` of them).
#[inline(always)]
pub fn write_at<T: Copy>(addr: u64, i: usize, v: T) {
    write(addr + (i * size_of::<T>()) as u64, v)
}

/// The `n` bytes at `addr` (the call's contract: `n` readable bytes there), for as long as
/// the call that passed them is being handled.
#[inline(always)]
pub fn bytes<'call>(addr: u64, n: usize) -> &'call [u8] {
    if n == 0 {
        return &[];
    }
    // SAFETY: the call's contract (module header): n readable bytes at addr, unchanged by
    // the calling thread, which is held in the shim while the slice lives.
    unsafe { core::slice::from_raw_parts(addr as *const u8, n) }
}

/// Copy `src` to `addr` (the call's contract: at least `src.len()` writable bytes there).
#[inline(always)]
pub fn put_bytes(addr: u64, src: &[u8]) {
    // SAFETY: the call's contract (module header): src.len() writable bytes at addr, which
    // cannot overlap the shim's own source buffer.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) }
}

/// Clear the `n` bytes at `addr` (the call's contract: `n` writable bytes there).
#[inline(always)]
pub fn zero(addr: u64, n: usize) {
    // SAFETY: the call's contract (module header): n writable bytes at addr.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, n) }
}

/// The length of the NUL-terminated string at `addr` (a path or name argument), read byte
/// by byte up to its NUL as the kernel reads it; `None` for a null pointer or a string
/// longer than `max`.
pub fn cstr_len(addr: u64, max: usize) -> Option<usize> {
    if addr == 0 {
        return None;
    }
    let mut n = 0;
    while read_at::<u8>(addr, n) != 0 {
        n += 1;
        if n > max {
            return None;
        }
    }
    Some(n)
}
