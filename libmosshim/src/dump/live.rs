//! The final round of a live migration, in the image writer child (frozen snapshot):
//! the pages written since the last copy round, and everything the rounds did not track,
//! as records of a live stream (`ckpt/src/image/live.rs`), then the image's head and its
//! trailer. Which tracked pages were written is read from the parent's pagemap
//! (`state/dirty.rs`): the child itself has no write tracking. Runs in the child like
//! `writer.rs`: allocation only from the scratch area, nothing written to the snapshot.

use super::Plan;
use crate::state::dirty::{self, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_WRITTEN};
use ckpt::image::live::{LiveLayout, UNCHECKED};
use ckpt::image::*;

/// What the manager hands the writer child of a live migration's final round.
pub struct LivePlan {
    pub layout: LiveLayout,
    /// The real pid of the process (the child's parent), whose pagemap says what was
    /// written since the last round.
    pub parent: i32,
}

/// Regions whose pages are saved where present (the others are saved whole).
pub fn is_sparse(kind: RegionKind) -> bool {
    matches!(kind, RegionKind::Anon | RegionKind::Stack | RegionKind::Heap)
}

/// Parts of [a, b) not covered by the sorted runs `written`... and the covered ones:
/// calls `f(x, y, written)` for consecutive pieces.
fn split_by(a: u64, b: u64, written: &[(u64, u64)], mut f: impl FnMut(u64, u64, bool) -> Result<(), String>) -> Result<(), String> {
    let mut x = a;
    let mut i = written.partition_point(|w| w.1 <= a);
    while x < b {
        match written.get(i) {
            Some(&(ws, we)) if ws <= x => {
                let y = we.min(b);
                f(x, y, true)?;
                x = y;
                i += 1;
            }
            Some(&(ws, _)) if ws < b => {
                f(x, ws, false)?;
                x = ws;
            }
            _ => {
                f(x, b, false)?;
                x = b;
            }
        }
    }
    Ok(())
}

/// Every region of this child readable (its own mappings only: the snapshot's). The
/// image writers' (`writer.rs` too).
pub(super) fn make_readable(meta: &ImageMeta) {
    for r in &meta.regions {
        if r.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: changes only this child's mapping so its bytes can be read.
            unsafe { libc::mprotect(r.start as *mut _, (r.end - r.start) as usize, libc::PROT_READ) };
        }
    }
}

/// The snapshot's `n` bytes at `a` (a shared region's from its frozen copy). Only for
/// ranges inside the regions [`make_readable`] made readable.
pub(super) fn snapshot(plan: &Plan, a: u64, n: usize) -> &'static [u8] {
    let a = match plan.shared.iter().find(|c| a >= c.0 && a < c.1) {
        Some(c) => c.2 + (a - c.0),
        None => a,
    };
    // The child never unmaps these before it exits.
    // SAFETY: the range lies in a mapping of this child made readable by make_readable, or in the frozen copy of a shared region.
    unsafe { core::slice::from_raw_parts(a as *const u8, n) }
}

