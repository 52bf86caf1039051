//! The home side of remote execution (DESIGN §2): shadow sessions and the rsys listener.
//!
//! A session is opened over `<state>/shadow.sock` (see [`crate::handoff`]) when a process's
//! body is about to leave; it owns the process's descriptors (handed home with SCM_RIGHTS),
//! its current directory and a token. Bodies connect to the rsys listener with that token
//! and have their file, socket and terminal calls performed here on the real descriptors,
//! exactly once per (chan, seq) as `proto::rsys` specifies. This module owns the session
//! table (its parts, below, own the rest); it never trusts a peer: a bad hello, a bad token
//! or an oversized request drops that connection only.
//!
//! - `listen`: the TCP and local listeners, hellos, answer sockets.
//! - `session`: one process's session: its descriptors, cwd, channels, the stub.
//! - `serve`: the calls loop: exactly-once replay of a resent call, cancels, resyncs.
//! - `splice`: large file reads spliced to the body without passing through here.
//! - `control`: the body's control connection, signals to the body, a lost body.
//! - `exec`: the forwarded calls, performed here, by family.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::rsys as wire;

use crate::{lock, log};

mod control;
mod exec;
mod listen;
mod serve;
mod session;
mod splice;

pub use listen::{bind_local, serve, serve_local, Conn};
pub use session::Session;

use control::Control;

/// Job ids with this bit are single processes migrated with `MigrateProcess`, not batch jobs.
pub const PROCESS_JOB_BIT: u64 = 0x4000_0000_0000_0000;
/// How long a body that announced CTL_LEAVING has to reconnect from its next node.
pub const LEAVING_GRACE: Duration = Duration::from_secs(30);

/// Every live session of this node.
pub struct Sessions {
    node: String,
    rsys_addr: Mutex<String>,
    /// The abstract name of the local (unix) listener, NUL-padded; zero: none.
    local_name: Mutex<[u8; wire::LOCAL_NAME_LEN]>,
    live: Mutex<HashMap<u64, Arc<Session>>>,
    next_id: AtomicU64,
}

