//! Authentication: the cluster key file and the connection handshake.
//!
//! Every inter-node connection starts with a mutual HMAC-SHA256 challenge-response under the
//! cluster key (DESIGN.md §5). Messages, client first:
//!
//! ```text
//! client                                   server
//!   Hello(c), AuthChallenge{nc}      ->
//!                                    <-    Hello(s), AuthChallenge{ns}, AuthResponse{mac_s}
//!   AuthResponse{mac_c}              ->
//!                                    <-    AuthOk            (or Error{msg}, then close)
//! ```
//!
//! with `mac_X = HMAC(key, "mos-v1" || label_X || own_nonce || peer_nonce || transcript)`,
//! `label` being `"client"` or `"server"` (so a proof cannot be reflected back at its
//! author) and `transcript = u32le(len) || Hello(c) || u32le(len) || Hello(s)` (postcard
//! bytes), so the proofs also vouch for the node names and roles. Proofs are compared in
//! constant time (`hmac`'s `verify_slice`). Version check: each side reads the other's
//! `Hello` first and refuses a different major version with [`AuthError::VersionMismatch`];
//! the server then still sends its `Hello` and an `Error`, so the client sees the same.
//!
//! What this does not do: encrypt, or protect frames after the handshake. It keeps strangers
//! and misconfigured nodes out; an attacker who can rewrite traffic on the cluster network
//! can still hijack an authenticated connection.
//!
//! Timeouts: the whole handshake must finish within a deadline
//! ([`DEFAULT_HANDSHAKE_TIMEOUT`] or the caller's), enforced by setting the socket's read and
//! write timeouts to the time left before every read and write. A silent peer, or one that
//! dribbles a byte at a time, costs at most that long. The stream's previous timeouts are
//! restored afterwards. A server should still run each handshake on its own thread, so one
//! slow peer does not delay the next. Inside an application (the shim), wrap the socket in
//! [`crate::NoSigPipe`] first, so a peer that hangs up cannot kill the application.
//!
//! Key file: 64 hex digits (32 random bytes) and a newline, mode 0600. [`load_key`] refuses a
//! file that group or others can access, as ssh does for private keys.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::{encode_frame, FrameError, FrameReader, Limits};
use crate::msg::{Hello, Msg, NodeName, Role, Version, MAC_LEN, NONCE_LEN};

/// Bytes of a cluster key.
pub const KEY_LEN: usize = 32;
/// Deadline for a whole handshake unless the caller gives one.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const DOMAIN: &[u8] = b"mos-v1";
const LABEL_CLIENT: &[u8] = b"client";
const LABEL_SERVER: &[u8] = b"server";
/// Largest key file accepted (the real one is 65 bytes).
const MAX_KEY_FILE: u64 = 4096;

type HmacSha256 = Hmac<Sha256>;

