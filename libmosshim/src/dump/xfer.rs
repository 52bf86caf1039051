//! A stop-and-copy migration's pages sent by the frozen process itself, not by the
//! writer child.
//!
//! Why: the writer is a fork, and the kernel gives a fork's copied page table entries
//! the "not accessed" mark; the first read of each page from the child then costs the
//! hardware ~450 ns more (perf, this 2-vCPU VM): 0.23 s of a 2 GiB migration's frozen
//! 0.8 s. The application's own page tables are warm. During a stop-and-copy migration
//! the application stays frozen until the image is safe (it exits after), so its private
//! anonymous memory does not change while the manager sends it.
//!
//! How: before the fork the manager maps a shared buffer. The writer child lays the image
//! out as always, then, instead of sending, hands the manager a table of pieces (image
//! offset, address, length): pieces of memory the manager may send from its own mapping
//! keep their address; everything else (header, metadata, trailer, file mappings, shared
//! memory's frozen copies, and every mapping the manager itself writes while it sends:
//! its stack and TLS, the shim's statics and allocator) the child copies into the buffer
//! first, from its snapshot. The manager sends the table over the lanes, with every
//! signal blocked, without allocating, copying into the sockets (splicing the pages by
//! reference measured no faster here, and would let the manager's next writes reach the
//! target). When the child's copies do not fit (256 MiB), it sends the image itself.

use super::Plan;
use ckpt::image::lanes::Piece;
use ckpt::image::{Region, RegionKind};
use core::sync::atomic::{AtomicU32, Ordering};

/// Room in the buffer (virtual: only what the child writes takes memory).
const LEN: u64 = 1 << 30;

/// Most bytes the child copies into the buffer (memory charged to the process while it
/// migrates); beyond that it sends the image itself.
const COPY_MAX: u64 = 256 << 20;

/// The buffer's first bytes, shared by the manager and the writer child.
#[repr(C)]
struct Head {
    state: AtomicU32,
    _pad: u32,
    npieces: u64,
    table: u64,
}

/// The child is laying the image out.
const WAIT: u32 = 0;
/// The table is ready: the manager sends.
const PARENT: u32 = 1;
/// No room: the child sends the image itself.
const CHILD: u32 = 2;
/// The manager is done with the buffer.
const DONE: u32 = 3;

/// The shared buffer, and addresses inside mappings the manager writes while it sends.
pub struct Xfer {
    pub base: u64,
    keep: Vec<u64>,
    handed: core::cell::Cell<Option<std::time::Instant>>,
}

/// Off with `MOS_MIGRATION_FROM_PARENT=0` (the writer child sends, as before).
pub const FROM_PARENT: &str = "MOS_MIGRATION_FROM_PARENT";

