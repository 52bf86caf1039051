//! What a checkpoint saves of memory besides the snapshot itself: MAP_SHARED anonymous
//! regions are not copy-on-write, so the manager copies them while the threads are frozen
//! ([`copy_shared`]) and frees the copies once the writer child is done ([`free_shared`],
//! the lifecycle's resumed phase).
//! The writer child's scan of the regions (kinds, present extents from pagemap) stays in
//! `dump/writer.rs` with the rest of the code that runs in that child; the restorer maps
//! the regions back (`ckpt/src/restore/memory.rs`). Nothing to do on restart or fork (the
//! restorer's leftovers are unmapped by `restart::restarted` before the shim's channels
//! reopen).

use super::{read_str, StateKind};

/// Memory in the lifecycle of [`StateKind`].
pub struct Memory;

impl StateKind for Memory {
    fn resumed(&self, cx: &super::ResumeCx<'_>) {
        free_shared(cx.shared);
    }
}

pub fn is_shared_anon(m: &ckpt::maps::MapEntry) -> bool {
    m.shared && (m.path == "/dev/zero (deleted)" || m.path == "[anon_shmem]" || m.path.is_empty() || m.path.starts_with("[anon_shmem:"))
}

/// Copy every MAP_SHARED anonymous region while the process is frozen: the writer runs
/// after the threads are released, and these pages are not copy-on-write.
pub fn copy_shared() -> Result<Vec<(u64, u64, u64)>, String> {
    let maps = ckpt::maps::parse(&read_str("/proc/self/maps")?);
    let mut out = Vec::new();
    for m in maps.iter().filter(|m| is_shared_anon(m)) {
        let len = (m.end - m.start) as usize;
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("cannot copy shared memory {:#x}-{:#x}", m.start, m.end));
        }
        if m.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: making our own view readable for the copy; restored after.
            unsafe { libc::mprotect(m.start as *mut _, len, libc::PROT_READ) };
        }
        // SAFETY: both ranges are mapped and `len` long.
        unsafe { core::ptr::copy_nonoverlapping(m.start as *const u8, p as *mut u8, len) };
        if m.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: restoring the original protection.
            unsafe { libc::mprotect(m.start as *mut _, len, m.prot as i32) };
        }
        out.push((m.start, m.end, p as u64));
    }
    Ok(out)
}

pub fn free_shared(copies: &[(u64, u64, u64)]) {
    for (s, e, c) in copies {
        // SAFETY: unmapping the copies made by copy_shared.
        unsafe { libc::munmap(*c as *mut _, (e - s) as usize) };
    }
}

