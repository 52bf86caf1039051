//! mossubmit FILE: queue the jobs of a job file, an HTCondor-flavoured job.toml or an
//! HTCondor submit description file (`*.sub`, or any file that is not TOML).

use clap::Parser;

/// Queue the jobs of FILE on the mos cluster (a job.toml, or an HTCondor submit file)
#[derive(Parser)]
#[command(name = "mossubmit", version)]
struct Args {
    /// the job file
    file: std::path::PathBuf,
    /// check the file and show the jobs it would queue, queue nothing
    #[arg(long)]
    dry_run: bool,
    /// print the result as JSON
    #[arg(long)]
    json: bool,
}

fn main() {
    clidocs::generate_if_asked(<Args as clap::CommandFactory>::command);
    let a = Args::parse();
    if let Err(e) = mos::cluster::submit(&a.file, a.dry_run, a.json) {
        eprintln!("mossubmit: {e:#}");
        std::process::exit(2);
    }
}
