//! The restorer's half of memory (the shim finds the regions, extents and shared-anonymous
//! copies in `libmosshim/src/state/memory.rs`; the writer child streams them): files
//! behind shared mappings opened early, the kernel's [vdso]/[vvar] checked and moved to
//! where the image had them, every region mapped at its old address and filled from the
//! image (or mapped from it, lazily), the kernel's mm fields (brk), and the list of the
//! restorer's own ranges the restored shim unmaps.
//!
//! [`move_specials`] and [`map_regions`] run after the point of no return: failures there
//! `die` (no unwinding into a half-replaced address space), and nothing there may allocate
//! in new ways (the restorer's heap must not grow into an image range).

use super::{cstr, die, os_err};
use crate::ctx::RestartInfo;
use crate::image::{vmflag, RegionKind, PAGE};
use crate::maps::MapEntry;
use crate::sys;

/// Extents at least this long are mapped from the image in lazy mode; shorter ones copied.
const LAZY_MIN: u64 = 64 * 1024;

/// Files that must exist: open them now so a missing one fails before any damage. Each
/// descriptor is moved above every fd number the application will have: the files of
/// the image are put at their numbers next, and one of them (a file opened write-only,
/// say) must not take the place of the mapped file ("cannot map ...: Permission denied").
pub(super) fn open_shared_files(meta: &crate::image::ImageMeta) -> Result<Vec<i32>, String> {
    let above = meta.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2) + 1;
    let mut shared_fds = Vec::new();
    for r in meta
        .regions
        .iter()
        .filter(|r| matches!(r.kind, RegionKind::FileSharedRo | RegionKind::FileShared))
    {
        let c = cstr(&r.path)?;
        let mode = if r.kind == RegionKind::FileShared { libc::O_RDWR } else { libc::O_RDONLY };
        // SAFETY: c is a valid NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), mode | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(os_err(&format!("cannot reopen shared mapping {}", r.path)));
        }
        // SAFETY: duplicating our own fd above the application's numbers, then closing it.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        if high < 0 {
            return Err(os_err(&format!("cannot reopen shared mapping {}", r.path)));
        }
        shared_fds.push(high);
    }
    Ok(shared_fds)
}

pub(super) fn fill_ranges(info: &mut RestartInfo, mine: &[(u64, u64)]) {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in mine {
        match merged.last_mut() {
            Some(l) if l.1 == s => l.1 = e,
            _ => merged.push((s, e)),
        }
    }
    // More ranges than slots: leave the rest mapped (harmless, only wasted space).
    for (i, r) in merged.iter().take(info.ranges.len()).enumerate() {
        info.ranges[i] = [r.0, r.1];
        info.nranges = i as u64 + 1;
    }
}

