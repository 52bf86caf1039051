//! What a checkpoint saves. `capture_process` runs in the manager while application
//! threads are frozen (kernel state that the running parent would change: fd offsets,
//! itimers, dispositions). `writer_child_main` runs in the raw-forked child: it reads the
//! child's own (= the snapshot's) mappings and streams the image; it allocates only from
//! the scratch area and never writes to memory that is part of the snapshot.
//!
//! Here: the process-wide state (`capture_process`, POSIX timers, the shared-anonymous
//! copies) and the [`Plan`] handed to the writer; `fds.rs` the file descriptors;
//! `writer.rs` the writer child.

use crate::rawfs;
use ckpt::image::*;
use core::sync::atomic::AtomicPtr;
use std::ffi::CString;

mod fds;
mod writer;

use fds::capture_fds;
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
    pub scratch: (u64, u64),
    /// MAP_SHARED anonymous regions: (start, end, private copy taken while frozen)
    pub shared: Vec<(u64, u64, u64)>,
}

fn is_shared_anon(m: &ckpt::maps::MapEntry) -> bool {
    m.shared && (m.path == "/dev/zero (deleted)" || m.path == "[anon_shmem]" || m.path.is_empty() || m.path.starts_with("[anon_shmem:"))
}

/// Copy every MAP_SHARED anonymous region while the process is frozen: the writer runs
/// after the threads are released, and these pages are not copy-on-write.
pub fn copy_shared() -> Result<Vec<(u64, u64, u64)>, String> {
    let maps = ckpt::maps::parse(&read_str("/proc/self/maps")?);
    let mut out = Vec::new();
    for m in maps.iter().filter(|m| is_shared_anon(m)) {
        let len = (m.end - m.start) as usize;
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("cannot copy shared memory {:#x}-{:#x}", m.start, m.end));
        }
        if m.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: making our own view readable for the copy; restored after.
            unsafe { libc::mprotect(m.start as *mut _, len, libc::PROT_READ) };
        }
        // SAFETY: both ranges are mapped and `len` long.
        unsafe { core::ptr::copy_nonoverlapping(m.start as *const u8, p as *mut u8, len) };
        if m.prot & libc::PROT_READ as u32 == 0 {
            // SAFETY: restoring the original protection.
            unsafe { libc::mprotect(m.start as *mut _, len, m.prot as i32) };
        }
        out.push((m.start, m.end, p as u64));
    }
    Ok(out)
}

pub fn free_shared(copies: &[(u64, u64, u64)]) {
    for (s, e, c) in copies {
        // SAFETY: unmapping the copies made by copy_shared.
        unsafe { libc::munmap(*c as *mut _, (e - s) as usize) };
    }
}

pub static PLAN: AtomicPtr<Plan> = AtomicPtr::new(core::ptr::null_mut());

fn read_str(path: &str) -> Result<String, String> {
    rawfs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

fn link(path: &str) -> String {
    std::fs::read_link(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
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
    let shared_pending = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
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
    let mut sigactions = Vec::new();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut a = ckpt::sys::KSigAction::default();
        if ckpt::sys::rt_sigaction(sig, None, Some(&mut a)) == 0
            && (a.handler != 0 || a.flags != 0 || a.mask != 0)
        {
            sigactions.push(SigAction {
                signo: sig,
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            });
        }
    }
    let mut itimers = Vec::new();
    for which in 0..3 {
        // SAFETY: itimerval is plain data; getitimer fills it.
        let mut v: libc::itimerval = unsafe { core::mem::zeroed() };
        // SAFETY: valid out-pointer.
        unsafe { ckpt::sc!(libc::SYS_getitimer, which, &mut v as *mut libc::itimerval) };
        let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
        if us(v.it_value) != 0 || us(v.it_interval) != 0 {
            itimers.push(ITimer {
                which,
                interval_us: us(v.it_interval),
                value_us: us(v.it_value),
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
    let fds = capture_fds(internal_fds)?;
    Ok(ImageMeta {
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
        cwd: {
            let c = link("/proc/self/cwd");
            if c.ends_with(" (deleted)") {
                return Err(format!("the current directory {c} was deleted"));
            }
            c
        },
        umask,
        rlimits,
        sigactions,
        itimers,
        shared_pending,
        mm,
        special: Vec::new(),
        vdso_hash: 0,
        regions: Vec::new(),
        fds,
        threads: Vec::new(),
        timers: capture_timers()?,
        resume_entry: 0,
        restart_info: 0,
    })
}

/// POSIX timers from /proc/self/timers, with their remaining time.
fn capture_timers() -> Result<Vec<PosixTimer>, String> {
    let Ok(text) = rawfs::read_to_string("/proc/self/timers") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut cur: Option<PosixTimer> = None;
    let push = |t: Option<PosixTimer>, out: &mut Vec<PosixTimer>| -> Result<(), String> {
        if let Some(mut t) = t {
            let mut its = [0i64; 4];
            // SAFETY: timer_gettime on one of our timers into a 4-word itimerspec.
            if unsafe { ckpt::sc!(libc::SYS_timer_gettime, t.id, its.as_mut_ptr()) } != 0 {
                return Err(format!(
                    "reading POSIX timer {}: {}",
                    t.id,
                    std::io::Error::last_os_error()
                ));
            }
            t.interval_ns = (its[0] * 1_000_000_000 + its[1]) as u64;
            t.value_ns = (its[2] * 1_000_000_000 + its[3]) as u64;
            out.push(t);
        }
        Ok(())
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => {
                push(cur.take(), &mut out)?;
                cur = Some(PosixTimer {
                    id: v.parse().unwrap_or(0),
                    clockid: 0,
                    signo: 0,
                    sival: 0,
                    notify: 0,
                    tid: 0,
                    value_ns: 0,
                    interval_ns: 0,
                });
            }
            "signal" => {
                if let (Some(t), Some((sig, val))) = (cur.as_mut(), v.split_once('/')) {
                    t.signo = sig.parse().unwrap_or(0);
                    t.sival = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let (Some(t), Some((how, who))) = (cur.as_mut(), v.split_once('/')) {
                    let thread = who.starts_with("tid.");
                    t.tid = who
                        .rsplit('.')
                        .next()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                    t.notify = match how {
                        "none" => libc::SIGEV_NONE,
                        "thread" => return Err(format!("POSIX timer {} uses SIGEV_THREAD notification, which cannot be restored yet", t.id)),
                        _ => libc::SIGEV_SIGNAL,
                    } | if thread { libc::SIGEV_THREAD_ID } else { 0 };
                }
            }
            "ClockID" => {
                if let Some(t) = cur.as_mut() {
                    t.clockid = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    push(cur.take(), &mut out)?;
    Ok(out)
}
