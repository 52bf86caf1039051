//! The restorer's half of threads (the shim captures each thread's context and kernel
//! state in `libmosshim/src/state/threads.rs`): the restorer's own rseq area is
//! unregistered before its TLS goes away, then every saved thread is recreated with its
//! TLS and clear-tid address and jumps into the shim's resume entry on its own stack; the
//! main thread last, in this thread. Runs after the point of no return (except
//! [`unregister_own_rseq`]): failures `die`, no allocation.

use super::{die, trampoline};

#[cfg(target_arch = "x86_64")]
extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// glibc registered an rseq area in our TLS; the kernel would write into it after our
/// TLS is gone. Unregister it (the restored threads register their own).
pub(super) fn unregister_own_rseq() {
    // SAFETY: glibc exports these read-only variables (glibc >= 2.35).
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes the fs base into fs.
    unsafe { crate::sc!(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    let area = (fs as i64 + off as i64) as u64;
    // SAFETY: unregistering the area glibc registered for this thread (len 32, glibc's sig).
    unsafe { crate::sc!(libc::SYS_rseq, area, 32u32, 1i32, 0x5305_3053u32) };
}

/// Recreate every thread of the image and become its main thread. Never returns.
pub(super) fn start(meta: &crate::image::ImageMeta) -> ! {
    const FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS) as u64;
    for t in meta.threads.iter().filter(|t| !t.is_main) {
        let mut flags = FLAGS;
        if t.tid_addr != 0 {
            flags |= (libc::CLONE_PARENT_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        }
        // SAFETY: ctx_addr points at the thread's saved context in the restored memory.
        let rsp = unsafe { (*(t.ctx_addr as *const crate::ctx::ThreadCtx)).regs[6] };
        // The thread's own tid again where the system lets us choose it (clone3's
        // set_tid: CAP_CHECKPOINT_RESTORE, and the tid free): glibc's descriptor keeps
        // it, and pthread_cancel, pthread_kill and pthread_getcpuclockid hand it to the
        // kernel without asking the shim. Else a new tid, which the shim translates.
        let want = [t.old_tid];
        let args = trampoline::CloneArgs {
            flags,
            pidfd: 0,
            child_tid: t.tid_addr,
            parent_tid: t.tid_addr,
            exit_signal: 0,
            stack: rsp - 1024 - 64,
            stack_size: 64,
            tls: t.fs_base,
            set_tid: want.as_ptr() as u64,
            set_tid_size: 1,
            cgroup: 0,
        };
        let same = if t.old_tid > 0 {
            // SAFETY: as below; `args` and `want` live across the call (the child
            // never returns here: it jumps into the resume entry on its own stack).
            unsafe { trampoline::mos_restore_clone3(&args, core::mem::size_of::<trampoline::CloneArgs>() as u64, t.ctx_addr, meta.resume_entry) }
        } else {
            -1
        };
        if same > 0 {
            continue;
        }
        // SAFETY: ctx_addr/fs_base/tid_addr point into the restored address space; the new
        // thread jumps straight into the shim's resume entry on its own saved stack.
        let r = unsafe {
            trampoline::mos_restore_clone(
                flags,
                rsp - 1024,
                t.tid_addr,
                t.tid_addr,
                t.fs_base,
                t.ctx_addr,
                meta.resume_entry,
            )
        };
        if r < 0 {
            die("cannot create thread");
        }
    }
    let main = meta
        .threads
        .iter()
        .find(|t| t.is_main)
        .expect("checked by ImageFile::open");
    // SAFETY: jumps into the main thread's saved context in the restored shim.
    unsafe { trampoline::mos_restore_jump(main.ctx_addr, main.fs_base, meta.resume_entry) }
}
