//! The cluster side of the CLI: `mos cluster init|up|down`, `mossubmit`, `mos q`,
//! `mos status`, `mos rm|hold|release|vacate`, `mos history`. All talk to the placer over
//! an authenticated connection; the cluster's key and run state live in `$MOS_HOME`
//! (default `~/.mos`).

use anyhow::{anyhow, bail, Context, Result};
use proto::auth;
use proto::frame::{FrameReader, FrameWriter};
use proto::msg::{Hello, JobCommand, Msg, OsBytes, Role};
use proto::socket::NoSigPipe;
use serde::{Deserialize, Serialize};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::report::{analyze, ps, queue, status};

pub fn home() -> PathBuf {
    match std::env::var_os("MOS_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".mos"),
    }
}

pub(crate) fn key_path() -> PathBuf {
    home().join("cluster.key")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Daemon {
    pub name: String,
    pub pid: i32,
    pub addr: String,
    pub state_dir: PathBuf,
    /// The node's cgroups (the capped test bed), which its home processes join too.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The node's network namespace (`--netns`), which its home processes join too.
    #[serde(default)]
    pub netns: Option<String>,
}

/// Who decides automatic migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The placer, every interval, over all nodes' reports.
    Central,
    /// Every shadowd, over the load vectors it hears by gossip (no central decision).
    Gossip,
}

/// How `mos cluster up` sets the cluster up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: u32,
    pub interval_ms: u64,
    /// Automatic balancing; false: placement only.
    pub balance: bool,
    /// Who decides the moves.
    pub mode: Mode,
    /// CPU quota per node (times its speed).
    pub cpu_limit: Option<f64>,
    /// Memory limit per node (`1G`).
    pub mem_limit: Option<String>,
    /// Relative speed per node (default 1 each).
    pub speeds: Vec<f64>,
    /// Minimum age on a node before a process is balanced.
    pub min_age_ms: u64,
    /// Each node in a network namespace of its own (`crate::netbed`).
    pub netns: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub placer: Daemon,
    pub nodes: Vec<Daemon>,
    /// The network namespaces and bridge of `--netns`, removed at `down`.
    #[serde(default)]
    pub bed: Option<crate::netbed::Bed>,
}

fn run_state_path() -> PathBuf {
    home().join("cluster.json")
}

