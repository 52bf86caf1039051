//! The manager thread: waits for checkpoint requests (trigger signal or `mos ckpt` on the
//! control socket), freezes the application's threads, forks the image writer, thaws
//! the threads, and reports. After a restart it is the first to run shim code
//! (`restart.rs`: it cleans up after the restorer, recreates what lives outside memory,
//! and releases the application's threads). The freezing is `freeze.rs`, the shim's own
//! fds and the restorer's hand-over `process/`; nothing imports this module but `lib.rs`.
//! Here: the manager's loop and taking a checkpoint; `control.rs` serves the control socket.

use crate::ctxasm;
use crate::dump::{self, Plan};
use crate::freeze::{freeze, release_threads};
use crate::log::log;
use crate::process::fds::{detach_fd_table, high};
use crate::remote::shim_fds as internal_fds;
use crate::restart::restarted;
use ckpt::ctx::RESUMED;
use ckpt::sys;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::ffi::CString;
use std::time::Instant;

mod control;

use control::serve;

/// image writer that reported but may still be exiting
static PENDING_REAP: AtomicI32 = AtomicI32::new(0);

/// Set once the manager has its own fd table (start-up waits for it, so that the
/// application cannot close the shim's descriptors before the manager holds copies).
static DETACHED: AtomicU32 = AtomicU32::new(0);

/// Does the manager hold its own fd table yet?
/// A forked child starts its own manager: the parent's did not come along.
pub fn forked() {
    DETACHED.store(0, Ordering::Release);
}

pub fn detached() -> bool {
    DETACHED.load(Ordering::Acquire) != 0
}

/// Wait (at most `ms`) for the manager to hold its own fd table.
pub fn wait_detached(ms: u64) {
    sys::futex_wait(&DETACHED, 0, Some(ms));
}