/// The cluster's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl ClusterKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ClusterKey(bytes)
    }

    /// A fresh random key from the OS's generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k).map_err(KeyError::Random)?;
        Ok(ClusterKey(k))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parse the key file's text: 64 hex digits, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() != KEY_LEN * 2 {
            return Err(format!(
                "expected {} hex digits, found {} characters",
                KEY_LEN * 2,
                t.len()
            ));
        }
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in t.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => k[i] = (h << 4) | l,
                _ => {
                    return Err(format!(
                        "not a hex digit at position {}",
                        2 * i + usize::from(hi.is_some())
                    ))
                }
            }
        }
        Ok(ClusterKey(k))
    }

    /// The key file's text (64 lowercase hex digits, no newline).
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(KEY_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// What can go wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `create_key_file` without `overwrite` found a file there.
    #[error(
        "key file {path} already exists (refusing to overwrite it; remove it or ask to overwrite)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot {op} key file {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The key file can be read or written by group or others.
    #[error("key file {path} has mode {mode:04o}: group and others must have no access (run: chmod 600 {path})")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a regular file.
    #[error("key file {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The content is not a key.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The OS random generator failed.
    #[error("cannot get random bytes from the OS: {0}")]
    Random(getrandom::Error),
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> KeyError + 'p {
    move |source| KeyError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Create a key file at `path` holding a fresh random key, mode 0600, and return the key.
///
/// Atomic: the key is written and synced to a temporary file in the same directory, which is
/// then renamed over `path` (`overwrite`) or hard-linked to it (no `overwrite`: the link
/// fails if `path` exists, with no window where another file could be clobbered). Readers
/// never see a partial key.
pub fn create_key_file(path: &Path, overwrite: bool) -> Result<ClusterKey, KeyError> {
    let key = ClusterKey::generate()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: "the path has no file name".into(),
    })?;
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).map_err(KeyError::Random)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{:016x}",
        std::process::id(),
        u64::from_le_bytes(tag)
    ));
    let tmp = dir.join(tmp_name);

    let result = write_new_key(&tmp, &key).and_then(|()| {
        if overwrite {
            fs::rename(&tmp, path).map_err(io_err("rename into place", path))
        } else {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyError::Exists {
                    path: path.to_path_buf(),
                }),
                Err(e) => Err(io_err("link into place", path)(e)),
            }
        }
    });
    // After a rename the temporary name is gone already; after a link or a failure it is
    // removed here. Nothing to report if that fails: the key, if any, is in place.
    let _ = fs::remove_file(&tmp);
    result?;
    // Make the new directory entry durable too.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(key)
}

fn write_new_key(tmp: &Path, key: &ClusterKey) -> Result<(), KeyError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    // The umask may have removed bits from 0600; set it exactly.
    f.set_permissions(Permissions::from_mode(0o600))
        .map_err(io_err("chmod", tmp))?;
    let mut text = key.to_hex();
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(io_err("write", tmp))?;
    f.sync_all().map_err(io_err("sync", tmp))
}

/// Load the cluster key from `path`. Refuses a file that is not regular, that group or
/// others may access (any of mode 0077), or whose content is not 64 hex digits.
pub fn load_key(path: &Path) -> Result<ClusterKey, KeyError> {
    // O_NONBLOCK: a FIFO put where the key should be must not hang us; it is refused below.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    // Check the opened file itself, not the path again: no race with a rename.
    let meta = f.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                KeyError::Malformed {
                    path: path.to_path_buf(),
                    reason: "not text".into(),
                }
            } else {
                io_err("read", path)(e)
            }
        })?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: "file too large".into(),
        });
    }
    ClusterKey::from_hex(&text).map_err(|reason| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// A stream whose read and write timeouts can be set: what the handshake needs to bound its
/// time. Implemented for `TcpStream` and `UnixStream`.
pub trait TimeoutStream: Read + Write {
    /// Current read timeout.
    fn read_timeout(&self) -> io::Result<Option<Duration>>;
    /// Current write timeout.
    fn write_timeout(&self) -> io::Result<Option<Duration>>;
    /// Set the read timeout (`None` = block forever).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Set the write timeout (`None` = block forever).
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

macro_rules! impl_timeout_stream {
    ($t:ty) => {
        impl TimeoutStream for $t {
            fn read_timeout(&self) -> io::Result<Option<Duration>> {
                <$t>::read_timeout(self)
            }
            fn write_timeout(&self) -> io::Result<Option<Duration>> {
                <$t>::write_timeout(self)
            }
            fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, t)
            }
            fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_write_timeout(self, t)
            }
        }
    };
}

impl_timeout_stream!(TcpStream);
impl_timeout_stream!(UnixStream);

/// Who the peer is, once it has proved the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node.
    pub node: NodeName,
    /// Its role.
    pub role: Role,
    /// Its protocol version.
    pub version: Version,
}

