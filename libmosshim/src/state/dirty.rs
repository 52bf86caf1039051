//! Which pages of memory were written since a point in time: userfaultfd write-protect
//! in asynchronous mode (UFFD_FEATURE_WP_ASYNC: a write to a protected page only clears
//! its protection, nothing waits) plus the PAGEMAP_SCAN ioctl on `/proc/PID/pagemap`,
//! which lists written pages and can protect them again in the same walk. This kernel
//! has no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY off); Linux 6.7 or later has both calls.
//!
//! Used by live migration's copy rounds (`precopy.rs`, manager thread, the application
//! running) and by the writer child of the final round (`dump/writer.rs`), which scans
//! its parent's pagemap: a VMA that is not (or no longer) registered reports every
//! present page as written, so a range moved by mremap or mapped anew is always sent.

use core::sync::atomic::{AtomicI32, Ordering};

const UFFD_API: u64 = 0xAA;
const UFFDIO_API: u64 = 0xC018_AA3F;
const UFFDIO_REGISTER: u64 = 0xC020_AA00;
const UFFDIO_WRITEPROTECT: u64 = 0xC018_AA06;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// Write-protect on shmem (tmpfs) mappings too: a lazily restarted process's memory is
/// mapped privately from its image file, which a migration puts in /dev/shm.
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const PAGEMAP_SCAN: u64 = 0xC060_6610;
/// Protect the pages the scan reports, in the same walk.
pub const PM_SCAN_WP_MATCHING: u64 = 1;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// The tracking userfaultfd while a live migration copies (-1: none). A shim fd: never
/// saved in an image, never handed home.
static UFFD: AtomicI32 = AtomicI32::new(-1);

/// The tracker's fd (-1: none), for the list of the shim's own fds.
pub fn tracker_fd() -> i32 {
    UFFD.load(Ordering::Acquire)
}

/// In a restored process: the tracker belonged to the process that took the image.
pub fn forget_tracker() {
    UFFD.store(-1, Ordering::Release);
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Start tracking writes: a userfaultfd in asynchronous write-protect mode (kept in
/// [`UFFD`]). Errors say why this kernel or process cannot.
pub fn open_tracker() -> Result<i32, String> {
    // SAFETY: userfaultfd(2) with flags only; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) } as i32;
    if fd < 0 {
        return Err(format!("userfaultfd: {} (live migration needs it; root or vm.unprivileged_userfaultfd=1)", errno()));
    }
    let fd = crate::process::fds::high(fd);
    let mut api = UffdioApi { api: UFFD_API, features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM, ioctls: 0 };
    // SAFETY: UFFDIO_API on our new userfaultfd with a correctly laid out struct.
    if unsafe { libc::ioctl(fd, UFFDIO_API as _, &mut api) } != 0 {
        let e = errno();
        // SAFETY: closing our fd.
        unsafe { libc::close(fd) };
        return Err(format!("userfaultfd write-protect in asynchronous mode: {e} (Linux 6.7 or later)"));
    }
    UFFD.store(fd, Ordering::Release);
    Ok(fd)
}

/// Stop tracking: closing the userfaultfd unregisters every range.
pub fn close_tracker() {
    let fd = UFFD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: closing the tracker we opened.
        unsafe { libc::close(fd) };
    }
}

/// Register [start, end) for write tracking and protect all of it (nothing written yet).
pub fn track(uffd: i32, start: u64, end: u64) -> Result<(), std::io::Error> {
    let mut reg = UffdioRegister { range: UffdioRange { start, len: end - start }, mode: UFFDIO_REGISTER_MODE_WP, ioctls: 0 };
    // SAFETY: UFFDIO_REGISTER with a correctly laid out struct; the range is the caller's
    // mapping (a range that changed meanwhile only fails).
    if unsafe { libc::ioctl(uffd, UFFDIO_REGISTER as _, &mut reg) } != 0 {
        return Err(errno());
    }
    let mut wp = UffdioWriteprotect { range: UffdioRange { start, len: end - start }, mode: UFFDIO_WRITEPROTECT_MODE_WP };
    // SAFETY: as above, UFFDIO_WRITEPROTECT.
    if unsafe { libc::ioctl(uffd, UFFDIO_WRITEPROTECT as _, &mut wp) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// The pagemap of process `pid` (0: this one), for [`scan`].
pub fn open_pagemap(pid: i32) -> Result<std::fs::File, String> {
    let path = if pid == 0 { "/proc/self/pagemap".to_string() } else { format!("/proc/{pid}/pagemap") };
    std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))
}

/// The pages of [start, end) whose categories, after flipping the `inverted` bits, have
/// every `mask` bit, appended to `out` as merged [start, end) runs. With `protect`
/// ([`PM_SCAN_WP_MATCHING`]) the reported pages are write-protected again in the walk.
pub fn scan(pm: &std::fs::File, start: u64, end: u64, protect: bool, mask: u64, inverted: u64, out: &mut Vec<(u64, u64)>) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let mut vec = [PageRegion::default(); 256];
    let mut at = start;
    while at < end {
        let mut a = PmScanArg {
            size: core::mem::size_of::<PmScanArg>() as u64,
            flags: if protect { PM_SCAN_WP_MATCHING } else { 0 },
            start: at,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            max_pages: 0,
            category_inverted: inverted,
            category_mask: mask,
            category_anyof_mask: 0,
            return_mask: mask,
        };
        // SAFETY: PAGEMAP_SCAN with a correctly laid out argument whose vec points to our
        // array of vec_len entries; the kernel writes at most that many.
        let n = unsafe { libc::ioctl(pm.as_raw_fd(), PAGEMAP_SCAN as _, &mut a) };
        if n < 0 {
            return Err(format!("PAGEMAP_SCAN {at:#x}-{end:#x}: {}", errno()));
        }
        for r in &vec[..n as usize] {
            match out.last_mut() {
                Some(l) if l.1 == r.start => l.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if a.walk_end <= at {
            break;
        }
        at = a.walk_end;
    }
    Ok(())
}

/// Bytes in a list of runs.
pub fn bytes(runs: &[(u64, u64)]) -> u64 {
    runs.iter().map(|r| r.1 - r.0).sum()
}
