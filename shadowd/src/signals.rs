//! SIGTERM and SIGINT: handled by one thread with `sigwait`, so the handling code is ordinary
//! Rust (no async-signal-safety limits). The signals must be blocked in every thread, so
//! [`TerminationSignals::block`] runs before the daemon starts any thread. A signal mask
//! survives fork and exec, so guests unblock everything before exec (`guests`).

use std::io;
use std::mem::MaybeUninit;

/// SIGTERM and SIGINT, blocked in the calling thread (and in every thread it starts later).
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Block SIGTERM and SIGINT in the calling thread.
    pub fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset and pthread_sigmask
        // only read the initialised set; the old-mask pointer may be null.
        let set = unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set = set.assume_init();
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            set
        };
        Ok(TerminationSignals { set })
    }

    /// Start the thread that waits for the signals and calls `on_signal` with the first.
    pub fn spawn_handler(
        self,
        on_signal: impl FnOnce(i32) + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let set = self.set;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut sig: libc::c_int = 0;
                loop {
                    // SAFETY: `set` is an initialised sigset_t and `sig` a valid out pointer.
                    let rc = unsafe { libc::sigwait(&set, &mut sig) };
                    if rc == 0 {
                        break;
                    }
                }
                on_signal(sig);
            })
    }
}