/// Why a handshake failed. In every case the connection must be dropped.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The peer did not finish its part within the deadline.
    #[error("handshake timed out waiting for the peer's {waiting_for}")]
    Timeout {
        /// The message expected.
        waiting_for: &'static str,
    },
    /// The peer closed the connection.
    #[error("peer closed the connection during the handshake (waiting for its {waiting_for})")]
    Closed {
        /// The message expected.
        waiting_for: &'static str,
    },
    /// The peer sent bytes that are not a valid frame (garbage, oversize length, truncation).
    #[error("handshake failed reading the peer's {waiting_for}: {source}")]
    Frame {
        /// The message expected.
        waiting_for: &'static str,
        /// The framing error.
        #[source]
        source: FrameError,
    },
    /// The peer speaks another major protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs} (major versions must match; upgrade one side)")]
    VersionMismatch {
        /// Our version.
        ours: Version,
        /// The peer's.
        theirs: Version,
    },
    /// The peer sent a valid message out of turn.
    #[error("handshake: expected the peer's {expected}, got {got}")]
    Unexpected {
        /// The message expected.
        expected: &'static str,
        /// The message received.
        got: &'static str,
    },
    /// The peer's proof is wrong: it does not hold our cluster key.
    #[error("peer failed to prove it holds the cluster key (different or missing key file?)")]
    BadProof,
    /// The peer refused us and said why.
    #[error("peer rejected the handshake: {msg}")]
    Rejected {
        /// The peer's reason.
        msg: String,
    },
    /// Our own message could not be sent, or the socket's timeouts could not be set.
    #[error("handshake i/o error: {0}")]
    Io(#[source] io::Error),
    /// The OS random generator failed.
    #[error("cannot get a random nonce from the OS: {0}")]
    Random(getrandom::Error),
}

/// Authenticate as the connecting side. `hello` names us (normally [`Hello::new`]); the
/// deadline is [`DEFAULT_HANDSHAKE_TIMEOUT`].
pub fn client_handshake<S: TimeoutStream>(
    stream: &mut S,
    key: &ClusterKey,
    hello: &Hello,
) -> Result<PeerInfo, AuthError> {
    client_handshake_timeout(stream, key, hello, DEFAULT_HANDSHAKE_TIMEOUT)
}

/// Authenticate as the accepting side, with the [`DEFAULT_HANDSHAKE_TIMEOUT`] deadline.
pub fn server_handshake<S: TimeoutStream>(
    stream: &mut S,
    key: &ClusterKey,
    hello: &Hello,
) -> Result<PeerInfo, AuthError> {
    server_handshake_timeout(stream, key, hello, DEFAULT_HANDSHAKE_TIMEOUT)
}

/// [`client_handshake`] with a deadline of `timeout` for the whole exchange.
pub fn client_handshake_timeout<S: TimeoutStream>(
    stream: &mut S,
    key: &ClusterKey,
    hello: &Hello,
    timeout: Duration,
) -> Result<PeerInfo, AuthError> {
    with_deadline(stream, timeout, |ch| client_side(ch, key, hello))
}

/// [`server_handshake`] with a deadline of `timeout` for the whole exchange.
pub fn server_handshake_timeout<S: TimeoutStream>(
    stream: &mut S,
    key: &ClusterKey,
    hello: &Hello,
    timeout: Duration,
) -> Result<PeerInfo, AuthError> {
    with_deadline(stream, timeout, |ch| server_side(ch, key, hello))
}

/// Run `f` on the stream under a deadline, then restore the stream's timeouts.
fn with_deadline<S: TimeoutStream>(
    stream: &mut S,
    timeout: Duration,
    f: impl FnOnce(&mut Channel<'_, S>) -> Result<PeerInfo, AuthError>,
) -> Result<PeerInfo, AuthError> {
    let old_read = stream.read_timeout().map_err(AuthError::Io)?;
    let old_write = stream.write_timeout().map_err(AuthError::Io)?;
    // A timeout too large to add to now is no deadline at all.
    let deadline = Instant::now().checked_add(timeout);
    let mut ch = Channel {
        stream: Deadline { stream, deadline },
    };
    let result = f(&mut ch);
    let stream = ch.stream.stream;
    let restored = stream
        .set_read_timeout(old_read)
        .and_then(|()| stream.set_write_timeout(old_write));
    let peer = result?;
    restored.map_err(AuthError::Io)?;
    Ok(peer)
}

/// Read/Write that fails with `TimedOut` once the deadline has passed, and otherwise
/// bounds every blocking call by the time left.
struct Deadline<'a, S> {
    stream: &'a mut S,
    deadline: Option<Instant>,
}

