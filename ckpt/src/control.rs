//! Local control channel between `mos ckpt` and the shim's manager thread: an abstract
//! unix socket named after the process's real pid, one request and one reply per
//! connection (postcard, written then read to EOF). Peers of another uid are refused.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CkptRequest {
    /// absolute image path, or None for the default path
    pub out: Option<String>,
    /// exit (status 0) once the image is safe
    pub exit: bool,
    /// migration: the body leaves this node. A process at home first hands its files to
    /// the home shadowd listening on this unix socket (`<state>/shadow.sock`) and stays
    /// as the home stub once the image is safe; a body already away just leaves.
    #[serde(default)]
    pub migrate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CkptReply {
    Done {
        path: String,
        bytes: u64,
        /// time to stop every application thread
        stop_us: u64,
        /// time the application was frozen (stop + kernel state + fork)
        frozen_us: u64,
        /// threads saved (application threads + the manager)
        threads: u32,
        total_us: u64,
    },
    Failed(String),
}

pub const MAX_MSG: usize = 64 * 1024;

pub fn socket_name(real_pid: i32) -> String {
    format!("mos-ckpt.{real_pid}")
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no such process")]
    NoProcess,
    #[error("not running under libmosshim (no checkpoint socket)")]
    NotShimmed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad reply from the process: {0}")]
    BadReply(String),
}

/// Ask the shim in `pid` for a checkpoint and wait for the result.
pub fn request(pid: i32, req: &CkptRequest) -> Result<CkptReply, ClientError> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    // SAFETY: kill with signal 0 only checks existence.
    if unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return Err(ClientError::NoProcess);
    }
    let addr = SocketAddr::from_abstract_name(socket_name(pid).as_bytes())?;
    let mut s = UnixStream::connect_addr(&addr).map_err(|_| ClientError::NotShimmed)?;
    let bytes = postcard::to_allocvec(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
    s.write_all(&bytes)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    s.take(MAX_MSG as u64).read_to_end(&mut reply)?;
    if reply.is_empty() {
        return Err(ClientError::BadReply(
            "connection closed without a reply (did the process die?)".into(),
        ));
    }
    postcard::from_bytes(&reply).map_err(|e| ClientError::BadReply(e.to_string()))
}
