//! The manager thread: waits for checkpoint requests (trigger signal or `mos ckpt` on the
//! control socket), freezes the application's threads, forks the image writer, thaws
//! the threads, and reports. After a restart it is the first to run shim code: it
//! cleans up after the restorer, recreates what lives outside memory (pipe, socket),
//! and releases the application's threads.

use crate::config::CONFIG;
use crate::ctxasm;
use crate::dump::{self, Plan};
use crate::log::log;
use crate::rawfs;
use crate::signals::*;
use ckpt::control::{socket_name, CkptReply, CkptRequest, MAX_MSG};
use ckpt::ctx::{RestartInfo, ThreadCtx, RESUMED};
use ckpt::image::ThreadRec;
use ckpt::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::ffi::CString;
use std::time::{Duration, Instant};

pub static TRIG_R: AtomicI32 = AtomicI32::new(-1);
pub static LISTEN: AtomicI32 = AtomicI32::new(-1);
/// the control connection being served, if any
pub static CONN: AtomicI32 = AtomicI32::new(-1);
/// image writer that reported but may still be exiting
static PENDING_REAP: AtomicI32 = AtomicI32::new(0);
/// number of application threads frozen in the last checkpoint
static NTHREADS: AtomicU32 = AtomicU32::new(0);

pub struct Cell<T>(pub UnsafeCell<T>);
// SAFETY: MANAGER_CTX is written by the manager thread only; RESTART_INFO by the
// restorer before any thread runs, then read by the manager.
unsafe impl<T> Sync for Cell<T> {}
pub static MANAGER_CTX: Cell<ThreadCtx> = Cell(UnsafeCell::new(ThreadCtx {
    regs: [0; 8],
    fs_base: 0,
    tid_addr: 0,
    robust_head: 0,
    robust_len: 0,
    rseq_addr: 0,
    rseq_len: 0,
    rseq_sig: 0,
    altstack_sp: 0,
    altstack_flags: 0,
    altstack_size: 0,
    mask: 0,
    tid: 0,
    is_main: 0,
    vtid: 0,
    _pad: 0,
    name: [0; 16],
        pending: 0,
}));
pub static RESTART_INFO: Cell<RestartInfo> = Cell(UnsafeCell::new(RestartInfo::zeroed()));

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// lowest fd number for the shim's own descriptors, away from the application's
const HIGH_FD: i32 = 800;

pub fn high(fd: i32) -> i32 {
    if fd < 0 {
        return fd;
    }
    // Below the soft fd limit (an application may have lowered it), else keep the fd.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit into our struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let base = (HIGH_FD as u64).min(lim.rlim_cur.saturating_sub(16)) as i32;
    if base <= fd {
        return fd;
    }
    // SAFETY: duplicating our own fd to a high number, then closing the original.
    unsafe {
        let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base);
        if h < 0 {
            return fd;
        }
        libc::close(fd);
        h
    }
}

/// Create the wake-up pipe and the control socket (at start and after each restart).
pub fn open_channels() {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills p.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == 0 {
        TRIG_R.store(high(p[0]), Ordering::Release);
        TRIGGER_FD.store(high(p[1]), Ordering::Release);
    }
    LISTEN.store(
        high(listen_socket(REAL_PID.load(Ordering::Relaxed))),
        Ordering::Release,
    );
}

fn listen_socket(pid: i32) -> i32 {
    let name = socket_name(pid);
    // SAFETY: plain socket/bind/listen on a sockaddr_un we build.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return -1;
        }
        let mut addr: libc::sockaddr_un = core::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as u16;
        for (i, b) in name.bytes().enumerate() {
            addr.sun_path[i + 1] = b as libc::c_char;
        }
        let len = (core::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as u32;
        if libc::bind(s, &addr as *const _ as *const libc::sockaddr, len) != 0
            || libc::listen(s, 8) != 0
        {
            log(&format!(
                "cannot listen on @{name}: {}",
                std::io::Error::last_os_error()
            ));
            libc::close(s);
            return -1;
        }
        s
    }
}

