//! `placer`: the mos placer daemon (`--listen`), or a look at its queue (`--dump`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use placer::db::{Db, DB_FILE_NAME};
use placer::dump;

/// mos placer: node table, persistent job queue, placement and migration policy.
#[derive(Debug, Parser)]
#[command(name = "placer", version)]
struct Args {
    /// Directory holding the placer's state (the job queue database, placer.redb)
    /// [default: /var/lib/mos/placer].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// The cluster description (`cluster.toml`): its [placer] gives the address to
    /// listen on and the state directory, the file the key, the interval and the
    /// balancing mode (options given as well override it). Serves.
    #[arg(long, value_name = "FILE", conflicts_with = "dump")]
    config: Option<PathBuf>,

    /// Serve: accept load reports, submissions and commands on this address (host:port).
    #[arg(long, value_name = "ADDR", conflicts_with = "dump")]
    listen: Option<String>,

    /// Cluster key file (with --listen).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Scheduling and liveness interval, ms (with --listen) [default: 500].
    #[arg(long)]
    interval_ms: Option<u64>,

    /// Place only: never migrate anything automatically (with --listen).
    #[arg(long)]
    no_balance: bool,

    /// A process must have been on its node this long before load balancing moves it, ms.
    #[arg(long, default_value_t = 2000)]
    min_age_ms: u64,

    /// At most this many automatic migrations per interval.
    #[arg(long, default_value_t = 4)]
    max_moves: usize,

    /// Load difference a move must beat (runnable processes per reference cpu).
    #[arg(long, default_value_t = 0.5)]
    min_gain: f64,

    /// Free memory below this makes a node short (memory ushering), MiB.
    #[arg(long, default_value_t = 256)]
    mem_reserve_mib: u64,

    /// Print the job queue and exit. Safe while a placer is running on the same state dir.
    #[arg(long)]
    dump: bool,

    /// With --dump: also list completed and removed jobs.
    #[arg(long, requires = "dump")]
    history: bool,

    /// With --dump: print JSON instead of a table.
    #[arg(long, requires = "dump")]
    json: bool,
}

fn main() {
    clidocs::generate_if_asked(<Args as clap::CommandFactory>::command);
    let args = Args::parse();
    placer::logging::init();
    // One line a person can act on; no backtrace, whatever RUST_BACKTRACE says.
    if let Err(e) = run(args) {
        eprintln!("placer: {e:#}");
        std::process::exit(1);
    }
}

fn run(mut args: Args) -> anyhow::Result<()> {
    let file = args.config.as_deref().map(placer::clusterfile::ClusterFile::load).transpose().map_err(anyhow::Error::msg)?;
    if let Some(f) = &file {
        args.listen = args.listen.take().or_else(|| Some(f.placer.listen().to_string()));
        args.key = args.key.take().or_else(|| Some(f.key.clone()));
        args.state_dir = args.state_dir.take().or_else(|| Some(f.placer.state_dir.clone()));
        args.interval_ms = args.interval_ms.or(Some(u64::from(f.interval_ms)));
        // gossip: the shadowds decide; off: nobody
        args.no_balance |= f.balancing != placer::clusterfile::Balancing::Central;
    }
    let state_dir = args.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/mos/placer"));
    if let Some(listen) = args.listen {
        let key_path = args.key.context("--listen needs --key FILE (see `mos cluster init`)")?;
        let key = proto::auth::load_key(&key_path).with_context(|| format!("cluster key {}", key_path.display()))?;
        let balance = (!args.no_balance).then(|| placer::policy::BalanceParams {
            min_gain: args.min_gain,
            min_age_ms: args.min_age_ms,
            max_migrations: args.max_moves,
            mem_reserve_mib: args.mem_reserve_mib,
            ..Default::default()
        });
        let cfg = placer::daemon::Config { listen, state_dir, key, interval_ms: args.interval_ms.unwrap_or(500), missed: 3, balance };
        return placer::daemon::Placer::new(cfg)?.run();
    }
    if !args.dump {
        bail!(
            "nothing to do: give --listen ADDR (or --config FILE) to serve, or --dump to print the queue in {}",
            state_dir.display()
        );
    }
    let path = state_dir.join(DB_FILE_NAME);
    let db = Db::open_read_only(&path)?;
    let queue = dump::read_queue(&db, args.history)
        .with_context(|| format!("reading {}", path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&queue)?);
    } else {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        print!("{}", dump::render_table(&queue, now_ms));
    }
    Ok(())
}
