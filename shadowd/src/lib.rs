//! shadowd: the mos node daemon (DESIGN.md §1, §6).
//!
//! - [`server`]: accepts authenticated connections, one request and one answer each.
//! - [`guests`]: starts, watches, checkpoints, vacates and signals the node's guest processes.
//! - [`reporter`]: the one connection to the placer; load reports and queued job events.
//! - [`load`]: what a load report says about this machine (`/proc`).
//! - [`handoff`]: the local socket where processes hand their files home and open sessions.
//! - [`rsys`]: shadow sessions: calls of bodies running elsewhere, performed here.
//! - [`signals`]: SIGTERM/SIGINT end the daemon and its guests.
//!
//! The daemon owns its guests: they die with it (SIGKILL via `PR_SET_PDEATHSIG`), so a dead
//! node never leaves orphaned bodies behind.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

pub mod candidates;
pub mod gossip;
pub mod guests;
pub mod handoff;
pub mod landing;
pub mod live;
pub mod load;
pub mod reporter;
pub mod rsys;
pub mod server;
pub mod signals;

/// Everything the daemon is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Node name.
    pub node: String,
    /// Listen address.
    pub listen: String,
    /// The address peers reach this node at (IP or IP:PORT), if not the listening one.
    pub advertise: Option<String>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Cluster key file.
    pub key: PathBuf,
    /// Placer address, if any.
    pub placer: Option<String>,
    /// Cpus to report; `None` = online cpus.
    pub cpus: Option<u32>,
    /// Relative speed to report.
    pub speed: u32,
    /// Report interval.
    pub interval: Duration,
    /// Gossip mode (no placer decides moves), if on.
    pub gossip: Option<gossip::GossipConfig>,
}

/// Log one line (level INFO) with the node's name as its `node` field, and its `pid`
/// when the line begins "pid N: " (`placer::logging`).
#[macro_export]
macro_rules! log {
    ($node:expr, $($arg:tt)*) => {
        $crate::log_line(tracing::Level::INFO, &$node, &format!($($arg)*))
    };
}

/// As [`log!`], for something that went wrong (level WARN).
#[macro_export]
macro_rules! warn {
    ($node:expr, $($arg:tt)*) => {
        $crate::log_line(tracing::Level::WARN, &$node, &format!($($arg)*))
    };
}

/// One line of this daemon's log (see [`log!`]).
pub fn log_line(level: tracing::Level, node: &dyn std::fmt::Display, msg: &str) {
    let (pid, _) = placer::logging::split_subject(msg, "pid");
    let node = node.to_string();
    match (level, pid) {
        (tracing::Level::WARN, Some(pid)) => tracing::warn!(target: "shadowd", node, pid, "{msg}"),
        (tracing::Level::WARN, None) => tracing::warn!(target: "shadowd", node, "{msg}"),
        (_, Some(pid)) => tracing::info!(target: "shadowd", node, pid, "{msg}"),
        (_, None) => tracing::info!(target: "shadowd", node, "{msg}"),
    }
}