/// Write the final round into the plan's sink; returns the stream bytes of this round.
pub(super) fn stream_live_image(plan: &Plan, live: &LivePlan, meta: &mut ImageMeta) -> Result<u64, String> {
    let ioerr = |e: i32| format!("streaming the image: {}", std::io::Error::from_raw_os_error(e));
    let layout = &live.layout;
    // tracked pages written since the last round (a parent we cannot scan: all of them)
    let mut written = Vec::new();
    match dirty::open_pagemap(live.parent) {
        Ok(ppm) => {
            for &(s, e, _) in &layout.ranges {
                dirty::scan(&ppm, s, e, false, PAGE_IS_WRITTEN, 0, &mut written)?;
            }
        }
        Err(_) => written = layout.ranges.iter().map(|r| (r.0, r.1)).collect(),
    }
    let pm = dirty::open_pagemap(0)?;
    make_readable(meta);
    let mem = |a: u64, n: usize| snapshot(plan, a, n);
    let mut w = ImageWriter::into_pipe_by_reference(plan.sink);
    let mut next = layout.next;
    let send = |w: &mut ImageWriter, file_off: u64, a: u64, len: u64| -> Result<(), String> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(16 << 20);
            w.write_record(file_off + done, mem(a + done, n as usize)).map_err(ioerr)?;
            done += n;
        }
        Ok(())
    };
    for r in meta.regions.iter_mut() {
        let runs: Vec<(u64, u64)> = if is_sparse(r.kind) {
            let mut v = Vec::new();
            dirty::scan(&pm, r.start, r.end, false, PAGE_IS_PRESENT | PAGE_IS_PFNZERO, PAGE_IS_PFNZERO, &mut v)?;
            v
        } else {
            r.extents.iter().map(|e| (r.start + e.off, r.start + e.off + e.len)).collect()
        };
        let mut extents = Vec::new();
        for (a, b) in runs {
            let mut x = a;
            while x < b {
                // a tracked range holds what was sent of it; anything else gets new room
                // (a private mapping of the restart image may be tracked too)
                let tracked = if is_sparse(r.kind) || r.kind == RegionKind::FilePrivate { layout.find(x) } else { None };
                let (y, file_off) = match tracked {
                    Some((s, e, base)) => (e.min(b), base + (x - s)),
                    None => {
                        let stop = layout.ranges.iter().map(|t| t.0).find(|&t| t > x).unwrap_or(u64::MAX).min(b);
                        let stop = if is_sparse(r.kind) { stop } else { b };
                        let f = next;
                        next += stop - x;
                        (stop, f)
                    }
                };
                if tracked.is_some() {
                    split_by(x, y, &written, |p, q, dirty| if dirty { send(&mut w, file_off + (p - x), p, q - p) } else { Ok(()) })?;
                } else {
                    send(&mut w, file_off, x, y - x)?;
                }
                extents.push(Extent { off: x - r.start, len: y - x, file_off });
                x = y;
            }
        }
        r.extents = extents;
    }
    let (hdr, mbytes) = live_head(meta, next)?;
    let mut head = hdr.encode().to_vec();
    head.extend_from_slice(&mbytes);
    w.write_record_copied(0, &head).map_err(ioerr)?;
    let trailer = trailer_bytes(&vec![UNCHECKED; meta.regions.len()]);
    w.write_record_copied(next, &trailer).map_err(ioerr)?;
    w.write_live_end().map_err(ioerr)?;
    // SAFETY: closing our copy of the sink: the reader sees the end of the stream.
    unsafe { ckpt::sc!(libc::SYS_close, plan.sink) };
    Ok(w.bytes_written())
}

