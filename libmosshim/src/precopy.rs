//! Live migration's copy rounds (pre-copy), on the manager thread while the application
//! runs (`mos migrate --live`, and automatic migrations of big processes).
//!
//! The process's private anonymous memory (heap, stacks, malloc arenas, bss) is
//! registered for write tracking (`state/dirty.rs`) and given a fixed place in the live
//! image ([`LiveLayout`], `ckpt/src/image/live.rs`). Round 0 sends every present page;
//! each later round sends the pages written since the round before (and protects them
//! again in the same walk). The rounds stop once what is left to send fits the freeze
//! budget, after [`MAX_ROUNDS`], or when the application writes as fast as the link
//! carries it (a round no smaller than the one before): the rest goes in the final round,
//! taken frozen by the image writer (`dump/writer.rs`), which also sends everything that
//! is not tracked. Pages go into the stream's pipe by reference (vmsplice): a page the
//! application writes after it was queued is written again later, so what it held when
//! the wire took it does not matter.

use crate::log::log;
use crate::state::dirty::{self, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_WRITTEN};
use ckpt::image::live::{record_header, LiveLayout, STREAM_MAGIC};
use std::time::Instant;

/// Copy rounds at most after round 0 (the "never loop for ever").
pub const MAX_ROUNDS: usize = 8;
/// What the final round may take on the wire while the process is frozen.
const FREEZE_BUDGET_MS: u64 = 25;
/// Ranges bigger than this are not tracked (reservations; sent frozen, where present).
const MAX_TRACKED: u64 = 64 << 30;

/// What the copy rounds did, for the final round and the figures.
pub struct Rounds {
    pub layout: LiveLayout,
    /// Page bytes sent in each round (round 0 first).
    pub round_bytes: Vec<u64>,
    /// Stream bytes written (records and their headers).
    pub stream_bytes: u64,
}

fn write_all(sink: i32, mut b: &[u8]) -> Result<(), String> {
    while !b.is_empty() {
        // Raw system call: in a body away from home, libc's write is the shim's, which
        // forwards a number that is a home fd in the application's table.
        // SAFETY: writing our buffer into the pipe we were given.
        let n = unsafe { ckpt::sc!(libc::SYS_write, sink, b.as_ptr(), b.len()) } as isize;
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("streaming the image: {e}"));
        }
        b = &b[n as usize..];
    }
    Ok(())
}

/// One record: [addr, addr+len) of live memory at `file_off`. Pages that vanish under
/// us (the application unmapped or protected them meanwhile) are sent as zeros: the
/// final round does not map what is no longer there, and sends anew what was remapped.
fn send_run(sink: i32, file_off: u64, addr: u64, len: u64, sent: &mut u64) -> Result<(), String> {
    write_all(sink, &record_header(file_off, len))?;
    let mut done = 0u64;
    while done < len {
        let iov = libc::iovec { iov_base: (addr + done) as *mut _, iov_len: (len - done).min(16 << 20) as usize };
        // SAFETY: vmsplice only reads the range (the kernel checks it is mapped and
        // readable, failing with EFAULT otherwise); the pipe references the pages.
        let n = unsafe { ckpt::sc!(libc::SYS_vmsplice, sink, &iov as *const libc::iovec, 1usize, 0u32) } as isize;
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EFAULT) => {
                    let zeros = [0u8; 4096];
                    while done < len {
                        let k = (len - done).min(4096) as usize;
                        write_all(sink, &zeros[..k])?;
                        done += k as u64;
                    }
                    break;
                }
                _ => return Err(format!("streaming the image: {e}")),
            }
        }
        done += n as u64;
    }
    *sent += ckpt::image::live::RECORD_LEN as u64 + len;
    Ok(())
}

/// Private anonymous, readable and writable mappings worth tracking (not the shim's
/// scratch area), in address order.
/// The ranges to track, and whether each is mapped from the restart image (a lazily
/// restarted process's memory: its pages are in the image file until touched, so round 0
/// sends all of them, present or not).
fn candidates(scratch: (u64, u64)) -> Result<Vec<(u64, u64, bool)>, String> {
    let maps = ckpt::maps::parse(&crate::state::read_str("/proc/self/maps")?);
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
    let info = crate::process::ctx::restart_info_ptr();
    // SAFETY: written by the restorer before any thread ran, only read since.
    let image = unsafe { if (*info).lazy != 0 { (*info).image_ino } else { 0 } };
    Ok(maps
        .iter()
        .filter(|m| !m.shared && m.prot & rw == rw && !m.is_special())
        .filter(|m| m.path.is_empty() || m.path == "[heap]" || m.path == "[stack]" || m.path.starts_with("[anon:") || (image != 0 && m.inode == image))
        .filter(|m| !(m.start >= scratch.0 && m.end <= scratch.1))
        .filter(|m| m.end - m.start <= MAX_TRACKED)
        .map(|m| (m.start, m.end, image != 0 && m.inode == image))
        .collect())
}

