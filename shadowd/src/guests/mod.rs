//! Guests: the processes this node runs for the cluster. Owns starting them (fresh or from an
//! image), watching them until they exit, periodic checkpoints, vacating and signalling.
//!
//! Every guest is forked by one long-lived spawner thread: `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child ends, so a guest forked by a connection thread would be
//! killed as soon as that connection closed. The spawner lives as long as the daemon, and
//! guests die with the daemon, not before.
//!
//! - this file: the table of guests, watching each until it exits, signalling them.
//! - `launch`: how a job is started (its plan, stdio, environment, the forked child).
//! - `checkpoint`: periodic checkpoints, vacating, images streamed home.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use proto::msg::{JobState, JobStatus};
use proto::{JobId, Msg};

use crate::reporter::EventQueue;
use crate::{lock, log};

mod checkpoint;
mod launch;

/// Why a request about a guest failed. The text goes back to the requester.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// PlaceJob for a job that already runs here.
    #[error("job {0} already runs on this node")]
    AlreadyRunning(JobId),
    /// Vacate/Kill for a job that does not run here.
    #[error("job {0} does not run on this node")]
    UnknownJob(JobId),
    /// The job spec cannot be run.
    #[error("job {job}: {reason}")]
    BadSpec {
        /// Job.
        job: JobId,
        /// What is wrong.
        reason: String,
    },
    /// A file the job needs cannot be opened or created.
    #[error("job {job}: cannot open {what} {path}: {source}")]
    Open {
        /// Job.
        job: JobId,
        /// Which file (stdin, stdout, checkpoint directory...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The process could not be started.
    #[error("job {job}: cannot start {program}: {source}")]
    Spawn {
        /// Job.
        job: JobId,
        /// Program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A checkpoint failed; the job keeps running.
    #[error("job {job} (pid {pid}): checkpoint failed: {msg}")]
    Checkpoint {
        /// Job.
        job: JobId,
        /// Its pid.
        pid: u32,
        /// Why (mos ckpt's message).
        msg: String,
    },
    /// A vacate is already under way, or the job is exiting.
    #[error("job {job}: {reason}")]
    Busy {
        /// Job.
        job: JobId,
        /// What it is busy with.
        reason: &'static str,
    },
    /// kill(2) failed.
    #[error("job {job} (pid {pid}): cannot send signal {signal}: {source}")]
    Signal {
        /// Job.
        job: JobId,
        /// Its pid.
        pid: u32,
        /// Signal.
        signal: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Fixed facts the guest table needs.
#[derive(Clone, Debug)]
pub struct GuestsConfig {
    /// Our node name.
    pub node: String,
    /// The `mos` program (restarts go through `mos restart`).
    pub mos: PathBuf,
    /// The preloaded library, `libmosshim.so`.
    pub shim: PathBuf,
    /// Checkpoint directory for jobs that name none.
    pub default_ckpt_dir: PathBuf,
    /// Cluster key, to stream images to a job's home.
    pub key: Option<proto::auth::ClusterKey>,
    /// Where migrating processes' images arrive (in memory, or on disk on a node whose
    /// memory is limited): a restart from there removes its image once running from it
    /// (nothing else needs it; in memory it is memory).
    pub migration_dirs: Vec<PathBuf>,
}

/// Where a vacate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vacate {
    None,
    InProgress,
    Done,
}

#[derive(Debug)]
struct Life {
    exited: bool,
    vacate: Vacate,
}

/// One running guest.
#[derive(Debug)]
struct Guest {
    job: JobId,
    pid: u32,
    home: String,
    /// stream images to this address (the job's home) instead of reporting a path
    home_addr: Option<String>,
    image: PathBuf,
    /// where `mos restart` writes its own errors (restarts only): the restorer replaces
    /// the process's fds with the image's, so only a failed restart writes here
    restart_log: Option<PathBuf>,
    life: Mutex<Life>,
    changed: Condvar,
    /// Held while `mos ckpt` runs: one checkpoint of a guest at a time.
    ckpt: Mutex<()>,
    /// When it started here.
    started: std::time::Instant,
}

struct SpawnOrder {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The node's guests.
pub struct Guests {
    cfg: GuestsConfig,
    events: Arc<EventQueue>,
    table: Mutex<HashMap<JobId, Arc<Guest>>>,
    spawner: Mutex<mpsc::Sender<SpawnOrder>>,
}


impl Guests {
    /// An empty table and its spawner thread.
    pub fn new(cfg: GuestsConfig, events: Arc<EventQueue>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<SpawnOrder>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for mut order in rx {
                    // The requester may have given up; nothing to do then.
                    let _ = order.reply.send(order.cmd.spawn());
                }
            })?;
        Ok(Guests {
            cfg,
            events,
            table: Mutex::new(HashMap::new()),
            spawner: Mutex::new(tx),
        })
    }

    /// Pids of the running guests.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.table).values().map(|g| g.pid).collect()
    }

    /// One line per guest: "pid PID: job CLUSTER.PROC" or "pid PID: migrated process".
    pub fn describe(&self) -> Vec<String> {
        let mut v: Vec<(u32, String)> = lock(&self.table)
            .values()
            .map(|g| {
                let what = if g.job.0 & crate::rsys::PROCESS_JOB_BIT != 0 {
                    "body of a migrated process".to_string()
                } else {
                    format!("job {}.{}", g.job.0 >> 32, g.job.0 & 0xffff_ffff)
                };
                (g.pid, format!("pid {}: {what}", g.pid))
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// The guests as balancing candidates: batch jobs by job id, bodies of migrated
    /// processes by pid (their home and home pid are the home node's to say).
    pub fn running(&self) -> Vec<crate::candidates::Running> {
        lock(&self.table)
            .values()
            .filter(|g| !lock(&g.life).exited)
            .map(|g| {
                let body = g.job.0 & crate::rsys::PROCESS_JOB_BIT != 0;
                crate::candidates::Running {
                    pid: g.pid,
                    home: if body { String::new() } else { g.home.clone() },
                    home_pid: 0,
                    job: (!body).then_some(g.job),
                    since: g.started,
                    no_migrate: false,
                    restored: true,
                }
            })
            .collect()
    }

    /// The pid of a running job.
    pub fn pid_of(&self, job: JobId) -> Option<u32> {
        lock(&self.table).get(&job).map(|g| g.pid)
    }

    fn spawn(&self, cmd: Command) -> io::Result<Child> {
        let (tx, rx) = mpsc::channel();
        lock(&self.spawner)
            .send(SpawnOrder { cmd, reply: tx })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        rx.recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }

    /// Queue an event for the placer. A process migrated on its own (`MigrateProcess`) is
    /// no placer job: nothing about it is reported.
    fn report(&self, msg: Msg) {
        let job = match &msg {
            Msg::JobStatus(s) => s.job,
            Msg::Checkpointed { job, .. } => *job,
            _ => JobId(0),
        };
        if job.0 & crate::rsys::PROCESS_JOB_BIT == 0 {
            self.events.push(msg);
        }
    }

    fn status(&self, g: &Guest, state: JobState, pid: Option<u32>) -> Msg {
        Msg::JobStatus(JobStatus {
            job: g.job,
            node: self.cfg.node.clone(),
            home: g.home.clone(),
            state,
            pid,
            non_migratable: None,
        })
    }

    /// Wait for the guest to end, then report how (after a vacate under way has decided).
    fn watch(&self, g: Arc<Guest>, mut child: Child) {
        let status = loop {
            match child.wait() {
                Ok(s) => break Ok(s),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        let vacated = {
            let mut life = lock(&g.life);
            life.exited = true;
            g.changed.notify_all();
            while life.vacate == Vacate::InProgress {
                life = g.changed.wait(life).unwrap_or_else(|e| e.into_inner());
            }
            life.vacate == Vacate::Done
        };
        {
            let mut table = lock(&self.table);
            if table.get(&g.job).is_some_and(|t| Arc::ptr_eq(t, &g)) {
                table.remove(&g.job);
            }
        }
        let state = if vacated {
            JobState::Vacated
        } else {
            match status {
                Ok(s) => exit_state(s),
                Err(e) => JobState::Failed {
                    reason: format!("cannot wait for pid {}: {e}", g.pid),
                },
            }
        };
        log!(self.cfg.node, "job {}: pid {} ended: {state:?}", g.job, g.pid);
        if let Some(p) = &g.restart_log {
            let text = fs::read(p).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            if !text.trim().is_empty() {
                log!(self.cfg.node, "job {}: restart said: {}", g.job, text.trim().replace('\n', " | "));
            }
            let _ = fs::remove_file(p);
        }
        self.report(self.status(&g, state, None));
    }


    /// Send `signal` to the job's process group.
    pub fn kill(&self, job: JobId, signal: i32) -> Result<(), GuestError> {
        let g = lock(&self.table)
            .get(&job)
            .cloned()
            .ok_or(GuestError::UnknownJob(job))?;
        signal_group(g.pid, signal).map_err(|source| GuestError::Signal {
            job,
            pid: g.pid,
            signal,
            source,
        })
    }

    /// SIGKILL every guest (the daemon is going away).
    pub fn kill_all(&self) {
        for g in lock(&self.table).values() {
            if let Err(e) = signal_group(g.pid, libc::SIGKILL) {
                log!(self.cfg.node, "job {}: cannot kill pid {}: {e}", g.job, g.pid);
            }
        }
    }
}

/// How a guest ended, as a job state.
pub fn exit_state(s: ExitStatus) -> JobState {
    if let Some(code) = s.code() {
        JobState::Exited { code }
    } else if let Some(signal) = s.signal() {
        JobState::Killed { signal }
    } else {
        JobState::Failed {
            reason: format!("ended with {s}"),
        }
    }
}

/// Signal the process group led by `pid` (guests lead their own group); if there is no such
/// group (a restored process may have left it), the process itself.
fn signal_group(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-pid, signal) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ESRCH) {
        return Err(e);
    }
    // SAFETY: as above.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_states() {
        assert_eq!(exit_state(ExitStatus::from_raw(3 << 8)), JobState::Exited { code: 3 });
        assert_eq!(exit_state(ExitStatus::from_raw(9)), JobState::Killed { signal: 9 });
    }
}