impl Sessions {
    /// An empty table for node `node`.
    pub fn new(node: &str) -> Self {
        Sessions { node: node.to_string(), rsys_addr: Mutex::new(String::new()), local_name: Mutex::new([0; wire::LOCAL_NAME_LEN]), live: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    /// Where bodies connect (set once the listener is bound).
    pub fn set_addr(&self, addr: String) {
        *lock(&self.rsys_addr) = addr;
    }

    /// The rsys listener's address.
    pub fn addr(&self) -> String {
        lock(&self.rsys_addr).clone()
    }

    /// Name the local listener (its abstract name, without the leading NUL) in hello
    /// replies; longer than [`wire::LOCAL_NAME_LEN`] is refused.
    pub fn set_local_name(&self, name: &[u8]) -> io::Result<()> {
        if name.len() > wire::LOCAL_NAME_LEN || name.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "local listener name too long or with a NUL"));
        }
        let mut b = [0u8; wire::LOCAL_NAME_LEN];
        b[..name.len()].copy_from_slice(name);
        *lock(&self.local_name) = b;
        Ok(())
    }

    /// Open a session for process `pid` with `files` (its fd numbers) and home cwd `cwd`;
    /// `stub` is the home stub's connection, told once how the body ended.
    pub fn open(&self, pid: u32, cwd: &Path, files: Vec<(i32, OwnedFd)>, stub: Arc<OwnedFd>) -> io::Result<Arc<Session>> {
        let dir = open_dir(cwd)?;
        let s = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            token: random_token()?,
            vpid: pid,
            node: self.node.clone(),
            files: Mutex::new(files.into_iter().map(|(n, f)| (n, Arc::new(f))).collect()),
            cwd: Mutex::new(Arc::new(dir)),
            chans: Mutex::new(HashMap::new()),
            // the body is in transit from home until its first control connection
            ctl: Mutex::new(Control { leaving: Some(Instant::now()), ..Control::default() }),
            stub: Some(stub),
            job: None,
            told_stub: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        lock(&self.live).insert(s.id, s.clone());
        Ok(s)
    }

    /// The session of batch job `job` (see `Msg::OpenJobSession`): `files` are its fds
    /// 0, 1, 2. An existing session of the job is kept unless `fresh`.
    pub fn open_job(&self, job: u64, cwd: &Path, files: Vec<(i32, OwnedFd)>, fresh: bool) -> io::Result<Arc<Session>> {
        let old = lock(&self.live).values().find(|s| s.job == Some(job) && !s.closed.load(Ordering::SeqCst)).cloned();
        if let Some(old) = old {
            if !fresh {
                return Ok(old);
            }
            self.end(&old);
        }
        let dir = open_dir(cwd)?;
        let s = Arc::new(Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            token: random_token()?,
            vpid: 0,
            node: self.node.clone(),
            files: Mutex::new(files.into_iter().map(|(n, f)| (n, Arc::new(f))).collect()),
            cwd: Mutex::new(Arc::new(dir)),
            chans: Mutex::new(HashMap::new()),
            ctl: Mutex::new(Control::default()),
            stub: None,
            job: Some(job),
            told_stub: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        lock(&self.live).insert(s.id, s.clone());
        log!(self.node, "job {job}: session opened at home");
        Ok(s)
    }

    /// Drop sessions that ended on their own (batch jobs that exited).
    fn sweep(&self) {
        lock(&self.live).retain(|_, s| !s.closed.load(Ordering::SeqCst));
    }

    /// End a session (its stub went away): no more hellos, its files closed (once calls
    /// still running let go of them), the body's control connection closed.
    pub fn end(&self, s: &Session) {
        lock(&self.live).remove(&s.id);
        s.closed.store(true, Ordering::SeqCst);
        lock(&s.files).clear();
        if let Some((_, c)) = lock(&s.ctl).conn.take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        log!(self.node, "session of pid {} ended", s.vpid);
    }

    /// The live session holding `token` (every token compared in constant time).
    fn find(&self, token: &[u8; wire::TOKEN_LEN]) -> Option<Arc<Session>> {
        self.sweep();
        let mut found = None;
        for s in lock(&self.live).values() {
            if ct_eq(&s.token, token) {
                found = Some(s.clone());
            }
        }
        found
    }

    /// The live session of the process `vpid`.
    pub fn by_vpid(&self, vpid: u32) -> Option<Arc<Session>> {
        lock(&self.live).values().find(|s| s.vpid == vpid).cloned()
    }

    /// The interactive processes homed here whose bodies have reported from elsewhere:
    /// (pid here, the address the body reported, its pid there).
    pub fn away(&self) -> Vec<(u32, String, u32)> {
        let live: Vec<Arc<Session>> = lock(&self.live).values().filter(|s| s.stub.is_some()).cloned().collect();
        let mut v: Vec<(u32, String, u32)> = live
            .iter()
            .filter_map(|s| {
                let c = lock(&s.ctl);
                (!c.node.is_empty()).then(|| (s.vpid, c.node.clone(), c.body_pid))
            })
            .collect();
        v.sort();
        v
    }

    /// Where the body of `vpid` runs: (node, pid there).
    pub fn where_is(&self, vpid: u32) -> Result<(String, u32), String> {
        let s = self.by_vpid(vpid).ok_or_else(|| format!("no process {vpid} with a body away is homed here"))?;
        let c = lock(&s.ctl);
        if c.conn.is_none() && c.node.is_empty() {
            return Err(format!("the body of process {vpid} has not connected yet"));
        }
        Ok((c.node.clone(), c.body_pid))
    }
}

fn ct_eq(a: &[u8; wire::TOKEN_LEN], b: &[u8; wire::TOKEN_LEN]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> io::Result<[u8; wire::TOKEN_LEN]> {
    let mut t = [0u8; wire::TOKEN_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut t)?;
    Ok(t)
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a NUL-terminated string alive for the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] = 0;
        assert!(!ct_eq(&a, &b));
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }
}