pub fn internal_fds() -> Vec<i32> {
    let mut v: Vec<i32> = [&TRIG_R, &TRIGGER_FD, &LISTEN, &CONN, &crate::migrate::CONTROL, &crate::migrate::STUB_CONN]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&fd| fd >= 0)
        .collect();
    v.extend(crate::remote::internal_fds());
    v
}

/// The manager keeps its own fd table (unshare(CLONE_FILES)) holding only the shim's own
/// descriptors. While no other thread shares the application's table, the kernel looks its
/// fds up without atomic reference counting: a shared table would add ~40 ns to every fd
/// system call of the application (see `make bench`). It also means the application
/// closing every fd cannot take the control socket away. The manager reaches application
/// fds through /proc/self (the thread group leader's table) and [`app_fd`].
pub fn detach_fd_table() {
    // SAFETY: unshare of our own fd table.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        log(&format!("cannot unshare the fd table: {}", std::io::Error::last_os_error()));
        return;
    }
    crate::remote::MANAGER_OWN_TABLE_TID.store(sys::gettid(), Ordering::Relaxed);
    let keep = internal_fds();
    if let Ok(fds) = rawfs::list_dir_numbers("/proc/thread-self/fd") {
        for fd in fds.into_iter().map(|f| f as i32).filter(|f| !keep.contains(f)) {
            // SAFETY: closing our copy of an application fd (the application keeps its own).
            unsafe { libc::close(fd) };
        }
    }
}

/// A copy, in the manager's table, of the application's fd `fd` (pidfd_getfd).
pub fn app_fd(fd: i32) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open/pidfd_getfd on our own process; the results are fds we own.
    unsafe {
        let pidfd = ckpt::sc!(libc::SYS_pidfd_open, REAL_PID.load(Ordering::Relaxed), 0);
        if pidfd < 0 {
            return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
        }
        let r = ckpt::sc!(libc::SYS_pidfd_getfd, pidfd, fd, 0);
        let e = std::io::Error::last_os_error();
        libc::close(pidfd as i32);
        if r < 0 {
            return Err(format!("cannot reach fd {fd}: {e}"));
        }
        Ok(std::os::fd::OwnedFd::from_raw_fd(r as i32))
    }
}

/// Set once the manager has its own fd table (start-up waits for it, so that the
/// application cannot close the shim's descriptors before the manager holds copies).
pub static DETACHED: AtomicU32 = AtomicU32::new(0);

pub fn run() {
    detach_fd_table();
    DETACHED.store(1, Ordering::Release);
    sys::futex_wake(&DETACHED);
    // The manager only ever takes the trigger signal (so a process-directed request
    // reaches it even when the application blocks it everywhere).
    let trig = TRIGGER_SIG.load(Ordering::Relaxed);
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(!sys::sigbit(trig)), None);
    crate::register::with_node();
    loop {
        let mut pfd = [
            libc::pollfd {
                fd: TRIG_R.load(Ordering::Acquire),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: LISTEN.load(Ordering::Acquire),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: crate::migrate::CONTROL.load(Ordering::Acquire),
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
            TRIG_R.store(-1, Ordering::Release);
            TRIGGER_FD.store(-1, Ordering::Release);
        }
        if pfd[2].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            crate::migrate::on_control();
        }
        if pfd[0].revents & libc::POLLIN != 0 {
            let mut b = [0u8; 64];
            // SAFETY: draining our non-blocking pipe.
            while unsafe { libc::read(pfd[0].fd, b.as_mut_ptr().cast(), b.len()) } > 0 {}
            match checkpoint(None, false, None, -1) {
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
                CONN.store(c, Ordering::Release);
                serve(c);
                CONN.store(-1, Ordering::Release);
            }
        } else if pfd[1].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            LISTEN.store(-1, Ordering::Release);
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
    },
    Failed(String),
    Restarted,
}

