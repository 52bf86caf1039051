//! One shadow session: a process whose body runs elsewhere. Owns its descriptors (by the
//! application's fd numbers), its current directory, its channels' exactly-once memory and
//! its stub's connection, told once how the body ended. Never executes a call itself (see
//! [`super::exec`]).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use proto::rsys as wire;
use proto::Msg;

use super::control::Control;
use super::exec::Stop;
use super::serve::Chan;
use crate::{lock, log};

/// One process whose body runs elsewhere.
pub struct Session {
    pub(super) id: u64,
    pub(super) token: [u8; wire::TOKEN_LEN],
    /// The process's pid at home.
    pub vpid: u32,
    pub(super) node: String,
    pub(super) files: Mutex<HashMap<i32, Arc<OwnedFd>>>,
    pub(super) cwd: Mutex<Arc<OwnedFd>>,
    pub(super) chans: Mutex<HashMap<u64, Arc<Mutex<Chan>>>>,
    pub(super) ctl: Mutex<Control>,
    /// The home stub's connection (interactive processes); batch jobs have none.
    pub(super) stub: Option<Arc<OwnedFd>>,
    /// The batch job this session serves.
    pub job: Option<u64>,
    pub(super) told_stub: AtomicBool,
    pub(super) closed: AtomicBool,
}

impl Session {
    /// The token bodies present.
    pub fn token(&self) -> [u8; wire::TOKEN_LEN] {
        self.token
    }

    /// How many descriptors the session holds.
    pub fn file_count(&self) -> usize {
        lock(&self.files).len()
    }

    /// Tell the stub how the body ended; only the first call has an effect. A batch job
    /// has no stub: its exit ends the session (its files are complete), a lost body is
    /// restarted elsewhere and reconnects.
    pub fn tell_stub(&self, msg: Msg) {
        let Some(stub) = &self.stub else {
            if let (Some(job), Msg::BodyExited { status }) = (self.job, &msg) {
                log!(self.node, "job {job}: exited (status {status:#x}); session closed");
                self.closed.store(true, Ordering::SeqCst);
                lock(&self.files).clear();
            }
            return;
        };
        if self.told_stub.swap(true, Ordering::SeqCst) {
            return;
        }
        log!(self.node, "pid {}: telling the stub {msg:?}", self.vpid);
        match postcard::to_allocvec(&msg) {
            Ok(b) => {
                if let Err(e) = crate::handoff::send_with_fds(stub.as_raw_fd(), &b, &[]) {
                    log!(self.node, "pid {}: cannot tell the stub {}: {e}", self.vpid, msg.name());
                }
            }
            Err(e) => log!(self.node, "pid {}: cannot encode {}: {e}", self.vpid, msg.name()),
        }
    }


    pub(super) fn file(&self, fd: u64) -> Result<Arc<OwnedFd>, Stop> {
        let n = i32::try_from(fd as i64).map_err(|_| Stop::Errno(-libc::EBADF as i64))?;
        lock(&self.files).get(&n).cloned().ok_or(Stop::Errno(-libc::EBADF as i64))
    }

    pub(super) fn dir(&self, fd: u64) -> Result<Arc<OwnedFd>, Stop> {
        if fd as i64 as i32 == libc::AT_FDCWD {
            return Ok(lock(&self.cwd).clone());
        }
        self.file(fd)
    }

    pub(super) fn bind(&self, num: u64, fd: OwnedFd) -> i64 {
        match i32::try_from(num as i64) {
            Ok(n) if n >= 0 => {
                // The old descriptor at that number is closed (when no call still uses it).
                lock(&self.files).insert(n, Arc::new(fd));
                i64::from(n)
            }
            _ => -libc::EBADF as i64,
        }
    }
}
