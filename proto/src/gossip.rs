//! Gossip: the load vectors shadowds send each other over UDP in gossip mode (MOSIX's
//! probabilistic dissemination, DESIGN.md §9). One datagram, at most [`MAX_DATAGRAM`]
//! bytes:
//!
//! ```text
//! "MOSG" | version (1 byte) | postcard(Packet) | HMAC-SHA256 under the cluster key (32)
//! ```
//!
//! The MAC covers everything before it and is checked before anything is parsed. Replay
//! protection: each sender numbers its datagrams with a sequence that only grows (it
//! starts from the sender's clock in microseconds, so a restarted sender keeps going up),
//! and a receiver keeps the highest it has seen per sender and drops anything not above
//! it ([`ReplayGuard`]). The first entry is the sender's own vector; the rest are the
//! freshest of what it has heard, so that load information spreads beyond direct peers.
//! Decoding is a pure function of bytes, tested below.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::auth::{datagram_mac, datagram_mac_ok, ClusterKey};
use crate::msg::MAC_LEN;

/// Largest datagram sent or accepted.
pub const MAX_DATAGRAM: usize = 512;
const MAGIC: &[u8; 4] = b"MOSG";
const VERSION: u8 = 1;
/// Longest node name carried.
pub const MAX_NAME: usize = 32;
/// Longest address carried.
pub const MAX_ADDR: usize = 48;

/// One node's load vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadVector {
    /// Node name.
    pub node: String,
    /// Its shadowd (TCP) address: where migrations go.
    pub addr: String,
    /// Its gossip (UDP) address: where vectors go.
    pub gossip: String,
    /// Runnable processes of the node.
    pub run_queue: u32,
    /// Cpus.
    pub cpus: u32,
    /// Relative speed, 1000 = the reference machine.
    pub speed: u32,
    /// Free memory, MiB.
    pub free_mib: u64,
    /// Total memory, MiB.
    pub total_mib: u64,
    /// How old the vector was when sent, ms (0 for the sender's own: measured now).
    pub age_ms: u32,
}

/// What one datagram says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// The sender's sequence number (only grows).
    pub seq: u64,
    /// The sender's own vector first, then what it relays.
    pub vectors: Vec<LoadVector>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// Too short or too long.
    #[error("{0} bytes (at most {MAX_DATAGRAM})")]
    Size(usize),
    /// Not ours.
    #[error("not a mos gossip datagram (bad magic or version)")]
    Magic,
    /// Not signed with our key.
    #[error("bad MAC (not signed with this cluster's key)")]
    Mac,
    /// Signed, but not a packet.
    #[error("malformed contents: {0}")]
    Malformed(String),
    /// No vector in it.
    #[error("no vector")]
    Empty,
    /// A name or address over the limits.
    #[error("a name or address too long")]
    TooLong,
    /// Seen before (or older than what was seen).
    #[error("replayed or old (seq {seq}, last seen {last})")]
    Replay {
        /// Its sequence number.
        seq: u64,
        /// The highest seen from its sender.
        last: u64,
    },
}

fn sane(v: &LoadVector) -> bool {
    !v.node.is_empty() && v.node.len() <= MAX_NAME && v.addr.len() <= MAX_ADDR && v.gossip.len() <= MAX_ADDR
}

/// Encode and sign `p`, relaying as many of its vectors after the first as fit in
/// [`MAX_DATAGRAM`]. None if even the sender's own vector does not fit (names too long).
pub fn encode(key: &ClusterKey, p: &Packet) -> Option<Vec<u8>> {
    if p.vectors.is_empty() || !p.vectors.iter().all(sane) {
        return None;
    }
    let mut n = p.vectors.len();
    loop {
        let part = Packet { seq: p.seq, vectors: p.vectors[..n].to_vec() };
        let mut b = MAGIC.to_vec();
        b.push(VERSION);
        b.extend(postcard::to_allocvec(&part).ok()?);
        if b.len() + MAC_LEN <= MAX_DATAGRAM {
            let mac = datagram_mac(key, &b);
            b.extend_from_slice(&mac);
            return Some(b);
        }
        if n == 1 {
            return None;
        }
        n -= 1;
    }
}

