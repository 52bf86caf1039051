//! The on-disk image format: fixed header, postcard metadata, page data, trailer.
//!
//! ```text
//! 0      magic "MOSIMAGE" | version u32 | arch u32 | meta_len u64 | meta_hash u64
//!        | data_off u64 | data_len u64 | page_size u32 | pad u32 | header_hash u64   (64 bytes)
//! 64     metadata (postcard `ImageMeta`, meta_len bytes)
//! data_off (page aligned)  page data: every region's extents back to back, page aligned
//! data_off+data_len        trailer: n x u64 region CRC-32s | n u64 | trailer_hash u64 | "MOSTAIL!"
//! ```
//! Header, metadata and trailer are protected by xxh3-64, page data by one CRC-32 per
//! region (hardware-accelerated: the checksum must keep up with the write).
//! Everything is written front to back (streamable). Readers check magic, version,
//! architecture, then checksums, and refuse what they do not understand.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"MOSIMAGE";
pub const TAIL_MAGIC: &[u8; 8] = b"MOSTAIL!";
/// 2: regions carry their kernel flags (`Region::vm_flags`).
pub const VERSION: u32 = 2;
pub const HEADER_LEN: usize = 64;
pub const PAGE: u64 = 4096;
/// ELF machine number of the architecture images are taken on.
pub const ARCH_X86_64: u32 = 62;

pub fn arch_name(a: u32) -> &'static str {
    match a {
        3 => "i386",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        _ => "unknown",
    }
}

/// The fixed-size header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub arch: u32,
    pub meta_len: u64,
    pub meta_hash: u64,
    pub data_off: u64,
    pub data_len: u64,
    pub page_size: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.arch.to_le_bytes());
        b[16..24].copy_from_slice(&self.meta_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.meta_hash.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_off.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_len.to_le_bytes());
        b[48..52].copy_from_slice(&self.page_size.to_le_bytes());
        let h = xxhash_rust::xxh3::xxh3_64(&b[0..56]);
        b[56..64].copy_from_slice(&h.to_le_bytes());
        b
    }
}

/// Where the bytes of the trailer start and how long the whole file must be.
pub fn trailer_len(nregions: usize) -> u64 {
    (nregions as u64) * 8 + 24
}

pub fn page_up(x: u64) -> u64 {
    (x + PAGE - 1) & !(PAGE - 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionKind {
    /// anonymous private memory (heap, malloc arenas, thread stacks, bss)
    Anon,
    /// anonymous MAP_SHARED memory (saved from a copy taken while the process was frozen)
    SharedAnon,
    /// the main thread's stack (`[stack]`, grows down)
    Stack,
    /// `[heap]` (brk area)
    Heap,
    /// private mapping of a file (libraries, executable); contents saved in full
    FilePrivate,
    /// shared read-only mapping of a file: remapped from the file by path
    FileSharedRo,
    /// the shim's scratch area: recreated empty, never saved
    Scratch,
    /// shared writable mapping of a file (the JVM's hsperfdata, databases): its contents
    /// are the file's, so it is remapped read-write from the file by path; restarting
    /// needs the file where it was
    FileShared,
}

/// A run of saved pages inside a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// offset of the first page from the region start
    pub off: u64,
    pub len: u64,
    /// absolute offset of the data in the image file (page aligned)
    pub file_off: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits
    pub prot: u32,
    pub kind: RegionKind,
    /// file path for file-backed mappings, else the maps pseudo-name (may be empty)
    pub path: String,
    pub file_off: u64,
    pub extents: Vec<Extent>,
    /// What the kernel knew of the mapping beyond its protection ([`vmflag`] bits, from
    /// `VmFlags` in /proc/PID/smaps), given back at restart.
    pub vm_flags: u32,
}

/// [`Region::vm_flags`] bits.
pub mod vmflag {
    /// MAP_NORESERVE (`nr`): no swap space accounted (reservations of JITs, Go, sanitizers).
    pub const NORESERVE: u32 = 1;
    /// MADV_DONTFORK (`dc`).
    pub const DONTFORK: u32 = 2;
    /// MADV_DONTDUMP (`dd`).
    pub const DONTDUMP: u32 = 4;
    /// MADV_WIPEONFORK (`wf`).
    pub const WIPEONFORK: u32 = 8;
    /// mlock (`lo`).
    pub const LOCKED: u32 = 16;
    /// MADV_HUGEPAGE (`hg`).
    pub const HUGEPAGE: u32 = 32;
    /// MADV_NOHUGEPAGE (`nh`).
    pub const NOHUGEPAGE: u32 = 64;

    /// The bits of one `VmFlags:` line's two-letter names.
    pub fn from_smaps(line: &str) -> u32 {
        line.split_whitespace()
            .map(|f| match f {
                "nr" => NORESERVE,
                "dc" => DONTFORK,
                "dd" => DONTDUMP,
                "wf" => WIPEONFORK,
                "lo" => LOCKED,
                "hg" => HUGEPAGE,
                "nh" => NOHUGEPAGE,
                _ => 0,
            })
            .fold(0, |a, b| a | b)
    }

    /// (start address, flags) of every mapping of an smaps text.
    pub fn of_smaps(text: &str) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut start = None;
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("VmFlags:") {
                if let Some(s) = start.take() {
                    out.push((s, from_smaps(rest)));
                }
            } else if let Some((a, _)) = l.split_once('-') {
                if !a.is_empty() && a.len() <= 16 && a.bytes().all(|b| b.is_ascii_hexdigit()) && l.contains(' ') {
                    start = u64::from_str_radix(a, 16).ok();
                }
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn flags_are_read_from_smaps() {
            let t = "7f00-8000 rw-p 00000000 00:00 0 \nSize: 4 kB\nVmFlags: rd wr mr mw me nr dd \n\
                     9000-a000 ---p 00000000 00:00 0 \nAnonymous: 0 kB\nVmFlags: mr mw me dc wf lo hg \n";
            assert_eq!(super::of_smaps(t), vec![(0x7f00, super::NORESERVE | super::DONTDUMP), (0x9000, super::DONTFORK | super::WIPEONFORK | super::LOCKED | super::HUGEPAGE)]);
        }
    }
}

impl Region {
    pub fn data_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }
}

