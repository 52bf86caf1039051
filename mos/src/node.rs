//! `mos node start|stop`: this host's daemons as the cluster description
//! (`placer::clusterfile`) says: the shadowd of each node whose address is one of this
//! host's (or of the nodes named), and the placer if its address is. Their pids are kept
//! in `$MOS_HOME/node.json` for `stop`; their logs in their state directories.

use crate::cluster::{alive, bin, home, reap_any, spawn_daemon, wait_addr};
use anyhow::{anyhow, bail, Context, Result};
use placer::clusterfile::ClusterFile;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
struct Started {
    daemons: Vec<(String, i32)>,
}

fn started_path() -> PathBuf {
    home().join("node.json")
}

/// Whether `addr` (HOST:PORT) is one of this host's addresses.
fn is_here(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs().ok().and_then(|mut a| a.next()).is_some_and(|sa| std::net::UdpSocket::bind((sa.ip(), 0)).is_ok())
}

pub fn start(config: Option<&Path>, names: &[String]) -> Result<()> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => ClusterFile::find(&home()).ok_or_else(|| anyhow!("no cluster description: {} or /etc/mos/cluster.toml (or --config FILE)", home().join("cluster.toml").display()))?,
    };
    let f = ClusterFile::load(&path).map_err(anyhow::Error::msg)?;
    if let Ok(text) = std::fs::read_to_string(started_path()) {
        let s: Started = serde_json::from_str(&text).unwrap_or(Started { daemons: Vec::new() });
        if s.daemons.iter().any(|(_, p)| alive(*p)) {
            bail!("daemons of an earlier `mos node start` still run ({}); `mos node stop` first", started_path().display());
        }
    }
    let nodes: Vec<_> = if names.is_empty() {
        f.nodes.iter().filter(|n| is_here(&n.addr)).collect()
    } else {
        names.iter().map(|n| f.node(n)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?
    };
    let placer_here = names.is_empty() && is_here(&f.placer.addr);
    if nodes.is_empty() && !placer_here {
        bail!("{}: no node's address and not the placer's is one of this host's (name them with --node)", path.display());
    }
    let cfg = path.canonicalize().unwrap_or(path.clone()).display().to_string();
    let mut started = Started { daemons: Vec::new() };
    let result = (|| -> Result<()> {
        if placer_here {
            let dir = f.placer.state_dir.clone();
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let log = dir.join("placer.log");
            let pid = spawn_daemon(&bin("placer")?, &["--config".into(), cfg.clone()], &log, &[], None)?;
            started.daemons.push(("placer".into(), pid));
            wait_listening(&f.placer.addr, pid, "placer", &log)?;
            println!("placer  pid {pid:<7} {}  log {}", f.placer.addr, log.display());
        }
        for n in &nodes {
            let dir = n.state_dir();
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let _ = std::fs::remove_file(dir.join("addr"));
            let log = dir.join("shadowd.log");
            let pid = spawn_daemon(&bin("shadowd")?, &["--config".into(), cfg.clone(), "--node".into(), n.name.clone()], &log, &[], None)?;
            started.daemons.push((n.name.clone(), pid));
            wait_addr(&dir, pid, &n.name, &log)?;
            println!("{:<7} pid {pid:<7} {}  log {}", n.name, n.addr, log.display());
        }
        Ok(())
    })();
    std::fs::create_dir_all(home())?;
    std::fs::write(started_path(), serde_json::to_string_pretty(&started)?)?;
    if result.is_err() {
        let _ = stop();
    }
    result
}

/// The placer writes no address file: wait until its address answers.
fn wait_listening(addr: &str, pid: i32, what: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if !alive(pid) || Instant::now() > deadline {
            bail!("{what} did not come up at {addr}; its log {}:\n{}", log.display(), std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stop() -> Result<()> {
    let text = std::fs::read_to_string(started_path()).map_err(|_| anyhow!("nothing started by `mos node start` ({} is missing)", started_path().display()))?;
    let s: Started = serde_json::from_str(&text).with_context(|| format!("corrupt {}", started_path().display()))?;
    for (_, p) in &s.daemons {
        // SAFETY: terminating daemons `mos node start` started.
        unsafe { libc::kill(*p, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.daemons.iter().any(|(_, p)| alive(*p)) && Instant::now() < deadline {
        reap_any();
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, p) in s.daemons.iter().filter(|(_, p)| alive(*p)) {
        // SAFETY: killing a daemon that ignored SIGTERM.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    // a shadowd that was killed leaves its in-memory migration images behind
    for (name, pid) in &s.daemons {
        let _ = std::fs::remove_dir_all(format!("/dev/shm/mos-{name}-{pid}"));
    }
    let _ = std::fs::remove_file(started_path());
    println!("{} daemon(s) stopped", s.daemons.len());
    Ok(())
}
