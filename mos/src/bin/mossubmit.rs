//! mossubmit JOBFILE: queue the jobs of an HTCondor-flavoured job.toml.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 1 || args[0].starts_with('-') {
        eprintln!("usage: mossubmit JOBFILE.toml");
        std::process::exit(2);
    }
    if let Err(e) = mos::cluster::submit(std::path::Path::new(&args[0])) {
        eprintln!("mossubmit: {e:#}");
        std::process::exit(2);
    }
}