/// Lock a mutex, ignoring poisoning: every critical section here leaves its data consistent
/// (and the release profile aborts on panic anyway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the daemon: bind, announce, start the reporter and serve forever.
pub fn run(cfg: Config) -> Result<()> {
    // KeyError already names the file and the cause.
    let key = proto::auth::load_key(&cfg.key).map_err(|e| anyhow!("cluster key: {e}"))?;
    fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create the state directory {}", cfg.state_dir.display()))?;
    // Before any thread exists, so that every thread inherits the blocked mask.
    let term = signals::TerminationSignals::block().context("cannot block SIGTERM/SIGINT")?;
    let listener = TcpListener::bind(&cfg.listen)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let bound = listener.local_addr().context("cannot read the listening address")?;
    let addr = advertised(bound, cfg.advertise.as_deref())?;
    write_addr_file(&cfg.state_dir, addr)?;
    // Restarted guests inherit it: a migrated body reports where it runs (see the shim's
    // migrate::node_name). Set before any thread exists.
    std::env::set_var("MOS_NODE_ADDR", addr.to_string());
    let bin_dir = bin_dir()?;
    let migration_dir = migration_dir(&cfg.node, &cfg.state_dir);

    let events = Arc::new(reporter::EventQueue::new(cfg.placer.is_some()));
    let guests = Arc::new(
        guests::Guests::new(
            guests::GuestsConfig {
                node: cfg.node.clone(),
                // (one missing is said when a job needs it)
                mos: proto::paths::locate("mos").unwrap_or_else(|_| bin_dir.join("mos")),
                shim: proto::paths::locate("libmosshim.so").unwrap_or_else(|_| bin_dir.join("libmosshim.so")),
                default_ckpt_dir: cfg.state_dir.join("ckpt"),
                key: Some(key.clone()),
                migration_dirs: vec![migration_dir.clone(), cfg.state_dir.join("received")],
            },
            events.clone(),
        )
        .context("cannot start the guest spawner")?,
    );
    {
        let guests = guests.clone();
        let node = cfg.node.clone();
        let in_memory = migration_dir.clone();
        term.spawn_handler(move |sig| {
            log!(node, "signal {sig}: killing all guests and exiting");
            guests.kill_all();
            if in_memory.starts_with(MIGRATION_TMPFS) {
                let _ = fs::remove_dir_all(&in_memory);
            }
            std::process::exit(0);
        })
        .context("cannot start the signal thread")?;
    }
    // bodies of processes homed here send their calls to this second listener
    let sessions = Arc::new(rsys::Sessions::new(&cfg.node));
    // processes started here by `mos run`
    let registry = Arc::new(candidates::Registry::default());
    let rcfg = reporter::ReporterConfig {
        node: cfg.node.clone(),
        addr: addr.to_string(),
        placer: cfg.placer.clone().unwrap_or_default(),
        cpus: cfg.cpus.unwrap_or_else(load::online_cpus),
        speed: cfg.speed,
        interval: cfg.interval,
    };
    let state = reporter::NodeState { guests: guests.clone(), registry: registry.clone(), sessions: sessions.clone() };
    let gossip = match &cfg.gossip {
        Some(g) => {
            let g = gossip::Gossip::bind(g.clone(), key.clone(), bound, addr.ip(), state.clone(), rcfg.clone()).context("cannot bind the gossip socket")?;
            g.set_events(events.clone());
            let gaddr: SocketAddr = g.addr.parse().context("gossip address")?;
            write_named_addr_file(&cfg.state_dir, "gossip.addr", gaddr)?;
            let r = g.clone();
            std::thread::Builder::new().name("gossip-recv".into()).spawn(move || r.receive()).context("cannot start the gossip thread")?;
            Some(g)
        }
        None => None,
    };
    if cfg.placer.is_some() {
        reporter::start(rcfg, key.clone(), events, state).context("cannot start the reporter thread")?;
    }

    let rsys_listener = TcpListener::bind((bound.ip(), 0))
        .with_context(|| format!("cannot listen for remote calls on {}", bound.ip()))?;
    let rsys_addr = SocketAddr::new(addr.ip(), rsys_listener.local_addr().context("cannot read the rsys listening address")?.port());
    write_named_addr_file(&cfg.state_dir, "rsys.addr", rsys_addr)?;
    sessions.set_addr(rsys_addr.to_string());
    {
        let sessions = sessions.clone();
        std::thread::Builder::new()
            .name("rsys".into())
            .spawn(move || rsys::serve(rsys_listener, sessions))
            .context("cannot start the rsys thread")?;
    }
    // and, when they run on this very host, to this one: an abstract unix socket with a
    // random name that hello replies announce (see proto::rsys)
    match rsys::bind_local() {
        Ok((local, name)) => {
            sessions.set_local_name(name.as_bytes()).context("local rsys listener name")?;
            let sessions = sessions.clone();
            std::thread::Builder::new()
                .name("rsys-local".into())
                .spawn(move || rsys::serve_local(local, sessions))
                .context("cannot start the local rsys thread")?;
        }
        Err(e) => log!(cfg.node, "rsys: no local listener ({e}); bodies on this host use TCP"),
    }

    // local processes hand their files to us here before their bodies leave
    {
        let (path, node, sessions, registry) = (cfg.state_dir.join("shadow.sock"), cfg.node.clone(), sessions.clone(), registry.clone());
        std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || {
                if let Err(e) = handoff::serve(&path, &node, sessions, registry) {
                    warn!(node, "hand-off socket {}: {e}", path.display());
                }
            })
            .context("cannot start the hand-off thread")?;
    }

    let mut out = std::io::stdout().lock();
    writeln!(out, "shadowd {} listening on {addr}", cfg.node)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    drop(out);

    let ctx = Arc::new(server::ServerCtx {
        node: cfg.node,
        key,
        guests,
        received_dir: cfg.state_dir.join("received"),
        migration_dir,
        sessions,
        state_dir: cfg.state_dir.clone(),
        migrations: Default::default(),
        gossip: gossip.clone(),
        lanes: Default::default(),
    });
    if let Some(g) = gossip {
        let (c1, c2) = (ctx.clone(), ctx.clone());
        let ask = move |to: &str, m: &proto::Msg| -> Result<proto::Msg, String> {
            let (mut r, mut w) = server::connect_shadowd(&c1, to)?;
            w.write_msg(m, &[]).map_err(|e| e.to_string())?;
            match r.read_msg::<proto::Msg>() {
                Ok((proto::Msg::Error { msg }, _)) => Err(msg),
                Ok((m, _)) => Ok(m),
                Err(e) => Err(e.to_string()),
            }
        };
        let migrate = move |pid: u32, to: &str| server::migrate_process(&c2, pid, to, proto::msg::MoveMode::Auto, None, None).map(|(p, _)| p);
        std::thread::Builder::new().name("gossip".into()).spawn(move || g.run(ask, migrate)).context("cannot start the gossip thread")?;
    }
    server::serve(listener, ctx)
}

