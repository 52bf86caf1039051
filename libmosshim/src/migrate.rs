//! Migration, on the manager thread: handing the process's files home, the home stub
//! that stays behind, and the body's control connection (DESIGN §2 "Remote execution",
//! "Home stub").
//!
//! A process at home asked to migrate (`CkptRequest::migrate`): while its threads are
//! frozen it hands every open file that is not a private kernel object (files, ttys,
//! pipes to other processes, sockets) to its home shadowd over `shadow.sock`
//! (SCM_RIGHTS, `Msg::OpenSession`) and gets a session token. The image then records
//! those fds as `Remote`. Once the image is safe the process becomes the stub: its
//! threads stay frozen, it keeps its pid, parent and terminal, forwards the signals it
//! receives to the body, and exits with the body's exit status.
//!
//! The body restarted elsewhere finds the session in its memory and enters remote mode
//! (`crate::remote`); its manager holds the control connection, on which signals arrive.

use crate::remote;
use core::sync::atomic::Ordering;
use proto::Msg;
use std::os::fd::RawFd;


fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn send_with_fds(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> Result<(), String> {
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: msghdr is plain data; every pointer set below outlives sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer has room for one cmsg carrying `fds`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, fds.len());
        }
    }
    // SAFETY: sending a fully initialised msghdr on our socket.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(os_err("sending the files home"));
    }
    Ok(())
}

pub(crate) fn recv_msg(sock: RawFd, timeout_ms: i32) -> Result<Option<Msg>, String> {
    let mut p = libc::pollfd { fd: sock, events: libc::POLLIN, revents: 0 };
    // SAFETY: polling our socket.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r == 0 {
        return Err("no answer from the home shadowd".into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: reading one packet into our buffer.
    let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(os_err("reading from the home shadowd"));
    }
    if n == 0 {
        return Ok(None);
    }
    postcard::from_bytes::<Msg>(&buf[..n as usize]).map(Some).map_err(|e| format!("malformed answer from the home shadowd: {e}"))
}

pub(crate) fn send_msg(sock: RawFd, m: &Msg) -> Result<(), String> {
    let b = postcard::to_allocvec(m).map_err(|e| e.to_string())?;
    send_with_fds(sock, &b, &[])
}

/// The application's descriptors that go home: everything but private kernel objects
/// (eventfd, epoll, timerfd, signalfd...) and pipes whose both ends are in the process.
fn files_to_hand(internal: &[i32]) -> Result<Vec<i32>, String> {
    let fds = crate::rawfs::list_dir_numbers("/proc/self/fd").map_err(|e| format!("listing /proc/self/fd: {e}"))?;
    let mut entries = Vec::new();
    for fd in fds {
        let fd = fd as i32;
        if internal.contains(&fd) {
            continue;
        }
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else { continue };
        let target = target.to_string_lossy().into_owned();
        // the application's fd flags (its table is not the manager's)
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        let Some(fl) = info.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|v| i32::from_str_radix(v.trim(), 8).ok()) else {
            continue;
        };
        entries.push((fd, target, fl & libc::O_ACCMODE));
    }
    let mut out = Vec::new();
    for (fd, target, acc) in &entries {
        if target.starts_with("anon_inode:") {
            continue;
        }
        if target.starts_with("pipe:") && entries.iter().any(|(o, t, a)| o != fd && t == target && a != acc) {
            continue;
        }
        out.push(*fd);
    }
    Ok(out)
}

/// A seqpacket connection (an fd of the shim's, high in its table) to the shadowd
/// listening at `sock`, named `who` in errors.
pub(crate) fn connect_local(sock: &str, who: &str) -> Result<RawFd, String> {
    // SAFETY: a fresh seqpacket socket.
    let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(os_err("socket"));
    }
    let s = crate::process::fds::high(s);
    let close = |e: String| {
        // SAFETY: closing our socket.
        unsafe { libc::close(s) };
        e
    };
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    if sock.len() >= a.sun_path.len() {
        return Err(close(format!("socket path too long: {sock}")));
    }
    for (d, b) in a.sun_path.iter_mut().zip(sock.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: connecting our socket to a valid address.
    if unsafe { libc::connect(s, &a as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_un>() as u32) } != 0 {
        return Err(close(os_err(&format!("cannot reach {who} at {sock}"))));
    }
    Ok(s)
}

