//! mos: the user's command line. Argument parsing only; the work is in the library.

use clap::{Parser, Subcommand};

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
    },
    /// Work with image files
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
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

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ckpt { pid, exit, output, stats } => mos::ckpt_cmd(pid, exit, output, stats),
        Cmd::Restart { image, eager, no_verify } => mos::restart_cmd(&image, eager, no_verify),
        Cmd::Image { cmd: ImageCmd::Inspect { image, json } } => mos::inspect_cmd(&image, json),
    };
    if let Err(e) = r {
        eprintln!("mos: {e}");
        std::process::exit(2);
    }
}
