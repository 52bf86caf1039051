//! `/proc/<pid>/...` with the pid the application knows. After a restart the process
//! has a new kernel pid (and threads new tids, unless the restorer could choose them),
//! but the application keeps the virtual ones (`getpid`, `gettid`): a path that names
//! `/proc/<virtual pid or tid>` (and `.../task/<tid>`) is turned into the kernel's in
//! the libc calls that take a path (open, fopen, opendir, stat, access, readlink, chdir
//! and their variants), and readlink of `/proc/self` and `/proc/thread-self` answers
//! with the virtual numbers, and so do readdir listings of /proc and of task directories.
//! Before any restart every number is its own and the calls go straight on (one load and
//! a compare). Libc's getdents64, and syscall(2) of it, are seen too; libc's own
//! internal opens (glibc's functions other than these) and an inline `syscall`
//! instruction at home are not. A body away from home has these path calls trapped and does
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

/// The program's path after a restart, when the kernel's `/proc/self/exe` still names the
/// restorer (PR_SET_MM_EXE_FILE needs CAP_SYS_RESOURCE, which sandboxes withhold even
/// from root). Written once by the manager while the application's threads are parked,
/// before `EXE_LEN` says it is there.
struct ExeBuf(core::cell::UnsafeCell<[u8; MAX]>);
// SAFETY: written once before EXE_LEN is published (Release), read only after (Acquire).
unsafe impl Sync for ExeBuf {}
static EXE: ExeBuf = ExeBuf(core::cell::UnsafeCell::new([0; MAX]));
static EXE_LEN: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// After a restart whose `/proc/self/exe` could not be set back: answer it with `path`.
pub(crate) fn set_exe(path: &[u8]) {
    if path.is_empty() || path.len() >= MAX {
        return;
    }
    // SAFETY: the only writer, before the length is published; no reader before that.
    unsafe { (&mut *EXE.0.get())[..path.len()].copy_from_slice(path) };
    EXE_LEN.store(path.len(), core::sync::atomic::Ordering::Release);
}

/// The program's path when `s` names this process's `exe` link (`/proc/self/exe`,
/// `/proc/thread-self/exe`, `/proc/<pid>/exe`, `/proc/<pid>/task/<tid>/exe`, by the
/// application's numbers or the kernel's) and the kernel's link names the restorer.
/// Plain code (see [`translate_bytes`]).
pub(crate) fn own_exe(s: &[u8]) -> Option<&'static [u8]> {
    let n = EXE_LEN.load(core::sync::atomic::Ordering::Acquire);
    if n == 0 {
        return None;
    }
    let rest = s.strip_prefix(b"/proc/")?;
    let tail = if let Some(t) = rest.strip_prefix(b"self").or_else(|| rest.strip_prefix(b"thread-self")) {
        t
    } else {
        let (pid, len) = digits(rest)?;
        if pid != crate::identity::vpid() && pid != crate::identity::real_pid() {
            return None;
        }
        let t = &rest[len..];
        match t.strip_prefix(b"/task/").and_then(digits) {
            Some((_, tl)) => &t[b"/task/".len() + tl..],
            None => t,
        }
    };
    if tail != b"/exe" {
        return None;
    }
    // SAFETY: published by set_exe (Acquire above), never written again.
    Some(unsafe { &(&*EXE.0.get())[..n] })
}

/// `path` when it names this process's exe link (see [`own_exe`]): the program's path,
/// NUL-terminated in `buf`.
fn exe_path(path: *const c_char, buf: &mut [u8; MAX]) -> Option<*const c_char> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller's path argument: a NUL-terminated string by the call's contract.
    let s = unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes();
    let exe = own_exe(s)?;
    buf[..exe.len()].copy_from_slice(exe);
    buf[exe.len()] = 0;
    Some(buf.as_ptr().cast())
}

