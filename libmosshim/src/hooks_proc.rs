//! `/proc/<pid>/...` with the pid the application knows. After a restart the process
//! has a new kernel pid (and threads new tids, unless the restorer could choose them),
//! but the application keeps the virtual ones (`getpid`, `gettid`): a path that names
//! `/proc/<virtual pid or tid>` (and `.../task/<tid>`) is turned into the kernel's in
//! the libc calls that take a path (open, fopen, opendir, stat, access, readlink, chdir
//! and their variants), and readlink of `/proc/self` and `/proc/thread-self` answers
//! with the virtual numbers, and so do readdir listings of /proc and of task directories.
//! Before any restart every number is its own and the calls go straight on (one load and
//! a compare). Libc's own internal opens (glibc's functions other than these) and raw
//! getdents are not seen. A body away from home has these path calls trapped and does
//! the same there (`remote::procpid`), with the functions here.

use core::ffi::c_char;

/// Room for a rewritten path.
const MAX: usize = 4096;

/// The kernel's number for `n`, a pid or tid the application knows (itself if none).
fn real_of(n: i32) -> i32 {
    crate::tids::to_real(n)
}

/// The application's number for kernel pid or tid `n` (itself if none).
fn virtual_of(n: i32) -> i32 {
    if n == crate::identity::real_pid() {
        return crate::identity::vpid();
    }
    crate::tids::to_virtual(n)
}

fn restarted() -> bool {
    crate::process::ctx::restart_pid() != 0 && !crate::remote::went_away()
}

fn digits(s: &[u8]) -> Option<(i32, usize)> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 9 || (s.len() > n && s[n] != b'/') {
        return None;
    }
    let v = s[..n].iter().fold(0i32, |a, c| a * 10 + i32::from(c - b'0'));
    Some((v, n))
}