pub fn run() {
    detach_fd_table(&crate::remote::shim_fds());
    DETACHED.store(1, Ordering::Release);
    sys::futex_wake(&DETACHED);
    // The manager only ever takes the trigger signal (so a process-directed request
    // reaches it even when the application blocks it everywhere).
    let trig = crate::signals::trigger_sig();
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(!sys::sigbit(trig)), None);
    crate::register::with_node();
    loop {
        let mut pfd = [
            libc::pollfd {
                fd: crate::process::fds::SHIM_FDS.trig_r.get(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: crate::process::fds::SHIM_FDS.listen.get(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: crate::process::fds::SHIM_FDS.control.get(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polling two pollfds we own.
        let timeout = if PENDING_REAP.load(Ordering::Relaxed) > 0 {
            100
        } else {
            -1
        };
        // SAFETY: as above.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 3, timeout) };
        reap(false);
        if n <= 0 {
            continue;
        }
        // The application closed or replaced our descriptors (closefrom-style daemons):
        // stop watching them rather than spin; `mos ckpt` then reports "not under the shim".
        if pfd[0].revents & (libc::POLLNVAL | libc::POLLERR | libc::POLLHUP) != 0 {
            crate::process::fds::SHIM_FDS.trig_r.set(-1);
            crate::process::fds::SHIM_FDS.trigger.set(-1);
        }
        if pfd[2].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            crate::migrate::on_control();
        }
        if pfd[0].revents & libc::POLLIN != 0 {
            let mut b = [0u8; 64];
            // SAFETY: draining our non-blocking pipe.
            while unsafe { libc::read(pfd[0].fd, b.as_mut_ptr().cast(), b.len()) } > 0 {}
            match checkpoint(None, false, None, Sink::NONE, false, -1, -1) {
                Outcome::Done { path, bytes, frozen_us, total_us, .. } => log(&format!("checkpoint written to {path} ({bytes} bytes, frozen {frozen_us} us, total {total_us} us)")),
                Outcome::Failed(e) => log(&format!("checkpoint failed: {e}")),
                Outcome::Restarted => {}
            }
        }
        if pfd[1].revents & libc::POLLIN != 0 {
            // SAFETY: accept on our listening socket.
            let c = unsafe {
                libc::accept4(
                    pfd[1].fd,
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c >= 0 {
                let c = high(c);
                crate::process::fds::SHIM_FDS.conn.set(c);
                serve(c);
                crate::process::fds::SHIM_FDS.conn.set(-1);
            }
        } else if pfd[1].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            crate::process::fds::SHIM_FDS.listen.set(-1);
        }
    }
}

enum Outcome {
    Done {
        path: String,
        bytes: u64,
        stop_us: u64,
        frozen_us: u64,
        threads: u32,
        total_us: u64,
        round_bytes: Vec<u64>,
        copy_us: u64,
    },
    Failed(String),
    Restarted,
}

fn default_path(comm: &str) -> String {
    let dir = crate::config::get()
        .map(|c| c.ckpt_dir.clone())
        .unwrap_or_else(|| ".".into());
    format!("{dir}/{comm}.{}.mosimg", crate::identity::vpid())
}

struct Defer<F: FnMut()>(F);
impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Reap the previous image writer if it has finished exiting.
fn reap(block: bool) {
    let pid = PENDING_REAP.load(Ordering::Acquire);
    if pid > 0 {
        let mut st = 0;
        let flags = libc::__WCLONE | if block { 0 } else { libc::WNOHANG };
        // SAFETY: waiting for our own clone child.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        if r == pid || (r < 0 && sys::errno() == libc::ECHILD) {
            PENDING_REAP.store(0, Ordering::Release);
        }
    }
}

/// `sink`: the descriptor a streamed image goes into (-1: a file). It is closed here.
/// `live`: copy memory into `sink` in rounds while the process runs first (pre-copy).
/// `requests`: post-copy, the pipe of the target's page requests (-1: not post-copy).
/// `notes`: the requester's connection, told of each copy round as it starts (-1: none).
fn checkpoint(out: Option<String>, exit: bool, migrate: Option<String>, sink: Sink, live: bool, requests: i32, notes: i32) -> Outcome {
    reap(true);
    let tc = Instant::now();
    let rounds = if live {
        let scratch = crate::rt::alloc::scratch_base() as u64;
        match crate::precopy::copy_rounds(sink.pipe, (scratch, scratch + crate::rt::alloc::SCRATCH_SIZE as u64), notes) {
            Ok(r) => Some(r),
            Err(e) => {
                sink.close();
                return Outcome::Failed(format!("live migration's copy rounds: {e}"));
            }
        }
    } else {
        None
    };
    let copy_us = tc.elapsed().as_micros() as u64;
    let outcome = checkpoint_now(out, exit, migrate, sink, rounds.as_ref(), requests);
    if requests >= 0 {
        // SAFETY: closing our copy of the request pipe (the writer child has its own).
        unsafe { libc::close(requests) };
    }
    if !matches!(outcome, Outcome::Done { .. }) {
        crate::state::dirty::close_tracker();
    }
    match (outcome, rounds) {
        (Outcome::Done { path, bytes, stop_us, frozen_us, threads, total_us, .. }, Some(r)) => Outcome::Done {
            path,
            bytes: bytes + r.stream_bytes,
            stop_us,
            frozen_us,
            threads,
            total_us,
            round_bytes: r.round_bytes,
            copy_us,
        },
        (o, _) => o,
    }
}

fn checkpoint_now(out: Option<String>, exit: bool, migrate: Option<String>, sink: Sink, rounds: Option<&crate::precopy::Rounds>, requests: i32) -> Outcome {
    let t0 = Instant::now();
    let me = sys::gettid();
    let slots = match freeze(me) {
        Ok(s) => s,
        Err(e) => {
            release_threads();
            sink.close();
            return Outcome::Failed(e);
        }
    };
    // a migration from home: the files go home first (the image marks them remote)
    let handed = migrate.is_some() && !crate::remote::went_away();
    if let Some(sock) = migrate.as_deref().filter(|_| handed) {
        if let Err(e) = crate::migrate::hand_off(sock, &internal_fds()) {
            release_threads();
            sink.close();
            return Outcome::Failed(e);
        }
    }
    let outcome = checkpoint_frozen(t0, me, slots, out, exit, sink, rounds, requests);
    if handed && matches!(outcome, Outcome::Failed(_)) {
        crate::migrate::undo_hand_off();
    }
    outcome
}

/// Where a streamed image goes: the pipe (-1: a file, not streamed), and the TCP lanes a
/// stop-and-copy image goes striped over instead (`ckpt::image::lanes`; `n` of them).
#[derive(Clone, Copy)]
pub(super) struct Sink {
    pub pipe: i32,
    pub lanes: [i32; ckpt::image::lanes::MAX_LANES],
    pub n: usize,
}

impl Sink {
    /// Not streamed: the image goes to a file.
    pub const NONE: Sink = Sink { pipe: -1, lanes: [-1; ckpt::image::lanes::MAX_LANES], n: 0 };

    /// Our copies of the sink's descriptors. The writer child has its own: once ours are
    /// closed, the reader sees the end of the image when the writer is done.
    fn close(&self) {
        for fd in core::iter::once(self.pipe).chain(self.lanes[..self.n].iter().copied()) {
            if fd >= 0 {
                // Raw: libc's close is the shim's own hook, which in a body away from
                // home takes a number it does not know as the application's.
                // SAFETY: closing a descriptor the requester sent us.
                unsafe { ckpt::sc!(libc::SYS_close, fd) };
            }
        }
    }
}

/// `sink` is closed here, in the process that took the image (a restored process has no
/// such descriptor: the number means nothing there).
#[allow(clippy::too_many_arguments)]
fn checkpoint_frozen(t0: Instant, me: i32, slots: Vec<usize>, out: Option<String>, exit: bool, sink: Sink, rounds: Option<&crate::precopy::Rounds>, requests: i32) -> Outcome {
    let n = slots.len() as u32;
    let stop_us = t0.elapsed().as_micros() as u64;
    let result = prepare(me, &slots, out, sink, rounds, requests);
    let (plan, rfd) = match result {
        Ok(p) => p,
        Err(e) => {
            release_threads();
            sink.close();
            return Outcome::Failed(e);
        }
    };
    let mut plan = Box::new(plan);
    // A stop-and-copy migration over lanes (the application stays frozen until the image
    // is safe): the manager sends the pages from the frozen process (dump/xfer.rs).
    if exit && !plan.lanes.is_empty() && plan.live.is_none() && plan.lazy_requests < 0 {
        plan.xfer = dump::xfer::Xfer::map(&[&*plan as *const Plan as u64]);
    }
    dump::set_plan(&*plan as *const Plan as *mut Plan);
    crate::freeze::set_nthreads(n);
    crate::signals::reset_resumed();
    let top = crate::rt::alloc::scratch_base() + crate::rt::alloc::SCRATCH_SIZE;
    // The writer is a fork: memory advised DONTFORK would be missing from its snapshot,
    // and WIPEONFORK memory zero. Lifted for the fork, given back right after it (the
    // writer records them from the plan).
    crate::state::memory::fork_advice(&plan.fork_advice, false);
    let t_fork = t0.elapsed();
    // SAFETY: the manager's saved context is ours; the child runs dump::writer_child_main on the scratch stack.
    let child = unsafe { ctxasm::mos_ctx_fork(crate::process::ctx::manager_ctx(), dump::writer_child_main, top) };
    // Before anything else writes memory here: send what the child hands over.
    let t_forked = t0.elapsed();
    let sent = match &plan.xfer {
        Some(x) if child > 0 && child as u64 != RESUMED => x.parent_send(&plan.lanes, child as i32),
        _ => None,
    };
    if let Some(x) = &plan.xfer {
        if child as u64 != RESUMED {
            x.unmap();
        }
    }
    crate::state::memory::fork_advice(&plan.fork_advice, true);
    if plan.xfer.is_some() && child as u64 != RESUMED && std::env::var_os(crate::config::DEBUG_TIMING).is_some() {
        log(&format!("manager: pages sent from the frozen process: {sent:?}; fork at {t_fork:?}, forked {t_forked:?}, handed over {:?}, sent {:?} after the freeze began", plan.xfer.as_ref().and_then(|x| x.handed_at()).map(|h| h.duration_since(t0)), t0.elapsed()));
    }
    if child as u64 == RESUMED {
        // We are the restored process: `rfd`, the copies and a live migration's write
        // tracker belong to the old one.
        crate::state::dirty::forget_tracker();
        restarted(&plan.meta);
        core::mem::forget(plan);
        return Outcome::Restarted;
    }
    sink.close();
    // With --exit the application must not run past the snapshot (its output would be
    // produced twice): it stays frozen until the image is safe, then exits.
    if !exit {
        release_threads();
    }
    let frozen_us = t0.elapsed().as_micros() as u64;
    // released here unless the image is safe and the caller is about to exit
    let keep_frozen = core::cell::Cell::new(false);
    let _release_on_failure = Defer(|| {
        if exit && !keep_frozen.get() {
            release_threads();
        }
    });
    // the process runs on: each kind lets go of what its capture held (state::KINDS)
    let _resumed = Defer(|| crate::state::resumed(&crate::state::ResumeCx { shared: &plan.shared }));
    // SAFETY: closing the write end we gave the child.
    unsafe { libc::close(plan.result_fd) };
    if child < 0 {
        // SAFETY: closing our read end.
        unsafe { libc::close(rfd) };
        return Outcome::Failed(format!(
            "fork for the image writer failed: {}",
            std::io::Error::from_raw_os_error(-child as i32)
        ));
    }
    // The report is one line written before the writer exits; tearing down its copy of
    // the address space takes a while, so reap it later unless it died without a report.
    let mut msg = Vec::new();
    let mut b = [0u8; 4096];
    while !msg.ends_with(b"\n") {
        // SAFETY: reading the child's report from our pipe.
        let k = unsafe { libc::read(rfd, b.as_mut_ptr().cast(), b.len()) };
        if k < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        if k <= 0 {
            break;
        }
        msg.extend_from_slice(&b[..k as usize]);
    }
    let mut status = 0;
    // SAFETY: closing our fd; reaping our clone child (no exit signal, hence __WCLONE).
    unsafe {
        libc::close(rfd);
        if msg.ends_with(b"\n") {
            PENDING_REAP.store(child as i32, Ordering::Release);
        } else {
            while libc::waitpid(child as i32, &mut status, libc::__WCLONE) < 0
                && sys::errno() == libc::EINTR
            {}
        }
    }
    let msg = String::from_utf8_lossy(&msg).into_owned();
    let total_us = t0.elapsed().as_micros() as u64;
    let path = plan.dest.to_string_lossy().into_owned();
    if let Some(Err(e)) = sent {
        return Outcome::Failed(format!("streaming the image over {} lanes: {}", plan.lanes.len(), std::io::Error::from_raw_os_error(e)));
    }
    if let Some(nb) = msg.strip_prefix("OK ") {
        keep_frozen.set(exit);
        Outcome::Done {
            path,
            bytes: nb.trim().parse().unwrap_or(0),
            stop_us,
            frozen_us,
            threads: n + 1,
            total_us,
            round_bytes: Vec::new(),
            copy_us: 0,
        }
    } else if let Some(e) = msg.strip_prefix("ERR ") {
        Outcome::Failed(e.trim_end().to_string())
    } else {
        // SAFETY: removing the writer's temp file after it died.
        unsafe { libc::unlink(plan.tmp.as_ptr()) };
        Outcome::Failed(format!(
            "image writer died (wait status {status:#x}); nothing was written to {path}"
        ))
    }
}

/// Capture everything but memory while threads are frozen, and build the writer's plan.
fn prepare(me: i32, slots: &[usize], out: Option<String>, sink: Sink, rounds: Option<&crate::precopy::Rounds>, requests: i32) -> Result<(Plan, i32), String> {
    // Child processes are not checkpointed with their parent (yet): refuse.
    // SAFETY: siginfo is plain data; waitid with WNOWAIT|WNOHANG only looks.
    let mut si: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let opts = libc::WNOHANG | libc::WNOWAIT | libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::__WALL;
    // SAFETY: as above; P_ALL = 0.
    let r = unsafe { ckpt::sc!(libc::SYS_waitid, 0, 0, &mut si as *mut libc::siginfo_t, opts, 0usize) };
    if r == 0 {
        return Err("the process has child processes; processes with children cannot be checkpointed yet (only single processes, with any number of threads)".into());
    }
    let mut internal = internal_fds();
    internal.push(crate::state::dirty::tracker_fd());
    // The capture lists the application's table; the requester's descriptors (post-copy's
    // request pipe, the lanes) are in ours, where their numbers may be the application's
    // fds 0, 1, 2 (ours holds only the shim's), unless we share its table (unshare failed).
    if crate::process::fds::SHIM_FDS.manager_own_table_tid() != sys::gettid() {
        internal.push(requests);
        internal.extend_from_slice(&sink.lanes[..sink.n]);
    }
    let mut meta = dump::capture_process(&internal)?;
    meta.vpid = crate::identity::vpid();
    crate::state::threads::capture_threads(&mut meta, me, slots)?;
    meta.resume_entry = ctxasm::mos_ctx_resume_entry as *const () as u64;
    meta.restart_info = crate::process::ctx::restart_info_ptr() as u64;
    let dest = out.unwrap_or_else(|| default_path(&meta.comm));
    let (dir, name) = match dest.rsplit_once('/') {
        Some((d, n)) => (
            if d.is_empty() {
                "/".to_string()
            } else {
                d.to_string()
            },
            n.to_string(),
        ),
        None => (".".to_string(), dest.clone()),
    };
    if name.is_empty() {
        return Err(format!("image path {dest} names a directory"));
    }
    let tmp = format!("{dir}/.{name}.tmp.{}", crate::identity::real_pid());
    let cs = |s: &str| CString::new(s).map_err(|_| format!("path contains NUL: {s:?}"));
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills p.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let base = crate::rt::alloc::scratch_base() as u64;
    let plan = Plan {
        meta,
        tmp: cs(&tmp)?,
        dest: cs(&dest)?,
        dir: cs(&dir)?,
        result_fd: p[1],
        sink: sink.pipe,
        lanes: sink.lanes[..sink.n].to_vec(),
        scratch: (base, base + crate::rt::alloc::SCRATCH_SIZE as u64),
        shared: crate::state::memory::copy_shared()?,
        live: rounds.map(|r| dump::live::LivePlan { layout: r.layout.clone(), parent: crate::identity::real_pid() }),
        lazy_requests: requests,
        fork_advice: crate::state::memory::fork_advised(&crate::state::read_str("/proc/self/status")?)?,
        xfer: None,
    };
    Ok((plan, p[0]))
}

#[allow(dead_code)]
fn _unused(_: AtomicU32) {}
