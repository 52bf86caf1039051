//! libc's file I/O functions, exported by the shim so that a migrated body's calls on home
//! fds skip the Syscall User Dispatch trap (see `remote::fast_call`). At home, and on any
//! fd that is not a home fd, each hook is one flag test and a jump to libc's own function.
//! Calls glibc makes internally (stdio, `__read_chk`) do not come through here: their
//! system calls trap and are forwarded as before, so coverage never depends on these hooks.

use crate::remote::{away, fast_call};

type Rwv = unsafe extern "C" fn(i32, *const libc::iovec, i32) -> isize;
type Prwv = unsafe extern "C" fn(i32, *const libc::iovec, i32, libc::off_t) -> isize;
type Seek = unsafe extern "C" fn(i32, libc::off_t, i32) -> libc::off_t;

/// A forwarded call's result in libc's terms: the value, or -1 with errno set.
fn ret(r: i64) -> i64 {
    if r < 0 {
        // SAFETY: __errno_location returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() = (-r) as i32 };
        return -1;
    }
    r
}

fn args(a: i32, b: usize, c: usize, d: i64) -> [u64; 6] {
    [a as u64, b as u64, c as u64, d as u64, 0, 0]
}

/// One exported function: at home a jump to libc's; away, the forwarding attempt, out of
/// line so that the home path needs no stack frame.
macro_rules! io_hook {
    ($name:ident, $away:ident, $sym:ident, $ty:ty, $nr:expr, ($($a:ident: $t:ty),*), $ret:ty, $args:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $ret {
            if away() {
                // SAFETY: the caller's arguments, as libc's function would get them.
                return unsafe { $away($($a),*) };
            }
            let f = real!($sym, $ty);
            // SAFETY: libc's function with the caller's arguments.
            unsafe { f($($a),*) }
        }

        #[cold]
        #[inline(never)]
        // SAFETY: (for callers) the arguments are as valid as libc's function needs them.
        unsafe fn $away($($a: $t),*) -> $ret {
            if let Some(r) = fast_call($nr, $args) {
                return ret(r) as $ret;
            }
            let f = real!($sym, $ty);
            // SAFETY: libc's function with the caller's arguments.
            unsafe { f($($a),*) }
        }
    };
}

type Rd = unsafe extern "C" fn(i32, *mut libc::c_void, usize) -> isize;
type Wr = unsafe extern "C" fn(i32, *const libc::c_void, usize) -> isize;
type Prd = unsafe extern "C" fn(i32, *mut libc::c_void, usize, libc::off_t) -> isize;
type Pwr = unsafe extern "C" fn(i32, *const libc::c_void, usize, libc::off_t) -> isize;

io_hook!(read, read_away, read, Rd, libc::SYS_read, (fd: i32, buf: *mut libc::c_void, n: usize), isize, args(fd, buf as usize, n, 0));
io_hook!(write, write_away, write, Wr, libc::SYS_write, (fd: i32, buf: *const libc::c_void, n: usize), isize, args(fd, buf as usize, n, 0));
io_hook!(pread64, pread64_away, pread64, Prd, libc::SYS_pread64, (fd: i32, buf: *mut libc::c_void, n: usize, off: libc::off_t), isize, args(fd, buf as usize, n, off));
io_hook!(pread, pread_away, pread64, Prd, libc::SYS_pread64, (fd: i32, buf: *mut libc::c_void, n: usize, off: libc::off_t), isize, args(fd, buf as usize, n, off));
io_hook!(pwrite64, pwrite64_away, pwrite64, Pwr, libc::SYS_pwrite64, (fd: i32, buf: *const libc::c_void, n: usize, off: libc::off_t), isize, args(fd, buf as usize, n, off));
io_hook!(pwrite, pwrite_away, pwrite64, Pwr, libc::SYS_pwrite64, (fd: i32, buf: *const libc::c_void, n: usize, off: libc::off_t), isize, args(fd, buf as usize, n, off));
io_hook!(readv, readv_away, readv, Rwv, libc::SYS_readv, (fd: i32, iov: *const libc::iovec, cnt: i32), isize, args(fd, iov as usize, cnt as usize, 0));
io_hook!(writev, writev_away, writev, Rwv, libc::SYS_writev, (fd: i32, iov: *const libc::iovec, cnt: i32), isize, args(fd, iov as usize, cnt as usize, 0));
io_hook!(preadv64, preadv64_away, preadv64, Prwv, libc::SYS_preadv, (fd: i32, iov: *const libc::iovec, cnt: i32, off: libc::off_t), isize, args(fd, iov as usize, cnt as usize, off));
io_hook!(preadv, preadv_away, preadv64, Prwv, libc::SYS_preadv, (fd: i32, iov: *const libc::iovec, cnt: i32, off: libc::off_t), isize, args(fd, iov as usize, cnt as usize, off));
io_hook!(pwritev64, pwritev64_away, pwritev64, Prwv, libc::SYS_pwritev, (fd: i32, iov: *const libc::iovec, cnt: i32, off: libc::off_t), isize, args(fd, iov as usize, cnt as usize, off));
io_hook!(pwritev, pwritev_away, pwritev64, Prwv, libc::SYS_pwritev, (fd: i32, iov: *const libc::iovec, cnt: i32, off: libc::off_t), isize, args(fd, iov as usize, cnt as usize, off));
io_hook!(lseek64, lseek64_away, lseek64, Seek, libc::SYS_lseek, (fd: i32, off: libc::off_t, whence: i32), libc::off_t, args(fd, off as usize, whence as usize, 0));
io_hook!(lseek, lseek_away, lseek64, Seek, libc::SYS_lseek, (fd: i32, off: libc::off_t, whence: i32), libc::off_t, args(fd, off as usize, whence as usize, 0));