fn push_num(out: &mut [u8], at: &mut usize, mut v: i32) -> bool {
    let mut tmp = [0u8; 12];
    let mut k = 0;
    loop {
        tmp[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if *at + k > out.len() {
        return false;
    }
    for i in 0..k {
        out[*at + i] = tmp[k - 1 - i];
    }
    *at += k;
    true
}

fn push(out: &mut [u8], at: &mut usize, b: &[u8]) -> bool {
    if *at + b.len() > out.len() {
        return false;
    }
    out[*at..*at + b.len()].copy_from_slice(b);
    *at += b.len();
    true
}

/// `path` with `/proc/<n>` (and `/task/<n>` after it) in the kernel's numbers, in `buf`
/// (NUL-terminated), or `path` itself when nothing changes.
fn translate(path: *const c_char, buf: &mut [u8; MAX]) -> *const c_char {
    if path.is_null() || !restarted() {
        return path;
    }
    // SAFETY: the caller's path argument: a NUL-terminated string by the call's contract.
    let s = unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes();
    match translate_bytes(s, buf) {
        Some(_) => buf.as_ptr().cast(),
        None => path,
    }
}

/// `s` (a path, without its NUL) with `/proc/<n>` (and `/task/<n>` after it) in the
/// kernel's numbers, written NUL-terminated into `buf`; its length with the NUL, or None
/// when the path does not name the process or its threads by the application's numbers
/// (or does not fit). Plain code: the SIGSYS handler of a body away from home runs it.
pub(crate) fn translate_bytes(s: &[u8], buf: &mut [u8; MAX]) -> Option<usize> {
    let rest = s.strip_prefix(b"/proc/")?;
    let (n, len) = digits(rest)?;
    let mut tail = &rest[len..];
    let r = real_of(n);
    let mut task: Option<(i32, i32)> = None;
    if let Some(t) = tail.strip_prefix(b"/task/") {
        if let Some((tn, tl)) = digits(t) {
            task = Some((tn, real_of(tn)));
            tail = &t[tl..];
        }
    }
    if r == n && task.is_none_or(|(a, b)| a == b) {
        return None;
    }
    let mut at = 0;
    let ok = push(buf, &mut at, b"/proc/")
        && push_num(buf, &mut at, r)
        && task.is_none_or(|(_, t)| push(buf, &mut at, b"/task/") && push_num(buf, &mut at, t))
        && push(buf, &mut at, tail)
        && push(buf, &mut at, b"\0");
    ok.then_some(at)
}

/// After readlink of `/proc/self` or `/proc/thread-self` (`n` bytes in `out`): the
/// application's numbers instead of the kernel's. Returns the new length.
fn untranslate_link(path: *const c_char, out: *mut c_char, n: isize, size: usize) -> isize {
    if n <= 0 || out.is_null() || path.is_null() || !restarted() {
        return n;
    }
    // SAFETY: as in translate.
    let p = unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes();
    // SAFETY: readlink wrote n bytes there, in the caller's buffer of `size` bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(out as *mut u8, size) };
    untranslate_bytes(p, out, n as usize).map_or(n, |k| k as isize)
}

/// The link `/proc/self` or `/proc/thread-self` (the path `p`) read as `out[..n]`,
/// rewritten there in the application's numbers; the new length, or None when `p` is
/// another path or nothing changes. Plain code (see [`translate_bytes`]).
pub(crate) fn untranslate_bytes(p: &[u8], out: &mut [u8], n: usize) -> Option<usize> {
    if p != b"/proc/self" && p != b"/proc/thread-self" {
        return None;
    }
    let got = out.get(..n)?;
    let mut buf = [0u8; 64];
    let mut at = 0;
    let (pid, len) = digits(got)?;
    let mut ok = push_num(&mut buf, &mut at, virtual_of(pid));
    let rest = &got[len..];
    if let Some(t) = rest.strip_prefix(b"/task/") {
        if let Some((tid, _)) = digits(t) {
            ok &= push(&mut buf, &mut at, b"/task/") && push_num(&mut buf, &mut at, virtual_of(tid));
        }
    } else {
        ok &= push(&mut buf, &mut at, rest);
    }
    if !ok {
        return None;
    }
    let k = at.min(out.len());
    out[..k].copy_from_slice(&buf[..k]);
    Some(k)
}

/// Room for a rewritten path (for callers elsewhere).
pub(crate) const PATH_MAX: usize = MAX;

macro_rules! path_hook {
    ($name:ident, $ty:ident, ($($a:ident: $t:ty),*), path = $p:ident, $ret:ty) => {
        type $ty = unsafe extern "C" fn($($t),*) -> $ret;
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $ret {
            let f = real!($name, $ty);
            if !restarted() {
                // SAFETY: the caller's arguments, passed on.
                return unsafe { f($($a),*) };
            }
            let mut buf = [0u8; MAX];
            let $p = translate($p, &mut buf);
            // SAFETY: the caller's arguments, the path maybe rewritten, passed on.
            unsafe { f($($a),*) }
        }
    };
}

// open's mode is variadic; x86_64 passes it in the register a third argument uses
path_hook!(open, Open, (path: *const c_char, flags: i32, mode: u32), path = path, i32);
path_hook!(open64, Open64, (path: *const c_char, flags: i32, mode: u32), path = path, i32);
path_hook!(__open_2, Open2, (path: *const c_char, flags: i32), path = path, i32);
path_hook!(__open64_2, Open642, (path: *const c_char, flags: i32), path = path, i32);
path_hook!(openat, Openat, (dirfd: i32, path: *const c_char, flags: i32, mode: u32), path = path, i32);
path_hook!(openat64, Openat64, (dirfd: i32, path: *const c_char, flags: i32, mode: u32), path = path, i32);
path_hook!(__openat_2, Openat2, (dirfd: i32, path: *const c_char, flags: i32), path = path, i32);
path_hook!(__openat64_2, Openat642, (dirfd: i32, path: *const c_char, flags: i32), path = path, i32);
path_hook!(fopen, Fopen, (path: *const c_char, mode: *const c_char), path = path, *mut libc::FILE);
path_hook!(fopen64, Fopen64, (path: *const c_char, mode: *const c_char), path = path, *mut libc::FILE);
path_hook!(opendir, Opendir, (path: *const c_char), path = path, *mut libc::DIR);
path_hook!(stat, Stat, (path: *const c_char, st: *mut libc::stat), path = path, i32);
path_hook!(stat64, Stat64, (path: *const c_char, st: *mut libc::stat64), path = path, i32);
path_hook!(lstat, Lstat, (path: *const c_char, st: *mut libc::stat), path = path, i32);
path_hook!(lstat64, Lstat64, (path: *const c_char, st: *mut libc::stat64), path = path, i32);
path_hook!(fstatat, Fstatat, (dirfd: i32, path: *const c_char, st: *mut libc::stat, flags: i32), path = path, i32);
path_hook!(fstatat64, Fstatat64, (dirfd: i32, path: *const c_char, st: *mut libc::stat64, flags: i32), path = path, i32);
path_hook!(statx, Statx, (dirfd: i32, path: *const c_char, flags: i32, mask: u32, st: *mut libc::statx), path = path, i32);
path_hook!(access, Access, (path: *const c_char, mode: i32), path = path, i32);
path_hook!(faccessat, Faccessat, (dirfd: i32, path: *const c_char, mode: i32, flags: i32), path = path, i32);
path_hook!(chdir, Chdir, (path: *const c_char), path = path, i32);

type Readlink = unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> isize;
type Readlinkat = unsafe extern "C" fn(i32, *const c_char, *mut c_char, usize) -> isize;

#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, out: *mut c_char, size: usize) -> isize {
    let f = real!(readlink, Readlink);
    let mut buf = [0u8; MAX];
    let p = translate(path, &mut buf);
    // SAFETY: the caller's arguments, the path maybe rewritten, passed on.
    let n = unsafe { f(p, out, size) };
    untranslate_link(path, out, n, size)
}

#[no_mangle]
pub unsafe extern "C" fn readlinkat(dirfd: i32, path: *const c_char, out: *mut c_char, size: usize) -> isize {
    let f = real!(readlinkat, Readlinkat);
    let mut buf = [0u8; MAX];
    let p = translate(path, &mut buf);
    // SAFETY: the caller's arguments, the path maybe rewritten, passed on.
    let n = unsafe { f(dirfd, p, out, size) };
    untranslate_link(path, out, n, size)
}

type Readdir = unsafe extern "C" fn(*mut libc::DIR) -> *mut libc::dirent64;

/// The application's number for a /proc directory entry `name` read from the directory
/// open as `dir`: the process's real pid in /proc, a thread's real tid in a task
/// directory. None when nothing changes.
fn virtual_entry(dir: *mut libc::DIR, name: &[u8]) -> Option<i32> {
    let (n, len) = digits(name)?;
    if len != name.len() {
        return None;
    }
    let v = virtual_of(n);
    if v == n {
        return None;
    }
    // SAFETY: the caller's open DIR stream; dirfd only reads it.
    let fd = unsafe { libc::dirfd(dir) };
    let mut p = [0u8; 64];
    let mut at = 0;
    if !(push(&mut p, &mut at, b"/proc/self/fd/") && push_num(&mut p, &mut at, fd) && push(&mut p, &mut at, b"\0")) {
        return None;
    }
    let mut link = [0u8; 256];
    // SAFETY: raw readlink of our NUL-terminated path into our buffer.
    let k = unsafe { ckpt::sc!(libc::SYS_readlink, p.as_ptr(), link.as_mut_ptr(), link.len()) };
    let l = &link[..usize::try_from(k).ok()?];
    let in_proc = l == b"/proc";
    let in_task = l.starts_with(b"/proc/") && l.ends_with(b"/task");
    (in_proc || in_task).then_some(v)
}

fn fix_entry(dir: *mut libc::DIR, e: *mut libc::dirent64) -> *mut libc::dirent64 {
    // (away from home too: a task directory listed there is this node's)
    if e.is_null() || crate::process::ctx::restart_pid() == 0 {
        return e;
    }
    // SAFETY: e is the entry readdir just returned (valid until the next call on dir).
    let d = unsafe { &mut *e };
    // SAFETY: d_name is NUL-terminated within its array.
    let name = unsafe { core::ffi::CStr::from_ptr(d.d_name.as_ptr()) }.to_bytes();
    if let Some(v) = virtual_entry(dir, name) {
        let mut out = [0u8; 16];
        let mut at = 0;
        if push_num(&mut out, &mut at, v) {
            for (i, b) in out[..at].iter().enumerate() {
                d.d_name[i] = *b as c_char;
            }
            d.d_name[at] = 0;
        }
    }
    e
}

/// Listing /proc, or a task directory, shows the process's and its threads' numbers as
/// the application knows them.
#[no_mangle]
pub unsafe extern "C" fn readdir(dir: *mut libc::DIR) -> *mut libc::dirent64 {
    let f = real!(readdir, Readdir);
    // SAFETY: the caller's DIR stream, passed on.
    fix_entry(dir, unsafe { f(dir) })
}

/// See [`readdir`] (the same function in 64-bit glibc).
#[no_mangle]
pub unsafe extern "C" fn readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64 {
    let f = real!(readdir64, Readdir);
    // SAFETY: the caller's DIR stream, passed on.
    fix_entry(dir, unsafe { f(dir) })
}
