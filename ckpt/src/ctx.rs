//! State shared by the shim (which saves it) and the restorer (which jumps back into it).
//! These structs live in the application's memory, so their layout is part of the
//! contract between `libmosshim.so` and `mosrestart`: `#[repr(C)]`, offsets used by asm.

/// Per-thread context saved when a thread parks for a checkpoint.
/// The callee-saved registers, stack pointer and return address are enough: the thread
/// is inside a signal handler, and returning from the handler (`rt_sigreturn`) restores
/// every other register, the FPU state and the signal mask from the signal frame, which
/// is on the thread's stack and so part of the image.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCtx {
    /// rbx, rbp, r12, r13, r14, r15, rsp, rip (offsets 0..64, used by asm)
    pub regs: [u64; 8],
    pub fs_base: u64,
    /// `clear_child_tid` (glibc: &pthread->tid), from PR_GET_TID_ADDRESS
    pub tid_addr: u64,
    pub robust_head: u64,
    pub robust_len: u64,
    /// glibc's per-thread rseq area (0 if none)
    pub rseq_addr: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    pub altstack_sp: u64,
    pub altstack_flags: u64,
    pub altstack_size: u64,
    /// signal mask to set while the thread finishes its handler after restart
    pub mask: u64,
    /// real tid when the context was saved
    pub tid: i32,
    pub is_main: i32,
    /// the tid as the application knows it (glibc's `pthread->tid`): virtual after a
    /// restart, kept across restarts
    pub vtid: i32,
    pub _pad: i32,
    /// the thread's name (comm), NUL-padded
    pub name: [u8; 16],
    /// signals pending for the thread (and the process) when it parked
    pub pending: u64,
    /// the thread's CPU time when it parked, ns, counting every earlier incarnation
    pub cpu_ns: u64,
}

pub const CTX_RSP: usize = 48;
pub const CTX_RIP: usize = 56;

/// What `mos_ctx_park`/`mos_ctx_fork` return in a restored process.
pub const RESUMED: u64 = 0x7e57_0000_0000_0001;

/// Filled by the restorer in the application's memory before it jumps; read by the
/// shim's manager thread on restart to clean up after the restorer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RestartInfo {
    /// the restorer's own mappings, to unmap once every thread left restorer code
    pub nranges: u64,
    pub ranges: [[u64; 2]; 64],
    /// 1 if pages are mapped lazily from the image file
    pub lazy: u64,
    /// real pid of the restored process
    pub pid: i64,
    /// the shadowd address of the node restarting it (`MOS_NODE_ADDR` in the
    /// restorer's environment), NUL-padded; a migrated body reports it home
    pub node_addr: [u8; 32],
    /// lazy: the image file's inode, whose private mappings hold the lazily mapped pages
    pub image_ino: u64,
}

impl RestartInfo {
    pub const fn zeroed() -> Self {
        RestartInfo {
            nranges: 0,
            ranges: [[0; 2]; 64],
            lazy: 0,
            pid: 0,
            node_addr: [0; 32],
            image_ino: 0,
        }
    }
}
