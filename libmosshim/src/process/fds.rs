//! The shim's own file descriptors: the manager's wake-up pipe and control socket, the
//! remote-mode connections, moving them to high numbers away from the application's,
//! the manager's private fd table, and reaching the application's fds from there
//! ([`app_fd`]). Manager-thread code (allocates): never from a signal handler.

use crate::log::log;
use crate::rawfs;
use ckpt::control::socket_name;
use ckpt::sys;
use core::sync::atomic::{AtomicI32, Ordering};

/// One of the shim's own descriptors (-1: none).
pub struct ShimFd(AtomicI32);

impl ShimFd {
    const fn none() -> Self {
        ShimFd(AtomicI32::new(-1))
    }
    /// The descriptor (-1: none).
    pub fn get(&self) -> i32 {
        self.0.load(Ordering::Acquire)
    }
    pub fn set(&self, fd: i32) {
        self.0.store(fd, Ordering::Release)
    }
    /// The descriptor, leaving none in its place.
    pub fn take(&self) -> i32 {
        self.0.swap(-1, Ordering::AcqRel)
    }
}

/// The shim's own descriptors held here (the remote mode's connections are remote's).
pub struct ShimFds {
    /// read end of the manager's wake-up pipe
    pub trig_r: ShimFd,
    /// write end of the manager's wake-up pipe (the trigger handler writes it)
    pub trigger: ShimFd,
    /// the manager's control socket (listening)
    pub listen: ShimFd,
    /// the control connection being served, if any
    pub conn: ShimFd,
    /// the body's control connection to the home shadow (remote mode)
    pub control: ShimFd,
    /// the stub's connection to the home shadowd (home, after its body left)
    pub stub_conn: ShimFd,
    /// the thread that runs on a private fd table (the manager), if any: remote mode's
    /// handler must reach the application's fds from elsewhere on it
    manager_own_table_tid: AtomicI32,
}
pub static SHIM_FDS: ShimFds = ShimFds {
    trig_r: ShimFd::none(),
    trigger: ShimFd::none(),
    listen: ShimFd::none(),
    conn: ShimFd::none(),
    control: ShimFd::none(),
    stub_conn: ShimFd::none(),
    manager_own_table_tid: AtomicI32::new(0),
};

impl ShimFds {
    /// The tid of the thread on a private fd table (the manager), 0 if none.
    pub fn manager_own_table_tid(&self) -> i32 {
        self.manager_own_table_tid.load(Ordering::Relaxed)
    }
    /// The manager shares the application's fd table again (a restart).
    pub fn manager_shares_table(&self) {
        self.manager_own_table_tid.store(0, Ordering::Relaxed)
    }
}

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
        SHIM_FDS.trig_r.set(high(p[0]));
        SHIM_FDS.trigger.set(high(p[1]));
    }
    SHIM_FDS.listen.set(high(listen_socket(crate::identity::real_pid())));
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
    let f = &SHIM_FDS;
    [&f.trig_r, &f.trigger, &f.listen, &f.conn, &f.control, &f.stub_conn]
        .iter()
        .map(|a| a.get())
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
    SHIM_FDS.manager_own_table_tid.store(sys::gettid(), Ordering::Relaxed);
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