/// Post-copy (`mos migrate --lazy`): the image with every region but the private
/// anonymous ones (their checksum says [`LAZY`], their pages follow), the head-end
/// record, then those pages as page records in address order, the target's requests
/// (addresses on `plan.lazy_requests`) served first: a requested page that is not
/// present goes as a zero record. Returns the stream bytes.
pub(super) fn stream_lazy_image(plan: &Plan, meta: &mut ImageMeta) -> Result<u64, String> {
    use ckpt::image::live::{LIVE_DATA_OFF, LAZY, LAZY_HEAD_END, ZERO_PAGES};
    let ioerr = |e: i32| format!("streaming the image: {}", std::io::Error::from_raw_os_error(e));
    let pm = dirty::open_pagemap(0)?;
    make_readable(meta);
    let mem = |a: u64, n: usize| snapshot(plan, a, n);
    let mut w = ImageWriter::into_pipe_by_reference(plan.sink);
    w.write_live_magic().map_err(ioerr)?;
    let mut next = LIVE_DATA_OFF;
    // every page to push after the head, in address order
    let mut lazy_runs: Vec<(u64, u64)> = Vec::new();
    let mut hashes = Vec::with_capacity(meta.regions.len());
    for r in meta.regions.iter_mut() {
        if is_sparse(r.kind) {
            let before = lazy_runs.len();
            dirty::scan(&pm, r.start, r.end, false, PAGE_IS_PRESENT | PAGE_IS_PFNZERO, PAGE_IS_PFNZERO, &mut lazy_runs)?;
            if std::env::var_os(crate::config::DEBUG_LAZY).is_some() {
                crate::log::log(&format!("lazy region {:#x}-{:#x} {:?} {}: runs {:x?}", r.start, r.end, r.kind, r.path, &lazy_runs[before.saturating_sub(1)..]));
            }
            r.extents.clear();
            hashes.push(LAZY);
            continue;
        }
        for e in r.extents.iter_mut() {
            e.file_off = next;
            let mut done = 0;
            while done < e.len {
                let n = (e.len - done).min(16 << 20);
                w.write_record(next + done, mem(r.start + e.off + done, n as usize)).map_err(ioerr)?;
                done += n;
            }
            next += e.len;
        }
        hashes.push(UNCHECKED);
    }
    let (hdr, mbytes) = live_head(meta, next)?;
    let mut head = hdr.encode().to_vec();
    head.extend_from_slice(&mbytes);
    w.write_record_copied(0, &head).map_err(ioerr)?;
    w.write_record_copied(next, &trailer_bytes(&hashes)).map_err(ioerr)?;
    w.write_record_copied(LAZY_HEAD_END, &[]).map_err(ioerr)?;
    // the pages: requests first, then in order
    let req = plan.lazy_requests;
    // SAFETY: making our copy of the request pipe non-blocking.
    unsafe { ckpt::sc!(libc::SYS_fcntl, req, libc::F_SETFL, libc::O_NONBLOCK) };
    let page_of = |a: u64| -> Option<(u64, u64)> {
        let i = lazy_runs.partition_point(|r| r.1 <= a);
        lazy_runs.get(i).copied().filter(|r| r.0 <= a)
    };
    let serve = |w: &mut ImageWriter| -> Result<(), String> {
        let mut b = [0u8; 8 * 64];
        loop {
            // Raw system call, as every call here: libc's read is the shim's in a body
            // away from home, and forwards numbers that are home fds of the application.
            // SAFETY: reading into our buffer from our non-blocking pipe.
            let n = unsafe { ckpt::sc!(libc::SYS_read, req, b.as_mut_ptr(), b.len()) } as isize;
            if n <= 0 {
                return Ok(());
            }
            for c in b[..n as usize].chunks_exact(8) {
                let a = u64::from_le_bytes(c.try_into().unwrap_or_default()) & !(PAGE - 1);
                match page_of(a) {
                    // the faulting page and a few after it
                    Some((_, e)) => {
                        let len = (e - a).min(64 << 10);
                        w.write_record(a, mem(a, len as usize)).map_err(ioerr)?;
                    }
                    None => {
                        w.write_all_raw(&ckpt::image::live::record_header(a, PAGE | ZERO_PAGES)).map_err(ioerr)?;
                    }
                }
            }
        }
    };
    const PIECE: u64 = 64 << 10;
    for &(s, e) in &lazy_runs {
        let mut a = s;
        while a < e {
            serve(&mut w)?;
            let n = (e - a).min(PIECE);
            w.write_record(a, mem(a, n as usize)).map_err(ioerr)?;
            a += n;
        }
    }
    serve(&mut w)?;
    w.write_live_end().map_err(ioerr)?;
    // SAFETY: closing our copies: the reader sees the end of the stream.
    unsafe {
        ckpt::sc!(libc::SYS_close, plan.sink);
        ckpt::sc!(libc::SYS_close, req);
    }
    Ok(w.bytes_written())
}

#[cfg(test)]
mod tests {
    use super::split_by;

    #[test]
    fn pieces_alternate_between_written_and_clean() {
        let mut got = Vec::new();
        let w = [(0x2000, 0x3000), (0x5000, 0x9000)];
        split_by(0x1000, 0x6000, &w, |a, b, d| {
            got.push((a, b, d));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(0x1000, 0x2000, false), (0x2000, 0x3000, true), (0x3000, 0x5000, false), (0x5000, 0x6000, true)]);
        got.clear();
        split_by(0x9000, 0xa000, &w, |a, b, d| {
            got.push((a, b, d));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(0x9000, 0xa000, false)]);
    }
}
