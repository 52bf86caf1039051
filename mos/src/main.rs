//! mos: the user's command line. Argument parsing only; the work is in the library.

use clap::{Parser, Subcommand};
use mos::cluster;
use proto::msg::JobCommand;

#[derive(Parser)]
#[command(name = "mos", version, about = "transparent process checkpointing and migration")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint a process running under libmosshim; prints the image path
    Ckpt {
        /// real pid of the process
        pid: i32,
        /// exit (status 0) once the image is safely written
        #[arg(long)]
        exit: bool,
        /// image path (default: $MOS_CKPT_DIR/<comm>.<pid>.mosimg, else the app's start cwd)
        #[arg(short = 'o', long = "output")]
        output: Option<std::path::PathBuf>,
        /// also print frozen and total time
        #[arg(long)]
        stats: bool,
        /// refuse a pipe or socket the program inherited from its parent (by default it is
        /// recorded as inherited and rebound at restart, like stdin/stdout/stderr)
        #[arg(long)]
        strict: bool,
        /// with --exit: the status the process exits with once its image is safe (as
        /// HTCondor's checkpoint_exit_code expects, e.g. 85); default 0
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=255), requires = "exit")]
        exit_code: i32,
    },
    /// Become the process saved in IMAGE and continue it (exit status is the app's)
    Restart {
        image: std::path::PathBuf,
        /// copy pages into memory now instead of mapping them from the image on demand
        #[arg(long)]
        eager: bool,
        /// skip the page-data checksums (header, metadata and sizes are still checked)
        #[arg(long)]
        no_verify: bool,
        /// remove IMAGE once the process runs from it (a migration's image in memory)
        #[arg(long)]
        unlink: bool,
        /// post-copy: the unix socket of the shadowd that serves the memory still at the
        /// source (the target node's shadowd passes it)
        #[arg(long, value_name = "SOCK")]
        lazy_pages: Option<std::path::PathBuf>,
    },
    /// Run a program under the shim (checkpointable): `mos run -- ./app args`. With a
    /// cluster up it runs at its home node (`$MOS_HOME_NODE`, else the first node), which
    /// may balance it to other nodes
    Run {
        /// never move it automatically (it stays at home; `mos migrate` still can)
        #[arg(long)]
        no_migrate: bool,
        /// start its body on this node at once (remote initiation); its home, files and
        /// pid stay where it was started
        #[arg(long, conflicts_with = "no_migrate")]
        node: Option<String>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<std::ffi::OsString>,
    },
    /// The classic load-distribution policies side by side, simulated with the real
    /// policy code (Pareto lifetimes, heterogeneous speeds)
    Sim {
        /// a policy (random, central, distributed, p-random, p-central, neighbour,
        /// broadcast, gossip) or `all`
        #[arg(long, default_value = "all")]
        policy: String,
        #[arg(long, default_value_t = 64)]
        nodes: usize,
        #[arg(long, default_value_t = 5000)]
        jobs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// offered load (work arriving / capacity)
        #[arg(long, default_value_t = 0.85)]
        utilization: f64,
        /// preemptive policies place each process as `central` does first, instead of
        /// starting it where it arrives (at home, as in MOSIX)
        #[arg(long)]
        placed_first: bool,
        #[arg(long)]
        json: bool,
    },
    /// Processes under the shim in the cluster: where each runs, its home, its moves
    Ps {
        #[arg(long)]
        json: bool,
        /// also print the event log of automatic migrations
        #[arg(long)]
        events: bool,
    },
    /// Work with image files
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Set up, start and stop a localhost cluster (placer + shadowds)
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// The cluster live on a terminal (as MOSIX's mosmon): each node's load and memory as
    /// bars, every process with its home and where it runs, migrations as they happen;
    /// q quits
    Top {
        /// redraw interval
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// The cluster live in a web browser: each node's load and memory over time, the
    /// processes and their migrations, the queue and the events, and JSON under /api/.
    /// Read-only; on loopback unless told otherwise, and then it asks for a token derived
    /// from the cluster key (the address it prints carries it)
    Dashboard {
        /// where to listen (host:port; port 0: any free one)
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: String,
        /// how often it asks the placer
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Start or stop this host's daemons as the cluster description says
    /// (`$MOS_HOME/cluster.toml`, else `/etc/mos/cluster.toml`)
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// The job queue: ID OWNER SUBMITTED RUN_TIME ST NODE CKPTS CMD (and HOLD_REASON);
    /// `-analyze ID` / `-better-analyze ID` (as condor_q): why job ID is idle
    Q {
        /// only these: CLUSTER, CLUSTER.PROC or an owner (as condor_q)
        which: Vec<String>,
        #[arg(long)]
        json: bool,
        /// why job ID (CLUSTER.PROC) is idle: requirement by requirement
        #[arg(long, value_name = "ID", conflicts_with = "better_analyze")]
        analyze: Option<String>,
        /// as --analyze, with every node's verdict
        #[arg(long, value_name = "ID")]
        better_analyze: Option<String>,
    },
    /// Wait until every job in the event log LOG (or only JOB: CLUSTER or CLUSTER.PROC)
    /// has terminated or been removed, as condor_wait; exit 1 when --wait SECONDS passes first
    Wait {
        log: std::path::PathBuf,
        job: Option<String>,
        /// give up after this many seconds (exit status 1)
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
    /// Completed and removed jobs
    History {
        #[arg(long)]
        json: bool,
    },
    /// Nodes: state, cpus, speed, run queue, free memory, guests
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Remove jobs: CLUSTER.PROC, CLUSTER (all its jobs), an owner's, or -all
    Rm(Targets),
    /// Hold jobs (stop them, keep them queued until released): as rm
    Hold(Targets),
    /// Release held jobs: as rm
    Release(Targets),
    /// Checkpoint running jobs and put them back in the queue: as rm
    Vacate(Targets),
    /// Move a process (PID, running under the shim) or a batch job (CLUSTER.PROC) to
    /// NODE (a node name or a shadowd address)
    Migrate {
        id: String,
        node: String,
        /// the process's home node (name or address); default $MOS_HOME_NODE or the
        /// cluster's first node
        #[arg(long)]
        home: Option<String>,
        /// also print how the move went: bytes, copy rounds, frozen and total time
        #[arg(long)]
        stats: bool,
        /// print the result as JSON (pid, node, body_pid, bytes, rounds, round_bytes,
        /// frozen_ms, total_ms)
        #[arg(long)]
        json: bool,
        /// live migration (pre-copy): copy memory in rounds while the process runs, then
        /// freeze it only for what is left (the rounds stop after 8, or when the process
        /// writes faster than the link carries, and the rest goes stop-and-copy); without
        /// it the process is frozen for the whole transfer. Automatic migrations go live
        /// for processes of MOS_LIVE_MIN_MIB (256) MiB or more
        #[arg(long, conflicts_with = "lazy")]
        live: bool,
        /// post-copy: the process runs on NODE at once, without its memory, which follows:
        /// the pages it touches first, fetched as it faults, then the rest. Until every
        /// page arrived it depends on both nodes: if the source node (or its shadowd) dies
        /// meanwhile, the process is lost (a batch job restarts from its last checkpoint)
        #[arg(long)]
        lazy: bool,
        /// compress the image (stop-and-copy, or a live migration's rounds) on the wire with
        /// lz4: auto (when NODE is on another machine: on loopback the wire is faster than
        /// lz4), on or off
        #[arg(long, value_parser = ["auto", "on", "off"], default_value = "auto")]
        compress: String,
    },
}

/// Which jobs a command is for, as condor_rm takes them.
#[derive(clap::Args)]
struct Targets {
    /// CLUSTER.PROC, CLUSTER (all its jobs) or an owner (all theirs)
    #[arg(required_unless_present = "all")]
    ids: Vec<String>,
    /// every job in the queue
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Start the shadowd of each node of the description on this host (its address is one
    /// of this host's), or of the nodes named, and the placer if its address is here
    Start {
        /// only these nodes (repeatable)
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// the description to use
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Stop the daemons `mos node start` started
    Stop,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Create the cluster key (0600) in $MOS_HOME (default ~/.mos)
    Init,
    /// Start a placer and N shadowds on 127.0.0.1 (free ports; with --netns each node in a
    /// network namespace of its own); prints them
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// load report / scheduling interval
        #[arg(long, default_value_t = 300)]
        interval_ms: u64,
        /// place only: no automatic migrations
        #[arg(long)]
        no_balance: bool,
        /// who decides migrations: the placer (central) or every shadowd (gossip, MOSIX-style)
        #[arg(long, value_enum, default_value_t = mos::cluster::Mode::Central)]
        mode: mos::cluster::Mode,
        /// cap each node at this much CPU (its cgroup's quota, times its speed), e.g. 0.4
        #[arg(long)]
        cpu_limit: Option<f64>,
        /// cap each node's memory (its cgroup's limit), e.g. 1G, 512M
        #[arg(long)]
        mem_limit: Option<String>,
        /// relative speed of each node, comma-separated (e.g. 1,1,0.5,2); reported as
        /// the node's speed and, with --cpu-limit, scaling its quota
        #[arg(long, value_delimiter = ',')]
        speeds: Vec<f64>,
        /// a process must have been on its node this long before balancing moves it
        #[arg(long, default_value_t = 2000)]
        min_age_ms: u64,
        /// each node in a network namespace of its own, with its own address on a
        /// private subnet (a bridge and veth pairs, removed at `down`; needs root)
        #[arg(long)]
        netns: bool,
    },
    /// Stop the cluster started by `mos cluster up`
    Down,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Print an image's header, regions, fds, threads, sizes and checksums
    Inspect {
        image: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// condor_q spells its long options with one dash: `mos q -analyze 1.0` is accepted too.
fn condor_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = args.collect();
    if v.get(1).is_some_and(|a| a == "wait") {
        for a in v.iter_mut().skip(2) {
            if a == "-wait" {
                *a = "--wait".into();
            }
        }
    }
    if v.get(1).is_some_and(|a| ["q", "rm", "hold", "release", "vacate"].iter().any(|c| a == c)) {
        for a in v.iter_mut().skip(2) {
            if a == "-analyze" || a == "-better-analyze" || a == "-all" {
                *a = format!("-{}", a.to_string_lossy()).into();
            }
        }
    }
    v
}

fn main() {
    clidocs::generate_if_asked(<Cli as clap::CommandFactory>::command);
    let cli = Cli::parse_from(condor_spellings(std::env::args_os()));
    let r = match cli.cmd {
        Cmd::Ckpt { pid, exit, output, stats, strict, exit_code } => mos::ckpt_cmd(pid, exit, output, stats, strict, exit_code),
        Cmd::Restart { image, eager, no_verify, unlink, lazy_pages } => mos::restart_cmd(&image, eager, no_verify, unlink, lazy_pages.as_deref()),
        Cmd::Image { cmd: ImageCmd::Inspect { image, json } } => mos::inspect_cmd(&image, json),
        Cmd::Run { no_migrate, node, argv } => cluster::register_here(no_migrate)
            .and_then(|()| node.as_deref().map_or(Ok(()), cluster::start_on))
            .and_then(|()| mos::run_cmd(&argv)),
        Cmd::Ps { json, events } => cluster::ps(json, events),
        Cmd::Sim { policy, nodes, jobs, seed, utilization, placed_first, json } => mos::sim_cmd(&policy, nodes, jobs, seed, utilization, placed_first, json),
        Cmd::Cluster { cmd: ClusterCmd::Init } => cluster::init(),
        Cmd::Node { cmd: NodeCmd::Start { nodes, config } } => mos::node::start(config.as_deref(), &nodes),
        Cmd::Node { cmd: NodeCmd::Stop } => mos::node::stop(),
        Cmd::Top { interval_ms } => mos::top::run(std::time::Duration::from_millis(interval_ms.max(50))),
        Cmd::Dashboard { listen, interval_ms } => mos::dashboard::run(&listen, std::time::Duration::from_millis(interval_ms.max(100))),
        Cmd::Cluster { cmd: ClusterCmd::Up { nodes, interval_ms, no_balance, mode, cpu_limit, mem_limit, speeds, min_age_ms, netns } } => {
            let opts = cluster::UpOptions { nodes, interval_ms, balance: !no_balance, mode, cpu_limit, mem_limit, speeds, min_age_ms, netns };
            cluster::up(&opts)
        }
        Cmd::Cluster { cmd: ClusterCmd::Down } => cluster::down(),
        Cmd::Q { analyze: Some(id), .. } => cluster::analyze(&id, false),
        Cmd::Q { better_analyze: Some(id), .. } => cluster::analyze(&id, true),
        Cmd::Q { json, which, .. } => mos::report::queue_of(false, json, &which),
        Cmd::Wait { log, job, wait } => match mos::wait_cmd(&log, job.as_deref(), wait.map(std::time::Duration::from_secs)) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Cmd::History { json } => cluster::queue(true, json),
        Cmd::Status { json } => cluster::status(json),
        Cmd::Rm(t) => cluster::commands(&t.ids, t.all, JobCommand::Remove),
        Cmd::Hold(t) => cluster::commands(&t.ids, t.all, JobCommand::Hold),
        Cmd::Release(t) => cluster::commands(&t.ids, t.all, JobCommand::Release),
        Cmd::Vacate(t) => cluster::commands(&t.ids, t.all, JobCommand::Vacate),
        Cmd::Migrate { id, node, home, stats, json, live, lazy, compress } => match id.parse::<u32>() {
            Ok(pid) if !id.contains('.') => {
                let mode = match (live, lazy) {
                    (true, _) => proto::msg::MoveMode::Live,
                    (_, true) => proto::msg::MoveMode::Lazy,
                    _ => proto::msg::MoveMode::StopAndCopy,
                };
                let compress = match compress.as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                };
                cluster::migrate_process(pid, &node, home.as_deref(), mode, compress, cluster::Report { stats, json })
            }
            _ => cluster::migrate(&id, &node),
        },
    };
    if let Err(e) = r {
        eprintln!("mos: {e:#}");
        std::process::exit(2);
    }
}
