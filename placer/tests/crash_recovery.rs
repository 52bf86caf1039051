//! Crash safety of the job queue: a writer process is SIGKILLed at an arbitrary moment
//! (mid-transaction, mid-fsync) several times over; after each kill the file must open,
//! hold every change the writer reported committed, and be internally consistent.
//!
//! This binary is both sides: run without the environment variable it is the checker; it
//! re-executes itself with `MOS_PLACER_CRASH_WRITER=<state dir>` to be the writer.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use placer::db::{Db, EventKind, JobState, StateChange};
use placer::id::JobId;
use placer::jobfile::JobTemplate;

const WRITER_ENV: &str = "MOS_PLACER_CRASH_WRITER";
const PROCS: u32 = 3;
const ROUNDS: usize = 4;

/// Writer: per cluster, submit 3 jobs, start one, checkpoint it, complete another; print
/// "done C" after each cluster's last commit. Bounded: stops by itself after 20 s.
fn writer(state_dir: &Path) -> Result<(), String> {
    let db = Db::open_in(state_dir).map_err(|e| e.to_string())?;
    let t = JobTemplate::parse(
        &format!(
            "executable = \"/bin/sim\"\narguments = \"$(Cluster) $(Process)\"\nqueue = {PROCS}"
        ),
        "crash.toml",
        Path::new("/"),
    )
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = std::io::stdout().lock();
    while Instant::now() < deadline {
        let c = db.submit("crash", &t).map_err(|e| e.to_string())?;
        let (a, b) = (JobId::new(c, 0), JobId::new(c, 1));
        db.set_state(a, StateChange::Start { node: "n1".into() })
            .map_err(|e| e.to_string())?;
        db.record_checkpoint(a, Path::new(&format!("/ck/{c}")), true)
            .map_err(|e| e.to_string())?;
        db.set_state(b, StateChange::Start { node: "n2".into() })
            .map_err(|e| e.to_string())?;
        db.set_state(b, StateChange::Complete { exit_status: 0 })
            .map_err(|e| e.to_string())?;
        writeln!(out, "done {c}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Starts a writer, waits until it reports `min_clusters` finished clusters, then kills it.
/// Returns the clusters it reported finished.
fn run_and_kill(state_dir: &Path, min_clusters: u64) -> Result<Vec<u64>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(WRITER_ENV, state_dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn writer: {e}"))?;
    let stdout = child.stdout.take().ok_or("writer has no stdout")?;
    let mut done = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(c) = line.strip_prefix("done ") {
            done.push(c.parse().map_err(|_| format!("bad writer line {line:?}"))?);
            if done.len() as u64 >= min_clusters {
                break;
            }
        }
    }
    // The writer is somewhere in its next cluster's transactions now.
    child.kill().map_err(|e| format!("kill writer: {e}"))?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        return Err("writer exited on its own before it was killed".into());
    }
    Ok(done)
}

/// Every cluster is whole, every acknowledged one (reported done before a kill) holds all its
/// changes, and every stored job is consistent with its events. A cluster the kill cut off
/// between its transactions stays as far as it got: a later writer starts new clusters.
fn check(state_dir: &Path, acknowledged: &[u64]) -> Result<(), String> {
    let newest = acknowledged.iter().copied().max().unwrap_or(0);
    let db = Db::open_in(state_dir).map_err(|e| format!("reopen after kill: {e}"))?;
    let next = db.next_cluster_id().map_err(|e| e.to_string())?;
    if next <= newest {
        return Err(format!(
            "cluster {newest} was acknowledged but next id is {next}"
        ));
    }
    let mut all = db.list().map_err(|e| e.to_string())?;
    all.extend(db.history().map_err(|e| e.to_string())?);
    for c in 1..next {
        let procs = all.iter().filter(|j| j.id.cluster == c).count();
        if procs != PROCS as usize {
            return Err(format!(
                "cluster {c} has {procs} jobs, not {PROCS}: a submission was torn"
            ));
        }
        if db.cluster(c).map_err(|e| e.to_string())?.is_none() {
            return Err(format!("cluster {c} has jobs but no cluster record"));
        }
    }
    for j in &all {
        let events = db.events(j.id).map_err(|e| e.to_string())?;
        let started = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Started { .. }))
            .count();
        let ckpts = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::CheckpointRecorded { .. }))
            .count();
        let consistent = matches!(
            events.first().map(|e| &e.kind),
            Some(EventKind::Submitted { .. })
        ) && (j.state == JobState::Idle) == (started == 0)
            && j.checkpoints as usize == ckpts
            && j.last_checkpoint.is_some() == (ckpts > 0)
            && (j.state == JobState::Completed) == j.exit_status.is_some();
        if !consistent {
            return Err(format!(
                "job {} disagrees with its event log: {j:?} / {events:?}",
                j.id
            ));
        }
        if acknowledged.contains(&j.id.cluster) {
            let want = match j.id.proc {
                0 => JobState::Running,
                1 => JobState::Completed,
                _ => JobState::Idle,
            };
            if j.state != want {
                return Err(format!(
                    "acknowledged job {} is {} instead of {want}",
                    j.id, j.state
                ));
            }
        }
    }
    Ok(())
}

fn main() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        if let Err(e) = writer(Path::new(&dir)) {
            eprintln!("crash writer: {e}");
            std::process::exit(2);
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut failed = 0;
    for round in 1..=ROUNDS {
        // Vary how far the writer gets so the kill lands at different points.
        let result = run_and_kill(dir.path(), 5 + 7 * round as u64).and_then(|ack| {
            acknowledged.extend(ack);
            check(dir.path(), &acknowledged)
        });
        let newest = acknowledged.iter().copied().max().unwrap_or(0);
        match result {
            Ok(()) => println!("test crash_recovery::kill_round_{round} ... ok (acknowledged through cluster {newest})"),
            Err(e) => {
                println!("test crash_recovery::kill_round_{round} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    println!();
    println!(
        "crash_recovery: {} passed, {failed} failed",
        ROUNDS - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