pub(super) fn check_vdso(meta: &crate::image::ImageMeta, own: &[MapEntry]) -> Result<(), String> {
    for s in &meta.special {
        match own.iter().find(|m| m.path == s.name) {
            Some(m) if m.end - m.start == s.end - s.start => {}
            _ => {
                return Err(format!(
                    "this kernel's {} differs from the image's (image taken under another kernel)",
                    s.name
                ))
            }
        }
    }
    if let Some(v) = own.iter().find(|m| m.path == "[vdso]") {
        // SAFETY: [vdso] is mapped readable for its whole length.
        let bytes = unsafe {
            core::slice::from_raw_parts(v.start as *const u8, (v.end - v.start) as usize)
        };
        if xxhash_rust::xxh3::xxh3_64(bytes) != meta.vdso_hash {
            return Err(
                "this kernel's vdso differs from the image's (image taken under another kernel)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Move [vvar], [vvar_vclock] and [vdso] to where the image had them, keeping their
/// relative layout (libc caches pointers into the vdso).
pub(super) fn move_specials(
    meta: &crate::image::ImageMeta,
    own: &[MapEntry],
    targets: &[(u64, u64)],
) -> Result<(), String> {
    let dest = |m: &MapEntry| {
        meta.special
            .iter()
            .find(|s| s.name == m.path)
            .map(|s| s.start)
    };
    // If a destination overlaps one of our specials, park everything elsewhere first.
    let clash = own
        .iter()
        .any(|m| meta.special.iter().any(|s| m.overlaps(s.start, s.end)));
    let mut cur: Vec<(u64, u64, Option<u64>)> =
        own.iter().map(|m| (m.start, m.end, dest(m))).collect();
    if clash {
        let lo = cur.iter().map(|c| c.0).min().unwrap_or(0);
        let hi = cur.iter().map(|c| c.1).max().unwrap_or(0);
        let span = (hi - lo) as usize;
        let mut park = 0u64;
        for _ in 0..16 {
            // SAFETY: reserving address space somewhere the kernel chooses.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    span,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            } as u64;
            if p == libc::MAP_FAILED as u64 {
                return Err(os_err("reserve for vdso"));
            }
            if targets.iter().all(|t| !(p < t.1 && t.0 < p + span as u64))
                && own.iter().all(|m| !m.overlaps(p, p + span as u64))
            {
                park = p;
                break;
            }
        }
        if park == 0 {
            return Err("no room to move the vdso".into());
        }
        for c in cur.iter_mut() {
            let to = park + (c.0 - lo);
            // SAFETY: moving a kernel special mapping into our reservation.
            let r = unsafe {
                libc::mremap(
                    c.0 as *mut _,
                    (c.1 - c.0) as usize,
                    (c.1 - c.0) as usize,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    to as *mut libc::c_void,
                )
            };
            if r == libc::MAP_FAILED {
                die("cannot move vdso");
            }
            c.1 = to + (c.1 - c.0);
            c.0 = to;
        }
    }
    for c in &cur {
        match c.2 {
            Some(to) => {
                // SAFETY: destination is free (checked against our mappings above).
                let r = unsafe {
                    libc::mremap(
                        c.0 as *mut _,
                        (c.1 - c.0) as usize,
                        (c.1 - c.0) as usize,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        to as *mut libc::c_void,
                    )
                };
                if r == libc::MAP_FAILED {
                    die("cannot move vdso");
                }
            }
            None => {
                // The image had no such mapping: get rid of ours.
                // SAFETY: unmapping a special mapping the restored process does not use.
                unsafe { libc::munmap(c.0 as *mut _, (c.1 - c.0) as usize) };
            }
        }
    }
    Ok(())
}

pub(super) fn map_regions(
    meta: &crate::image::ImageMeta,
    imgfd: i32,
    shared_fds: &[i32],
    lazy: bool,
) -> Result<(), String> {
    let mut shared = shared_fds.iter();
    for r in &meta.regions {
        let len = (r.end - r.start) as usize;
        let prot = r.prot as i32;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        let map = |addr: u64, len: usize, prot: i32, flags: i32, fd: i32, off: u64| {
            // SAFETY: addr range was checked free; MAP_FIXED_NOREPLACE refuses to clobber.
            let p = unsafe { libc::mmap(addr as *mut _, len, prot, flags, fd, off as i64) };
            if p == libc::MAP_FAILED || p as u64 != addr {
                die(&format!(
                    "cannot map {:#x}-{:#x} {}",
                    addr,
                    addr + len as u64,
                    r.path
                ));
            }
        };
        match r.kind {
            RegionKind::Scratch => map(r.start, len, prot, anon | libc::MAP_NORESERVE, -1, 0),
            RegionKind::SharedAnon => {
                let fl = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
                map(r.start, len, libc::PROT_READ | libc::PROT_WRITE, fl, -1, 0);
                for e in &r.extents {
                    read_into(imgfd, r.start + e.off, e.len, e.file_off);
                }
                // SAFETY: setting the saved protection on the region we just mapped.
                if unsafe { libc::mprotect(r.start as *mut _, len, prot) } != 0 {
                    die(&format!("mprotect {:#x}", r.start));
                }
            }
            RegionKind::FileSharedRo | RegionKind::FileShared => {
                let fd = *shared.next().expect("one fd per shared region");
                map(
                    r.start,
                    len,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                    fd,
                    r.file_off,
                )
            }
            _ => {
                let mut flags = anon;
                if r.kind == RegionKind::Stack {
                    flags |= libc::MAP_GROWSDOWN;
                }
                if r.vm_flags & vmflag::NORESERVE != 0 {
                    flags |= libc::MAP_NORESERVE;
                }
                if r.extents.is_empty() {
                    // nothing to copy in: mapped as it was (a PROT_NONE reservation is
                    // not charged as writable memory)
                    map(r.start, len, prot, flags, -1, 0);
                    advise(r);
                    continue;
                }
                map(
                    r.start,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    -1,
                    0,
                );
                if !lazy && r.data_bytes() >= 2 << 20 {
                    // Fewer, larger page faults while copying big regions in.
                    // SAFETY: advice on the anonymous mapping we just created.
                    unsafe { libc::madvise(r.start as *mut _, len, libc::MADV_HUGEPAGE) };
                }
                for e in &r.extents {
                    if lazy && r.kind != RegionKind::Stack && e.len >= LAZY_MIN {
                        map(
                            r.start + e.off,
                            e.len as usize,
                            prot | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_FIXED,
                            imgfd,
                            e.file_off,
                        );
                    } else {
                        read_into(imgfd, r.start + e.off, e.len, e.file_off);
                    }
                }
                // SAFETY: setting the saved protection on the region we just mapped.
                if unsafe { libc::mprotect(r.start as *mut _, len, prot) } != 0 {
                    die(&format!("mprotect {:#x}", r.start));
                }
                advise(r);
            }
        }
    }
    let _ = PAGE;
    Ok(())
}

/// The kernel's flags the region had (madvise, mlock), given back; best effort: a lock
/// beyond RLIMIT_MEMLOCK is not taken, and nothing else here can fail on a mapping we
/// just made.
fn advise(r: &crate::image::Region) {
    let (a, n) = (r.start as *mut libc::c_void, (r.end - r.start) as usize);
    for (bit, advice) in [
        (vmflag::DONTFORK, libc::MADV_DONTFORK),
        (vmflag::DONTDUMP, libc::MADV_DONTDUMP),
        (vmflag::WIPEONFORK, libc::MADV_WIPEONFORK),
        (vmflag::HUGEPAGE, libc::MADV_HUGEPAGE),
        (vmflag::NOHUGEPAGE, libc::MADV_NOHUGEPAGE),
    ] {
        if r.vm_flags & bit != 0 {
            // SAFETY: advice on a mapping we made at this address.
            unsafe { libc::madvise(a, n, advice) };
        }
    }
    if r.vm_flags & vmflag::LOCKED != 0 {
        // SAFETY: locking a mapping we made; refused beyond the limit, which is fine.
        unsafe { libc::mlock(a, n) };
    }
}

fn read_into(fd: i32, addr: u64, len: u64, off: u64) {
    let mut done = 0u64;
    while done < len {
        // SAFETY: [addr, addr+len) is a writable mapping we created.
        let n = unsafe {
            libc::pread(
                fd,
                (addr + done) as *mut _,
                (len - done) as usize,
                (off + done) as i64,
            )
        };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            die("reading image data");
        }
        done += n as u64;
    }
}

pub(super) fn set_mm(meta: &crate::image::ImageMeta) {
    #[repr(C)]
    struct PrctlMmMap {
        start_code: u64,
        end_code: u64,
        start_data: u64,
        end_data: u64,
        start_brk: u64,
        brk: u64,
        start_stack: u64,
        arg_start: u64,
        arg_end: u64,
        env_start: u64,
        env_end: u64,
        auxv: u64,
        auxv_size: u32,
        exe_fd: u32,
    }
    let m = &meta.mm;
    if m.brk == 0 {
        return;
    }
    let map = PrctlMmMap {
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    };
    // SAFETY: PR_SET_MM_MAP with a correctly sized struct; failure leaves the restorer's
    // brk (glibc malloc then falls back to mmap).
    unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP,
            &map as *const PrctlMmMap,
            core::mem::size_of::<PrctlMmMap>(),
            0,
        );
    }
}

/// The address of the unix socket at `path`, made before the address space changes.
pub(super) fn unix_addr(path: &std::ffi::OsStr) -> Result<libc::sockaddr_un, String> {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let b = path.as_encoded_bytes();
    if b.is_empty() || b.len() >= a.sun_path.len() {
        return Err(format!("bad lazy-pages socket path {path:?}"));
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(a)
}

/// Post-copy: register the regions whose pages come after the restart (their checksum
/// says [`crate::image::live::LAZY`]) with a new userfaultfd for missing pages, hand it to
/// the shadowd listening at `addr`, and wait until it serves their faults: from then on
/// a touch of a page that has not arrived waits for it. Runs after the address space
/// changed: no allocation, and any failure ends the process.
pub(super) fn hand_over_lazy(meta: &crate::image::ImageMeta, hashes: &[u64], addr: &libc::sockaddr_un) {
    const UFFDIO_API: u64 = 0xC018_AA3F;
    const UFFDIO_REGISTER: u64 = 0xC020_AA00;
    const MODE_MISSING: u64 = 1;
    // SAFETY: userfaultfd(2) with flags only.
    let uffd = unsafe { crate::sc!(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    if uffd < 0 {
        die("post-copy: userfaultfd (root, or vm.unprivileged_userfaultfd=1)");
    }
    let mut api = [0xAAu64, 0, 0];
    // SAFETY: UFFDIO_API with its three-word struct.
    if unsafe { libc::ioctl(uffd, UFFDIO_API as _, api.as_mut_ptr()) } != 0 {
        die("post-copy: UFFDIO_API");
    }
    for (r, h) in meta.regions.iter().zip(hashes) {
        if *h != crate::image::live::LAZY || r.prot == 0 {
            continue;
        }
        let mut reg = [r.start, r.end - r.start, MODE_MISSING, 0];
        // SAFETY: UFFDIO_REGISTER of a region we just mapped, with its four-word struct.
        if unsafe { libc::ioctl(uffd, UFFDIO_REGISTER as _, reg.as_mut_ptr()) } != 0 {
            die("post-copy: registering a region for its pages");
        }
    }
    // SAFETY: a new unix stream socket.
    let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: connecting our socket to an address made before.
    if s < 0 || unsafe { libc::connect(s, (addr as *const libc::sockaddr_un).cast(), core::mem::size_of::<libc::sockaddr_un>() as u32) } != 0 {
        die("post-copy: cannot reach the shadowd serving the pages");
    }
    let mut byte = [b'U'];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; its pointers refer to our locals for the call.
    let mut mh: libc::msghdr = unsafe { core::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    mh.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: the control buffer has room for one cmsg carrying one fd.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        core::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), uffd);
    }
    // SAFETY: sending a fully initialised msghdr on our socket.
    if unsafe { libc::sendmsg(s, &mh, libc::MSG_NOSIGNAL) } != 1 {
        die("post-copy: handing the page faults to the shadowd");
    }
    // the shadowd says it serves the faults
    // SAFETY: reading one byte into our buffer.
    if unsafe { libc::read(s, byte.as_mut_ptr().cast(), 1) } != 1 {
        die("post-copy: the shadowd serving the pages did not answer");
    }
    // SAFETY: closing our fds; the shadowd holds the userfaultfd now.
    unsafe {
        libc::close(s);
        libc::close(uffd);
    }
}