fn peer_uid(c: i32) -> Option<u32> {
    // SAFETY: ucred is plain data; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::ucred>() as u32;
    // SAFETY: SO_PEERCRED with a correctly sized buffer.
    let r = unsafe {
        libc::getsockopt(
            c,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut _,
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

fn serve(c: i32) {
    let reply = |c: i32, r: &CkptReply| {
        if let Ok(b) = postcard::to_allocvec(r) {
            // SAFETY: writing our buffer to our socket.
            unsafe { libc::write(c, b.as_ptr().cast(), b.len()) };
        }
    };
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    match peer_uid(c) {
        Some(u) if u == me || u == 0 => {}
        _ => {
            reply(
                c,
                &CkptReply::Failed("permission denied: peer runs as another user".into()),
            );
            // SAFETY: closing our fd.
            unsafe { libc::close(c) };
            return;
        }
    }
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: setting a receive timeout on our socket.
    unsafe {
        libc::setsockopt(
            c,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const _,
            core::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // The request ends where it parses (a streamed one's connection stays open for the
    // verdict); a sink for a streamed image comes attached to it.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut sink = -1;
    let parsed = loop {
        let (n, fd) = recv_with_fd(c, &mut chunk);
        if fd >= 0 {
            if sink >= 0 {
                // SAFETY: closing a second descriptor we were sent and do not use.
                unsafe { libc::close(sink) };
            }
            sink = fd;
        }
        if n <= 0 || buf.len() > MAX_MSG {
            break postcard::from_bytes::<CkptRequest>(&buf);
        }
        buf.extend_from_slice(&chunk[..n as usize]);
        if let Ok(r) = postcard::from_bytes::<CkptRequest>(&buf) {
            break Ok(r);
        }
    };
    let close_sink = || {
        if sink >= 0 {
            // SAFETY: closing the descriptor we were sent.
            unsafe { libc::close(sink) };
        }
    };
    let req = match parsed {
        Ok(r) if r.stream && sink < 0 => {
            reply(c, &CkptReply::Failed("a streamed checkpoint needs a descriptor to write the image into; none came with the request".into()));
            // SAFETY: closing our fd.
            unsafe { libc::close(c) };
            return;
        }
        Ok(r) => r,
        Err(e) => {
            reply(c, &CkptReply::Failed(format!("malformed request: {e}")));
            close_sink();
            // SAFETY: closing our fd.
            unsafe { libc::close(c) };
            return;
        }
    };
    if !req.stream {
        close_sink();
        sink = -1;
    }
    let migrating = req.migrate.is_some();
    let was_remote = crate::remote::REMOTE.load(Ordering::Acquire);
    let exit = req.exit || migrating || req.stream;
    match checkpoint(req.out, exit, req.migrate, sink) {
        // The connection belongs to the process that took the image; in the restored
        // process that fd number means nothing: forget it.
        Outcome::Restarted => {}
        Outcome::Done { path, bytes, stop_us, frozen_us, threads, total_us } => {
            reply(c, &CkptReply::Done { path, bytes, stop_us, frozen_us, threads, total_us });
            if req.stream && !committed(c) {
                // The image did not arrive, or not whole, where it went: undo, run on.
                log("streamed checkpoint not committed by the requester: the process runs on here");
                if migrating && !was_remote {
                    crate::migrate::undo_hand_off();
                }
                reap(true);
                release_threads();
                // SAFETY: closing our fd.
                unsafe { libc::close(c) };
                return;
            }
            // SAFETY: closing our fd; with --exit the image is safe, so leave now without
            // flushing stdio (unflushed output lives on in the image).
            unsafe {
                libc::close(c);
                if migrating && !was_remote {
                    reap(true);
                    crate::migrate::run_stub();
                }
                if migrating {
                    crate::migrate::leaving();
                }
                if exit {
                    reap(true); // no zombie writer left to init
                    ckpt::sc!(libc::SYS_exit_group, 0);
                }
            }
        }
        Outcome::Failed(e) => {
            log(&format!(
                "checkpoint failed: {e} (internal fds {:?})",
                internal_fds()
            ));
            reply(c, &CkptReply::Failed(e));
            // SAFETY: closing our fd.
            unsafe { libc::close(c) };
        }
    }
}

/// One read of the control connection into `buf`, with a descriptor if one came along
/// (close-on-exec). Returns the byte count (<= 0: end or error) and the fd or -1.
fn recv_with_fd(c: i32, buf: &mut [u8]) -> (isize, i32) {
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; its pointers refer to our locals for the call.
    let mut mh: libc::msghdr = unsafe { core::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = core::mem::size_of_val(&cbuf);
    // SAFETY: receiving into our buffers.
    let n = unsafe { libc::recvmsg(c, &mut mh, libc::MSG_CMSG_CLOEXEC) };
    let mut fd = -1;
    if n >= 0 {
        // SAFETY: walking the control messages the kernel wrote into cbuf.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(&mh);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cm).cast::<i32>();
                    let count = ((*cm).cmsg_len - libc::CMSG_LEN(0) as usize) / core::mem::size_of::<i32>();
                    for i in 0..count {
                        let f = core::ptr::read_unaligned(data.add(i));
                        if fd < 0 {
                            fd = f;
                        } else {
                            libc::close(f);
                        }
                    }
                }
                cm = libc::CMSG_NXTHDR(&mh, cm);
            }
        }
    }
    (n as isize, fd)
}

/// Wait (frozen) for the requester's verdict on a streamed image: true on
/// [`ckpt::control::COMMIT`], false on anything else, the connection closing or the
/// timeout.
fn committed(c: i32) -> bool {
    let tv = libc::timeval { tv_sec: ckpt::control::VERDICT_TIMEOUT_S, tv_usec: 0 };
    // SAFETY: setting a receive timeout on our socket.
    unsafe { libc::setsockopt(c, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const _, core::mem::size_of::<libc::timeval>() as u32) };
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading one byte into our buffer.
        let n = unsafe { libc::read(c, b.as_mut_ptr().cast(), 1) };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        return n == 1 && b[0] == ckpt::control::COMMIT;
    }
}

/// Park every application thread (a stopped body); false if they would not stop.
pub fn pause_app() -> bool {
    match freeze(sys::gettid()) {
        Ok(_) => true,
        Err(e) => {
            release_threads();
            log(&format!("cannot stop the application: {e}"));
            false
        }
    }
}

/// Let the threads parked by [`pause_app`] go on.
pub fn resume_app() {
    release_threads();
}

fn release_threads() {
    FREEZING.store(false, Ordering::Release);
    RELEASE.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&RELEASE);
}

/// Stop every thread but this one; returns how many parked.
/// Stop every thread but this one; returns the slots of the threads that parked.
fn freeze(me: i32) -> Result<Vec<usize>, String> {
    let pid = REAL_PID.load(Ordering::Relaxed);
    let sig = FREEZE_SIG.load(Ordering::Relaxed);
    for (t, p) in SLOT_TID.iter().zip(SLOT_PARKED.iter()) {
        t.store(0, Ordering::Relaxed);
        p.store(0, Ordering::Relaxed);
    }
    PARKED.store(0, Ordering::Release);
    FREEZE_GEN.fetch_add(1, Ordering::AcqRel);
    FREEZING.store(true, Ordering::Release);
    let mut assigned: Vec<i32> = Vec::new();
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let tids = rawfs::list_dir_numbers("/proc/self/task")
            .map_err(|e| format!("listing threads: {e}"))?;
        let new: Vec<i32> = tids
            .iter()
            .map(|&t| t as i32)
            .filter(|t| *t != me && !assigned.contains(t))
            .collect();
        if new.is_empty() {
            // Threads that exited while we were freezing simply are not in the image.
            return Ok((0..MAX_THREADS).filter(|&i| SLOT_PARKED[i].load(Ordering::Acquire) == 1).collect());
        }
        for t in new {
            // slot = position in `assigned`; a thread gone before the signal keeps its slot
            if assigned.len() >= MAX_THREADS {
                return Err(format!("more than {MAX_THREADS} threads"));
            }
            SLOT_TID[assigned.len()].store(t, Ordering::Release);
            assigned.push(t);
            // SAFETY: tgkill to a thread of our own process (ESRCH if it already exited).
            unsafe { ckpt::sc!(libc::SYS_tgkill, pid, t, sig) };
        }
        // Wait until every signalled thread parked (threads that exited meanwhile drop out).
        loop {
            let parked = PARKED.load(Ordering::Acquire);
            let alive: Vec<i32> = assigned
                .iter()
                .copied()
                // SAFETY: tgkill with signal 0 only checks the thread exists.
                .filter(|&t| unsafe { ckpt::sc!(libc::SYS_tgkill, pid, t, 0) } == 0)
                .collect();
            if parked as usize >= alive.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {} threads did not stop within {:?} (blocked in an uninterruptible call, or blocking signal {sig}?)",
                    alive.len() - parked as usize,
                    alive.len(),
                    FREEZE_TIMEOUT
                ));
            }
            sys::futex_wait(&PARKED, parked, Some(10));
        }
    }
}