impl<S: TimeoutStream> Deadline<'_, S> {
    /// Time left, `None` for no deadline; an error once it has passed.
    fn time_left(&self) -> io::Result<Option<Duration>> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake deadline passed",
            ));
        }
        Ok(Some(left))
    }
}

impl<S: TimeoutStream> Read for Deadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.time_left()?;
        self.stream.set_read_timeout(left)?;
        self.stream.read(buf)
    }
}

impl<S: TimeoutStream> Write for Deadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.time_left()?;
        self.stream.set_write_timeout(left)?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The handshake's view of the connection: whole messages in, batches of messages out.
struct Channel<'a, S> {
    stream: Deadline<'a, S>,
}

impl<S: TimeoutStream> Channel<'_, S> {
    /// Send several messages in one write.
    fn send(&mut self, msgs: &[&Msg]) -> Result<(), AuthError> {
        let mut out = Vec::with_capacity(256);
        for m in msgs {
            let frame = encode_frame(*m, &[], &Limits::HANDSHAKE).map_err(|e| {
                AuthError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot encode {}: {e}", m.name()),
                ))
            })?;
            out.extend_from_slice(&frame);
        }
        self.stream.write_all(&out).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                AuthError::Timeout {
                    waiting_for: "reading of our messages",
                }
            } else {
                AuthError::Io(e)
            }
        })?;
        self.stream.flush().map_err(AuthError::Io)
    }

    /// Tell the peer why we give up; it may be gone already, so failure is ignored.
    fn send_error(&mut self, msg: String) {
        let _ = self.send(&[&Msg::Error { msg }]);
    }

    /// Receive one message. The peer's `Error` becomes [`AuthError::Rejected`].
    fn recv(&mut self, waiting_for: &'static str) -> Result<Msg, AuthError> {
        // No read-ahead: the caller's stream holds exactly the bytes after the handshake.
        let mut r = FrameReader::with_limits(&mut self.stream, Limits::HANDSHAKE);
        match r.read_msg::<Msg>() {
            Ok((Msg::Error { msg }, _)) => Err(AuthError::Rejected { msg }),
            Ok((m, _)) => Ok(m),
            Err(FrameError::Idle | FrameError::Timeout) => Err(AuthError::Timeout { waiting_for }),
            Err(FrameError::Closed) => Err(AuthError::Closed { waiting_for }),
            Err(source) => Err(AuthError::Frame {
                waiting_for,
                source,
            }),
        }
    }

    fn recv_hello(&mut self, ours: &Hello) -> Result<Hello, AuthError> {
        match self.recv("Hello")? {
            Msg::Hello(h) => {
                if ours.version.compatible_with(&h.version) {
                    Ok(h)
                } else {
                    Err(AuthError::VersionMismatch {
                        ours: ours.version,
                        theirs: h.version,
                    })
                }
            }
            other => Err(AuthError::Unexpected {
                expected: "Hello",
                got: other.name(),
            }),
        }
    }

    fn recv_nonce(&mut self) -> Result<[u8; NONCE_LEN], AuthError> {
        match self.recv("AuthChallenge")? {
            Msg::AuthChallenge { nonce } => Ok(nonce),
            other => Err(AuthError::Unexpected {
                expected: "AuthChallenge",
                got: other.name(),
            }),
        }
    }

    fn recv_mac(&mut self) -> Result<[u8; MAC_LEN], AuthError> {
        match self.recv("AuthResponse")? {
            Msg::AuthResponse { mac } => Ok(mac),
            other => Err(AuthError::Unexpected {
                expected: "AuthResponse",
                got: other.name(),
            }),
        }
    }
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], AuthError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(AuthError::Random)?;
    Ok(n)
}