impl Xfer {
    /// Map the buffer (manager, before the fork). None if it cannot be mapped.
    pub fn map(extra_keep: &[u64]) -> Option<Xfer> {
        if std::env::var_os(FROM_PARENT).is_some_and(|v| v == "0") {
            return None;
        }
        // SAFETY: a new shared anonymous mapping, no address hint (raw: the shim's own).
        let p = unsafe {
            ckpt::sys::sc_ret(libc::SYS_mmap, &[0, LEN as usize, (libc::PROT_READ | libc::PROT_WRITE) as usize, (libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as usize, usize::MAX, 0])
        };
        if p < 0 {
            return None;
        }
        // SAFETY: the manager's saved context is a static of the shim.
        let mc = unsafe { &*crate::process::ctx::manager_ctx() };
        // the manager's stack (this frame's), TLS, rseq area and signal stack
        let here = 0u8;
        let mut keep = vec![&here as *const u8 as u64, mc.fs_base, mc.rseq_addr, mc.altstack_sp, mc as *const _ as u64];
        keep.extend_from_slice(&crate::rt::alloc::own_addresses());
        keep.extend_from_slice(extra_keep);
        keep.retain(|&a| a != 0);
        Some(Xfer { base: p as u64, keep, handed: Default::default() })
    }

    /// When the child handed the image over (for MOS_DEBUG_TIMING).
    pub fn handed_at(&self) -> Option<std::time::Instant> {
        self.handed.get()
    }

    fn head(&self) -> &Head {
        // SAFETY: the buffer's first page is mapped, zeroed at first and then only
        // written through these atomics and plain fields as described on `Head`.
        unsafe { &*(self.base as *const Head) }
    }

    /// Unmap the buffer (manager, when done).
    pub fn unmap(&self) {
        // SAFETY: our own mapping, which nothing refers to any more.
        unsafe { ckpt::sys::sc_ret(libc::SYS_munmap, &[self.base as usize, LEN as usize]) };
    }

    /// May the manager send this region's bytes from its own mapping?
    pub fn parent_may_send(&self, r: &Region) -> bool {
        // (shared memory: from its frozen copy, which the manager made and never writes)
        matches!(r.kind, RegionKind::Anon | RegionKind::Heap | RegionKind::Stack | RegionKind::SharedAnon)
            && r.prot & libc::PROT_READ as u32 != 0
            && !self.keep.iter().any(|&a| a >= r.start && a < r.end)
            && !(r.start..r.end).contains(&self.base)
    }

    /// (child) Hand the manager `pieces` (`own[i]`: piece i is in memory the manager may
    /// send): the others' bytes copied into the buffer. False, and the child sends the
    /// image itself, when they do not fit.
    pub fn hand_over(&self, pieces: &[Piece], own: &[bool]) -> bool {
        let head = core::mem::size_of::<Head>() as u64;
        let table = head;
        let mut data = table + core::mem::size_of_val(pieces) as u64;
        let copied: u64 = pieces.iter().zip(own).filter(|(_, o)| !**o).map(|(p, _)| (p.len as u64 + 7) & !7).sum();
        if data + copied > LEN.min(COPY_MAX) {
            self.say(CHILD);
            return false;
        }
        for (i, (p, &o)) in pieces.iter().zip(own).enumerate() {
            let mut q = *p;
            if !o {
                // SAFETY: `data..data + len` lies inside the buffer (checked above); the
                // piece is readable in this child (the caller's).
                unsafe { core::ptr::copy_nonoverlapping(p.ptr, (self.base + data) as *mut u8, p.len) };
                q.ptr = (self.base + data) as *const u8;
                data += (p.len as u64 + 7) & !7;
            }
            // SAFETY: slot i of the table, inside the buffer and 8-aligned.
            unsafe { ((self.base + table) as *mut Piece).add(i).write(q) };
        }
        // SAFETY: plain fields of the head, read by the manager only after `state` says so.
        unsafe {
            let h = self.base as *mut Head;
            (*h).npieces = pieces.len() as u64;
            (*h).table = table;
        }
        self.say(PARENT);
        true
    }

    /// (child) Wait until the manager is done with the buffer (so that this child's exit
    /// does not take a CPU while the image is sent). Gives up when the manager is gone.
    pub fn wait_done(&self, parent: i32) {
        while self.head().state.load(Ordering::Acquire) != DONE {
            self.wait(PARENT, 200);
            // (reparented: the manager's process is gone)
            // SAFETY: getppid takes no arguments.
            if unsafe { ckpt::sys::sc_ret(libc::SYS_getppid, &[]) } as i32 != parent {
                return;
            }
        }
    }

    /// (manager, right after the fork) Send the image over `lanes` if the child handed it
    /// over. None: the child sends it (no room) or died. No allocation, no signal
    /// handler, no write outside the manager's stack until the image is sent.
    pub fn parent_send(&self, lanes: &[i32], child: i32) -> Option<Result<u64, i32>> {
        let all = [!0u64];
        let mut old = 0u64;
        // SAFETY: blocks every signal for this thread, the old mask saved on our stack.
        unsafe { ckpt::sys::sc_ret(libc::SYS_rt_sigprocmask, &[libc::SIG_SETMASK as usize, all.as_ptr() as usize, &mut old as *mut u64 as usize, 8]) };
        let r = loop {
            match self.head().state.load(Ordering::Acquire) {
                WAIT => {}
                PARENT => {
                    self.handed.set(Some(std::time::Instant::now()));
                    break self.send(lanes);
                }
                _ => break None,
            }
            self.wait(WAIT, 100);
            // SAFETY: siginfo is plain data on our stack; WNOWAIT only looks.
            let mut si: libc::siginfo_t = unsafe { core::mem::zeroed() };
            // SAFETY: as above (P_PID = 1).
            let w = unsafe { ckpt::sys::sc_ret(libc::SYS_waitid, &[1, child as usize, &mut si as *mut _ as usize, (libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WCLONE) as usize, 0]) };
            // SAFETY: reading the pid the kernel filled in (0: the child runs).
            if w == 0 && unsafe { si.si_pid() } == child {
                break None;
            }
        };
        self.say(DONE);
        // SAFETY: gives the thread its mask back.
        unsafe { ckpt::sys::sc_ret(libc::SYS_rt_sigprocmask, &[libc::SIG_SETMASK as usize, &old as *const u64 as usize, 0, 8]) };
        r
    }

    fn send(&self, lanes: &[i32]) -> Option<Result<u64, i32>> {
        let h = self.head();
        // SAFETY: the child wrote `npieces` pieces at `table` before saying PARENT.
        let pieces = unsafe { core::slice::from_raw_parts((self.base + h.table) as *const Piece, h.npieces as usize) };
        // Each piece is in the buffer or in private memory of this process that the child
        // found readable and that no one writes while the application is frozen. Copied
        // into the sockets (not spliced by reference): once this returns, what the manager
        // writes next (its allocations, its reply) cannot change what the target gets.
        // SAFETY: as above.
        Some(unsafe { ckpt::image::lanes::send_striped(lanes, pieces) })
    }

    fn say(&self, s: u32) {
        self.head().state.store(s, Ordering::Release);
        // SAFETY: a futex word in a shared mapping (not FUTEX_PRIVATE: two processes).
        unsafe { ckpt::sys::sc_ret(libc::SYS_futex, &[self.base as usize, libc::FUTEX_WAKE as usize, i32::MAX as usize]) };
    }

    fn wait(&self, while_is: u32, ms: u64) {
        let ts = libc::timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 };
        // SAFETY: a futex word in a shared mapping; the timeout on our stack.
        unsafe { ckpt::sys::sc_ret(libc::SYS_futex, &[self.base as usize, libc::FUTEX_WAIT as usize, while_is as usize, &ts as *const _ as usize]) };
    }
}

/// The plan's buffer, if the manager sends this image.
pub fn of(plan: &Plan) -> Option<&Xfer> {
    plan.xfer.as_ref()
}
