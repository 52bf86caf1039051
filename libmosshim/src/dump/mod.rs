//! What a checkpoint saves. `capture_process` runs in the manager while application
//! threads are frozen (kernel state that the running parent would change: fd offsets,
//! itimers, dispositions). `writer_child_main` runs in the raw-forked child: it reads the
//! child's own (= the snapshot's) mappings and streams the image; it allocates only from
//! the scratch area and never writes to memory that is part of the snapshot.
//!
//! Here: `capture_process`, which assembles the image's metadata (the process-wide state:
//! comm, cmdline, umask, rlimits, mm fields; each kind of state from its own file in
//! `crate::state`, in the order the fields always had), and the [`Plan`] handed to the
//! writer; `writer.rs` the writer child.

use crate::state::{self, link, read_str};
use ckpt::image::*;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::ffi::CString;

pub mod live;
mod writer;
pub mod xfer;

pub use writer::writer_child_main;

/// Everything the writer child needs, prepared by the manager before the fork.
pub struct Plan {
    pub meta: ImageMeta,
    pub tmp: CString,
    pub dest: CString,
    pub dir: CString,
    pub result_fd: i32,
    /// Where a streamed image goes (a pipe; -1: the file `tmp`, renamed to `dest`).
    pub sink: i32,
    /// A stop-and-copy image goes striped over these TCP sockets instead of into `sink`
    /// (`ckpt::image::lanes`); empty: into `sink`.
    pub lanes: Vec<i32>,
    pub scratch: (u64, u64),
    /// MAP_SHARED anonymous regions: (start, end, private copy taken while frozen)
    pub shared: Vec<(u64, u64, u64)>,
    /// The final round of a live migration (the copy rounds' layout), else None.
    pub live: Option<live::LivePlan>,
    /// Post-copy: the pipe of the target's page requests (-1: not post-copy).
    pub lazy_requests: i32,
    /// Mappings advised DONTFORK or WIPEONFORK, or locked: (start, end, vmflag bits), the
    /// advice lifted for the writer's fork; all recorded in the image from here.
    pub fork_advice: Vec<(u64, u64, u32)>,
    /// A stop-and-copy migration over lanes: the buffer through which the writer child
    /// hands the manager the image to send from the frozen process (`xfer.rs`).
    pub xfer: Option<xfer::Xfer>,
}

/// The plan the manager made for the image writer's child (which reads it after the fork).
static PLAN: AtomicPtr<Plan> = AtomicPtr::new(core::ptr::null_mut());

/// The manager's plan for the next image writer.
pub fn set_plan(p: *mut Plan) {
    PLAN.store(p, Ordering::Release);
}

/// The plan the manager made (in the writer's child: its copy of the manager's).
pub fn plan() -> *mut Plan {
    PLAN.load(Ordering::Acquire)
}

/// The process attributes prctl and /proc keep. no_new_privs is per thread: the main
/// thread's (from `status`, /proc/self/status) is taken for all (the manager's own may
/// predate the program's prctl).
fn attrs(status: &str) -> ProcAttrs {
    let get = |op: i32| {
        let mut v: libc::c_int = 0;
        // SAFETY: PR_GET_CHILD_SUBREAPER writes an int to the pointer we pass.
        let r = unsafe { libc::prctl(op, &mut v as *mut libc::c_int, 0, 0, 0) };
        if op == libc::PR_GET_CHILD_SUBREAPER { if r == 0 { v } else { 0 } } else { r }
    };
    // SAFETY: the other PR_GET_* calls here take no pointer and return the value.
    let plain = |op: i32| unsafe { libc::prctl(op, 0, 0, 0, 0) };
    ProcAttrs {
        child_subreaper: get(libc::PR_GET_CHILD_SUBREAPER) == 1,
        thp_disable: plain(libc::PR_GET_THP_DISABLE) == 1,
        no_new_privs: status.lines().find_map(|l| l.strip_prefix("NoNewPrivs:")).is_some_and(|v| v.trim() == "1"),
        dumpable: plain(libc::PR_GET_DUMPABLE).clamp(0, 1),
        oom_score_adj: read_str("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
    }
}

/// Process-wide kernel state, fds included. Errors name what cannot be checkpointed.
pub fn capture_process(internal_fds: &[i32]) -> Result<ImageMeta, String> {
    let comm = read_str("/proc/self/comm")?.trim_end().to_string();
    let cmdline = read_str("/proc/self/cmdline")?
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let status = read_str("/proc/self/status")?;
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022);
    let mut rlimits = Vec::new();
    for r in 0..16u32 {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        if unsafe { ckpt::sc!(libc::SYS_getrlimit, r, &mut l as *mut libc::rlimit) } == 0 {
            rlimits.push(Rlimit {
                resource: r,
                cur: l.rlim_cur,
                max: l.rlim_max,
            });
        }
    }
    let stat = read_str("/proc/self/stat")?;
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    // fields are numbered from 1; after ")" the first is field 3
    let fld = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    // SAFETY: brk(0) only queries the current break.
    let brk = unsafe { ckpt::sc!(libc::SYS_brk, 0) } as u64;
    let mm = MmFields {
        start_code: fld(26),
        end_code: fld(27),
        start_stack: fld(28),
        start_data: fld(45),
        end_data: fld(46),
        start_brk: fld(47),
        brk,
        arg_start: fld(48),
        arg_end: fld(49),
        env_start: fld(50),
        env_end: fld(51),
    };
    let mut meta = ImageMeta {
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        comm,
        vpid: 0,
        real_pid: ckpt::sys::getpid_real(),
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
        exe: link("/proc/self/exe"),
        cmdline,
        // (a deleted one keeps its " (deleted)": the restorer makes one like it)
        cwd: link("/proc/self/cwd"),
        umask,
        rlimits,
        sigactions: Vec::new(),
        itimers: Vec::new(),
        shared_pending: 0,
        mm,
        special: Vec::new(),
        vdso_hash: 0,
        regions: Vec::new(),
        fds: Vec::new(),
        threads: Vec::new(),
        timers: Vec::new(),
        resume_entry: 0,
        restart_info: 0,
        attrs: attrs(&status),
    };
    // then each kind of state its own part (state::KINDS)
    state::capture(&mut meta, &state::CaptureCx { internal_fds, status: &status })?;
    Ok(meta)
}
