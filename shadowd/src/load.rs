//! What a load report says about this machine, read from `/proc`. Parsing is pure
//! (functions over text) and tested beside the code; reading is a thin wrapper.

use std::fs;

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

/// This machine's memory; zeros if `/proc/meminfo` cannot be read.
pub fn memory() -> Memory {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or_default()
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
    fn this_machine_has_memory_and_cpus() {
        let m = memory();
        assert!(m.total_mib > 0 && m.free_mib <= m.total_mib, "{m:?}");
        assert!(online_cpus() >= 1);
        assert!(!is_runnable(u32::MAX));
    }
}