/// The bytes both proofs cover besides the nonces: both hellos, length-prefixed.
fn transcript(client: &Hello, server: &Hello) -> Vec<u8> {
    let mut t = Vec::with_capacity(128);
    for h in [client, server] {
        // A Hello is a struct of a version, a string and a unit enum: always encodable.
        let bytes = postcard::to_allocvec(h).unwrap_or_default();
        t.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        t.extend_from_slice(&bytes);
    }
    t
}

fn proof_mac(
    key: &ClusterKey,
    label: &[u8],
    own: &[u8; NONCE_LEN],
    peer: &[u8; NONCE_LEN],
    transcript: &[u8],
) -> HmacSha256 {
    // HMAC pads a short key with zeros to the hash's block size; doing it here gives the same
    // MAC and lets us use the infallible fixed-size constructor.
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key.as_bytes());
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    mac.update(DOMAIN);
    mac.update(label);
    mac.update(own);
    mac.update(peer);
    mac.update(transcript);
    mac
}

fn make_proof(
    key: &ClusterKey,
    label: &[u8],
    own: &[u8; NONCE_LEN],
    peer: &[u8; NONCE_LEN],
    transcript: &[u8],
) -> [u8; MAC_LEN] {
    proof_mac(key, label, own, peer, transcript)
        .finalize()
        .into_bytes()
        .into()
}

/// Constant-time check of the peer's proof (its own nonce first, as it computed it).
fn check_proof(
    key: &ClusterKey,
    label: &[u8],
    peer_nonce: &[u8; NONCE_LEN],
    our_nonce: &[u8; NONCE_LEN],
    transcript: &[u8],
    mac: &[u8; MAC_LEN],
) -> bool {
    proof_mac(key, label, peer_nonce, our_nonce, transcript)
        .verify_slice(mac)
        .is_ok()
}

/// The MAC of a datagram `data` under the cluster key (a domain of its own: a datagram
/// MAC can never pass as a handshake proof, nor the reverse).
pub fn datagram_mac(key: &ClusterKey, data: &[u8]) -> [u8; MAC_LEN] {
    datagram_hmac(key, data).finalize().into_bytes().into()
}

/// Constant-time check of a datagram's MAC.
pub fn datagram_mac_ok(key: &ClusterKey, data: &[u8], mac: &[u8]) -> bool {
    datagram_hmac(key, data).verify_slice(mac).is_ok()
}

