//! `mos cluster up --netns`: every node in a network namespace of its own, with its own
//! address on a private subnet, as if each were a host of its own: a bridge in this
//! namespace (10.213.K.1/24, where the placer listens) and a veth pair per node
//! (10.213.K.(10+i) inside, `eth0`, default route through the bridge). 127.0.0.1 inside
//! a node is that node's own. Made with iproute2's `ip`; removed by `mos cluster down`.
//! Only addresses in namespaces made here are ever contacted.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

/// What was made, for `cluster down`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bed {
    pub bridge: String,
    /// the bridge's address (the placer's, and the nodes' gateway)
    pub gateway: String,
    /// per node: namespace name and address
    pub nodes: Vec<NodeNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeNet {
    pub netns: String,
    pub ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running `ip` (iproute2; `apt install iproute2`)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A short tag for this cluster's names (one per `$MOS_HOME`): interface names have at
/// most 15 characters.
fn tag(home: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in home.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    format!("{:05x}", h & 0xf_ffff)
}

/// The third byte of a 10.213.K.0/24 subnet no other bed here uses.
fn free_subnet() -> Result<u8> {
    let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().context("running `ip`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    (1..=250u8).find(|k| !text.contains(&format!("10.213.{k}."))).ok_or_else(|| anyhow!("no free 10.213.K.0/24 subnet"))
}

/// Make the bed for `nodes` nodes of the cluster homed at `home`. On failure nothing is
/// left behind.
pub fn create(home: &Path, nodes: u32) -> Result<Bed> {
    if nodes > 200 {
        bail!("--netns: at most 200 nodes");
    }
    // one bed at a time picks its subnet (several test clusters start side by side)
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/run/mos-netbed.lock").context("opening /run/mos-netbed.lock (--netns needs root)")?;
    // SAFETY: flock on a file we hold open; released when it closes.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    let t = tag(home);
    let k = free_subnet()?;
    let bed = Bed {
        bridge: format!("mosb{t}"),
        gateway: format!("10.213.{k}.1"),
        nodes: (1..=nodes).map(|i| NodeNet { netns: format!("mos{t}n{i}"), ip: format!("10.213.{k}.{}", 10 + i) }).collect(),
    };
    if let Err(e) = build(&bed) {
        remove(&bed);
        return Err(e.context("cannot set up the network namespaces (--netns needs root and iproute2)"));
    }
    Ok(bed)
}

fn build(bed: &Bed) -> Result<()> {
    let br = bed.bridge.as_str();
    ip(&["link", "add", br, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{}/24", bed.gateway), "dev", br])?;
    ip(&["link", "set", br, "up"])?;
    for (i, n) in bed.nodes.iter().enumerate() {
        let host = format!("{br}v{}", i + 1);
        let peer = format!("{br}p{}", i + 1);
        let ns = n.netns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", ns])?;
        ip(&["link", "set", &host, "master", br, "up"])?;
        ip(&["-n", ns, "link", "set", &peer, "name", "eth0"])?;
        ip(&["-n", ns, "addr", "add", &format!("{}/24", n.ip), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &bed.gateway])?;
    }
    Ok(())
}

/// Remove the bed (what is left of it: every step is tried).
pub fn remove(bed: &Bed) {
    for n in &bed.nodes {
        let _ = ip(&["netns", "del", &n.netns]);
    }
    for i in 1..=bed.nodes.len() {
        let _ = ip(&["link", "del", &format!("{}v{i}", bed.bridge)]);
    }
    let _ = ip(&["link", "del", &bed.bridge]);
}

/// The namespace's file, to enter it.
pub fn open(netns: &str) -> Result<std::fs::File> {
    let p = format!("/run/netns/{netns}");
    std::fs::File::open(&p).with_context(|| format!("opening {p}"))
}

/// Move the calling thread (the whole process when it has one thread) into `netns`.
pub fn enter(netns: &str) -> Result<()> {
    let f = open(netns)?;
    // SAFETY: setns with a namespace fd we hold open.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
        bail!("entering network namespace {netns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interfaces() {
        let t = tag(Path::new("/tmp/mos-cluster-abcdef/some/long/home"));
        assert_eq!(t.len(), 5);
        // bridge "mosb" + tag + "v200": 13 characters, under IFNAMSIZ - 1
        assert!(format!("mosb{t}v200").len() <= 15);
        assert_ne!(tag(Path::new("/a")), tag(Path::new("/b")));
    }
}