/// Run the copy rounds into `sink` (the stream's pipe). On success the tracker stays
/// open (`dirty::UFFD`) for the final round; on failure it is closed.
/// `notes` (if not -1) hears of each round as it starts (`ckpt::control::ROUND_NOTE`),
/// the last one the frozen round that follows.
pub fn copy_rounds(sink: i32, scratch: (u64, u64), notes: i32) -> Result<Rounds, String> {
    let r = rounds(sink, scratch, notes);
    if r.is_err() {
        dirty::close_tracker();
    }
    r
}

/// Tell the requester copy round `n` starts (a progress note; a failure is ignored: the
/// reply will say what happened).
fn note_round(notes: i32, n: usize) {
    if notes >= 0 {
        let b = [ckpt::control::ROUND_NOTE, n.min(255) as u8];
        // SAFETY: writing our two bytes to the connection we were given.
        unsafe { ckpt::sc!(libc::SYS_write, notes, b.as_ptr(), 2usize) };
    }
}

fn rounds(sink: i32, scratch: (u64, u64), notes: i32) -> Result<Rounds, String> {
    let uffd = dirty::open_tracker()?;
    let mut layout = LiveLayout::new();
    // the tracked ranges mapped from the restart image
    let mut from_image = Vec::new();
    for (s, e, image) in candidates(scratch)? {
        // a mapping that changed since we read the maps is simply not tracked
        if dirty::track(uffd, s, e).is_ok() {
            if !layout.add(s, e) {
                break;
            }
            if image {
                from_image.push(s);
            }
        }
    }
    let pm = dirty::open_pagemap(0)?;
    let mut stream_bytes = 0u64;
    write_all(sink, STREAM_MAGIC)?;
    stream_bytes += STREAM_MAGIC.len() as u64;
    // round 0: every present page (the zero page excepted: it restores as zero)
    note_round(notes, 0);
    let t0 = Instant::now();
    let mut sent0 = 0u64;
    for &(s, e, base) in &layout.ranges {
        let mut runs = Vec::new();
        if from_image.contains(&s) {
            // all of it: what is not present is in the image file, not zero
            runs.push((s, e));
        } else {
            dirty::scan(&pm, s, e, false, PAGE_IS_PRESENT | PAGE_IS_PFNZERO, PAGE_IS_PFNZERO, &mut runs)?;
        }
        for (a, b) in runs {
            send_run(sink, base + (a - s), a, b - a, &mut stream_bytes)?;
            sent0 += b - a;
        }
    }
    let mut round_bytes = vec![sent0];
    // bytes per ms the wire took in the last round (the pipe holds what it has not yet)
    let mut rate = sent0 / (t0.elapsed().as_millis() as u64).max(1);
    let stopped = loop {
        let mut dirty_now = 0u64;
        let mut runs = Vec::new();
        for &(s, e, _) in &layout.ranges {
            dirty::scan(&pm, s, e, false, PAGE_IS_WRITTEN, 0, &mut runs)?;
        }
        dirty_now += dirty::bytes(&runs);
        if dirty_now <= (rate * FREEZE_BUDGET_MS).max(1 << 20) {
            break "what is left fits the freeze budget";
        }
        if round_bytes.len() > MAX_ROUNDS {
            break "round limit reached";
        }
        if round_bytes.len() >= 2 && dirty_now >= *round_bytes.last().unwrap_or(&0) {
            break "the application writes as fast as the link carries (stop-and-copy for the rest)";
        }
        note_round(notes, round_bytes.len());
        let t = Instant::now();
        let mut sent = 0u64;
        for &(s, e, base) in &layout.ranges {
            let mut runs = Vec::new();
            dirty::scan(&pm, s, e, true, PAGE_IS_WRITTEN, 0, &mut runs)?;
            for (a, b) in runs {
                send_run(sink, base + (a - s), a, b - a, &mut stream_bytes)?;
                sent += b - a;
            }
        }
        round_bytes.push(sent);
        rate = rate.max(sent / (t.elapsed().as_millis() as u64).max(1));
    };
    // the final round, frozen, comes next
    note_round(notes, round_bytes.len());
    log(&format!(
        "live migration: {} tracked ranges ({} MiB of address space), rounds {:?} bytes, stopped: {stopped}",
        layout.ranges.len(),
        (layout.next - ckpt::image::live::LIVE_DATA_OFF) >> 20,
        round_bytes
    ));
    Ok(Rounds { layout, round_bytes, stream_bytes })
}