/// Where in-memory migration images go when the host has it (a tmpfs).
const MIGRATION_TMPFS: &str = "/dev/shm";

/// Where the images of processes migrating here are received: a directory of ours in
/// memory (tmpfs, `/dev/shm/mos-NODE-PID`: the restored process runs from those pages,
/// with no second copy, and the restart removes the file), else `STATE/received`.
/// Directories that dead shadowds of this node left there are removed.
fn migration_dir(node: &str, state_dir: &Path) -> PathBuf {
    let fallback = state_dir.join("received");
    let shm = Path::new(MIGRATION_TMPFS);
    if !shm.is_dir() {
        return fallback;
    }
    let prefix = format!("mos-{node}-");
    if let Ok(rd) = fs::read_dir(shm) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = shm.join(format!("{prefix}{}", std::process::id()));
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => dir,
        Err(_) => fallback,
    }
}

/// This executable's directory (where `mos` and `libmosshim.so` are in the build tree).
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the shadowd executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("shadowd executable {} has no directory", exe.display()))
}

/// The address this node announces: `advertise` (an IP: with the listening port; or
/// IP:PORT), else the bound one, which must then be one a peer can reach (not 0.0.0.0
/// or ::).
pub fn advertised(bound: SocketAddr, advertise: Option<&str>) -> Result<SocketAddr> {
    match advertise {
        Some(a) => {
            if let Ok(sa) = a.parse::<SocketAddr>() {
                return Ok(sa);
            }
            let ip: std::net::IpAddr = a.parse().map_err(|_| anyhow!("--advertise {a}: not an IP address or IP:PORT"))?;
            if ip.is_unspecified() {
                bail!("--advertise {a}: an address peers can reach is needed, not a wildcard");
            }
            Ok(SocketAddr::new(ip, bound.port()))
        }
        None if bound.ip().is_unspecified() => bail!("listening on {bound}, a wildcard: say with --advertise which address other nodes and the placer reach this node at"),
        None => Ok(bound),
    }
}

/// Write `DIR/addr` atomically: a temporary file renamed over it.
pub fn write_addr_file(dir: &Path, addr: SocketAddr) -> Result<()> {
    write_named_addr_file(dir, "addr", addr)
}

/// Write `DIR/NAME` atomically: a temporary file renamed over it.
pub fn write_named_addr_file(dir: &Path, name: &str, addr: SocketAddr) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{addr}")?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_reachable_or_refused() {
        let bound: SocketAddr = "0.0.0.0:7010".parse().unwrap();
        assert!(advertised(bound, None).unwrap_err().to_string().contains("--advertise"));
        assert_eq!(advertised(bound, Some("10.1.2.3")).unwrap(), "10.1.2.3:7010".parse().unwrap());
        assert_eq!(advertised(bound, Some("10.1.2.3:9000")).unwrap(), "10.1.2.3:9000".parse().unwrap());
        assert!(advertised(bound, Some("0.0.0.0")).is_err());
        assert!(advertised(bound, Some("node7")).unwrap_err().to_string().contains("not an IP"));
        let lo: SocketAddr = "127.0.0.1:5".parse().unwrap();
        assert_eq!(advertised(lo, None).unwrap(), lo);
    }

    #[test]
    fn addr_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        write_addr_file(dir.path(), addr).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("addr")).unwrap(),
            "127.0.0.1:4242\n"
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
