//! "automatic balancing" figures (DESIGN.md §9): the makespan of 8 CPU-bound processes of
//! equal work, all started with `mos run` at node1 of a 4-node cluster capped at 0.4 CPU
//! per node, with central balancing and with `--no-balance`, beside the ideal (total work
//! / total capacity), the work measured uncapped in the same run. Needs the privilege to
//! create cgroups; without it the section says so and is skipped. Every cluster and
//! process it starts is stopped by a guard on drop, also when a step fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, root};

const NODES: u32 = 4;
const CPU: f64 = 0.4;
const PROCS: u32 = 8;

struct Cluster {
    home: PathBuf,
}

impl Cluster {
    fn up(home: &Path, extra: &[&str]) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(home);
        std::fs::create_dir_all(home).unwrap();
        let c = Cluster { home: home.to_path_buf() };
        c.mos(&["cluster", "init"])?;
        let (n, cpu) = (NODES.to_string(), CPU.to_string());
        let mut args = vec!["cluster", "up", "--nodes", &n, "--interval-ms", "200", "--cpu-limit", &cpu, "--min-age-ms", "400"];
        args.extend_from_slice(extra);
        c.mos(&args)?;
        Ok(c)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("mos"));
        cmd.args(args).env("MOS_HOME", &self.home).env("MOS_HOME_NODE", "node1").stdin(Stdio::null());
        cmd
    }

    fn mos(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command(args).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("mos {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command(&["cluster", "down"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Processes killed on drop.
struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Seconds until all PROCS crunches started at node1 are done; their outputs checked.
fn makespan(c: &Cluster, exe: &Path, units: u32, want: &[String]) -> Result<f64, String> {
    let t = Instant::now();
    let mut ps = Procs(Vec::new());
    for i in 1..=PROCS {
        let mut cmd = c.command(&["run", "--"]);
        cmd.arg(exe).arg(i.to_string()).arg(units.to_string()).stdout(Stdio::piped());
        ps.0.push(cmd.spawn().map_err(|e| e.to_string())?);
    }
    let deadline = t + Duration::from_secs(600);
    for (i, ch) in ps.0.iter_mut().enumerate() {
        let mut out = String::new();
        use std::io::Read;
        ch.stdout.take().unwrap().read_to_string(&mut out).map_err(|e| e.to_string())?;
        let st = ch.wait().map_err(|e| e.to_string())?;
        if !st.success() || out != want[i] {
            return Err(format!("crunch {}: {st}, output differs from the uninterrupted run", i + 1));
        }
        if Instant::now() > deadline {
            return Err("past 600 s".into());
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

pub fn run(dir: &Path) {
    println!("== mos bench: automatic balancing ({PROCS} CPU-bound processes at node1 of {NODES} nodes capped at {CPU} CPU) ==");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the capped test bed needs root (cgroups)");
        return;
    }
    // the tests' CPU-bound program (tests/c/crunch.c), one source for both
    let exe = dir.join("crunch");
    let st = Command::new("cc").args(["-O2", "-o"]).arg(&exe).arg(root().join("tests/c/crunch.c")).status().expect("cc");
    assert!(st.success(), "compiling tests/c/crunch.c");
    let units: u32 = std::env::var("MOS_BENCH_UNITS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    // the work, uncapped and alone, and the outputs every run must give
    // (CPU time, not wall time: the machine is shared, and a wall clock would count the
    // other tenants' share as work)
    let children_cpu = || {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    let mut want = Vec::new();
    let before = children_cpu();
    for i in 1..=PROCS {
        let out = Command::new(&exe).arg(i.to_string()).arg(units.to_string()).output().expect("crunch");
        want.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let work = children_cpu() - before;
    let ideal = work / (f64::from(NODES) * CPU);
    println!("work {work:.2} cpu-s uncapped ({:.2} s a process); ideal makespan {ideal:.2} s", work / f64::from(PROCS));
    for (label, extra) in [("central", &[][..]), ("gossip", &["--mode", "gossip"][..]), ("off (--no-balance)", &["--no-balance"][..])] {
        let home = dir.join(format!("balance-{}", label.split(' ').next().unwrap()));
        let r = Cluster::up(&home, extra).and_then(|c| makespan(&c, &exe, units, &want));
        match r {
            Ok(s) => println!("  {label:<20} makespan {s:>7.2} s   {:.2}x ideal", s / ideal),
            Err(e) => println!("  {label:<20} failed: {e}"),
        }
    }
}