pub fn load_run_state() -> Result<RunState> {
    let p = run_state_path();
    let text = std::fs::read_to_string(&p).map_err(|_| anyhow!("no cluster is up (no {}); run `mos cluster up`", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("corrupt {}", p.display()))
}

pub(crate) fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub fn init() -> Result<()> {
    let h = home();
    std::fs::create_dir_all(&h).with_context(|| format!("creating {}", h.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o700))?;
    let k = key_path();
    if k.exists() {
        auth::load_key(&k).with_context(|| format!("existing key {}", k.display()))?;
        println!("cluster already initialised: key {}", k.display());
        return Ok(());
    }
    auth::create_key_file(&k, false).with_context(|| format!("creating {}", k.display()))?;
    println!("cluster initialised: key {} (0600)", k.display());
    Ok(())
}

pub(crate) fn bin(name: &str) -> Result<PathBuf> {
    proto::paths::locate(name).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Start a daemon in its own session; in the cgroups `cgroups` (their `cgroup.procs`
/// opened here, written by the child before it execs, so the daemon and everything it
/// starts are in them from the first instruction).
pub(crate) fn spawn_daemon(exe: &Path, args: &[String], log: &Path, cgroups: &[PathBuf], netns: Option<&str>) -> Result<i32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let procs: Vec<std::fs::File> = cgroups
        .iter()
        .map(|d| std::fs::OpenOptions::new().write(true).open(d.join("cgroup.procs")).with_context(|| format!("opening {}/cgroup.procs", d.display())))
        .collect::<Result<_>>()?;
    let procs_fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let ns = netns.map(crate::netbed::open).transpose()?;
    let ns_fd = ns.as_ref().map_or(-1, |f| f.as_raw_fd());
    let mut c = std::process::Command::new(exe);
    c.args(args).stdin(std::process::Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // Between fork and exec the child makes only async-signal-safe calls: getpid, write
    // of a number formatted on the stack, setns, setsid, close_range.
    // SAFETY: the pre-exec hook is async-signal-safe (above) and its fds are open.
    unsafe {
        c.pre_exec(move || {
            let mut buf = [0u8; 16];
            let mut n = libc::getpid() as u32;
            let mut i = buf.len();
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for &fd in &procs_fds {
                if libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if ns_fd >= 0 && libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32);
            Ok(())
        });
    }
    let child = c.spawn().with_context(|| format!("starting {}", exe.display()))?;
    Ok(child.id() as i32)
}

pub(crate) fn wait_addr(dir: &Path, pid: i32, what: &str, log: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("addr")) {
            return Ok(a.trim().to_string());
        }
        if !alive(pid) || Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} did not start: {}", tail.lines().last().unwrap_or("no output"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn up(o: &UpOptions) -> Result<()> {
    let (nodes, interval_ms) = (o.nodes, o.interval_ms);
    if !o.speeds.is_empty() && o.speeds.len() != nodes as usize {
        bail!("--speeds has {} values for {nodes} nodes", o.speeds.len());
    }
    if let Some(s) = o.speeds.iter().find(|s| !(s.is_finite() && **s > 0.0 && **s <= 100.0)) {
        bail!("--speeds: {s} is not a speed (want a number above 0, 1 = the reference)");
    }
    if let Some(c) = o.cpu_limit.filter(|c| !(c.is_finite() && *c > 0.0)) {
        bail!("--cpu-limit {c}: want a number of CPUs above 0, e.g. 0.4");
    }
    let mem = o.mem_limit.as_deref().map(crate::testbed::parse_size).transpose().context("--mem-limit")?;
    if let Ok(rs) = load_run_state() {
        if alive(rs.placer.pid) {
            bail!("a cluster is already up (placer pid {} at {}); `mos cluster down` first", rs.placer.pid, rs.placer.addr);
        }
    }
    let key = key_path();
    auth::load_key(&key).with_context(|| format!("cluster key {} (run `mos cluster init`)", key.display()))?;
    let h = home();
    let pdir = h.join("placer");
    std::fs::create_dir_all(&pdir)?;
    let _ = std::fs::remove_file(pdir.join("addr"));
    let plog = h.join("placer.log");
    let k = key.display().to_string();
    // --netns: the nodes' namespaces and the bridge first; the placer listens there
    let bed = if o.netns { Some(crate::netbed::create(&h, nodes)?) } else { None };
    let bed_guard = BedGuard(bed.clone());
    let placer_ip = bed.as_ref().map_or("127.0.0.1".to_string(), |b| b.gateway.clone());
    let mut args = vec!["--listen".into(), format!("{placer_ip}:0"), "--state-dir".into(), pdir.display().to_string(), "--key".into(), k.clone(), "--interval-ms".into(), interval_ms.to_string()];
    args.extend(["--min-age-ms".into(), o.min_age_ms.to_string()]);
    // in gossip mode the placer places and shows, the shadowds decide
    if !o.balance || o.mode == Mode::Gossip {
        args.push("--no-balance".into());
    }
    // the node cgroups first: without the privilege nothing is started
    let capped = o.cpu_limit.is_some() || mem.is_some();
    let tag = cgroup_tag(&h);
    let mut groups = Vec::new();
    for i in 1..=nodes {
        let speed = o.speeds.get(i as usize - 1).copied().unwrap_or(1.0);
        let caps = crate::testbed::Caps { cpu: o.cpu_limit.map(|c| c * speed), mem };
        groups.push(if capped {
            match crate::testbed::create(&format!("{tag}-node{i}"), caps) {
                Ok(d) => d,
                Err(e) => {
                    groups.iter().for_each(|g: &Vec<PathBuf>| crate::testbed::remove(g));
                    return Err(e.context("cannot set up the capped test bed"));
                }
            }
        } else {
            Vec::new()
        });
    }
    let ppid = spawn_daemon(&bin("placer")?, &args, &plog, &[], None)?;
    let paddr = wait_addr(&pdir, ppid, "placer", &plog)?;
    let placer = Daemon { name: "placer".into(), pid: ppid, addr: paddr.clone(), state_dir: pdir, cgroups: Vec::new(), netns: None };
    let mut started = Vec::new();
    let mut gossip_seed: Option<String> = None;
    for i in 1..=nodes {
        let name = format!("node{i}");
        let speed = o.speeds.get(i as usize - 1).copied().unwrap_or(1.0);
        let cgroups = std::mem::take(&mut groups[i as usize - 1]);
        let net = bed.as_ref().map(|b| &b.nodes[i as usize - 1]);
        let dir = h.join("nodes").join(&name);
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_file(dir.join("addr"));
        let log = h.join(format!("{name}.log"));
        let mut args = vec![
            "--node".into(), name.clone(), "--listen".into(), format!("{}:0", net.map_or("127.0.0.1", |n| n.ip.as_str())), "--state-dir".into(), dir.display().to_string(),
            "--key".into(), k.clone(), "--placer".into(), paddr.clone(), "--interval-ms".into(), interval_ms.to_string(), "--cpus".into(), "1".into(),
            "--speed".into(), ((speed * 1000.0).round() as u32).max(1).to_string(),
        ];
        if o.mode == Mode::Gossip {
            args.extend(["--gossip".into(), "--min-age-ms".into(), o.min_age_ms.to_string()]);
            if !o.balance {
                args.push("--no-balance".into());
            }
            // every node but the first joins through the first (the seed list)
            if let Some(seed) = &gossip_seed {
                args.extend(["--seeds".into(), seed.clone()]);
            }
        }
        let pid = spawn_daemon(&bin("shadowd")?, &args, &log, &cgroups, net.map(|n| n.netns.as_str()))?;
        let addr = wait_addr(&dir, pid, &name, &log)?;
        // its local socket too (`mos run` registers there)
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("shadow.sock").exists() {
            if !alive(pid) || Instant::now() > deadline {
                bail!("{name} did not open {}", dir.join("shadow.sock").display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if o.mode == Mode::Gossip && gossip_seed.is_none() {
            let f = dir.join("gossip.addr");
            let deadline = Instant::now() + Duration::from_secs(10);
            gossip_seed = loop {
                if let Ok(a) = std::fs::read_to_string(&f) {
                    break Some(a.trim().to_string());
                }
                if !alive(pid) || Instant::now() > deadline {
                    bail!("{name} did not open its gossip socket ({})", f.display());
                }
                std::thread::sleep(Duration::from_millis(5));
            };
        }
        started.push(Daemon { name, pid, addr, state_dir: dir, cgroups, netns: net.map(|n| n.netns.clone()) });
    }
    let rs = RunState { placer, nodes: started, bed };
    std::mem::forget(bed_guard);
    write_description(o, &rs)?;
    let tmp = h.join(".cluster.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&rs)?)?;
    std::fs::rename(&tmp, run_state_path())?;
    println!("placer  pid {:<7} {}  state {}", rs.placer.pid, rs.placer.addr, rs.placer.state_dir.display());
    for n in &rs.nodes {
        println!("{:<7} pid {:<7} {}  state {}", n.name, n.pid, n.addr, n.state_dir.display());
    }
    let names: Vec<&str> = rs.nodes.iter().map(|n| n.name.as_str()).collect();
    println!("logs: {}/{{placer,{}}}.log (MOS_LOG=debug for more)", h.display(), names.join(","));
    Ok(())
}

/// The first line of a cluster description `mos cluster up` wrote (and `down` removes).
const WRITTEN_BY_UP: &str = "# written by `mos cluster up`: the localhost cluster it started (removed by `mos cluster down`)";

fn written_by_up(p: &Path) -> bool {
    std::fs::read_to_string(p).is_ok_and(|t| t.starts_with(WRITTEN_BY_UP))
}

/// `$MOS_HOME/cluster.toml` for the cluster just started (not over one someone wrote).
fn write_description(o: &UpOptions, rs: &RunState) -> Result<()> {
    use placer::clusterfile::{Balancing, ClusterFile, NodeEntry, PlacerEntry};
    let p = home().join("cluster.toml");
    if p.exists() && !written_by_up(&p) {
        println!("(kept {}: not written by `mos cluster up`)", p.display());
        return Ok(());
    }
    let f = ClusterFile {
        key: key_path(),
        balancing: if !o.balance { Balancing::Off } else if o.mode == Mode::Gossip { Balancing::Gossip } else { Balancing::Central },
        interval_ms: o.interval_ms.min(u64::from(u32::MAX)) as u32,
        placer: PlacerEntry { addr: rs.placer.addr.clone(), listen: None, state_dir: rs.placer.state_dir.clone() },
        nodes: rs
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeEntry { name: n.name.clone(), addr: n.addr.clone(), listen: None, cpus: Some(1), speed: o.speeds.get(i).copied().unwrap_or(1.0), state_dir: Some(n.state_dir.clone()) })
            .collect(),
    };
    let tmp = home().join(".cluster.toml.tmp");
    std::fs::write(&tmp, format!("{WRITTEN_BY_UP}\n{}", f.to_toml()))?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

/// Removes a `--netns` bed that `up` made, unless forgotten once the cluster is up.
struct BedGuard(Option<crate::netbed::Bed>);

impl Drop for BedGuard {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            crate::netbed::remove(b);
        }
    }
}

pub fn down() -> Result<()> {
    let rs = load_run_state()?;
    let mut pids: Vec<i32> = rs.nodes.iter().map(|n| n.pid).collect();
    pids.push(rs.placer.pid);
    for &p in &pids {
        // SAFETY: terminating daemons we started.
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        reap_any();
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: killing a daemon that ignored SIGTERM.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    // the capped test bed's groups, with whatever still runs in them
    for n in &rs.nodes {
        crate::testbed::remove(&n.cgroups);
        // a shadowd that was killed leaves its in-memory migration images behind
        let _ = std::fs::remove_dir_all(format!("/dev/shm/mos-{}-{}", n.name, n.pid));
    }
    if let Some(bed) = &rs.bed {
        crate::netbed::remove(bed);
    }
    let _ = std::fs::remove_file(run_state_path());
    let desc = home().join("cluster.toml");
    if written_by_up(&desc) {
        let _ = std::fs::remove_file(desc);
    }
    println!("cluster down ({} daemons stopped)", pids.len());
    Ok(())
}

/// The prefix of this cluster's cgroup names: one per `$MOS_HOME`, so clusters of
/// different homes (tests running side by side) never share a group.
fn cgroup_tag(home: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    home.hash(&mut h);
    format!("mos-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// `mos run` with a cluster up: this process (about to exec the program under the shim,
/// keeping its pid) joins its home node's cgroups and registers with its shadowd there,
/// which reports it as a candidate for balancing. Without a cluster nothing happens; a
/// cluster whose home node cannot take the registration is an error (the program would
/// otherwise silently never be balanced).
pub fn register_here(no_migrate: bool) -> Result<()> {
    let Ok(rs) = load_run_state() else { return Ok(()) };
    if !alive(rs.placer.pid) && rs.nodes.iter().all(|n| !alive(n.pid)) {
        return Ok(());
    }
    let home = match std::env::var("MOS_HOME_NODE").ok().filter(|s| !s.is_empty()) {
        Some(h) => rs.nodes.iter().find(|n| n.name == h || n.addr == h).ok_or_else(|| anyhow!("MOS_HOME_NODE={h}: no such node in the cluster"))?,
        None => rs.nodes.first().ok_or_else(|| anyhow!("the cluster has no nodes"))?,
    };
    let pid = std::process::id();
    crate::testbed::attach(&home.cgroups, pid).with_context(|| format!("joining node {}'s cgroup", home.name))?;
    // and its network namespace (--netns): the program runs on that node
    if let Some(ns) = &home.netns {
        crate::netbed::enter(ns).with_context(|| format!("joining node {}'s network namespace", home.name))?;
    }
    let sock = home.state_dir.join("shadow.sock");
    match local_request(&sock, &Msg::RegisterProcess { pid, no_migrate }) {
        Ok(Msg::Ack) => {
            // what the program execs registers too, by its own shim (single-threaded here)
            std::env::set_var("MOS_SHADOW_SOCK", &sock);
            if no_migrate {
                std::env::set_var("MOS_NO_MIGRATE", "1");
            }
            Ok(())
        }
        Ok(Msg::Error { msg }) => bail!("node {}: {msg}", home.name),
        Ok(m) => bail!("node {}: unexpected answer {}", home.name, m.name()),
        Err(e) => bail!("cannot register with node {}'s shadowd at {}: {e}", home.name, sock.display()),
    }
}

/// `mos run --node NODE`: once this process (about to exec its program under the shim)
/// has its shim up, its body is moved to NODE, the way `mos migrate` moves it; it stays
/// homed here. A helper does that from outside: forked twice so the program never sees
/// it as a child, with no stdin or stdout of the program's held open.
pub fn start_on(node: &str) -> Result<()> {
    let rs = load_run_state()?;
    let to = node_addr(node)?;
    let home = match std::env::var("MOS_HOME_NODE").ok().filter(|s| !s.is_empty()) {
        Some(h) => node_addr(&h)?,
        None => rs.nodes.first().map(|n| n.addr.clone()).ok_or_else(|| anyhow!("the cluster has no nodes"))?,
    };
    if to == home {
        return Ok(()); // it starts there anyway
    }
    let pid = std::process::id();
    // SAFETY: this CLI is single-threaded here; the children only run plain Rust and exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: as above.
            if unsafe { libc::fork() } == 0 {
                // SAFETY: replacing our own stdin/stdout with /dev/null.
                unsafe {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    if null >= 0 {
                        libc::dup2(null, 0);
                        libc::dup2(null, 1);
                    }
                }
                let r = move_when_ready(pid, &home, &to);
                if let Err(e) = r {
                    eprintln!("mos run: process {pid} stays at home, its body could not start on {node}: {e:#}");
                }
            }
            // SAFETY: ending a forked child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        c if c > 0 => {
            let mut st = 0;
            // SAFETY: reaping the child we just forked.
            unsafe { libc::waitpid(c, &mut st, 0) };
            Ok(())
        }
        _ => bail!("mos run --node: cannot fork: {}", std::io::Error::last_os_error()),
    }
}

fn move_when_ready(pid: u32, home: &str, to: &str) -> Result<()> {
    let name = format!("@{}", ckpt::control::socket_name(pid as i32));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/net/unix").unwrap_or_default().lines().any(|l| l.split_whitespace().last() == Some(name.as_str())) {
        if !alive(pid as i32) {
            return Ok(()); // it ended (or failed to start) before its shim was up
        }
        if Instant::now() > deadline {
            bail!("its shim did not come up within 20 s (not a dynamically linked program?)");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    match ask_at(home, "the home shadowd", &Msg::MigrateProcess { pid, to: to.to_string(), mode: proto::msg::MoveMode::Auto, progress: false, compress: None })? {
        Msg::Migrated { .. } => Ok(()),
        m => bail!("unexpected answer {}", m.name()),
    }
}

/// One message to a shadowd over its local `shadow.sock` (a seqpacket socket), one answer.
fn local_request(sock: &Path, msg: &Msg) -> std::io::Result<Msg> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    // SAFETY: socket has no memory-safety preconditions; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = sock.as_os_str().as_bytes();
    if p.len() >= a.sun_path.len() {
        return Err(bad(format!("socket path too long: {}", sock.display())));
    }
    for (d, s) in a.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: a is a valid sockaddr_un of length len.
    if unsafe { libc::connect(fd.as_raw_fd(), &a as *const libc::sockaddr_un as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let b = postcard::to_allocvec(msg).map_err(|e| bad(e.to_string()))?;
    // SAFETY: b is live for the call.
    if unsafe { libc::send(fd.as_raw_fd(), b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut r = vec![0u8; 64 << 10];
    // SAFETY: r has room for r.len() bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), r.as_mut_ptr().cast(), r.len(), 0) };
    if n <= 0 {
        return Err(if n == 0 { bad("no answer".into()) } else { std::io::Error::last_os_error() });
    }
    postcard::from_bytes(&r[..n as usize]).map_err(|e| bad(format!("bad answer: {e}")))
}

pub(crate) fn reap_any() {
    let mut st = 0;
    // SAFETY: reaping any exited child without blocking.
    while unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) } > 0 {}
}

/// The cluster description in effect (`$MOS_HOME/cluster.toml`, else
/// `/etc/mos/cluster.toml`), if any.
pub fn description() -> Result<Option<placer::clusterfile::ClusterFile>> {
    match placer::clusterfile::ClusterFile::find(&home()) {
        Some(p) => Ok(Some(placer::clusterfile::ClusterFile::load(&p).map_err(anyhow::Error::msg)?)),
        None => Ok(None),
    }
}

/// The placer's address: `$MOS_PLACER`, else the cluster description's, else the
/// localhost cluster's (`cluster.json`).
fn placer_addr() -> Result<String> {
    if let Ok(a) = std::env::var("MOS_PLACER") {
        return Ok(a);
    }
    if let Some(f) = description()? {
        return Ok(f.placer.addr);
    }
    Ok(load_run_state()?.placer.addr)
}

/// One request to the placer, one answer.
pub fn ask(msg: &Msg) -> Result<Msg> {
    let addr = placer_addr()?;
    ask_at(&addr, "the placer", msg)
}

/// One request to the daemon at `addr` (placer or shadowd), one answer.
/// [`ask_at`] of a `MigrateProcess` asking for progress: a bar on the terminal (bytes,
/// rate, the copy round of a live one; shown once the move has taken a second), then
/// the answer.
fn ask_with_progress(addr: &str, what: &str, msg: &Msg) -> Result<Msg> {
    let mut r = FrameReader::new(send_to(addr, what, msg)?);
    let t0 = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let (reply, _): (Msg, Vec<u8>) = r.read_msg()?;
        match reply {
            Msg::MigrationProgress { bytes, round } => {
                // drawn once the move has taken a second; the rate is the move's so far
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} migrating: {bytes} sent, {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    b
                });
                if b.is_hidden() && t0.elapsed() >= Duration::from_secs(1) {
                    b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                }
                {
                    b.set_position(bytes);
                    let secs = t0.elapsed().as_secs_f64();
                    let rate = indicatif::HumanBytes((bytes as f64 / secs.max(1e-3)) as u64);
                    let round = round.map(|n| format!(", copy round {n}")).unwrap_or_default();
                    b.set_message(format!("{rate}/s, {secs:.0}s{round}"));
                    b.tick();
                }
            }
            other => {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                return match other {
                    Msg::Error { msg } => bail!("{msg}"),
                    m => Ok(m),
                };
            }
        }
    }
}

/// An authenticated connection to the daemon at `addr` (named `what` in errors) on which
/// `msg` was sent; the answers are read from it.
fn send_to(addr: &str, what: &str, msg: &Msg) -> Result<TcpStream> {
    let key = auth::load_key(&key_path()).with_context(|| format!("cluster key {}", key_path().display()))?;
    let c = TcpStream::connect_timeout(&addr.parse().with_context(|| format!("bad address {addr}"))?, Duration::from_secs(3))
        .with_context(|| format!("cannot reach {what} at {addr} (is the cluster up?)"))?;
    let mut s = NoSigPipe::new(c);
    auth::client_handshake(&mut s, &key, &Hello::new("cli", Role::Cli))?;
    let c = s.into_inner();
    c.set_read_timeout(Some(Duration::from_secs(120)))?;
    FrameWriter::new(NoSigPipe::new(c.try_clone()?)).write_msg(msg, &[])?;
    Ok(c)
}

pub fn ask_at(addr: &str, what: &str, msg: &Msg) -> Result<Msg> {
    let (reply, _): (Msg, Vec<u8>) = FrameReader::new(send_to(addr, what, msg)?).read_msg()?;
    match reply {
        Msg::Error { msg } => bail!("{msg}"),
        m => Ok(m),
    }
}

/// `mossubmit FILE`: queue its jobs (`dry_run`: only check it and say what it would
/// queue; `json`: say it as JSON).
pub fn submit(file: &Path, dry_run: bool, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let dir = std::env::current_dir()?;
    let label = file.display().to_string();
    // Check here first: errors name the key and line, and nothing is sent.
    let t = placer::jobfile::JobTemplate::parse(&text, &label, &dir).map_err(|e| anyhow!("{e}"))?;
    for w in t.warnings() {
        eprintln!("mossubmit: warning: {w}");
    }
    // a submit file's item file is read here, where the submitter is
    let text = placer::jobfile::submit::inline_item_files(&text, &dir);
    if dry_run {
        let jobs = t.expand(0);
        if json {
            let v: Vec<_> = jobs
                .iter()
                .map(|j| serde_json::json!({"process": j.process, "executable": j.executable, "arguments": j.arguments, "input": j.input,
                    "output": j.output, "error": j.error, "log": j.log, "initialdir": j.initialdir, "environment": j.environment,
                    "request_cpus": j.request_cpus, "request_memory_mib": j.request_memory_mib, "checkpoint_interval_s": j.checkpoint_interval_s}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            for j in &jobs {
                println!("job $(Cluster).{}: {} {}", j.process, j.executable.display(), j.arguments.join(" "));
            }
            println!("{} job(s) would be submitted (dry run: nothing queued).", jobs.len());
        }
        return Ok(());
    }
    let owner = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| user_name());
    // the submitting node: $MOS_HOME_NODE, else the cluster's first node
    let home = match std::env::var("MOS_HOME_NODE").ok().filter(|s| !s.is_empty()) {
        Some(h) => Some(node_addr(&h)?),
        None => load_run_state().ok().and_then(|rs| rs.nodes.first().map(|n| n.addr.clone())),
    };
    match ask(&Msg::SubmitFile { owner, label, text, submit_dir: OsBytes::from(dir.as_os_str()), home })? {
        Msg::SubmittedCluster { cluster, count } => {
            if json {
                println!("{}", serde_json::json!({"cluster": cluster, "count": count}));
            } else {
                println!("{count} job(s) submitted to cluster {cluster}.");
            }
            Ok(())
        }
        m => bail!("unexpected answer {}", m.name()),
    }
}

/// The login name of our uid from the password database, else "uid<N>".
fn user_name() -> String {
    // SAFETY: getuid cannot fail; getpwuid returns null or a pointer to a static entry
    // that we copy at once (this CLI is single-threaded).
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            return format!("uid{uid}");
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}


/// A node name of the running cluster, or an address (`host:port`) as it is.
fn node_addr(node: &str) -> Result<String> {
    if node.contains(':') {
        return Ok(node.to_string());
    }
    if let Some(f) = description()? {
        return f.node(node).map(|n| n.addr.clone()).map_err(anyhow::Error::msg);
    }
    let rs = load_run_state()?;
    rs.nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.addr.clone())
        .ok_or_else(|| anyhow!("no node {node} in the cluster (nodes: {})", rs.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")))
}

/// `mos migrate PID NODE`: move the body of process PID (running under the shim, homed
/// at this machine's shadowd `home`, default `$MOS_HOME_NODE` or the cluster's first
/// node) to NODE. The process stays at home as its stub; its files stay at home.
/// What `mos migrate` prints beyond its line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// the move's figures
    pub stats: bool,
    /// everything as one JSON object instead
    pub json: bool,
}

pub fn migrate_process(pid: u32, node: &str, home: Option<&str>, mode: proto::msg::MoveMode, compress: Option<bool>, report: Report) -> Result<()> {
    let t0 = Instant::now();
    let to = node_addr(node)?;
    let home = match home.map(str::to_string).or_else(|| std::env::var("MOS_HOME_NODE").ok().filter(|s| !s.is_empty())) {
        Some(h) => node_addr(&h)?,
        None => load_run_state()?.nodes.first().map(|n| n.addr.clone()).ok_or_else(|| anyhow!("the cluster has no nodes"))?,
    };
    // the body is away if the home shadow has a session for this pid
    let (at, body_pid) = match ask_at(&home, "the home shadowd", &Msg::WhereIsBody { pid }) {
        Ok(Msg::BodyAt { node, body_pid }) => (node, body_pid),
        _ => {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                bail!("no process {pid} here, and the home shadowd at {home} knows no body of it");
            }
            (home.clone(), pid)
        }
    };
    if at == to {
        bail!("process {pid} already runs on {node}");
    }
    // progress on a terminal only (indicatif draws nothing elsewhere either)
    use std::io::IsTerminal;
    let progress = !report.json && std::io::stderr().is_terminal();
    let ask = Msg::MigrateProcess { pid: body_pid, to: to.clone(), mode, progress, compress };
    let answer = if progress { ask_with_progress(&at, "the shadowd", &ask)? } else { ask_at(&at, "the shadowd", &ask)? };
    match answer {
        Msg::Migrated { pid: there, stats } => {
            // done when the new body has reported home
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match ask_at(&home, "the home shadowd", &Msg::WhereIsBody { pid }) {
                    Ok(Msg::BodyAt { node: n, body_pid }) if n == to && (there == 0 || body_pid == there) => break,
                    _ if Instant::now() > deadline => bail!("process {pid}: its body was started on {node} (pid {there}) but did not report home within 20 s"),
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            let all_ms = t0.elapsed().as_millis() as u64;
            if report.json {
                let s = stats.unwrap_or_default();
                println!(
                    "{}",
                    serde_json::json!({
                        "pid": pid, "node": node, "body_pid": there, "bytes": s.bytes, "rounds": s.rounds,
                        "round_bytes": s.round_bytes, "resumed_ms": s.resumed_ms, "ready_ms": s.ready_ms, "frozen_ms": s.frozen_ms, "total_ms": all_ms, "source_ms": s.total_ms,
                    })
                );
                return Ok(());
            }
            println!("process {pid} migrated to {node} (pid {there} there); its home stub keeps pid {pid}");
            if report.stats {
                match stats {
                    Some(s) => {
                        let how = if s.resumed_ms > 0 {
                            format!("(post-copy: image there at {} ms, every page at {} ms)", s.resumed_ms, s.total_ms)
                        } else if s.rounds == 0 {
                            format!("(stop-and-copy; memory ready at the target in {} ms while it ran)", s.ready_ms)
                        } else {
                            let mib: Vec<String> = s.round_bytes.iter().map(|b| format!("{:.1}", *b as f64 / f64::from(1u32 << 20))).collect();
                            format!("while it ran (MiB per round: {})", mib.join(", "))
                        };
                        println!(
                            "{} bytes ({:.1} MiB), {} copy rounds {how}, frozen {} ms, total {all_ms} ms ({:.2} GiB/s{})",
                            s.bytes,
                            s.bytes as f64 / f64::from(1u32 << 20),
                            s.rounds,
                            s.frozen_ms,
                            s.bytes as f64 / (all_ms.max(1) as f64 / 1e3) / f64::from(1u32 << 30),
                            if s.rounds == 0 && s.resumed_ms == 0 {
                                format!("; {:.2} GiB/s while frozen", s.bytes as f64 / (s.frozen_ms.max(1) as f64 / 1e3) / f64::from(1u32 << 30))
                            } else {
                                String::new()
                            }
                        )
                    }
                    None => println!("total {all_ms} ms (the source shadowd sent no figures)"),
                }
            }
            Ok(())
        }
        m => bail!("unexpected answer {}", m.name()),
    }
}

/// `mos migrate CLUSTER.PROC NODE`: checkpoint the batch job and restart it on NODE.
pub fn migrate(id: &str, node: &str) -> Result<()> {
    let pid: placer::id::JobId = id.parse().map_err(|e| anyhow!("{e}"))?;
    ask(&Msg::Migrate { job: placer::daemon::wire_id(pid), to: node.to_string(), addr: None })?;
    println!("job {id} checkpointed; restarting on {node}");
    Ok(())
}

/// `mos rm|hold|release|vacate IDS... [-all]`: each of CLUSTER.PROC, CLUSTER or an owner
/// (all their queued jobs), or every queued job. Each is asked for on its own; one that
/// fails is said and the others go on; the status is an error if any failed.
pub fn commands(ids: &[String], all: bool, cmd: JobCommand) -> Result<()> {
    let is_id = |s: &str| s.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) && s.split('.').count() <= 2;
    let needs_queue = all || ids.iter().any(|i| !is_id(i));
    let rows: Vec<proto::msg::JobRow> = if needs_queue {
        match ask(&Msg::QueryQueue { history: false })? {
            Msg::JobTable { rows } => rows,
            m => bail!("unexpected answer {}", m.name()),
        }
    } else {
        Vec::new()
    };
    // a whole set (-all, an owner's) takes the jobs the command applies to, as condor_release
    // -all releases the held ones
    let applies = |r: &proto::msg::JobRow| match cmd {
        JobCommand::Remove => true,
        JobCommand::Hold => r.state != "H",
        JobCommand::Release => r.state == "H",
        JobCommand::Vacate => r.state == "R",
    };
    let mut targets: Vec<String> = Vec::new();
    if all {
        targets.extend(rows.iter().filter(|r| applies(r)).map(|r| r.id.clone()));
    }
    for i in ids {
        if is_id(i) {
            targets.push(i.clone());
        } else {
            if !rows.iter().any(|r| &r.owner == i) {
                bail!("no job of owner {i:?} is queued (give CLUSTER, CLUSTER.PROC, an owner or -all)");
            }
            let theirs: Vec<String> = rows.iter().filter(|r| &r.owner == i && applies(r)).map(|r| r.id.clone()).collect();
            targets.extend(theirs);
        }
    }
    targets.dedup();
    if targets.is_empty() {
        println!("no jobs to which this applies");
        return Ok(());
    }
    if let [one] = targets.as_slice() {
        return command(one, cmd);
    }
    let mut failed = 0;
    for t in &targets {
        if let Err(e) = command(t, cmd) {
            eprintln!("mos: job {t}: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} request(s) failed", targets.len());
    }
    Ok(())
}

pub fn command(id: &str, cmd: JobCommand) -> Result<()> {
    ask(&Msg::Command { id: id.to_string(), cmd })?;
    let verb = match cmd {
        JobCommand::Remove => "removed",
        JobCommand::Hold => "held",
        JobCommand::Release => "released",
        JobCommand::Vacate => "vacated (checkpointed and requeued)",
    };
    println!("job {id} {verb}");
    Ok(())
}
