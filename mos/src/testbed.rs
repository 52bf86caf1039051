//! The capped test bed (DESIGN.md §9): each node of a localhost cluster in its own cgroup,
//! with a CPU quota (its capacity times its speed) and a memory limit, so that nodes that
//! share one machine behave like machines of those sizes. cgroup v2 where its controllers
//! are enabled, else the v1 cpu and memory hierarchies. Creating groups needs the
//! privilege to write under /sys/fs/cgroup; without it `mos cluster up` refuses.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// CFS period of every quota, µs.
const PERIOD_US: u64 = 100_000;

/// What one node is capped at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caps {
    /// CPUs (e.g. 0.4), already scaled by the node's speed.
    pub cpu: Option<f64>,
    /// Bytes.
    pub mem: Option<u64>,
}

/// Parse a memory size: `1G`, `512M`, `64K`, or bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("bad size {s:?}: the unit must be K, M, G or T"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| anyhow!("bad size {s:?}: want a number with K, M, G or T, e.g. 1G"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("bad size {s:?}: must be more than 0");
    }
    Ok((n * mul as f64) as u64)
}

/// The v2 root if its cpu and memory controllers are usable, else None.
fn v2_root() -> Option<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    let c = fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    let has = |x: &str| c.split_whitespace().any(|w| w == x);
    (has("cpu") && has("memory")).then_some(root)
}

/// The directories to create for group `name` (one per hierarchy that is needed).
fn group_dirs(name: &str, caps: Caps) -> Result<Vec<PathBuf>> {
    if let Some(root) = v2_root() {
        return Ok(vec![root.join(name)]);
    }
    let mut v = Vec::new();
    if caps.cpu.is_some() {
        let cpu = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"].iter().map(PathBuf::from).find(|p| p.join("cpu.cfs_quota_us").exists());
        v.push(cpu.ok_or_else(|| anyhow!("--cpu-limit: no cgroup cpu controller (neither cgroup v2 with cpu nor v1 /sys/fs/cgroup/cpu)"))?.join(name));
    }
    if caps.mem.is_some() {
        let mem = PathBuf::from("/sys/fs/cgroup/memory");
        if !mem.join("memory.limit_in_bytes").exists() {
            bail!("--mem-limit: no cgroup memory controller (neither cgroup v2 with memory nor v1 /sys/fs/cgroup/memory)");
        }
        v.push(mem.join(name));
    }
    Ok(v)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    fs::write(dir.join(file), value).with_context(|| format!("cannot write {value:?} to {}", dir.join(file).display()))
}

/// Create (or reset) the cgroups of one node, capped at `caps`; their directories.
pub fn create(name: &str, caps: Caps) -> Result<Vec<PathBuf>> {
    let dirs = group_dirs(name, caps)?;
    for d in &dirs {
        if let Some(parent) = d.parent() {
            if d.exists() {
                remove(std::slice::from_ref(d));
            }
            let v2 = parent.join("cgroup.subtree_control").exists();
            fs::create_dir_all(d).map_err(|e| {
                anyhow!("cannot create the node's cgroup {}: {e} (the capped test bed needs the privilege to create cgroups, usually root)", d.display())
            })?;
            if v2 {
                // the parent must hand its controllers down (the root does by default)
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory");
                if let Some(cpu) = caps.cpu {
                    write(d, "cpu.max", &format!("{} {PERIOD_US}", (cpu * PERIOD_US as f64).round().max(1000.0) as u64))?;
                }
                if let Some(mem) = caps.mem {
                    write(d, "memory.max", &mem.to_string())?;
                    let _ = fs::write(d.join("memory.swap.max"), "0");
                }
                continue;
            }
        }
        if d.join("cpu.cfs_quota_us").exists() {
            if let Some(cpu) = caps.cpu {
                write(d, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
                write(d, "cpu.cfs_quota_us", &((cpu * PERIOD_US as f64).round().max(1000.0) as u64).to_string())?;
            }
        }
        if d.join("memory.limit_in_bytes").exists() {
            if let Some(mem) = caps.mem {
                write(d, "memory.limit_in_bytes", &mem.to_string())?;
                // no swap beyond the limit where the kernel accounts it
                let _ = fs::write(d.join("memory.memsw.limit_in_bytes"), mem.to_string());
                let _ = fs::write(d.join("memory.swappiness"), "0");
            }
        }
    }
    Ok(dirs)
}

/// Move process `pid` into every group of `dirs`.
pub fn attach(dirs: &[PathBuf], pid: u32) -> Result<()> {
    for d in dirs {
        write(d, "cgroup.procs", &pid.to_string())?;
    }
    Ok(())
}

/// Kill what is left in the groups and remove them (best effort: nothing to do if gone).
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        for _ in 0..100 {
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: kill has no memory-safety preconditions; these are the node's processes.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "G", "1X", "-1G", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