/// A kernel mapping that is moved rather than saved (`[vdso]`, `[vvar]`, `[vvar_vclock]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialMap {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// regular file, reopened by path at `offset`
    File,
    /// directory, reopened by path
    Dir,
    /// character device (e.g. /dev/null), reopened by path
    CharDev,
    /// std stream (tty, pipe, socket, device) rebound to the restarting command's own
    Inherit,
    /// another fd of the same open file description as fd `of` (shared offset, flags)
    Dup {
        of: i32,
    },
    /// read end of a pipe whose both ends are in the process; holds the buffered bytes
    PipeRead {
        id: u64,
        size: u32,
        data: Vec<u8>,
    },
    /// write end of pipe `id`
    PipeWrite {
        id: u64,
    },
    EventFd {
        count: u64,
        semaphore: bool,
    },
    /// epoll instance: its interest list (target fd, events, data)
    Epoll {
        targets: Vec<(i32, u32, u64)>,
    },
    /// timerfd: remaining time and interval in ns, and expirations not yet read
    TimerFd {
        clockid: i32,
        value_ns: u64,
        interval_ns: u64,
        ticks: u64,
    },
    SignalFd {
        mask: u64,
    },
    /// a file that lives at the process's home node (handed to its shadow): locally only
    /// a placeholder keeps the number; every call on it is forwarded
    Remote,
    /// a regular file deleted while open: its contents are in the image; the restorer
    /// recreates it unlinked (in its old directory when it can), with flags and offset
    Deleted {
        /// the file (its inode): every fd of it shares one recreated file
        id: u64,
        /// its contents (on the first fd of the file only)
        data: Vec<u8>,
    },
    /// an inotify instance: its watches (wd, mask, path), added again with the same wds
    Inotify {
        watches: Vec<(i32, u32, String)>,
    },
    /// a connected AF_UNIX socket whose peer is gone, nothing queued (the JVM keeps one
    /// end of a socketpair as a marker): a socketpair of the same type, the other end
    /// closed
    LoneSocket {
        sotype: i32,
    },
    /// a pidfd of the process itself: pidfd_open of the restored process
    PidFdSelf,
    /// a named FIFO (`path`), reopened by path in its access mode (each open its own
    /// description); `data`: what was buffered in it (on the first fd that reads it),
    /// put back if the FIFO is empty at restart (else someone kept it open meanwhile,
    /// and the bytes are still there)
    Fifo {
        id: u64,
        data: Vec<u8>,
    },
    /// a terminal that is not one of the process's own pty pairs (its controlling
    /// terminal, another pts): rebound to the restarting command's terminal (`/dev/tty`,
    /// else one of its std streams that is a terminal), else a placeholder
    Terminal,
    /// the master of a pty pair the process opened itself (`index`: its pts number then),
    /// with the pair's termios (raw `struct termios`) and window size: a new pair
    PtyMaster {
        index: u32,
        termios: Vec<u8>,
        rows: u16,
        cols: u16,
    },
    /// a slave of such a pair (`index`: the pts number of its master then)
    PtySlave {
        index: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdEntry {
    pub fd: i32,
    pub kind: FdKind,
    pub path: String,
    /// open flags as /proc/self/fdinfo shows them (O_CLOEXEC included)
    pub flags: u32,
    pub offset: i64,
    /// what the link said at checkpoint, for humans (`pipe:[123]`, `/dev/pts/1`)
    pub target: String,
}

/// Kernel `struct sigaction` for rt_sigaction (x86_64 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: i32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ITimer {
    pub which: i32,
    pub interval_us: i64,
    pub value_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

/// Fields of the kernel's `mm` that `prctl(PR_SET_MM_MAP)` restores, so `brk` keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clockid: i32,
    pub signo: i32,
    pub sival: u64,
    /// SIGEV_SIGNAL (0), SIGEV_NONE (1) or SIGEV_THREAD_ID (4)
    pub notify: i32,
    /// real tid the timer notified when saved (SIGEV_THREAD_ID)
    pub tid: i32,
    pub value_ns: u64,
    pub interval_ns: u64,
}