fn default_path(comm: &str) -> String {
    let dir = CONFIG
        .get()
        .map(|c| c.ckpt_dir.clone())
        .unwrap_or_else(|| ".".into());
    format!("{dir}/{comm}.{}.mosimg", VPID.load(Ordering::Relaxed))
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
fn checkpoint(out: Option<String>, exit: bool, migrate: Option<String>, sink: i32) -> Outcome {
    reap(true);
    let t0 = Instant::now();
    let me = sys::gettid();
    let slots = match freeze(me) {
        Ok(s) => s,
        Err(e) => {
            release_threads();
            close_sink(sink);
            return Outcome::Failed(e);
        }
    };
    // a migration from home: the files go home first (the image marks them remote)
    let handed = migrate.is_some() && !crate::remote::REMOTE.load(Ordering::Acquire);
    if let Some(sock) = migrate.as_deref().filter(|_| handed) {
        if let Err(e) = crate::migrate::hand_off(sock, &internal_fds()) {
            release_threads();
            close_sink(sink);
            return Outcome::Failed(e);
        }
    }
    let outcome = checkpoint_frozen(t0, me, slots, out, exit, sink);
    if handed && matches!(outcome, Outcome::Failed(_)) {
        crate::migrate::undo_hand_off();
    }
    outcome
}

/// Our copy of a streamed image's sink (-1: none). The writer child has its own: once
/// ours is closed, the reader sees the end of the image when the writer is done.
fn close_sink(sink: i32) {
    if sink >= 0 {
        // SAFETY: closing the descriptor the requester sent us.
        unsafe { libc::close(sink) };
    }
}

/// `sink` is closed here, in the process that took the image (a restored process has no
/// such descriptor: the number means nothing there).
fn checkpoint_frozen(t0: Instant, me: i32, slots: Vec<usize>, out: Option<String>, exit: bool, sink: i32) -> Outcome {
    let n = slots.len() as u32;
    let stop_us = t0.elapsed().as_micros() as u64;
    let result = prepare(me, &slots, out, sink);
    let (plan, rfd) = match result {
        Ok(p) => p,
        Err(e) => {
            release_threads();
            close_sink(sink);
            return Outcome::Failed(e);
        }
    };
    let plan = Box::new(plan);
    dump::PLAN.store(&*plan as *const Plan as *mut Plan, Ordering::Release);
    NTHREADS.store(n, Ordering::Release);
    RESUMED_COUNT.store(0, Ordering::Release);
    let top = crate::alloc::SCRATCH.load(Ordering::Relaxed) + crate::alloc::SCRATCH_SIZE;
    // SAFETY: MANAGER_CTX is ours; the child runs dump::writer_child_main on the scratch stack.
    let child = unsafe { ctxasm::mos_ctx_fork(MANAGER_CTX.0.get(), dump::writer_child_main, top) };
    if child as u64 == RESUMED {
        // We are the restored process: `rfd` and the copies belong to the old one.
        restarted(&plan.meta);
        core::mem::forget(plan);
        return Outcome::Restarted;
    }
    close_sink(sink);
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
    let _free_copies = Defer(|| dump::free_shared(&plan.shared));
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
    if let Some(nb) = msg.strip_prefix("OK ") {
        keep_frozen.set(exit);
        Outcome::Done {
            path,
            bytes: nb.trim().parse().unwrap_or(0),
            stop_us,
            frozen_us,
            threads: n + 1,
            total_us,
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
fn prepare(me: i32, slots: &[usize], out: Option<String>, sink: i32) -> Result<(Plan, i32), String> {
    // Child processes are not checkpointed with their parent (yet): refuse.
    // SAFETY: siginfo is plain data; waitid with WNOWAIT|WNOHANG only looks.
    let mut si: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let opts = libc::WNOHANG | libc::WNOWAIT | libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::__WALL;
    // SAFETY: as above; P_ALL = 0.
    let r = unsafe { ckpt::sc!(libc::SYS_waitid, 0, 0, &mut si as *mut libc::siginfo_t, opts, 0usize) };
    if r == 0 {
        return Err("the process has child processes; processes with children cannot be checkpointed yet (only single processes, with any number of threads)".into());
    }
    let mut meta = dump::capture_process(&internal_fds())?;
    meta.vpid = VPID.load(Ordering::Relaxed);
    for &i in slots {
        // SAFETY: thread i parked, so its slot is complete and no longer written.
        let c = unsafe { &*slot_ptr(i) };
        meta.threads.push(ThreadRec {
            old_tid: c.vtid,
            ctx_addr: slot_ptr(i) as u64,
            fs_base: c.fs_base,
            tid_addr: c.tid_addr,
            is_main: c.is_main != 0,
            is_manager: false,
        });
    }
    // SAFETY: only the manager thread touches MANAGER_CTX.
    let mc = unsafe { &mut *MANAGER_CTX.0.get() };
    capture_thread_state(mc);
    meta.threads.push(ThreadRec {
        old_tid: me,
        ctx_addr: mc as *mut ThreadCtx as u64,
        fs_base: mc.fs_base,
        tid_addr: mc.tid_addr,
        is_main: false,
        is_manager: true,
    });
    if !meta.threads.iter().any(|t| t.is_main) {
        return Err("the main thread has exited; such a process cannot be restarted yet".into());
    }
    meta.resume_entry = ctxasm::mos_ctx_resume_entry as *const () as u64;
    meta.restart_info = RESTART_INFO.0.get() as u64;
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
    let tmp = format!("{dir}/.{name}.tmp.{}", REAL_PID.load(Ordering::Relaxed));
    let cs = |s: &str| CString::new(s).map_err(|_| format!("path contains NUL: {s:?}"));
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills p.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let base = crate::alloc::SCRATCH.load(Ordering::Relaxed) as u64;
    let plan = Plan {
        meta,
        tmp: cs(&tmp)?,
        dest: cs(&dest)?,
        dir: cs(&dir)?,
        result_fd: p[1],
        sink,
        scratch: (base, base + crate::alloc::SCRATCH_SIZE as u64),
        shared: dump::copy_shared()?,
    };
    Ok((plan, p[0]))
}

/// Restart path of the manager: every thread is back; clean up and let them go.
fn restarted(meta: &ckpt::image::ImageMeta) {
    // the restorer made this thread share the application's table again (until the end)
    crate::remote::MANAGER_OWN_TABLE_TID.store(0, Ordering::Relaxed);
    // SAFETY: the restorer wrote RESTART_INFO before any thread ran.
    let info = unsafe { *RESTART_INFO.0.get() };
    REAL_PID.store(
        if info.pid > 0 {
            info.pid as i32
        } else {
            sys::getpid_real()
        },
        Ordering::Release,
    );
    let n = NTHREADS.load(Ordering::Acquire);
    loop {
        let k = RESUMED_COUNT.load(Ordering::Acquire);
        if k >= n {
            break;
        }
        sys::futex_wait(&RESUMED_COUNT, k, Some(10));
    }
    for r in &info.ranges[..info.nranges as usize] {
        // SAFETY: these were the restorer's own mappings; no thread runs there any more.
        unsafe { libc::munmap(r[0] as *mut _, (r[1] - r[0]) as usize) };
    }
    open_channels();
    crate::migrate::CONTROL.store(-1, Ordering::Release);
    crate::migrate::STUB_CONN.store(-1, Ordering::Release);
    if crate::remote::SESSION_SET.load(Ordering::Acquire) {
        crate::migrate::enter_remote(&meta.fds);
    }
    raise_pending(meta);
    if let Err(e) = restore_timers(meta) {
        log(&format!("restart: {e}"));
    }
    release_threads();
    detach_fd_table();
    log(&format!(
        "restarted as pid {}",
        REAL_PID.load(Ordering::Relaxed)
    ));
}

/// Signals that were pending when the image was taken are raised again (once each: the
/// kernel's queue of real-time signal instances and their siginfo are not saved).
fn raise_pending(meta: &ckpt::image::ImageMeta) {
    let ours = sys::sigbit(TRIGGER_SIG.load(Ordering::Relaxed)) | sys::sigbit(FREEZE_SIG.load(Ordering::Relaxed)) | sys::sigbit(crate::config::SIG_CANCEL) | sys::sigbit(crate::config::SIG_SETXID);
    let pid = REAL_PID.load(Ordering::Relaxed);
    for t in meta.threads.iter().filter(|t| !t.is_manager) {
        // SAFETY: the restored thread's context (read only).
        let c = unsafe { &*(t.ctx_addr as *const ThreadCtx) };
        let own = c.pending & !meta.shared_pending & !ours;
        for sig in (1..=64).filter(|&s| own & sys::sigbit(s) != 0) {
            // SAFETY: signal to a thread of our own process.
            unsafe { ckpt::sc!(libc::SYS_tgkill, pid, crate::tids::to_real(c.vtid), sig) };
        }
    }
    for sig in (1..=64).filter(|&s| meta.shared_pending & !ours & sys::sigbit(s) != 0) {
        // SAFETY: process-directed signal to ourselves.
        unsafe { ckpt::sc!(libc::SYS_kill, pid, sig) };
    }
}

/// Recreate POSIX timers with their old ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+;
/// older kernels hand out ids in order, so gaps are filled with placeholders).
fn restore_timers(meta: &ckpt::image::ImageMeta) -> Result<(), String> {
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

/// Per-thread kernel state after a restart; called by `mos_ctx_resume_entry` on every
/// restored thread, on its own saved stack. Raw syscalls only.
#[no_mangle]
pub extern "C" fn mos_thread_resumed(ctx: *mut ThreadCtx) {
    // SAFETY: ctx is a slot of the restored process, filled at checkpoint time.
    let c = unsafe { &*ctx };
    let tid = sys::gettid();
    // SAFETY: raw syscalls re-establishing this thread's kernel state at addresses that
    // were valid for it when the image was taken (same memory now).
    unsafe {
        if c.tid_addr != 0 {
            ckpt::sc!(libc::SYS_set_tid_address, c.tid_addr);
            // glibc keeps the tid it knew (mutex owners, recursion counts compare it);
            // the kernel's tid is mapped by crate::tids.
            core::ptr::write_volatile(c.tid_addr as *mut i32, c.vtid);
        }
        if c.robust_head != 0 {
            ckpt::sc!(libc::SYS_set_robust_list, c.robust_head, c.robust_len);
        }
        if c.rseq_addr != 0 {
            // struct rseq: cpu_id_start u32, cpu_id u32, rseq_cs u64, flags u32
            core::ptr::write_volatile((c.rseq_addr + 4) as *mut u32, u32::MAX);
            core::ptr::write_volatile((c.rseq_addr + 8) as *mut u64, 0);
            ckpt::sc!(libc::SYS_rseq, c.rseq_addr, c.rseq_len, 0, c.rseq_sig);
        }
        if c.altstack_size != 0 {
            let ss = libc::stack_t {
                ss_sp: c.altstack_sp as *mut _,
                ss_flags: c.altstack_flags as i32,
                ss_size: c.altstack_size as usize,
            };
            libc::sigaltstack(&ss, core::ptr::null_mut());
        }
    }
    crate::tids::register(ctx, c.fs_base, c.vtid, tid);
    if c.name[0] != 0 {
        // SAFETY: the saved name is NUL-terminated within 16 bytes (PR_GET_NAME wrote it).
        unsafe { libc::prctl(libc::PR_SET_NAME, c.name.as_ptr()) };
    }
    let remote = crate::remote::SESSION_SET.load(Ordering::Acquire);
    let mask = if remote { c.mask & !sys::sigbit(libc::SIGSYS) } else { c.mask };
    sys::rt_sigprocmask(libc::SIG_SETMASK, Some(mask), None);
    if ctx == MANAGER_CTX.0.get() {
        return;
    }
    if remote {
        // every system call of this thread outside the shim now traps (see crate::remote)
        crate::remote::REMOTE.store(true, Ordering::Release);
        crate::remote::enable_thread();
    }
    resumed_wait(RELEASE.load(Ordering::Acquire));
}

#[allow(dead_code)]
fn _unused(_: AtomicU32) {}
