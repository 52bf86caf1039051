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
    /// Load report interval in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(10..))]
    interval_ms: u32,
}

fn main() {
    let a = Args::parse();
    let cfg = shadowd::Config {
        node: a.node,
        listen: a.listen,
        state_dir: a.state_dir,
        key: a.key,
        placer: a.placer,
        cpus: a.cpus,
        speed: a.speed,
        interval: Duration::from_millis(u64::from(a.interval_ms)),
    };
    if let Err(e) = shadowd::run(cfg) {
        eprintln!("shadowd: {e:#}");
        std::process::exit(2);
    }
}
