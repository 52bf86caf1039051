//! `/proc/<pid>` of the process itself, away from home: the application names its own
//! pid (the virtual one, its home's) or one of its threads' tids; those are this node's
//! kernel numbers here, and the files are this node's, not home's. Such a path is turned
//! into the kernel's numbers and the call run here (open, stat, statx, access, readlink,
//! statfs and their variants); readlink of `/proc/self` and `/proc/thread-self` answers
//! with the application's numbers. Another pid's /proc goes home like any path.
//!
//! Runs in the SIGSYS handler: no allocation, no locks (the translation is
//! `hooks_proc`'s, on atomics and a stack buffer).

use crate::hooks_proc::{translate_bytes, untranslate_bytes, PATH_MAX};
use crate::rt::syscall::r;
use crate::rt::user;

/// Which argument of call `nr` is its path, for the calls handled here.
fn path_arg(nr: i64) -> Option<usize> {
    match nr {
        libc::SYS_open | libc::SYS_stat | libc::SYS_lstat | libc::SYS_access | libc::SYS_readlink | libc::SYS_statfs => Some(0),
        libc::SYS_openat | libc::SYS_openat2 | libc::SYS_newfstatat | libc::SYS_statx | libc::SYS_faccessat | libc::SYS_faccessat2 | libc::SYS_readlinkat => Some(1),
        _ => None,
    }
}

/// The call's result if it names the process's own /proc entries (run here), else None.
pub(super) fn own_proc_call(nr: i64, a: [u64; 6]) -> Option<i64> {
    let i = path_arg(nr)?;
    let p = a[i];
    let n = user::cstr_len(p, PATH_MAX - 1)?;
    // (the n bytes cstr_len just read)
    let s = user::bytes(p, n);
    if !s.starts_with(b"/proc/") {
        return None;
    }
    if nr == libc::SYS_readlink || nr == libc::SYS_readlinkat {
        let (buf, size) = if nr == libc::SYS_readlink { (a[1], a[2]) } else { (a[2], a[3]) };
        if let Some(exe) = crate::hooks_proc::own_exe(s) {
            // the program's path, not the restorer's (hooks_proc::set_exe)
            let m = exe.len().min(size as usize);
            user::put_bytes(buf, &exe[..m]);
            return Some(m as i64);
        }
        if s == b"/proc/self" || s == b"/proc/thread-self" {
            let k = r!(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
            if k <= 0 || buf == 0 {
                return Some(k);
            }
            // readlink wrote k bytes into the caller's buffer of `size` bytes
            let mut local = [0u8; 64];
            let got = (k as usize).min(local.len());
            local[..got].copy_from_slice(user::bytes(buf, got));
            return Some(match untranslate_bytes(s, &mut local, got) {
                Some(m) => {
                    let m = m.min(size as usize);
                    user::put_bytes(buf, &local[..m]);
                    m as i64
                }
                None => k,
            });
        }
    }
    let mut path = [0u8; PATH_MAX];
    translate_bytes(s, &mut path)?;
    let mut b = a;
    b[i] = path.as_ptr() as u64;
    Some(r!(nr, b[0], b[1], b[2], b[3], b[4], b[5]))
}
