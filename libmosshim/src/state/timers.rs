//! The application's timers. At checkpoint (manager, threads frozen): the three itimers
//! ([`capture_itimers`]) and the POSIX timers with their remaining time
//! ([`capture_timers`], from /proc/self/timers). The restorer re-arms the itimers
//! (`ckpt/src/restore/timers.rs`); POSIX timers need their old ids and the restored
//! threads' kernel tids, so the manager recreates them after a restart
//! ([`Timers`]' `restarted`). Timerfds are file descriptors (`fds.rs`).

use super::StateKind;
use crate::rawfs;
use ckpt::ctx::ThreadCtx;
use ckpt::image::*;

/// Timers in the lifecycle of [`StateKind`].
pub struct Timers;

impl StateKind for Timers {
    fn capture(&self, meta: &mut ImageMeta, _cx: &super::CaptureCx<'_>) -> Result<(), String> {
        meta.itimers = capture_itimers();
        meta.timers = capture_timers()?;
        Ok(())
    }

    fn restarted(&self, meta: &ImageMeta) -> Result<(), String> {
        restore_timers(meta)
    }
}

/// ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF, where armed.
pub fn capture_itimers() -> Vec<ITimer> {
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
    itimers
}

/// POSIX timers from /proc/self/timers, with their remaining time.
pub fn capture_timers() -> Result<Vec<PosixTimer>, String> {
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

/// Recreate POSIX timers with their old ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+;
/// older kernels hand out ids in order, so gaps are filled with placeholders).
pub fn restore_timers(meta: &ckpt::image::ImageMeta) -> Result<(), String> {
    let timers = &meta.timers;
    #[repr(C)]
    struct KSigevent {
        value: u64,
        signo: i32,
        notify: i32,
        tid: i32,
        pad: [i32; 11],
    }
    if timers.is_empty() {
        return Ok(());
    }
    const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;
    // SAFETY: prctl with integer arguments.
    let by_id = unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0) } == 0;
    let mut sorted: Vec<_> = timers.to_vec();
    sorted.sort_by_key(|t| t.id);
    let mut fillers = Vec::new();
    for t in &sorted {
        // the thread a SIGEV_THREAD_ID timer notifies, by its old kernel tid
        let tid = if t.notify & libc::SIGEV_THREAD_ID != 0 {
            meta.threads
                .iter()
                // SAFETY: contexts of the restored threads (read only).
                .map(|r| unsafe { &*(r.ctx_addr as *const ThreadCtx) })
                
                .find(|c| c.tid == t.tid)
                .map(|c| crate::tids::to_real(c.vtid))
                .unwrap_or(0)
        } else {
            0
        };
        let sev = KSigevent { value: t.sival, signo: t.signo, notify: t.notify, tid, pad: [0; 11] };
        let mut id: i32 = t.id;
        loop {
            // SAFETY: timer_create with a valid sigevent and id out-pointer.
            if unsafe { ckpt::sc!(libc::SYS_timer_create, t.clockid, &sev as *const KSigevent, &mut id as *mut i32) } != 0 {
                return Err(format!("cannot recreate POSIX timer {}: {}", t.id, std::io::Error::last_os_error()));
            }
            if by_id || id >= t.id {
                break;
            }
            fillers.push(id);
            id = t.id;
        }
        if id != t.id {
            return Err(format!("POSIX timer {} came back as {id}", t.id));
        }
        let ns = |v: u64| [(v / 1_000_000_000) as i64, (v % 1_000_000_000) as i64];
        let [is, ins] = ns(t.interval_ns);
        let [vs, vns] = ns(t.value_ns);
        let its = [is, ins, vs, vns];
        // SAFETY: arming our timer with a 4-word itimerspec.
        unsafe { ckpt::sc!(libc::SYS_timer_settime, id, 0, its.as_ptr(), 0usize) };
    }
    for id in fillers {
        // SAFETY: deleting a placeholder timer we created.
        unsafe { ckpt::sc!(libc::SYS_timer_delete, id) };
    }
    if by_id {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0) };
    }
    Ok(())
}