/// Hand the process's files to the home shadowd at `sock` and open its session. Called
/// with every application thread frozen. On success the session is in memory (so the
/// image carries it), the handed fds are marked remote, and the connection is kept as
/// the stub's.
pub fn hand_off(sock: &str, internal: &[i32]) -> Result<(), String> {
    let s = connect_local(sock, "the home shadowd")?;
    let close = |e: String| {
        // SAFETY: closing our socket.
        unsafe { libc::close(s) };
        e
    };
    let mut skip = internal.to_vec();
    skip.push(s);
    let fds = files_to_hand(&skip).map_err(close)?;
    if fds.len() > 253 {
        return Err(close(format!("{} open files; at most 253 can be handed home", fds.len())));
    }
    let cwd = std::env::current_dir().map_err(|e| close(format!("cwd: {e}")))?;
    let msg = Msg::OpenSession {
        pid: crate::identity::vpid() as u32,
        cwd: proto::msg::OsBytes::from(cwd.as_path()),
        fds: fds.clone(),
    };
    let payload = postcard::to_allocvec(&msg).map_err(|e| close(e.to_string()))?;
    // copies of the application's descriptors in our own table, sent, then dropped
    let mut own = Vec::with_capacity(fds.len());
    for &fd in &fds {
        own.push(crate::process::fds::app_fd(fd).map_err(close)?);
    }
    let raw: Vec<RawFd> = own.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    send_with_fds(s, &payload, &raw).map_err(close)?;
    drop(own);
    let (token, addr) = match recv_msg(s, 10_000).map_err(close)? {
        Some(Msg::SessionOpened { token, rsys_addr }) => (token, rsys_addr),
        Some(Msg::Error { msg }) => return Err(close(format!("the home shadowd refused: {msg}"))),
        Some(m) => return Err(close(format!("unexpected answer {}", m.name()))),
        None => return Err(close("the home shadowd closed the connection".into())),
    };
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| close(format!("bad rsys address {addr:?}")))?;
    let std::net::SocketAddr::V4(v4) = addr else { return Err(close(format!("rsys address {addr} is not IPv4"))) };
    if token.len() != proto::rsys::TOKEN_LEN {
        return Err(close("bad session token".into()));
    }
    // every application thread is frozen; only the manager writes the session
    set_session(&token, v4);
    for &fd in &fds {
        remote::set_remote(fd as i64, true);
    }
    crate::process::fds::SHIM_FDS.stub_conn.set(s);
    Ok(())
}

/// Record the session (token, home shadow address) in memory: every image taken from now
/// on carries it. Only while no other thread of the application runs.
fn set_session(token: &[u8], v4: std::net::SocketAddrV4) {
    // SAFETY: the caller guarantees no application thread runs (frozen, or start-up), so
    // nothing reads the session while it is written.
    let sess = unsafe { &mut *remote::session_mut() };
    sess.token.copy_from_slice(token);
    sess.addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
        sin_zero: [0; 8],
    };
    sess.node = node_name();
    remote::forget_local();
    remote::set_session_set(true);
}

/// The migration did not happen after all: forget the session (the shadowd drops it when
/// the connection closes).
pub fn undo_hand_off() {
    let s = crate::process::fds::SHIM_FDS.stub_conn.take();
    if s >= 0 {
        // SAFETY: closing our connection.
        unsafe { libc::close(s) };
    }
    remote::set_session_set(false);
    for fd in 0..65536 {
        remote::set_remote(fd, false);
    }
}

/// The address of the shadowd of the node this body runs on (for `WhereIsBody`): the
/// starter puts `MOS_NODE_ADDR` in the restorer's environment, which records it.
fn node_name() -> [u8; 32] {
    let n = crate::process::ctx::restart_info().node_addr;
    if n[0] != 0 {
        return n;
    }
    // a batch job started here in remote mode: the starter's environment says
    let mut n = [0u8; 32];
    if let Ok(a) = std::env::var(crate::config::NODE_ADDR) {
        for (d, b) in n.iter_mut().zip(a.bytes().take(31)) {
            *d = b;
        }
    }
    n
}

/// A batch job started by a node's starter with `MOS_REMOTE_HOME=<hex token>@<addr>`: its
/// stdin/stdout/stderr and cwd are at its home (the session was opened there by the
/// placer); it runs in remote mode from the start. Called at start-up before the manager
/// thread exists; SUD is switched on for the main thread by [`start_remote_thread`].
pub fn start_remote(spec: &str) -> Result<(), String> {
    let (hex, addr) = spec.split_once('@').ok_or_else(|| format!("MOS_REMOTE_HOME={spec:?}: want TOKEN@ADDR"))?;
    let token: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "MOS_REMOTE_HOME: bad token".to_string())?;
    if token.len() != proto::rsys::TOKEN_LEN {
        return Err("MOS_REMOTE_HOME: bad token length".into());
    }
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| format!("MOS_REMOTE_HOME: bad address {addr:?}"))?;
    let std::net::SocketAddr::V4(v4) = addr else { return Err(format!("rsys address {addr} is not IPv4")) };
    // start-up, a single thread
    set_session(&token, v4);
    // fds 0-2 are /dev/null here (the starter's): placeholders for the home ones
    for fd in 0..3 {
        remote::set_remote(fd, true);
    }
    // SAFETY: opening /dev/null for placeholders.
    let p = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if p >= 0 {
        remote::set_placeholder_src(remote::internal_high_pub(p as i64) as i32);
    }
    remote::set_away();
    remote::install_handler();
    remote::strip_sigsys_from_handlers();
    let c = remote::connect(proto::rsys::KIND_CONTROL);
    if c < 0 {
        return Err(format!("cannot reach the home shadow: {}", std::io::Error::from_raw_os_error(-c as i32)));
    }
    crate::process::fds::SHIM_FDS.control.set(c as i32);
    Ok(())
}

