//! The restart path after the restorer: the manager cleans up, recreates what lives
//! outside memory (pipe, sockets; pending signals and POSIX timers through each kind's
//! `StateKind::restarted` in `crate::state`) and releases the threads ([`restarted`]);
//! every restored thread first re-establishes its own kernel state in
//! `state::threads::mos_thread_resumed` (raw system calls only: no allocation, no locks).

use crate::freeze::release_threads;
use crate::log::log;
use crate::process::fds::{detach_fd_table, open_channels};
use ckpt::sys;

/// Restart path of the manager: every thread is back; clean up and let them go.
pub fn restarted(meta: &ckpt::image::ImageMeta) {
    // the restorer made this thread share the application's table again (until the end)
    crate::process::fds::SHIM_FDS.manager_shares_table();
    let info = crate::process::ctx::restart_info();
    crate::identity::set_real_pid(if info.pid > 0 { info.pid as i32 } else { sys::getpid_real() });
    let n = crate::freeze::nthreads();
    loop {
        let k = crate::signals::resumed_count();
        if k >= n {
            break;
        }
        crate::signals::wait_resumed(k, 10);
    }
    for r in &info.ranges[..info.nranges as usize] {
        // SAFETY: these were the restorer's own mappings; no thread runs there any more.
        unsafe { libc::munmap(r[0] as *mut _, (r[1] - r[0]) as usize) };
    }
    exe_back(&meta.exe);
    open_channels();
    crate::process::fds::SHIM_FDS.control.set(-1);
    crate::process::fds::SHIM_FDS.stub_conn.set(-1);
    if crate::remote::session_set() {
        crate::migrate::enter_remote(&meta.fds);
    }
    // pending signals raised again, then POSIX timers recreated (see crate::state)
    crate::state::restarted(meta);
    release_threads();
    detach_fd_table(&crate::remote::shim_fds());
    log(&format!(
        "restarted as pid {}",
        crate::identity::real_pid()
    ));
}

/// `/proc/self/exe` names the program again, not the restorer: possible once no mapping
/// of the restorer is left (just unmapped) and with CAP_SYS_RESOURCE; else it keeps
/// naming `mosrestart`, and the log says why.
fn exe_back(exe: &str) {
    let path = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    let Ok(c) = std::ffi::CString::new(path) else { return };
    // SAFETY: opening a NUL-terminated path read-only.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        log(&format!("/proc/self/exe names the restorer: cannot open {path}: {}; the shim answers {path} for it", std::io::Error::last_os_error()));
        crate::hooks_proc::set_exe(path.as_bytes());
        return;
    }
    // SAFETY: PR_SET_MM_EXE_FILE with our fd of the program.
    let r = unsafe { libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_EXE_FILE, fd as libc::c_ulong, 0, 0) };
    if r != 0 {
        // the shim answers for it instead (readlink and path calls on it)
        log(&format!("/proc/self/exe names the restorer (PR_SET_MM_EXE_FILE: {}); the shim answers {path} for it", std::io::Error::last_os_error()));
        crate::hooks_proc::set_exe(path.as_bytes());
    }
    // SAFETY: closing our fd; the mm holds the file now.
    unsafe { libc::close(fd) };
}
