//! The node's candidates for balancing (DESIGN.md §9): every process under the shim that
//! runs here. Processes started here register over `shadow.sock` ([`Msg::RegisterProcess`]:
//! `mos run`, and the shim of every program started with `MOS_SHADOW_SOCK`); bodies and
//! batch jobs are the guest table's. Each load report
//! carries one [`Candidate`] per process: its recent CPU use, resident memory, age on this
//! node, whether it may move and, if not, why. Reading `/proc` is a thin layer over pure
//! parsers tested below.
//!
//! [`Msg::RegisterProcess`]: proto::Msg::RegisterProcess

use std::collections::HashMap;
use std::fs;
use std::sync::Mutex;
use std::time::Instant;

use proto::msg::Candidate;

use crate::lock;

/// A process registered here (by `mos run` or its own shim).
#[derive(Debug, Clone)]
struct Registered {
    /// `/proc/PID/stat` start time (clock ticks after boot): tells a reused pid apart.
    start: u64,
    no_migrate: bool,
    since: Instant,
}

/// CPU time seen at the last report, per pid (with its start time).
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: u64,
    ticks: u64,
    at: Instant,
}

/// Registered processes and CPU samples.
#[derive(Default)]
pub struct Registry {
    procs: Mutex<HashMap<u32, Registered>>,
    samples: Mutex<HashMap<u32, Sample>>,
}

/// What `/proc/PID/stat` says that the balancer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// State letter.
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, clock ticks.
    pub start: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parse a `/proc/PID/stat` line (the command may hold spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after the command: field 3 is f[0]
    let num = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: u32::try_from(num(4)?).ok()?,
        cpu_ticks: num(14)? + num(15)?,
        start: num(22)?,
        rss_pages: num(24)?,
    })
}

/// What [`maps_refusal`] says of a process without the shim.
pub const NOT_SHIMMED: &str = "not running under the shim";

/// Why a process whose `/proc/PID/maps` is `maps` cannot move, if it cannot: not under the
/// shim, or a writable shared mapping of a file (its writes would not reach the file from
/// another node; DESIGN.md §4).
pub fn maps_refusal(maps: &str) -> Option<String> {
    let mut shim = false;
    for l in maps.lines() {
        let mut it = l.split_whitespace();
        let (Some(_range), Some(perms)) = (it.next(), it.next()) else { continue };
        let path = it.nth(3).unwrap_or("");
        if path.ends_with("/libmosshim.so") {
            shim = true;
        }
        let shared_write = perms.as_bytes().get(1) == Some(&b'w') && perms.as_bytes().get(3) == Some(&b's');
        let file = path.starts_with('/') && !path.starts_with("/dev/zero") && !path.starts_with("/memfd:") && !path.starts_with("/SYSV");
        if shared_write && file {
            return Some(format!("writable shared mapping of {path}"));
        }
    }
    (!shim).then(|| NOT_SHIMMED.to_string())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// `/proc/PID/stat` now.
pub fn stat_of(pid: u32) -> Option<Stat> {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat(&t))
}

/// The command line, arguments joined by spaces, at most 80 characters.
pub fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String = raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ");
    if s.chars().count() > 80 {
        s = s.chars().take(77).collect::<String>() + "...";
    }
    s
}

/// Whether `pid` has children (a process tree does not move yet: DESIGN.md §10).
fn has_children(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty()))
}

/// What a guest or a registered process is, for [`Registry::candidates`].
pub struct Running {
    /// Real pid here.
    pub pid: u32,
    /// Home node name and pid there (unknown for a body: the placer joins it with the
    /// home's list of bodies away).
    pub home: String,
    pub home_pid: u32,
    pub job: Option<proto::JobId>,
    pub since: Instant,
    pub no_migrate: bool,
    /// A guest (restored from an image, or started by the node for a batch job).
    pub restored: bool,
}

impl Registry {
    /// Register process `pid` (not yet exec'd into its program; the pid stays).
    pub fn register(&self, pid: u32, no_migrate: bool) -> Result<(), String> {
        let st = stat_of(pid).ok_or_else(|| format!("no process {pid}"))?;
        let mut procs = lock(&self.procs);
        match procs.get_mut(&pid) {
            // the same process again (`mos run`, then its program's shim): its age stays,
            // and a "never move" said by either holds
            Some(r) if r.start == st.start => r.no_migrate |= no_migrate,
            _ => {
                procs.insert(pid, Registered { start: st.start, no_migrate, since: Instant::now() });
            }
        }
        Ok(())
    }

    /// The registered processes still alive (same pid, same start time) and here, as
    /// [`Running`] rows; `away(pid)`: its body has left (this is its stub now). Dead ones
    /// are forgotten.
    pub fn local(&self, node: &str, away: impl Fn(u32) -> bool) -> Vec<Running> {
        let mut procs = lock(&self.procs);
        procs.retain(|&pid, r| stat_of(pid).is_some_and(|s| s.start == r.start && s.state != 'Z'));
        procs
            .iter()
            .filter(|(&pid, _)| !away(pid))
            .map(|(&pid, r)| Running { pid, home: node.to_string(), home_pid: pid, job: None, since: r.since, no_migrate: r.no_migrate, restored: false })
            .collect()
    }