/// readlink of this process's exe link after a restart that could not set it back: the
/// program's path into `out` (at most `size` bytes, no NUL, as readlink).
fn exe_link(path: *const c_char, out: *mut c_char, size: usize) -> Option<isize> {
    if path.is_null() || out.is_null() {
        return None;
    }
    // SAFETY: as in exe_path.
    let exe = own_exe(unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes())?;
    let k = exe.len().min(size);
    // SAFETY: the caller's buffer of `size` bytes; k <= size.
    unsafe { core::ptr::copy_nonoverlapping(exe.as_ptr(), out as *mut u8, k) };
    Some(k as isize)
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
            let $p = match exe_path($p, &mut buf) {
                Some(p) => p,
                None => translate($p, &mut buf),
            };
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
    if let Some(k) = exe_link(path, out, size) {
        return k;
    }
    let mut buf = [0u8; MAX];
    let p = translate(path, &mut buf);
    // SAFETY: the caller's arguments, the path maybe rewritten, passed on.
    let n = unsafe { f(p, out, size) };
    untranslate_link(path, out, n, size)
}

#[no_mangle]
pub unsafe extern "C" fn readlinkat(dirfd: i32, path: *const c_char, out: *mut c_char, size: usize) -> isize {
    let f = real!(readlinkat, Readlinkat);
    if let Some(k) = exe_link(path, out, size) {
        return k;
    }
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
fn virtual_entry(fd: i32, name: &[u8]) -> Option<i32> {
    let (n, len) = digits(name)?;
    if len != name.len() {
        return None;
    }
    let v = virtual_of(n);
    if v == n {
        return None;
    }
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

/// Offset of `d_name` in a `struct linux_dirent64` record (ino 8, off 8, reclen 2, type 1).
const NAME_AT: usize = 19;

/// Rewrite the record at `e` (of the directory open as `fd`) in the application's
/// numbers. The new name is written only where it fits the record (its `d_reclen`):
/// the record after it, in the caller's buffer, is never touched.
fn fix_record(fd: i32, e: *mut u8) {
    // SAFETY: e is a whole record the kernel wrote (at least NAME_AT bytes and its NUL-terminated name).
    let reclen = usize::from(unsafe { core::ptr::read_unaligned(e.add(16) as *const u16) });
    // SAFETY: as above: the name lies within the record.
    let name = unsafe { core::ffi::CStr::from_ptr(e.add(NAME_AT) as *const c_char) }.to_bytes();
    if let Some(v) = virtual_entry(fd, name) {
        let mut out = [0u8; 16];
        let mut at = 0;
        if push_num(&mut out, &mut at, v) && NAME_AT + at < reclen {
            out[at] = 0;
            // SAFETY: at + 1 bytes from d_name stay inside the record (checked above).
            unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), e.add(NAME_AT), at + 1) };
        }
    }
}

fn fix_entry(dir: *mut libc::DIR, e: *mut libc::dirent64) -> *mut libc::dirent64 {
    // (away from home too: a task directory listed there is this node's)
    if e.is_null() || crate::process::ctx::restart_pid() == 0 {
        return e;
    }
    // SAFETY: the caller's open DIR stream; dirfd only reads it.
    let fd = unsafe { libc::dirfd(dir) };
    fix_record(fd, e.cast());
    e
}

type Getdents64 = unsafe extern "C" fn(i32, *mut libc::c_void, usize) -> isize;

/// glibc's getdents64 (programs that list directories without readdir): /proc and task
/// directories list the application's numbers, as with [`readdir`].
#[no_mangle]
pub unsafe extern "C" fn getdents64(fd: i32, buf: *mut libc::c_void, n: usize) -> isize {
    let f = real!(getdents64, Getdents64);
    // SAFETY: the caller's arguments, passed on.
    let k = unsafe { f(fd, buf, n) };
    if k > 0 && crate::process::ctx::restart_pid() != 0 {
        let mut at = 0usize;
        while at + NAME_AT < k as usize {
            // SAFETY: inside the k bytes the kernel wrote, record by record.
            let e = unsafe { (buf as *mut u8).add(at) };
            // SAFETY: as above.
            let reclen = usize::from(unsafe { core::ptr::read_unaligned(e.add(16) as *const u16) });
            if reclen == 0 {
                break;
            }
            fix_record(fd, e);
            at += reclen;
        }
    }
    k
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
