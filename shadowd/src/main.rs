//! `shadowd`: the mos node daemon. Parses arguments and hands over to [`shadowd::run`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// mos node daemon: runs guest jobs, checkpoints them, reports load to the placer.
#[derive(Parser, Debug)]
#[command(name = "shadowd", version)]
struct Args {
    /// This node's name, unique in the cluster.
    #[arg(long)]
    node: String,
    /// Address to accept connections on (`127.0.0.1:0` picks a free port).
    #[arg(long, required_unless_present = "config")]
    listen: Option<String>,
    /// The address other nodes and the placer reach this node at (an IP, or IP:PORT
    /// behind a port forward); needed when --listen is a wildcard such as 0.0.0.0:7010.
    #[arg(long)]
    advertise: Option<String>,
    /// State directory (created if needed); the daemon writes its address to DIR/addr.
    #[arg(long, required_unless_present = "config")]
    state_dir: Option<PathBuf>,
    /// Cluster key file.
    #[arg(long, required_unless_present = "config")]
    key: Option<PathBuf>,
    /// The cluster description (`cluster.toml`): this node's entry (--node) gives the
    /// addresses, cpus, speed and state directory, the file the key, the placer and the
    /// balancing mode; options given as well override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Placer address (`host:port`); without it no load reports or job events are sent.
    #[arg(long)]
    placer: Option<String>,
    /// Cpus to report (default: the online cpus).
    #[arg(long)]
    cpus: Option<u32>,
    /// Relative cpu speed to report, 1000 = the reference machine [default: 1000].
    #[arg(long)]
    speed: Option<u32>,
    /// Gossip mode: spread load vectors over UDP and decide moves here (MOSIX-style)
    #[arg(long)]
    gossip: bool,
    /// Gossip peers to start from (UDP `host:port`, comma-separated)
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// With --gossip: spread vectors but move nothing
    #[arg(long)]
    no_balance: bool,
    /// With --gossip: a process must have been here this long before it is moved, ms
    #[arg(long, default_value_t = 2000)]
    min_age_ms: u64,
    /// Load report interval in milliseconds [default: 500].
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..))]
    interval_ms: Option<u32>,
}

fn main() {
    clidocs::generate_if_asked(<Args as clap::CommandFactory>::command);
    let a = Args::parse();
    placer::logging::init();
    let cfg = match config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shadowd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = shadowd::run(cfg) {
        eprintln!("shadowd: {e:#}");
        std::process::exit(2);
    }
}

/// The daemon's settings: the options, over this node's entry of --config.
fn config(a: Args) -> Result<shadowd::Config, String> {
    use placer::clusterfile::{Balancing, ClusterFile};
    let file = a.config.as_deref().map(ClusterFile::load).transpose()?;
    let entry = file.as_ref().map(|f| f.node(&a.node)).transpose()?;
    let need = |what: &str| format!("--{what} is needed (or --config with this node in it)");
    let listen = a.listen.or_else(|| entry.map(|e| e.listen().to_string())).ok_or_else(|| need("listen"))?;
    // the file's address is the advertised one when the node listens elsewhere
    let advertise = a.advertise.or_else(|| entry.filter(|e| e.listen() != e.addr).map(|e| e.addr.clone()));
    let gossip = a.gossip || file.as_ref().is_some_and(|f| f.balancing == Balancing::Gossip);
    let mut seeds = a.seeds;
    if gossip && seeds.is_empty() {
        // the other nodes (gossip's UDP port is the node's TCP port)
        seeds = file.iter().flat_map(|f| f.nodes.iter()).filter(|n| n.name != a.node).map(|n| n.addr.clone()).collect();
    }
    Ok(shadowd::Config {
        listen,
        advertise,
        state_dir: a.state_dir.or_else(|| entry.map(|e| e.state_dir())).ok_or_else(|| need("state-dir"))?,
        key: a.key.or_else(|| file.as_ref().map(|f| f.key.clone())).ok_or_else(|| need("key"))?,
        placer: a.placer.or_else(|| file.as_ref().map(|f| f.placer.addr.clone())),
        cpus: a.cpus.or_else(|| entry.and_then(|e| e.cpus)),
        speed: a.speed.or_else(|| entry.map(|e| ((e.speed * 1000.0).round() as u32).max(1))).unwrap_or(1000),
        interval: Duration::from_millis(u64::from(a.interval_ms.or_else(|| file.as_ref().map(|f| f.interval_ms)).unwrap_or(500))),
        gossip: gossip.then(|| shadowd::gossip::GossipConfig {
            seeds,
            fanout: 2,
            balance: !a.no_balance,
            // one move per node and round: every node decides, so the cluster still
            // makes several per round
            params: placer::policy::BalanceParams { min_age_ms: a.min_age_ms, max_migrations: 1, ..Default::default() },
        }),
        node: a.node,
    })
}
