//! inotify instances: the kernel says which watches an inotify fd has (wd, inode, mask in
//! /proc/self/fdinfo) but not their paths, so the shim notes each path when the program
//! adds a watch (the `inotify_add_watch` hook) and forgets it when it removes one. At
//! checkpoint every watch of the fd must have a noted path whose file is still the one
//! watched; at restart (`ckpt/src/restore/fds.rs`) the watches are added again by path,
//! with the same watch descriptors. Events queued but not read are not saved.
//!
//! The table is a fixed array behind a spin lock, taken by the hooks (never by a signal
//! handler); the manager, with every thread frozen, only tries it (a thread frozen while
//! holding it makes the checkpoint refuse, naming that).

use core::sync::atomic::{AtomicBool, Ordering};

const MAX: usize = 1024;
const PATH_MAX: usize = 512;

#[derive(Clone, Copy)]
struct Watch {
    fd: i32,
    wd: i32,
    len: u16,
    path: [u8; PATH_MAX],
}

const EMPTY: Watch = Watch { fd: -1, wd: 0, len: 0, path: [0; PATH_MAX] };

struct Table {
    lock: AtomicBool,
    w: core::cell::UnsafeCell<[Watch; MAX]>,
}

// SAFETY: `w` is only touched while `lock` is held.
unsafe impl Sync for Table {}

static TABLE: Table = Table { lock: AtomicBool::new(false), w: core::cell::UnsafeCell::new([EMPTY; MAX]) };

fn with<R>(spin: bool, f: impl FnOnce(&mut [Watch; MAX]) -> R) -> Option<R> {
    let mut tries = 0u32;
    while TABLE.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        tries += 1;
        if !spin && tries > 1000 {
            return None;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held.
    let r = f(unsafe { &mut *TABLE.w.get() });
    TABLE.lock.store(false, Ordering::Release);
    Some(r)
}

/// The program added watch `wd` on inotify fd `fd` for `path` (absolute or relative to
/// the current directory, made absolute here).
pub fn added(fd: i32, wd: i32, path: &[u8]) {
    let mut abs = [0u8; PATH_MAX];
    let mut n = 0;
    if path.first() != Some(&b'/') {
        // SAFETY: getcwd into our buffer.
        if unsafe { libc::getcwd(abs.as_mut_ptr().cast(), PATH_MAX) }.is_null() {
            return;
        }
        n = abs.iter().position(|&b| b == 0).unwrap_or(0);
        if n < PATH_MAX {
            abs[n] = b'/';
            n += 1;
        }
    }
    if n + path.len() >= PATH_MAX {
        return; // not noted: the checkpoint names the watch it cannot save
    }
    abs[n..n + path.len()].copy_from_slice(path);
    n += path.len();
    with(true, |t| {
        let slot = t.iter().position(|w| w.fd == fd && w.wd == wd).or_else(|| t.iter().position(|w| w.fd < 0));
        if let Some(i) = slot {
            t[i] = Watch { fd, wd, len: n as u16, path: abs };
        }
    });
}

/// The program removed watch `wd` of `fd`.
pub fn removed(fd: i32, wd: i32) {
    with(true, |t| {
        for w in t.iter_mut().filter(|w| w.fd == fd && w.wd == wd) {
            w.fd = -1;
        }
    });
}

/// The noted path of watch `wd` of `fd` (None: not noted, or the table is held by a
/// frozen thread: `Err`).
pub fn path_of(fd: i32, wd: i32) -> Result<Option<String>, String> {
    with(false, |t| t.iter().find(|w| w.fd == fd && w.wd == wd).map(|w| String::from_utf8_lossy(&w.path[..w.len as usize]).into_owned()))
        .ok_or_else(|| "a thread was frozen while noting an inotify watch; try again".to_string())
}

/// In a restored process: the table is the image's; nothing to do (same fds, same wds).
/// The watches of inotify fd `fd` as fdinfo lists them: (wd, inode, mask).
pub fn watches_of(info: &str) -> Vec<(i32, u64, u32)> {
    info.lines()
        .filter_map(|l| l.strip_prefix("inotify "))
        .filter_map(|l| {
            let get = |k: &str| l.split_whitespace().find_map(|f| f.strip_prefix(k));
            Some((get("wd:")?.parse().ok()?, u64::from_str_radix(get("ino:")?, 16).ok()?, u32::from_str_radix(get("mask:")?, 16).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fdinfo_watches_parse() {
        let info = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\ninotify wd:2 ino:a0f sdev:fe00000 mask:fce ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0f0a000000000000\ninotify wd:1 ino:2 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200000000000000\n";
        assert_eq!(super::watches_of(info), vec![(2, 0xa0f, 0xfce), (1, 2, 0x100)]);
    }
}
