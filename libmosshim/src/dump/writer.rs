//! The image writer: runs in the raw-forked child on the scratch stack, reads the child's
//! own (= the snapshot's) mappings and writes or streams the image, optionally hashing in
//! a second process. It allocates only from the scratch area (`rt::alloc::enter_child_mode`)
//! and never writes to memory that is part of the snapshot: keep it that way.

use super::Plan;
use crate::rt::alloc;
use crate::state::memory::is_shared_anon;
use crate::state::read_str;
use ckpt::image::*;

/// Entry point of the writer child (on the scratch stack). Never returns.
pub extern "C" fn writer_child_main() -> ! {
    alloc::enter_child_mode();
    // The kernel keeps updating the rseq area (in the snapshot's memory) of the thread
    // that forked us: stop it before reading memory.
    // SAFETY: the manager's saved context was filled by the manager just before the fork.
    let mc = unsafe { &*crate::process::ctx::manager_ctx() };
    if mc.rseq_addr != 0 {
        // SAFETY: unregistering the area inherited from the manager thread (flag 1 = UNREGISTER).
        unsafe { ckpt::sc!(libc::SYS_rseq, mc.rseq_addr, mc.rseq_len, 1, mc.rseq_sig) };
    }
    let plan = super::plan();
    // SAFETY: the manager set PLAN to a live Plan before forking; the child has a copy.
    let plan = unsafe { &*plan };
    let (code, msg) = match write_image(plan) {
        Ok(n) => (0, format!("OK {n}\n")),
        Err(e) => {
            // SAFETY: removing our own temp file.
            unsafe { libc::unlink(plan.tmp.as_ptr()) };
            (1, format!("ERR {}\n", e.replace('\n', " ")))
        }
    };
    // SAFETY: reporting to the manager, then leaving without running any destructor.
    unsafe {
        libc::write(plan.result_fd, msg.as_ptr().cast(), msg.len());
        ckpt::sc!(libc::SYS_exit_group, code);
    }
    unreachable!()
}

const MERGE_GAP: u64 = 16;

fn classify(m: &ckpt::maps::MapEntry, plan: &Plan) -> Result<Option<(RegionKind, bool)>, String> {
    // (kind, dense)
    if m.start == plan.scratch.0 && m.end == plan.scratch.1 {
        return Ok(Some((RegionKind::Scratch, false)));
    }
    if plan.shared.iter().any(|c| c.2 == m.start) {
        return Ok(None); // our own copy of a shared region
    }
    if plan.xfer.as_ref().is_some_and(|x| x.base == m.start) {
        return Ok(None); // the buffer to the manager (xfer.rs)
    }
    if is_shared_anon(m) && plan.shared.iter().any(|c| c.0 == m.start && c.1 == m.end) {
        return Ok(Some((RegionKind::SharedAnon, true)));
    }
    if m.shared && m.path.starts_with("/SYSV") {
        return Err(format!("SysV shared memory {:#x}-{:#x} {} may be shared with other processes; it cannot be checkpointed yet", m.start, m.end, m.path));
    }
    let p = m.path.as_str();
    let file_backed = p.starts_with('/') && m.inode != 0;
    if m.shared {
        if file_backed && !p.ends_with(" (deleted)") {
            let writable = m.prot & libc::PROT_WRITE as u32 != 0;
            return Ok(Some((if writable { RegionKind::FileShared } else { RegionKind::FileSharedRo }, false)));
        }
        return Err(format!(
            "shared memory mapping {:#x}-{:#x} {} cannot be checkpointed yet",
            m.start, m.end, p
        ));
    }
    Ok(Some(match p {
        "[stack]" => (RegionKind::Stack, false),
        "[heap]" => (RegionKind::Heap, false),
        _ if file_backed => (RegionKind::FilePrivate, true),
        _ => (RegionKind::Anon, false),
    }))
}