/// Check and decode a datagram (MAC first).
pub fn decode(key: &ClusterKey, b: &[u8]) -> Result<Packet, GossipError> {
    if b.len() > MAX_DATAGRAM || b.len() < MAGIC.len() + 1 + MAC_LEN {
        return Err(GossipError::Size(b.len()));
    }
    if &b[..4] != MAGIC || b[4] != VERSION {
        return Err(GossipError::Magic);
    }
    let (body, mac) = b.split_at(b.len() - MAC_LEN);
    if !datagram_mac_ok(key, body, mac) {
        return Err(GossipError::Mac);
    }
    let (p, rest): (Packet, &[u8]) = postcard::take_from_bytes(&body[5..]).map_err(|e| GossipError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(GossipError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    if p.vectors.is_empty() {
        return Err(GossipError::Empty);
    }
    if !p.vectors.iter().all(sane) {
        return Err(GossipError::TooLong);
    }
    Ok(p)
}

/// The highest sequence seen per sender.
#[derive(Default, Debug)]
pub struct ReplayGuard {
    last: HashMap<String, u64>,
}

impl ReplayGuard {
    /// Accept `p` (from the node of its first vector) only if its seq is new.
    pub fn check(&mut self, p: &Packet) -> Result<(), GossipError> {
        let from = &p.vectors[0].node;
        let last = self.last.get(from).copied().unwrap_or(0);
        if p.seq <= last {
            return Err(GossipError::Replay { seq: p.seq, last });
        }
        self.last.insert(from.clone(), p.seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(node: &str, rq: u32) -> LoadVector {
        LoadVector { node: node.into(), addr: "127.0.0.1:40001".into(), gossip: "127.0.0.1:40002".into(), run_queue: rq, cpus: 1, speed: 1000, free_mib: 900, total_mib: 1024, age_ms: 0 }
    }

    #[test]
    fn round_trip_and_size() {
        let k = ClusterKey::from_bytes([7; 32]);
        let p = Packet { seq: 42, vectors: vec![v("node1", 3), v("node2", 0)] };
        let b = encode(&k, &p).unwrap();
        assert!(b.len() <= MAX_DATAGRAM);
        assert_eq!(decode(&k, &b).unwrap(), p);
        // many relayed vectors: as many as fit, the sender's own first
        let big = Packet { seq: 1, vectors: (0..40).map(|i| v(&format!("node{i}"), i)).collect() };
        let b = encode(&k, &big).unwrap();
        assert!(b.len() <= MAX_DATAGRAM);
        let d = decode(&k, &b).unwrap();
        assert!(d.vectors.len() > 2 && d.vectors.len() < 40 && d.vectors[0].node == "node0");
        // a name too long is never sent
        assert!(encode(&k, &Packet { seq: 1, vectors: vec![v(&"x".repeat(40), 0)] }).is_none());
    }

    #[test]
    fn garbage_and_other_keys_are_refused() {
        let k = ClusterKey::from_bytes([7; 32]);
        let other = ClusterKey::from_bytes([8; 32]);
        let b = encode(&k, &Packet { seq: 1, vectors: vec![v("node1", 1)] }).unwrap();
        assert_eq!(decode(&other, &b), Err(GossipError::Mac));
        let mut flipped = b.clone();
        flipped[10] ^= 1;
        assert_eq!(decode(&k, &flipped), Err(GossipError::Mac));
        assert_eq!(decode(&k, b"hello"), Err(GossipError::Size(5)));
        assert_eq!(decode(&k, &[0u8; 600]), Err(GossipError::Size(600)));
        let mut wrong = b.clone();
        wrong[0] = b'X';
        assert_eq!(decode(&k, &wrong), Err(GossipError::Magic));
        // signed but not a packet
        let mut bad = MAGIC.to_vec();
        bad.push(VERSION);
        bad.extend_from_slice(&[0xff; 20]);
        let mac = datagram_mac(&k, &bad);
        bad.extend_from_slice(&mac);
        assert!(matches!(decode(&k, &bad), Err(GossipError::Malformed(_))));
        // any byte string at all: an error or a packet, never a panic
        let mut x = 12345u64;
        for len in 0..600 {
            let junk: Vec<u8> = (0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }).collect();
            let _ = decode(&k, &junk);
        }
    }

    #[test]
    fn replays_are_dropped() {
        let mut g = ReplayGuard::default();
        let p = |seq| Packet { seq, vectors: vec![v("node1", 1)] };
        assert!(g.check(&p(10)).is_ok());
        assert_eq!(g.check(&p(10)), Err(GossipError::Replay { seq: 10, last: 10 }));
        assert!(g.check(&p(9)).is_err());
        assert!(g.check(&p(11)).is_ok());
        // another sender has its own sequence
        assert!(g.check(&Packet { seq: 1, vectors: vec![v("node2", 0)] }).is_ok());
    }
}