/// Restart of an image taken for migration: become a remote body. Manager thread, all
/// application threads resumed and waiting (they switched SUD on for themselves).
pub fn enter_remote(fds: &[ckpt::image::FdEntry]) {
    remote::set_away();
    remote::sigactions_changed();
    remote::set_home_lost(false);
    remote::new_gen();
    remote::reset_internal();
    remote::forget_local();
    // SAFETY: every application thread is waiting; only the manager writes the session.
    unsafe { (*remote::session_mut()).node = node_name() };
    // SAFETY: opening /dev/null for placeholders.
    let p = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if p >= 0 {
        let h = remote::internal_high_pub(p as i64);
        remote::set_placeholder_src(h as i32);
    }
    remote::install_handler();
    remote::strip_sigsys_from_handlers();
    let c = remote::connect(proto::rsys::KIND_CONTROL);
    if c < 0 {
        crate::log::log(&format!("remote: cannot reach the home shadow: {}", std::io::Error::from_raw_os_error(-c as i32)));
        remote::set_home_lost(true);
    } else {
        crate::process::fds::SHIM_FDS.control.set(c as i32);
    }
    remote::resync_channels();
    // epoll sets built at home: their home entries are the shim's to watch now
    for f in fds {
        if let ckpt::image::FdKind::Epoll { targets } = &f.kind {
            for &(t, events, data) in targets {
                if fds.iter().any(|e| e.fd == t && e.kind == ckpt::image::FdKind::Remote) {
                    remote::epoll::adopt(f.fd, t, events, data);
                }
            }
        }
    }
    // home files go back to the offsets they had in the image (a restart from an older
    // checkpoint rewrites what followed, as an uninterrupted run would have)
    for f in fds.iter().filter(|f| f.kind == ckpt::image::FdKind::Remote && f.offset >= 0) {
        remote::manager_call(proto::rsys::op::LSEEK, [f.fd as u64, f.offset as u64, libc::SEEK_SET as u64, 0, 0, 0]);
    }
}

/// The manager saw the control connection readable.
pub fn on_control() {
    let c = crate::process::fds::SHIM_FDS.control.get();
    if c < 0 {
        return;
    }
    let mut b = [0u8; proto::rsys::CTL_LEN];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(c, b[got..].as_mut_ptr().cast(), b.len() - got) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            home_lost();
            return;
        }
        got += n as usize;
    }
    let ctl = proto::rsys::Ctl::decode(&b);
    if ctl.what == proto::rsys::CTL_SIGNAL {
        crate::log::log(&format!("remote: signal {} from home", ctl.arg));
        deliver(ctl.arg as i32);
    }
}

/// The body is stopped because its stub was (its threads parked, the manager awake so
/// that the SIGCONT forwarded later can reach it).
static STOPPED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A signal for the body (sent to its stub at home).
fn deliver(sig: i32) {
    if !(1..=64).contains(&sig) {
        return;
    }
    let mut old = ckpt::sys::KSigAction::default();
    ckpt::sys::rt_sigaction(sig, None, Some(&mut old));
    let app = crate::signals::app_action_slot(sig).map(crate::signals::app_action).unwrap_or(old);
    // stop / continue: a real SIGSTOP would stop the manager too, and nobody could
    // deliver the SIGCONT that follows
    let stop = sig == libc::SIGSTOP || (matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) && app.handler == libc::SIG_DFL as u64);
    if stop {
        if !STOPPED.swap(true, Ordering::AcqRel) && !crate::freeze::pause_app() {
            STOPPED.store(false, Ordering::Release);
        }
        return;
    }
    if sig == libc::SIGCONT && STOPPED.swap(false, Ordering::AcqRel) {
        crate::freeze::resume_app();
    }
    let terminates = app.handler == libc::SIG_DFL as u64
        && !matches!(sig, libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT | libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
    if terminates && sig != crate::signals::freeze_sig() && sig != crate::signals::trigger_sig() {
        // the stub dies the same death
        remote::report_exit(sig);
    }
    // SAFETY: a signal to our own process.
    unsafe { libc::kill(crate::identity::real_pid(), sig) };
}

