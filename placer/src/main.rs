//! `placer`: the mos placer. The daemon loop is wired elsewhere; this binary opens the
//! state directory and shows the persistent job queue.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use placer::db::{Db, DB_FILE_NAME};
use placer::dump;

/// mos placer: node table, persistent job queue, placement and migration policy.
#[derive(Debug, Parser)]
#[command(name = "placer", version)]
struct Args {
    /// Directory holding the placer's state (the job queue database, placer.redb).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/mos/placer")]
    state_dir: PathBuf,

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
    let args = Args::parse();
    // One line a person can act on; no backtrace, whatever RUST_BACKTRACE says.
    if let Err(e) = run(args) {
        eprintln!("placer: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if !args.dump {
        bail!(
            "nothing to do: give --dump to print the queue in {}",
            args.state_dir.display()
        );
    }
    let path = args.state_dir.join(DB_FILE_NAME);
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
