//! The shim's own file descriptors: the manager's wake-up pipe and control socket, the
//! remote-mode connections, moving them to high numbers away from the application's,
//! the manager's private fd table, and reaching the application's fds from there
//! ([`app_fd`]). Manager-thread code (allocates): never from a signal handler.

use crate::log::log;
use crate::rawfs;
use ckpt::control::socket_name;
use ckpt::sys;
use core::sync::atomic::{AtomicI32, Ordering};

pub static TRIG_R: AtomicI32 = AtomicI32::new(-1);
/// write end of the manager's wake-up pipe (the trigger handler writes it)
pub static TRIGGER_FD: AtomicI32 = AtomicI32::new(-1);
/// The thread that runs on a private fd table (the manager), if any: remote mode's
/// handler must reach the application's fds from elsewhere on it.
pub static MANAGER_OWN_TABLE_TID: AtomicI32 = AtomicI32::new(0);
pub static LISTEN: AtomicI32 = AtomicI32::new(-1);
/// the control connection being served, if any
pub static CONN: AtomicI32 = AtomicI32::new(-1);
/// The body's control connection to the home shadow (remote mode).
pub static CONTROL: AtomicI32 = AtomicI32::new(-1);
/// The stub's connection to the home shadowd (home, after its body left).
pub static STUB_CONN: AtomicI32 = AtomicI32::new(-1);

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
        high(listen_socket(crate::identity::real_pid())),
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

/// The shim's own fds held here (the remote mode's connections are listed by
/// `remote::shim_fds`, which adds them to these).
pub fn own_fds() -> Vec<i32> {
    [&TRIG_R, &TRIGGER_FD, &LISTEN, &CONN, &CONTROL, &STUB_CONN]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&fd| fd >= 0)
        .collect()
}

/// The manager keeps its own fd table (unshare(CLONE_FILES)) holding only the shim's own
/// descriptors. While no other thread shares the application's table, the kernel looks its
/// fds up without atomic reference counting: a shared table would add ~40 ns to every fd
/// system call of the application (see `make bench`). It also means the application
/// closing every fd cannot take the control socket away. The manager reaches application
/// fds through /proc/self (the thread group leader's table) and [`app_fd`].
/// `keep`: the shim's own fds (`remote::shim_fds()`), which stay open in it.
pub fn detach_fd_table(keep: &[i32]) {
    // SAFETY: unshare of our own fd table.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        log(&format!("cannot unshare the fd table: {}", std::io::Error::last_os_error()));
        return;
    }
    MANAGER_OWN_TABLE_TID.store(sys::gettid(), Ordering::Relaxed);
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
        let pidfd = ckpt::sc!(libc::SYS_pidfd_open, crate::identity::real_pid(), 0);
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