/// One thread of the image. Registers live in the `ThreadCtx` at `ctx_addr` (app memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRec {
    pub old_tid: i32,
    pub ctx_addr: u64,
    pub fs_base: u64,
    /// `clear_child_tid` (glibc: &pthread->tid)
    pub tid_addr: u64,
    pub is_main: bool,
    pub is_manager: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub created_unix_ms: u64,
    pub comm: String,
    /// pid as the app sees it (stable across restarts)
    pub vpid: i32,
    /// real pid of the process when the image was taken
    pub real_pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub cwd: String,
    pub umask: u32,
    pub rlimits: Vec<Rlimit>,
    pub sigactions: Vec<SigAction>,
    pub itimers: Vec<ITimer>,
    /// signals pending for the whole process (raised again after a restart; the
    /// per-thread ones are in each ThreadCtx)
    pub shared_pending: u64,
    pub mm: MmFields,
    pub special: Vec<SpecialMap>,
    /// xxh3 of the `[vdso]` bytes: a restart under another kernel's vdso is refused
    pub vdso_hash: u64,
    pub regions: Vec<Region>,
    pub fds: Vec<FdEntry>,
    pub threads: Vec<ThreadRec>,
    /// POSIX timers (timer_create), recreated with their ids by the manager on restart
    pub timers: Vec<PosixTimer>,
    /// address the restorer jumps to with rdi = ThreadCtx* (in the shim)
    pub resume_entry: u64,
    /// address of the shim's `RestartInfo`, filled by the restorer
    pub restart_info: u64,
    /// Process attributes the kernel keeps outside memory (prctl, oom_score_adj).
    pub attrs: ProcAttrs,
}

/// What `prctl` and `/proc/PID/oom_score_adj` said of the process, given back by the
/// restorer (before its threads are recreated: no_new_privs is per thread, inherited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcAttrs {
    /// PR_SET_CHILD_SUBREAPER
    pub child_subreaper: bool,
    /// PR_SET_THP_DISABLE
    pub thp_disable: bool,
    /// PR_SET_NO_NEW_PRIVS
    pub no_new_privs: bool,
    /// PR_SET_DUMPABLE (0, 1; 2 is not settable)
    pub dumpable: i32,
    /// /proc/PID/oom_score_adj
    pub oom_score_adj: i32,
}

impl ImageMeta {
    /// The smallest valid metadata around `regions`: one main thread, nothing else (for
    /// synthetic images: tests of the reader and of the image streams).
    pub fn minimal(regions: Vec<Region>) -> ImageMeta {
        ImageMeta {
            created_unix_ms: 0,
            comm: "t".into(),
            vpid: 1,
            real_pid: 1,
            uid: 0,
            gid: 0,
            exe: String::new(),
            cmdline: vec![],
            cwd: "/".into(),
            umask: 0o22,
            rlimits: vec![],
            sigactions: vec![],
            itimers: vec![],
            shared_pending: 0,
            mm: MmFields::default(),
            special: vec![],
            vdso_hash: 0,
            regions,
            fds: vec![],
            threads: vec![ThreadRec { old_tid: 1, ctx_addr: 0, fs_base: 0, tid_addr: 0, is_main: true, is_manager: false }],
            timers: vec![],
            resume_entry: 0,
            restart_info: 0,
            attrs: ProcAttrs::default(),
        }
    }

    pub fn data_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.data_bytes()).sum()
    }
}
