//! mos wire protocol: every byte that travels between mos parts (DESIGN.md §1, §5).
//!
//! - [`frame`]: length-prefixed frames, postcard headers, raw bulk payloads, size limits.
//! - [`msg`]: the [`Msg`] enum and its parts; [`PROTO_VERSION`].
//! - [`auth`]: the cluster key file and the mutual HMAC handshake every connection starts with.
//! - [`socket`]: [`NoSigPipe`], for writing to sockets from inside an application.
//!
//! Blocking `std::io` only: no async runtime, no threads of its own, so the shim can use it
//! inside other people's processes.
//!
//! A typical connection:
//!
//! ```no_run
//! use std::net::TcpStream;
//! use proto::{auth, FrameReader, FrameWriter, Hello, Msg, Role};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = auth::load_key("/etc/mos/cluster.key".as_ref())?;
//! let mut stream = TcpStream::connect("127.0.0.1:7070")?;
//! let peer = auth::client_handshake(&mut stream, &key, &Hello::new("node-a", Role::Cli))?;
//! println!("connected to {} ({})", peer.node, peer.role);
//! let mut w = FrameWriter::new(stream.try_clone()?);
//! let mut r = FrameReader::new(stream);
//! w.write_msg(&Msg::QueryNodes, &[])?;
//! let (reply, _bulk): (Msg, Vec<u8>) = r.read_msg()?;
//! println!("{reply:?}");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod frame;
pub mod gossip;
pub mod msg;
pub mod paths;
pub mod rsys;
pub mod socket;
pub mod spliced;
pub mod stream;

pub use auth::{AuthError, ClusterKey, KeyError, PeerInfo};
pub use frame::{FrameError, FrameReader, FrameWriter, Limits, WireHeader};
pub use msg::{Hello, JobId, Msg, NodeName, Role, Version, PROTO_VERSION};
pub use socket::NoSigPipe;
