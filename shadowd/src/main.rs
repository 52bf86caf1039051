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
    #[arg(long)]
    listen: String,
    /// The address other nodes and the placer reach this node at (an IP, or IP:PORT
    /// behind a port forward); needed when --listen is a wildcard such as 0.0.0.0:7010.
    #[arg(long)]
    advertise: Option<String>,
    /// State directory (created if needed); the daemon writes its address to DIR/addr.
    #[arg(long)]
    state_dir: PathBuf,
    /// Cluster key file.
    #[arg(long)]
    key: PathBuf,
    /// Placer address (`host:port`); without it no load reports or job events are sent.
    #[arg(long)]
    placer: Option<String>,
    /// Cpus to report (default: the online cpus).
    #[arg(long)]
    cpus: Option<u32>,
    /// Relative cpu speed to report, 1000 = the reference machine.
    #[arg(long, default_value_t = 1000)]
    speed: u32,
    /// Gossip mode: spread load vectors over UDP and decide moves here (MOSIX-style)
    #[arg(long)]
    gossip: bool,
    /// Gossip peers to start from (UDP `host:port`, comma-separated)
    #[arg(long, value_delimiter = ',', requires = "gossip")]
    seeds: Vec<String>,
    /// With --gossip: spread vectors but move nothing
    #[arg(long, requires = "gossip")]
    no_balance: bool,
    /// With --gossip: a process must have been here this long before it is moved, ms
    #[arg(long, default_value_t = 2000)]
    min_age_ms: u64,
    /// Load report interval in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(10..))]
    interval_ms: u32,
}

fn main() {
    clidocs::generate_if_asked(<Args as clap::CommandFactory>::command);
    let a = Args::parse();
    let cfg = shadowd::Config {
        node: a.node,
        listen: a.listen,
        advertise: a.advertise,
        state_dir: a.state_dir,
        key: a.key,
        placer: a.placer,
        cpus: a.cpus,
        speed: a.speed,
        interval: Duration::from_millis(u64::from(a.interval_ms)),
        gossip: a.gossip.then(|| shadowd::gossip::GossipConfig {
            seeds: a.seeds,
            fanout: 2,
            balance: !a.no_balance,
            // one move per node and round: every node decides, so the cluster still
            // makes several per round
            params: placer::policy::BalanceParams { min_age_ms: a.min_age_ms, max_migrations: 1, ..Default::default() },
        }),
    };
    if let Err(e) = shadowd::run(cfg) {
        eprintln!("shadowd: {e:#}");
        std::process::exit(2);
    }
}