/// The token that lets a browser read `mos dashboard` when it listens beyond loopback:
/// derived from the cluster key in a domain of its own (it proves nothing anywhere else,
/// and does not reveal the key), hex.
pub fn dashboard_token(key: &ClusterKey) -> String {
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key.as_bytes());
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    mac.update(b"mos dashboard token v1\0");
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of a presented token with the dashboard's.
pub fn dashboard_token_ok(key: &ClusterKey, presented: &str) -> bool {
    let want = dashboard_token(key);
    want.len() == presented.len() && want.bytes().zip(presented.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

fn datagram_hmac(key: &ClusterKey, data: &[u8]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key.as_bytes());
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    mac.update(b"mos datagram v1\0");
    mac.update(data);
    mac
}

fn peer_info(h: Hello) -> PeerInfo {
    PeerInfo {
        node: h.node,
        role: h.role,
        version: h.version,
    }
}

fn client_side<S: TimeoutStream>(
    ch: &mut Channel<'_, S>,
    key: &ClusterKey,
    hello: &Hello,
) -> Result<PeerInfo, AuthError> {
    let nc = fresh_nonce()?;
    ch.send(&[
        &Msg::Hello(hello.clone()),
        &Msg::AuthChallenge { nonce: nc },
    ])?;
    let server = match ch.recv_hello(hello) {
        Ok(h) => h,
        Err(e @ AuthError::VersionMismatch { .. }) => {
            ch.send_error(e.to_string());
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let ns = ch.recv_nonce()?;
    let mac_s = ch.recv_mac()?;
    let t = transcript(hello, &server);
    if !check_proof(key, LABEL_SERVER, &ns, &nc, &t, &mac_s) {
        ch.send_error("authentication failed: your proof does not match our cluster key".into());
        return Err(AuthError::BadProof);
    }
    ch.send(&[&Msg::AuthResponse {
        mac: make_proof(key, LABEL_CLIENT, &nc, &ns, &t),
    }])?;
    match ch.recv("AuthOk")? {
        Msg::AuthOk => Ok(peer_info(server)),
        other => Err(AuthError::Unexpected {
            expected: "AuthOk",
            got: other.name(),
        }),
    }
}

fn server_side<S: TimeoutStream>(
    ch: &mut Channel<'_, S>,
    key: &ClusterKey,
    hello: &Hello,
) -> Result<PeerInfo, AuthError> {
    let client = match ch.recv_hello(hello) {
        Ok(h) => h,
        Err(e @ AuthError::VersionMismatch { .. }) => {
            // Our Hello first: a client of any version can read the version in it.
            let _ = ch.send(&[
                &Msg::Hello(hello.clone()),
                &Msg::Error { msg: e.to_string() },
            ]);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let nc = ch.recv_nonce()?;
    let ns = fresh_nonce()?;
    let t = transcript(&client, hello);
    let mac_s = make_proof(key, LABEL_SERVER, &ns, &nc, &t);
    ch.send(&[
        &Msg::Hello(hello.clone()),
        &Msg::AuthChallenge { nonce: ns },
        &Msg::AuthResponse { mac: mac_s },
    ])?;
    let mac_c = ch.recv_mac()?;
    if !check_proof(key, LABEL_CLIENT, &nc, &ns, &t, &mac_c) {
        ch.send_error("authentication failed: your proof does not match our cluster key".into());
        return Err(AuthError::BadProof);
    }
    ch.send(&[&Msg::AuthOk])?;
    Ok(peer_info(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let k = ClusterKey::generate().unwrap();
        assert_eq!(
            ClusterKey::from_hex(&format!("  {}\n", k.to_hex())).unwrap(),
            k
        );
        assert!(ClusterKey::from_hex("abc")
            .unwrap_err()
            .contains("64 hex digits"));
        let bad = format!("{}zz", "0".repeat(62));
        assert!(ClusterKey::from_hex(&bad)
            .unwrap_err()
            .contains("position 62"));
        assert_eq!(
            ClusterKey::from_hex(&"AB".repeat(32)).unwrap().as_bytes(),
            &[0xab; 32]
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = ClusterKey::from_bytes([0x5a; KEY_LEN]);
        let s = format!("{k:?}");
        assert!(!s.contains("5a") && !s.contains("90"), "{s}");
    }

    #[test]
    fn proofs_are_bound_to_label_nonces_and_transcript() {
        let k = ClusterKey::from_bytes([1; KEY_LEN]);
        let (a, b) = ([2u8; NONCE_LEN], [3u8; NONCE_LEN]);
        let t = transcript(&Hello::new("c", Role::Cli), &Hello::new("s", Role::Placer));
        let p = make_proof(&k, LABEL_CLIENT, &a, &b, &t);
        assert!(check_proof(&k, LABEL_CLIENT, &a, &b, &t, &p));
        assert!(
            !check_proof(&k, LABEL_SERVER, &a, &b, &t, &p),
            "reflected proof accepted"
        );
        assert!(
            !check_proof(&k, LABEL_CLIENT, &b, &a, &t, &p),
            "swapped nonces accepted"
        );
        let t2 = transcript(&Hello::new("x", Role::Cli), &Hello::new("s", Role::Placer));
        assert!(
            !check_proof(&k, LABEL_CLIENT, &a, &b, &t2, &p),
            "other transcript accepted"
        );
        let k2 = ClusterKey::from_bytes([9; KEY_LEN]);
        assert!(
            !check_proof(&k2, LABEL_CLIENT, &a, &b, &t, &p),
            "other key accepted"
        );
    }
}