fn file_size(path: &str) -> Option<u64> {
    let p = path.strip_suffix(" (deleted)").unwrap_or(path);
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// Present pages of [start, end) from /proc/self/pagemap, as merged extents.
/// `buf`: the pagemap buffer, one for every call (the child's allocator never frees: a
/// new one per region ran a process of 30,000 mappings out of scratch space, SIGABRT).
fn present_extents(pm: &std::fs::File, start: u64, end: u64, buf: &mut [u8]) -> Result<Vec<Extent>, String> {
    use std::os::unix::fs::FileExt;
    let npages = (end - start) / PAGE;
    let mut out: Vec<Extent> = Vec::new();
    let mut i = 0u64;
    while i < npages {
        let n = (npages - i).min(8192);
        let bytes = &mut buf[..(n * 8) as usize];
        pm.read_exact_at(bytes, (start / PAGE + i) * 8)
            .map_err(|e| format!("reading pagemap: {e}"))?;
        for k in 0..n {
            let e = u64::from_le_bytes(
                bytes[(k * 8) as usize..(k * 8 + 8) as usize]
                    .try_into()
                    .unwrap(),
            );
            if e & (3 << 62) == 0 {
                continue;
            }
            let off = (i + k) * PAGE;
            match out.last_mut() {
                Some(l) if off <= l.off + l.len + MERGE_GAP * PAGE => l.len = off + PAGE - l.off,
                _ => out.push(Extent {
                    off,
                    len: PAGE,
                    file_off: 0,
                }),
            }
        }
        i += n;
    }
    Ok(out)
}

/// The image after its metadata was laid out: head, every region's pages (checksummed by
/// a helper process for big images), trailer. `ioerr` names a write error.
fn write_body(w: &mut ImageWriter, plan: &Plan, meta: &ImageMeta, hdr: &Header, mbytes: &[u8], ioerr: &dyn Fn(i32) -> String) -> Result<(), String> {
    w.write_head(hdr, mbytes).map_err(ioerr)?;
    super::live::make_readable(meta);
    let mem = |a: u64, n: usize| super::live::snapshot(plan, a, n);
    // A migration's stream (the only streamed image) has no page checksums: it lives in
    // the target's memory only until the restart, TCP checks every segment and the
    // stream its size, and hashing 2 GiB cost ~0.4 s of a core on the source while
    // frozen and ~0.2 s more at the restart (perf). Header, metadata and trailer keep
    // their hashes.
    if plan.sink >= 0 {
        for r in &meta.regions {
            w.write_region(r, &mem, false).map_err(ioerr)?;
        }
        w.set_hashes(vec![ckpt::image::live::UNCHECKED; meta.regions.len()]);
        return w.write_trailer().map_err(ioerr);
    }
    // Big images: checksum in a second process (same snapshot, other core) while
    // this one writes. MOS_SERIAL_HASH=1 (for measurements) hashes inline instead.
    let hasher = if meta.data_bytes() >= PARALLEL_HASH_MIN
        && std::env::var_os(crate::config::SERIAL_HASH).is_none()
    {
        spawn_hasher(meta, &mem, plan.sink)
    } else {
        None
    };
    for r in &meta.regions {
        w.write_region(r, &mem, hasher.is_none()).map_err(ioerr)?;
    }
    if let Some((pid, rfd)) = hasher {
        w.set_hashes(collect_hashes(pid, rfd, meta.regions.len())?);
    }
    w.write_trailer().map_err(ioerr)
}

/// A streamed image ([`Plan::sink`]): written into the pipe, which is closed at the end so
/// its reader sees where the image ends. Nothing is synced or renamed: the image is safe
/// only when the requester has it where it goes (and says so to the manager).
fn stream_image(plan: &Plan, meta: &ImageMeta, hdr: &Header, mbytes: &[u8]) -> Result<u64, String> {
    if !plan.lanes.is_empty() {
        let r = stream_striped(plan, meta, hdr, mbytes);
        for fd in plan.lanes.iter().copied().chain(core::iter::once(plan.sink)) {
            // SAFETY: closing our copies of the lanes and of the (unused) pipe (raw, as
            // Sink::close does).
            unsafe { ckpt::sc!(libc::SYS_close, fd) };
        }
        return r;
    }
    let ioerr = |e: i32| format!("streaming the image: {}", std::io::Error::from_raw_os_error(e));
    let mut w = ImageWriter::into_pipe_by_reference(plan.sink);
    let r = write_body(&mut w, plan, meta, hdr, mbytes, &ioerr);
    // SAFETY: closing our copy of the sink.
    unsafe { libc::close(plan.sink) };
    r.map(|()| w.bytes_written())
}

/// A stop-and-copy image striped over the plan's lanes (`ckpt::image::lanes`): the same
/// bytes a streamed image has (no page checksums), sent straight from memory, the lanes
/// fed round robin.
fn stream_striped(plan: &Plan, meta: &ImageMeta, hdr: &Header, mbytes: &[u8]) -> Result<u64, String> {
    use ckpt::image::lanes::Piece;
    let mut head = hdr.encode().to_vec();
    head.extend_from_slice(mbytes);
    head.resize(hdr.data_off as usize, 0);
    super::live::make_readable(meta);
    let mem = |a: u64, n: usize| super::live::snapshot(plan, a, n);
    let mut pieces = vec![Piece { at: 0, ptr: head.as_ptr(), len: head.len() }];
    // may the manager send piece i from its own memory (xfer.rs)?
    let mut own = vec![false];
    let xfer = super::xfer::of(plan);
    let mut at = hdr.data_off;
    for r in &meta.regions {
        let parents = xfer.is_some_and(|x| x.parent_may_send(r));
        for e in &r.extents {
            if e.file_off != at {
                return Err(format!("image layout: an extent at {} where {at} was due", e.file_off));
            }
            // one piece per mapping run: the snapshot's copies of shared memory are
            // found per address, so pieces stop where a region does
            let bytes = mem(r.start + e.off, e.len as usize);
            pieces.push(Piece { at, ptr: bytes.as_ptr(), len: bytes.len() });
            own.push(parents);
            at += e.len;
        }
    }
    let trailer = trailer_bytes(&vec![ckpt::image::live::UNCHECKED; meta.regions.len()]);
    pieces.push(Piece { at, ptr: trailer.as_ptr(), len: trailer.len() });
    own.push(false);
    if let Some(x) = xfer {
        if x.hand_over(&pieces, &own) {
            // the manager sends; its copies of the lanes are its own
            x.wait_done(crate::identity::real_pid());
            return Ok(at + trailer.len() as u64);
        }
    }
    // SAFETY: every piece is a buffer of ours or an extent of the snapshot, readable (as
    // above) for the whole call.
    unsafe { ckpt::image::lanes::send_striped(&plan.lanes, &pieces) }.map_err(|e| format!("streaming the image over {} lanes: {}", plan.lanes.len(), std::io::Error::from_raw_os_error(e)))
}


const PARALLEL_HASH_MIN: u64 = 64 << 20;

/// Fork a child that checksums every region of the (unchanged) snapshot and sends the
/// hashes through a pipe. Returns its pid and the read end.
/// `sink`: a streamed image's pipe (-1: none), closed in the helper at once so that the
/// reader sees the image end when the writer is done, not when the helper has exited.
fn spawn_hasher<'a>(meta: &ImageMeta, mem: &dyn Fn(u64, usize) -> &'a [u8], sink: i32) -> Option<(i32, i32)> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills p.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: raw fork (no exit signal); the child only reads memory and writes the pipe.
    let pid = unsafe { ckpt::sc!(libc::SYS_clone, 0u64, 0u64, 0u64, 0u64, 0u64) };
    if pid == 0 {
        if sink >= 0 {
            // SAFETY: closing this helper's copy of the sink; it never writes there.
            unsafe { libc::close(sink) };
        }
        let mut out = Vec::with_capacity(meta.regions.len() * 8);
        for r in &meta.regions {
            out.extend_from_slice(&region_hash(r, mem).to_le_bytes());
        }
        // SAFETY: writing our buffer to the pipe, then leaving.
        unsafe {
            let mut off = 0;
            while off < out.len() {
                let n = ckpt::sc!(
                    libc::SYS_write,
                    p[1],
                    out.as_ptr().add(off),
                    out.len() - off
                );
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            ckpt::sc!(libc::SYS_exit_group, 0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(p[1]) };
    if pid < 0 {
        // SAFETY: closing the read end we own.
        unsafe { libc::close(p[0]) };
        return None;
    }
    Some((pid as i32, p[0]))
}

fn collect_hashes(pid: i32, rfd: i32, n: usize) -> Result<Vec<u64>, String> {
    let mut buf = vec![0u8; n * 8];
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: reading into our buffer.
        let k = unsafe { libc::read(rfd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if k < 0 && ckpt::sys::errno() == libc::EINTR {
            continue;
        }
        if k <= 0 {
            break;
        }
        off += k as usize;
    }
    // The hasher is not waited for: its exit (address-space teardown) would only delay
    // us, and this process exits right after; init reaps it.
    let _ = pid;
    // SAFETY: closing our fd.
    unsafe { libc::close(rfd) };
    if off != buf.len() {
        return Err("checksum helper process died".into());
    }
    Ok(buf
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// (start, vmflag bits) of every mapping, from /proc/self/smaps read line by line into
/// one buffer (a process with many mappings has tens of MiB of smaps, and this child's
/// allocator never frees).
fn smaps_flags() -> Vec<(u64, u32)> {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open("/proc/self/smaps") else { return Vec::new() };
    let mut r = std::io::BufReader::with_capacity(64 << 10, f);
    let mut line = String::with_capacity(4096);
    let mut out = Vec::new();
    let mut start = None;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return out,
            Ok(_) => {}
        }
        if let Some(rest) = line.strip_prefix("VmFlags:") {
            if let Some(s) = start.take() {
                out.push((s, ckpt::image::vmflag::from_smaps(rest)));
            }
        } else if let Some(e) = ckpt::maps::parse_line(line.trim_end()) {
            start = Some(e.start);
        }
    }
}

fn write_image(plan: &Plan) -> Result<u64, String> {
    let t0 = std::time::Instant::now();
    let mut meta = plan.meta.clone();
    let maps = ckpt::maps::parse(&read_str("/proc/self/maps")?);
    // the kernel's flags of each mapping (NORESERVE, madvise, mlock); none if unreadable
    let flags = smaps_flags();
    let mut pm_buf = vec![0u8; 8 * 8192];
    let pm =
        std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("opening pagemap: {e}"))?;
    for m in &maps {
        if m.path == "[vsyscall]" {
            continue;
        }
        if m.is_special() {
            if m.path == "[vdso]" {
                // SAFETY: [vdso] is readable for its whole length.
                let b = unsafe {
                    core::slice::from_raw_parts(m.start as *const u8, (m.end - m.start) as usize)
                };
                meta.vdso_hash = xxhash_rust::xxh3::xxh3_64(b);
            }
            meta.special.push(SpecialMap {
                name: m.path.clone(),
                start: m.start,
                end: m.end,
            });
            continue;
        }
        let Some((kind, dense)) = classify(m, plan)? else {
            continue;
        };
        let mut extents = Vec::new();
        if dense {
            if m.prot & libc::PROT_READ as u32 != 0 {
                let len = match if kind == RegionKind::SharedAnon { None } else { file_size(&m.path) } {
                    Some(sz) if sz > m.offset => page_up(sz - m.offset).min(m.end - m.start),
                    Some(_) => 0,
                    None => m.end - m.start,
                };
                if len > 0 {
                    extents.push(Extent {
                        off: 0,
                        len,
                        file_off: 0,
                    });
                }
            }
        } else if matches!(
            kind,
            RegionKind::Anon | RegionKind::Stack | RegionKind::Heap
        ) && plan.live.is_none()
            && plan.lazy_requests < 0
        {
            extents = present_extents(&pm, m.start, m.end, &mut pm_buf)?;
        }
        meta.regions.push(Region {
            start: m.start,
            end: m.end,
            prot: m.prot,
            kind,
            path: m.path.clone(),
            file_off: m.offset,
            extents,
            vm_flags: flags.iter().find(|f| f.0 == m.start).map_or(0, |f| f.1)
                | plan.fork_advice.iter().filter(|a| a.0 <= m.start && m.end <= a.1).fold(0, |x, a| x | a.2),
        });
    }
    let t_scan = t0.elapsed();
    if plan.lazy_requests >= 0 {
        // post-copy: the image without private anonymous memory, then its pages
        return super::live::stream_lazy_image(plan, &mut meta);
    }
    if let Some(live) = &plan.live {
        // a live migration's final round (its extents are found there)
        return super::live::stream_live_image(plan, live, &mut meta);
    }
    let (hdr, mbytes) = layout(&mut meta).map_err(|e| format!("encoding metadata: {e}"))?;
    if plan.sink >= 0 {
        return stream_image(plan, &meta, &hdr, &mbytes);
    }
    // SAFETY: valid path; a new private file.
    let fd = unsafe {
        libc::open(
            plan.tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot create {}: {}",
            plan.tmp.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    let ioerr = |what: &str, e: i32| {
        format!(
            "{what} {}: {}",
            plan.tmp.to_string_lossy(),
            std::io::Error::from_raw_os_error(e)
        )
    };
    let mut w = ImageWriter::new(fd);
    write_body(&mut w, plan, &meta, &hdr, &mbytes, &|e| ioerr("writing", e))?;
    // SAFETY: fsync/close our fd; rename within one directory; fsync the directory.
    unsafe {
        if libc::fsync(fd) != 0 {
            return Err(ioerr("fsync", ckpt::sys::errno()));
        }
        libc::close(fd);
        if libc::rename(plan.tmp.as_ptr(), plan.dest.as_ptr()) != 0 {
            return Err(ioerr("rename", ckpt::sys::errno()));
        }
        let d = libc::open(
            plan.dir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if d >= 0 {
            libc::fsync(d);
            libc::close(d);
        }
    }
    // MOS_DEBUG_TIMING=1 with MOS_LOG_FILE: how long the writer's phases took.
    if std::env::var_os(crate::config::DEBUG_TIMING).is_some() {
        crate::log::log(&format!(
            "writer: scan {:?}, total {:?}",
            t_scan,
            t0.elapsed()
        ));
    }
    Ok(w.bytes_written())
}