/// The home shadow is gone: forwarded calls fail with EIO and the body stops (its files
/// are safe at home; nothing more is written).
fn home_lost() {
    remote::set_home_lost(true);
    let c = crate::process::fds::SHIM_FDS.control.take();
    if c >= 0 {
        // SAFETY: closing our connection.
        unsafe { libc::close(c) };
    }
    if remote::exiting() {
        return; // the stub has our exit status and is gone; we are exiting too
    }
    crate::log::log("remote: the connection to the home shadow is gone; forwarded calls now fail with EIO; stopping");
    // SAFETY: stopping our own process.
    unsafe { libc::kill(crate::identity::real_pid(), libc::SIGSTOP) };
}

/// The body leaves this node (its image is safe and will run elsewhere).
pub fn leaving() {
    let c = crate::process::fds::SHIM_FDS.control.get();
    if c >= 0 {
        let b = proto::rsys::Ctl { what: proto::rsys::CTL_LEAVING, arg: 0 }.encode();
        // SAFETY: writing our record to our socket.
        unsafe { libc::send(c, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
    }
}

/// Become the home stub: never returns. The application's threads stay frozen.
pub fn run_stub() -> ! {
    let s = crate::process::fds::SHIM_FDS.stub_conn.get();
    crate::log::log(&format!("pid {}: body migrated; this process is its home stub", crate::identity::vpid()));
    // every signal stays pending for the signalfd (application threads are parked with
    // everything blocked; the manager blocks everything too)
    ckpt::sys::rt_sigprocmask(libc::SIG_SETMASK, Some(!0), None);
    let mine = ckpt::sys::sigbit(crate::signals::freeze_sig()) | ckpt::sys::sigbit(libc::SIGKILL) | ckpt::sys::sigbit(libc::SIGSTOP) | ckpt::sys::sigbit(libc::SIGCHLD);
    let set: u64 = !mine;
    // SAFETY: signalfd with an 8-byte mask.
    let sfd = unsafe { ckpt::sc!(libc::SYS_signalfd4, -1i64, &set as *const u64, 8, libc::SFD_CLOEXEC) } as i32;
    let finish = |code: i32, msg: Option<String>| -> ! {
        if let Some(m) = msg {
            let line = format!("mos: {m}\n");
            // the process's stderr (the manager's own table has none)
            if let Ok(err) = crate::process::fds::app_fd(2) {
                use std::os::fd::AsRawFd;
                // SAFETY: writing to our copy of the process's stderr.
                unsafe { libc::write(err.as_raw_fd(), line.as_ptr().cast(), line.len()) };
            }
        }
        // SAFETY: leaving without running the application's exit handlers (its body did).
        unsafe { ckpt::sc!(libc::SYS_exit_group, code) };
        unreachable!()
    };
    loop {
        let mut p = [libc::pollfd { fd: s, events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: polling our descriptors.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if n <= 0 {
            continue;
        }
        if p[1].revents & libc::POLLIN != 0 {
            // SAFETY: signalfd_siginfo is plain data; read fills it.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reading one record.
            let k = unsafe { libc::read(sfd, (&mut si as *mut libc::signalfd_siginfo).cast(), std::mem::size_of::<libc::signalfd_siginfo>()) };
            if k > 0 {
                let sig = si.ssi_signo as i32;
                let _ = send_msg(s, &Msg::StubSignal { signal: sig });
                if matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) {
                    // the shell must see this process stop, as it would have
                    // SAFETY: stopping ourselves.
                    unsafe { libc::kill(crate::identity::real_pid(), libc::SIGSTOP) };
                }
            }
        }
        if p[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match recv_msg(s, 0) {
                Ok(Some(Msg::BodyExited { status })) => {
                    if libc::WIFSIGNALED(status) {
                        let sig = libc::WTERMSIG(status);
                        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                        // SAFETY: no core file for the stub; default action, unblocked, raised.
                        unsafe {
                            libc::setrlimit(libc::RLIMIT_CORE, &zero);
                            let dfl = ckpt::sys::KSigAction::default();
                            ckpt::sys::rt_sigaction(sig, Some(&dfl), None);
                            ckpt::sys::rt_sigprocmask(libc::SIG_UNBLOCK, Some(ckpt::sys::sigbit(sig)), None);
                            ckpt::sc!(libc::SYS_tgkill, crate::identity::real_pid(), ckpt::sys::gettid(), sig);
                        }
                        finish(128 + sig, None);
                    }
                    finish(libc::WEXITSTATUS(status), None);
                }
                Ok(Some(Msg::BodyLost { reason })) => finish(255, Some(format!("process {}: {reason}", crate::identity::vpid()))),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => finish(
                    255,
                    Some(format!("process {}: the home shadowd went away; its body can no longer be followed", crate::identity::vpid())),
                ),
            }
        }
    }
}
