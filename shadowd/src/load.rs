//! What a load report says about this machine, read from `/proc`. Parsing is pure
//! (functions over text) and tested beside the code; reading is a thin wrapper.

use std::fs;
use std::path::Path;

/// Memory totals, MiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Available memory (`MemAvailable`, or `MemFree` on kernels without it).
    pub free_mib: u64,
    /// Total memory.
    pub total_mib: u64,
}

/// Parse `/proc/meminfo`. `None` if `MemTotal` is missing.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total_kib = field("MemTotal")?;
    let free_kib = field("MemAvailable").or_else(|| field("MemFree")).unwrap_or(0);
    Some(Memory {
        free_mib: free_kib / 1024,
        total_mib: total_kib / 1024,
    })
}

/// This node's memory: the machine's (`/proc/meminfo`), or, when this daemon's memory
/// cgroup (v1 or v2) has a lower limit, that limit and what is left of it (a node of a
/// capped test bed, DESIGN.md §9). Zeros if nothing can be read.
pub fn memory() -> Memory {
    let machine = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or_default();
    let cg = fs::read_to_string("/proc/self/cgroup").ok().and_then(|t| cgroup_memory_files(&t));
    let read = |p: &str| fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u64>().ok());
    match cg.and_then(|(limit, usage)| Some((read(&limit)?, read(&usage)?, usage))) {
        Some((limit, usage, usage_file)) => {
            // page cache the kernel can drop at once (images written and received) is
            // not memory in use
            let stat = Path::new(&usage_file).with_file_name("memory.stat");
            let cache = fs::read_to_string(stat).ok().map_or(0, |t| inactive_file(&t));
            within_limit(machine, limit, usage.saturating_sub(cache))
        }
        None => machine,
    }
}

/// Whether this node's memory is a cgroup limit below the machine's (a node of a capped
/// test bed). Such a node receives migration images on disk, where the kernel can write
/// them back and drop their pages under pressure; in memory (tmpfs, no swap) they could
/// only be OOM-killed.
pub fn memory_limited() -> bool {
    let machine = fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo(&t)).unwrap_or_default();
    let node = memory();
    node.total_mib > 0 && node.total_mib < machine.total_mib
}

/// The inactive page cache of a `memory.stat` text (v1: `total_inactive_file`, v2:
/// `inactive_file`), bytes.
pub fn inactive_file(stat: &str) -> u64 {
    let field = |name: &str| stat.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok());
    field("total_inactive_file").or_else(|| field("inactive_file")).unwrap_or(0)
}

/// The (limit, usage) files of the memory cgroup named in a `/proc/self/cgroup` text:
/// the v1 memory controller's, else the v2 group's (when it has a memory.max).
pub fn cgroup_memory_files(text: &str) -> Option<(String, String)> {
    for l in text.lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        if ctrl.split(',').any(|c| c == "memory") {
            let d = format!("/sys/fs/cgroup/memory{path}");
            return Some((format!("{d}/memory.limit_in_bytes"), format!("{d}/memory.usage_in_bytes")));
        }
    }
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let d = format!("{root}{path}");
        if Path::new(&format!("{d}/memory.max")).exists() {
            return Some((format!("{d}/memory.max"), format!("{d}/memory.current")));
        }
    }
    None
}

/// The machine's memory seen through a cgroup limit of `limit` bytes with `usage` bytes
/// used (an unlimited group, or one above the machine's memory, changes nothing).
pub fn within_limit(machine: Memory, limit: u64, usage: u64) -> Memory {
    let limit_mib = limit / (1 << 20);
    if machine.total_mib > 0 && limit_mib >= machine.total_mib {
        return machine;
    }
    let left = limit.saturating_sub(usage) / (1 << 20);
    Memory { free_mib: left.min(machine.free_mib), total_mib: limit_mib }
}

/// The state letter of a `/proc/PID/stat` line (`R`, `S`, `D`, `Z`, ...). The command name
/// in parentheses may itself hold spaces and parentheses, so the state is found after the
/// last `)`.
pub fn parse_stat_state(text: &str) -> Option<char> {
    let after = &text[text.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True if process `pid` is runnable now (state `R`).
pub fn is_runnable(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat_state(&t))
        == Some('R')
}

/// Online cpus (at least 1).
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_prefers_available() {
        let t = "MemTotal:       16384000 kB\nMemFree:          102400 kB\nMemAvailable:    8192000 kB\n";
        assert_eq!(
            parse_meminfo(t),
            Some(Memory {
                free_mib: 8000,
                total_mib: 16000
            })
        );
    }

    #[test]
    fn meminfo_falls_back_to_free_and_needs_total() {
        let t = "MemTotal: 2048 kB\nMemFree: 1024 kB\n";
        assert_eq!(
            parse_meminfo(t),
            Some(Memory {
                free_mib: 1,
                total_mib: 2
            })
        );
        assert_eq!(parse_meminfo("MemFree: 1024 kB\n"), None);
        // A field whose name only starts like MemTotal is not MemTotal.
        assert_eq!(parse_meminfo("MemTotalX: 1 kB\n"), None);
    }

    #[test]
    fn stat_state_survives_odd_names() {
        assert_eq!(parse_stat_state("42 (job) R 1 42 42 0"), Some('R'));
        assert_eq!(parse_stat_state("42 (a) b) S 1 42"), Some('S'));
        assert_eq!(parse_stat_state("42 (no end"), None);
        assert_eq!(parse_stat_state("42 (x)"), None);
    }

    #[test]
    fn a_cgroup_limit_is_the_node_memory() {
        let v1 = "12:cpu,cpuacct:/mos/n1\n7:memory:/mos/n1\n0::/\n";
        assert_eq!(cgroup_memory_files(v1), Some(("/sys/fs/cgroup/memory/mos/n1/memory.limit_in_bytes".into(), "/sys/fs/cgroup/memory/mos/n1/memory.usage_in_bytes".into())));
        let m = Memory { free_mib: 20_000, total_mib: 24_000 };
        assert_eq!(within_limit(m, 1 << 30, 256 << 20), Memory { free_mib: 768, total_mib: 1024 });
        // no limit (v1 says 2^63 - 4096): the machine's
        assert_eq!(within_limit(m, 0x7FFF_FFFF_FFFF_F000, 1 << 30), m);
        // over the limit: nothing free
        assert_eq!(within_limit(m, 1 << 30, 2 << 30).free_mib, 0);
        assert_eq!(inactive_file("cache 10\ninactive_file 5\ntotal_inactive_file 4096\n"), 4096);
        assert_eq!(inactive_file("anon 1\ninactive_file 8192\n"), 8192);
        assert_eq!(inactive_file(""), 0);
    }

    #[test]
    fn this_machine_has_memory_and_cpus() {
        let m = memory();
        assert!(m.total_mib > 0 && m.free_mib <= m.total_mib, "{m:?}");
        assert!(online_cpus() >= 1);
        assert!(!is_runnable(u32::MAX));
    }
}
