//! The shim's own allocator. Rust code in the shim never touches the application's
//! malloc: the manager allocates while application threads are frozen (one of them may
//! hold malloc's lock), and the image writer child allocates after a raw fork.
//!
//! Normal mode: power-of-two size classes with free lists behind a spin lock, chunks and
//! large blocks from mmap. Writer-child mode (flag inside the scratch area, which is never
//! saved in an image): bump allocation from the scratch area, frees ignored, so the child
//! never writes to memory that belongs to the snapshot it is saving.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const NCLASS: usize = 13; // 16 B .. 64 KiB
const MIN_SHIFT: usize = 4;
const CHUNK: usize = 1 << 20;
const LARGE: usize = 1 << (MIN_SHIFT + NCLASS - 1);

pub struct ShimAlloc;

struct State {
    free: [*mut u8; NCLASS],
    bump: usize,
    bump_end: usize,
}

struct Locked {
    lock: AtomicBool,
    st: UnsafeCell<State>,
}
// SAFETY: State is only accessed while `lock` is held.
unsafe impl Sync for Locked {}

static HEAP: Locked = Locked {
    lock: AtomicBool::new(false),
    st: UnsafeCell::new(State {
        free: [core::ptr::null_mut(); NCLASS],
        bump: 0,
        bump_end: 0,
    }),
};

/// Base of the scratch area (0 until the shim is initialised).
static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// The base of the scratch area (0 until the shim reserved it).
pub fn scratch_base() -> usize {
    SCRATCH.load(Ordering::Relaxed)
}

/// Addresses inside the allocator's own memory (its state among the shim's statics, and
/// the scratch area): mappings the manager writes, for `dump::xfer`.
pub fn own_addresses() -> [u64; 2] {
    [&HEAP as *const Locked as u64, scratch_base() as u64]
}

/// Start-up: the scratch area reserved at `base` (SCRATCH_SIZE bytes).
pub fn set_scratch_base(base: usize) {
    SCRATCH.store(base, Ordering::Relaxed);
}
pub const SCRATCH_SIZE: usize = 512 << 20;
pub const SCRATCH_STACK: usize = 1 << 20;
/// header page: [0] child-mode flag, [8] bump offset
const SCRATCH_HDR: usize = 4096;

fn in_child() -> Option<usize> {
    let base = SCRATCH.load(Ordering::Relaxed);
    // SAFETY: the scratch header page is mapped for the process lifetime once base != 0.
    if base != 0 && unsafe { core::ptr::read_volatile(base as *const u64) } == 1 {
        Some(base)
    } else {
        None
    }
}

/// Switch this (writer child) process to bump allocation in the scratch area.
pub fn enter_child_mode() {
    let base = SCRATCH.load(Ordering::Relaxed);
    // SAFETY: scratch header is mapped and private to this process after fork.
    unsafe {
        core::ptr::write_volatile((base + 8) as *mut u64, SCRATCH_HDR as u64);
        core::ptr::write_volatile(base as *mut u64, 1);
    }
}

fn mmap(len: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping, no address hint.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

fn class_of(size: usize) -> usize {
    let s = size.max(1 << MIN_SHIFT).next_power_of_two();
    s.trailing_zeros() as usize - MIN_SHIFT
}

// SAFETY: alloc returns blocks of at least layout.size() bytes aligned to layout.align()
// (classes are powers of two handed out at multiples of their size; large blocks are
// page aligned), never hands the same block out twice, and dealloc only takes blocks it gave.
// SAFETY: see the contract above.
unsafe impl GlobalAlloc for ShimAlloc {
    // SAFETY: GlobalAlloc::alloc contract, upheld as described above.
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let size = l.size().max(l.align());
        if let Some(base) = in_child() {
            let off_p = (base + 8) as *mut u64;
            // SAFETY: header page mapped; only the single child thread runs.
            let off = unsafe { core::ptr::read_volatile(off_p) } as usize;
            let start = (base + off + l.align() - 1) & !(l.align() - 1);
            let end = start + l.size();
            if end > base + SCRATCH_SIZE - SCRATCH_STACK {
                return core::ptr::null_mut();
            }
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(off_p, (end - base) as u64) };
            return start as *mut u8;
        }
        if size > LARGE || l.align() > 4096 {
            if l.align() > 4096 {
                return core::ptr::null_mut();
            }
            return mmap((size + 4095) & !4095);
        }
        let c = class_of(size);
        let csize = 1usize << (c + MIN_SHIFT);
        while HEAP
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: lock held.
        let st = unsafe { &mut *HEAP.st.get() };
        let p = if !st.free[c].is_null() {
            let p = st.free[c];
            // SAFETY: free blocks store the next pointer in their first word.
            st.free[c] = unsafe { *(p as *mut *mut u8) };
            p
        } else {
            let mut start = (st.bump + csize - 1) & !(csize - 1);
            if st.bump == 0 || start + csize > st.bump_end {
                let chunk = mmap(CHUNK);
                if chunk.is_null() {
                    HEAP.lock.store(false, Ordering::Release);
                    return core::ptr::null_mut();
                }
                st.bump = chunk as usize;
                st.bump_end = chunk as usize + CHUNK;
                start = st.bump;
            }
            st.bump = start + csize;
            start as *mut u8
        };
        HEAP.lock.store(false, Ordering::Release);
        p
    }

    // SAFETY: GlobalAlloc::dealloc contract: p came from alloc with layout l.
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if in_child().is_some() {
            return;
        }
        let size = l.size().max(l.align());
        if size > LARGE || l.align() > 4096 {
            // SAFETY: large blocks are whole mappings of this rounded size.
            unsafe { libc::munmap(p.cast(), (size + 4095) & !4095) };
            return;
        }
        let c = class_of(size);
        while HEAP
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: lock held; p is a block of class c we handed out.
        unsafe {
            let st = &mut *HEAP.st.get();
            *(p as *mut *mut u8) = st.free[c];
            st.free[c] = p;
        }
        HEAP.lock.store(false, Ordering::Release);
    }
}

/// Around an application's fork (pthread_atfork): the heap lock is taken before, so no
/// other thread holds it when the process is copied, and given back after, in parent
/// and child.
pub fn lock_for_fork() {
    while HEAP.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
}

/// See [`lock_for_fork`].
pub fn unlock_after_fork() {
    HEAP.lock.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn classes() {
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(16), 0);
        assert_eq!(class_of(17), 1);
        assert_eq!(class_of(LARGE), NCLASS - 1);
    }
    #[test]
    fn alloc_free_reuse() {
        let a = ShimAlloc;
        let l = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: test of the allocator contract.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null() && (p as usize).is_multiple_of(8));
            p.write_bytes(7, 100);
            a.dealloc(p, l);
            let q = a.alloc(l);
            assert_eq!(p, q);
            a.dealloc(q, l);
            let big = Layout::from_size_align(1 << 20, 4096).unwrap();
            let b = a.alloc(big);
            b.write_bytes(1, 1 << 20);
            a.dealloc(b, big);
        }
    }
}