/// Set once the program advised DONTFORK or WIPEONFORK through libc (the madvise hook).
static FORK_ADVICE_SEEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The madvise hook saw DONTFORK or WIPEONFORK given: checkpoints look for such mappings.
pub fn note_fork_advice() {
    FORK_ADVICE_SEEN.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// A lazily restarted process maps big runs of its saved memory privately from the image
/// file, where advice meant for anonymous memory goes wrong: MADV_DONTNEED would give the
/// image's bytes back on the next touch (allocators rely on zeros), and MADV_FREE,
/// MADV_WIPEONFORK, MADV_KEEPONFORK and KSM's fail or differ. Before such advice the
/// parts of [addr, addr+len) still mapped from the image become anonymous memory with
/// their protection: zeros for DONTNEED and FREE (what they leave), a copy of the
/// contents for the others (MADV_REMOVE too, which then fails as on anonymous memory,
/// the contents kept). Only in a lazily restarted process, and only for these advices:
/// /proc/self/maps is read each time.
pub fn anonymize_lazy_image_pages(addr: u64, len: u64, advice: i32) {
    let zeros = advice == libc::MADV_DONTNEED || advice == libc::MADV_FREE;
    let copy = [libc::MADV_REMOVE, libc::MADV_WIPEONFORK, libc::MADV_KEEPONFORK, libc::MADV_MERGEABLE, libc::MADV_UNMERGEABLE].contains(&advice);
    if !zeros && !copy {
        return;
    }
    let info = crate::process::ctx::restart_info_ptr();
    // SAFETY: written by the restorer before any thread ran, only read since.
    let (lazy, ino) = unsafe { ((*info).lazy, (*info).image_ino) };
    if lazy == 0 || ino == 0 || len == 0 {
        return;
    }
    let Ok(text) = crate::rawfs::read_to_string("/proc/self/maps") else { return };
    let end = addr.saturating_add(len).next_multiple_of(4096);
    for m in ckpt::maps::parse(&text) {
        if m.inode != ino || m.shared || m.end <= addr || m.start >= end {
            continue;
        }
        let (s, e) = (m.start.max(addr), m.end.min(end));
        let n = (e - s) as usize;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if zeros {
            // SAFETY: replaces pages of the application's own private mapping (the range
            // it is discarding) with zero-filled anonymous memory of the same protection.
            unsafe { libc::mmap(s as *mut _, n, m.prot as i32, anon | libc::MAP_FIXED, -1, 0) };
            continue;
        }
        if m.prot & libc::PROT_READ as u32 == 0 {
            continue;
        }
        // SAFETY: a new anonymous mapping, filled with a copy of the readable range,
        // given the range's protection, then moved over it (the same bytes, anonymous).
        unsafe {
            let t = libc::mmap(core::ptr::null_mut(), n, libc::PROT_READ | libc::PROT_WRITE, anon, -1, 0);
            if t == libc::MAP_FAILED {
                continue;
            }
            core::ptr::copy_nonoverlapping(s as *const u8, t as *mut u8, n);
            libc::mprotect(t, n, m.prot as i32);
            if libc::mremap(t, n, n, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, s as *mut libc::c_void) == libc::MAP_FAILED {
                libc::munmap(t, n);
            }
        }
    }
}

/// Mappings advised MADV_DONTFORK or MADV_WIPEONFORK, or locked, as (start, end, vmflag
/// bits): the image writer is a fork, which would not see the first, would see the second
/// zero, and inherits no locks. Read from smaps (the kernel walks every page table for
/// it: ~10 ms of frozen time for 2 GiB) only when the program gave such advice through
/// libc or has locked memory (`VmLck` in its status); advice given by raw system call is
/// not seen, and such a mapping is saved as a fork sees it.
pub fn fork_advised(status: &str) -> Result<Vec<(u64, u64, u32)>, String> {
    use ckpt::image::vmflag::{DONTFORK, LOCKED, WIPEONFORK};
    let locked = status.lines().find_map(|l| l.strip_prefix("VmLck:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0) > 0;
    if !locked && !FORK_ADVICE_SEEN.load(core::sync::atomic::Ordering::Relaxed) {
        return Ok(Vec::new());
    }
    let text = crate::state::read_str("/proc/self/smaps")?;
    let flags = ckpt::image::vmflag::of_smaps(&text);
    let maps = ckpt::maps::parse(&text);
    Ok(maps
        .iter()
        .filter_map(|m| {
            let f = flags.iter().find(|f| f.0 == m.start)?.1 & (DONTFORK | WIPEONFORK | LOCKED);
            (f != 0).then_some((m.start, m.end, f))
        })
        .collect())
}

/// Lift (`back` false) or give back (`back` true) the fork advice of [`fork_advised`].
pub fn fork_advice(advised: &[(u64, u64, u32)], back: bool) {
    use ckpt::image::vmflag::{DONTFORK, WIPEONFORK};
    for &(s, e, f) in advised {
        for (bit, set, clear) in [(DONTFORK, libc::MADV_DONTFORK, libc::MADV_DOFORK), (WIPEONFORK, libc::MADV_WIPEONFORK, libc::MADV_KEEPONFORK)] {
            if f & bit != 0 {
                // SAFETY: advice on a mapping of this process, as the program gave it.
                unsafe { libc::madvise(s as *mut _, (e - s) as usize, if back { set } else { clear }) };
            }
        }
    }
}