    /// One [`Candidate`] per process in `running` that is alive, with its CPU use since
    /// the last call (the first call reports what it used since it started).
    pub fn candidates(&self, running: Vec<Running>) -> Vec<Candidate> {
        let now = Instant::now();
        let (hz, page) = (clock_ticks(), page_size());
        let mut samples = lock(&self.samples);
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for r in running {
            let Some(st) = stat_of(r.pid) else { continue };
            if st.state == 'Z' {
                continue;
            }
            let prev = samples.get(&r.pid).filter(|s| s.start == st.start).copied();
            let cpu_permille = match prev {
                Some(p) if now > p.at => {
                    let used_ms = st.cpu_ticks.saturating_sub(p.ticks) * 1000 / hz;
                    (used_ms * 1000 / (now - p.at).as_millis().max(1) as u64) as u32
                }
                _ => 0,
            };
            seen.insert(r.pid, Sample { start: st.start, ticks: st.cpu_ticks, at: now });
            let maps = fs::read_to_string(format!("/proc/{}/maps", r.pid)).unwrap_or_default();
            // a guest was restored by mosrestart: under the shim, whatever its maps name
            // (its pages may be mapped from its image)
            let refusal = maps_refusal(&maps).filter(|w| !(r.restored && w == NOT_SHIMMED));
            let why_not = if r.no_migrate {
                "started with --no-migrate".to_string()
            } else if let Some(why) = refusal {
                why
            } else if has_children(r.pid) {
                "has child processes".to_string()
            } else {
                String::new()
            };
            out.push(Candidate {
                pid: r.pid,
                home: r.home,
                home_pid: r.home_pid,
                job: r.job,
                cmd: cmdline(r.pid),
                cpu_permille,
                rss_mib: st.rss_pages * page / (1 << 20),
                age_ms: now.duration_since(r.since).as_millis() as u64,
                runnable: st.state == 'R',
                migratable: why_not.is_empty(),
                why_not,
            });
        }
        *samples = seen;
        out.sort_by_key(|c| c.pid);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_odd_command() {
        let line = "4242 (a (b) c) R 17 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 987654 1000000 321 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, Stat { state: 'R', ppid: 17, cpu_ticks: 300, start: 987654, rss_pages: 321 });
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn maps_say_why_a_process_cannot_move() {
        let shim = "7f00-7f10 r-xp 00000000 08:01 1 /opt/mos/libmosshim.so\n";
        assert_eq!(maps_refusal(shim), None);
        assert_eq!(maps_refusal("7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/libc.so.6\n").as_deref(), Some("not running under the shim"));
        let shared = format!("{shim}7e00-7e10 rw-s 00000000 08:01 2 /home/u/data.bin\n");
        assert_eq!(maps_refusal(&shared).as_deref(), Some("writable shared mapping of /home/u/data.bin"));
        // read-only shared, private writable, anonymous shared memory: fine
        let fine = format!("{shim}7e00-7e10 r--s 00000000 08:01 2 /a\n7d00-7d10 rw-p 00000000 08:01 3 /b\n7c00-7c10 rw-s 00000000 00:01 4 /dev/zero (deleted)\n");
        assert_eq!(maps_refusal(&fine), None);
    }

    #[test]
    fn this_process_is_a_candidate_with_its_own_numbers() {
        let reg = Registry::default();
        let me = std::process::id();
        reg.register(me, false).unwrap();
        let local = reg.local("n1", |_| false);
        assert_eq!(local.len(), 1);
        let c = reg.candidates(local);
        assert_eq!((c[0].pid, c[0].home.as_str(), c[0].home_pid), (me, "n1", me));
        assert!(c[0].rss_mib > 0 || c[0].cmd.contains("shadowd"), "{c:?}");
        // a test binary is not under the shim: it may not move, and says why
        assert!(!c[0].migratable && c[0].why_not == "not running under the shim", "{c:?}");
        // the stub of a body away is not a candidate
        assert!(reg.local("n1", |p| p == me).is_empty());
        assert!(reg.register(u32::MAX, false).is_err());
    }

    #[test]
    fn registering_again_keeps_the_age_and_any_no_migrate() {
        let reg = Registry::default();
        let me = std::process::id();
        reg.register(me, true).unwrap();
        let first = reg.local("n1", |_| false)[0].since;
        std::thread::sleep(std::time::Duration::from_millis(5));
        // the program's shim registers the pid `mos run --no-migrate` registered
        reg.register(me, false).unwrap();
        let again = reg.local("n1", |_| false);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].since, first, "the age on the node starts at the first registration");
        assert!(again[0].no_migrate, "--no-migrate holds whoever registers later");
    }
}
