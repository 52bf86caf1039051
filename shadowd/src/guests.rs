//! Guests: the processes this node runs for the cluster. Owns starting them (fresh or from an
//! image), watching them until they exit, periodic checkpoints, vacating and signalling.
//!
//! Every guest is forked by one long-lived spawner thread: `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child ends, so a guest forked by a connection thread would be
//! killed as soon as that connection closed. The spawner lives as long as the daemon, and
//! guests die with the daemon, not before.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use proto::msg::{BatchIo, JobSpec, JobState, JobStatus, OsBytes};
use proto::{JobId, Msg};

use crate::reporter::EventQueue;
use crate::{lock, log};

/// How long a `mos ckpt` may take before it is abandoned.
const CKPT_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Where `mos` and `libmosshim.so` are.
    pub bin_dir: PathBuf,
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
                let what = if g.job.0 & 0x4000_0000_0000_0000 != 0 {
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

    /// Start a guest (fresh, or from `spec.restart_from`). Returns its pid once it is
    /// spawned, after queueing its `Running` status.
    pub fn place(self: &Arc<Self>, job: JobId, spec: JobSpec) -> Result<u32, GuestError> {
        let mut table = lock(&self.table);
        if table.contains_key(&job) {
            return Err(GuestError::AlreadyRunning(job));
        }
        let plan = LaunchPlan::new(&self.cfg, job, &spec)?;
        fs::create_dir_all(&plan.ckpt_dir).map_err(|source| GuestError::Open {
            job,
            what: "checkpoint directory",
            path: plan.ckpt_dir.clone(),
            source,
        })?;
        let program = plan.program.clone();
        let cmd = plan.command(job)?;
        let child = self.spawn(cmd).map_err(|source| GuestError::Spawn {
            job,
            program,
            source,
        })?;
        let pid = child.id();
        let guest = Arc::new(Guest {
            job,
            pid,
            home: spec.home.clone(),
            home_addr: spec.batch.as_ref().and_then(|b| b.home_addr.clone()),
            image: plan.image.clone(),
            restart_log: plan.restart_log(job),
            life: Mutex::new(Life {
                exited: false,
                vacate: Vacate::None,
            }),
            changed: Condvar::new(),
            ckpt: Mutex::new(()),
            started: std::time::Instant::now(),
        });
        table.insert(job, guest.clone());
        drop(table);
        self.report(self.status(&guest, JobState::Running, Some(pid)));
        log!(self.cfg.node, "job {job}: started pid {pid} ({})", plan.describe());

        let me = self.clone();
        let g = guest.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("watch-{job}"))
            .spawn(move || me.watch(g, child));
        if let Err(e) = watcher {
            // Without a watcher nobody would reap it or report its end.
            log!(self.cfg.node, "job {job}: cannot start its watcher ({e}); killing it");
            signal_group(pid, libc::SIGKILL).ok();
            lock(&self.table).remove(&job);
            return Err(GuestError::Spawn {
                job,
                program: plan.program,
                source: e,
            });
        }
        if let Some(every) = plan.ckpt_every {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ckpt-{job}"))
                .spawn(move || me.periodic_checkpoints(guest, every));
            if let Err(e) = spawned {
                log!(self.cfg.node, "job {job}: no periodic checkpoints: {e}");
            }
        }
        Ok(pid)
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

    /// Checkpoint every `every` until the guest exits or is vacated.
    fn periodic_checkpoints(&self, g: Arc<Guest>, every: Duration) {
        loop {
            let deadline = Instant::now() + every;
            {
                let mut life = lock(&g.life);
                loop {
                    // A vacate under way may still fail (and the job go on): keep waiting.
                    if life.exited || life.vacate == Vacate::Done {
                        return;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    life = g
                        .changed
                        .wait_timeout(life, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let _one_at_a_time = lock(&g.ckpt);
            {
                let life = lock(&g.life);
                if life.exited || life.vacate == Vacate::Done {
                    return;
                }
                if life.vacate == Vacate::InProgress {
                    continue;
                }
            }
            match self.checkpoint(&g, false) {
                Ok(bytes) => self.publish(&g, bytes),
                Err(e) => log!(self.cfg.node, "periodic checkpoint: {e}"),
            }
        }
    }

    /// Run `mos ckpt` on the guest; the image's size on success.
    fn checkpoint(&self, g: &Guest, exit: bool) -> Result<u64, GuestError> {
        let fail = |msg: String| GuestError::Checkpoint {
            job: g.job,
            pid: g.pid,
            msg,
        };
        let mos = self.cfg.bin_dir.join("mos");
        let mut cmd = Command::new(&mos);
        cmd.arg("ckpt").arg(g.pid.to_string());
        if exit {
            cmd.arg("--exit");
        }
        cmd.arg("-o")
            .arg(&g.image)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = run_with_timeout(cmd, CKPT_TIMEOUT)
            .map_err(|e| fail(format!("cannot run {}: {e}", mos.display())))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let text = text.trim();
            return Err(fail(if text.is_empty() {
                format!("mos ckpt failed ({})", out.status)
            } else {
                text.to_string()
            }));
        }
        let meta = fs::metadata(&g.image)
            .map_err(|e| fail(format!("mos ckpt succeeded but {}: {e}", g.image.display())))?;
        Ok(meta.len())
    }

    /// Checkpoint the job and stop it. Returns once the image is complete; the job's
    /// `Vacated` status follows when it has exited. On failure the job keeps running.
    pub fn vacate(&self, job: JobId) -> Result<PathBuf, GuestError> {
        let g = lock(&self.table)
            .get(&job)
            .cloned()
            .ok_or(GuestError::UnknownJob(job))?;
        {
            let mut life = lock(&g.life);
            if life.exited {
                return Err(GuestError::Busy {
                    job,
                    reason: "it is exiting",
                });
            }
            if life.vacate != Vacate::None {
                return Err(GuestError::Busy {
                    job,
                    reason: "a vacate is already under way",
                });
            }
            life.vacate = Vacate::InProgress;
            g.changed.notify_all();
        }
        let result = {
            let _one_at_a_time = lock(&g.ckpt);
            self.checkpoint(&g, true)
        };
        let mut life = lock(&g.life);
        let out = match result {
            Ok(bytes) => {
                // Before the watcher may report Vacated: the image is home first.
                self.publish(&g, bytes);
                life.vacate = Vacate::Done;
                log!(self.cfg.node, "job {job}: vacated to {} ({bytes} bytes)", g.image.display());
                Ok(g.image.clone())
            }
            Err(e) => {
                life.vacate = Vacate::None;
                Err(e)
            }
        };
        g.changed.notify_all();
        out
    }

    /// A complete image: stream it to the job's home (which records it), or report its
    /// local path. A failed stream is logged; the home keeps its previous image.
    fn publish(&self, g: &Guest, bytes: u64) {
        let Some(addr) = &g.home_addr else {
            self.report(checkpointed(g, bytes));
            return;
        };
        match self.stream_home(g, addr) {
            Ok(n) => log!(self.cfg.node, "job {}: image ({n} bytes) streamed home to {addr}", g.job),
            Err(e) => log!(self.cfg.node, "job {}: cannot stream the image home to {addr}: {e}", g.job),
        }
    }

    fn stream_home(&self, g: &Guest, addr: &str) -> Result<u64, String> {
        let key = self.cfg.key.as_ref().ok_or("no cluster key")?;
        let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("bad address: {e}"))?;
        let c = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let mut s = proto::NoSigPipe::new(c);
        let hello = proto::Hello::new(self.cfg.node.clone(), proto::Role::Shadowd);
        proto::auth::client_handshake(&mut s, key, &hello).map_err(|e| e.to_string())?;
        let c = s.into_inner();
        let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
        let mut w = proto::FrameWriter::new(proto::NoSigPipe::new(c.try_clone().map_err(|e| e.to_string())?));
        let n = proto::stream::send_image(&mut w, g.job, &g.home, &g.image).map_err(|e| e.to_string())?;
        match proto::FrameReader::new(c).read_msg::<Msg>() {
            Ok((Msg::ImageReceived { size, .. }, _)) if size == n => Ok(n),
            Ok((Msg::Error { msg }, _)) => Err(msg),
            Ok((m, _)) => Err(format!("unexpected answer {}", m.name())),
            Err(e) => Err(e.to_string()),
        }
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

fn checkpointed(g: &Guest, bytes: u64) -> Msg {
    Msg::Checkpointed {
        job: g.job,
        path: OsBytes::from(g.image.as_path()),
        bytes,
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

/// Output of a finished helper command.
struct HelperOutput {
    status: ExitStatus,
    stderr: Vec<u8>,
}

/// Run `cmd` (stderr piped, and short), killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> io::Result<HelperOutput> {
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr).ok();
    }
    Ok(HelperOutput { status, stderr })
}

/// Everything decided about how to start a job, before anything is started.
#[derive(Debug)]
struct LaunchPlan {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    /// `None` = keep the daemon's environment (restarts: the image has its own).
    env: Option<Vec<(OsString, OsString)>>,
    restart: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    error: Option<PathBuf>,
    ckpt_dir: PathBuf,
    image: PathBuf,
    ckpt_every: Option<Duration>,
}

impl LaunchPlan {
    fn new(cfg: &GuestsConfig, job: JobId, spec: &JobSpec) -> Result<Self, GuestError> {
        let bad = |reason: String| GuestError::BadSpec { job, reason };
        if spec.cwd.as_bytes().is_empty() {
            return Err(bad("empty working directory".into()));
        }
        let cwd = PathBuf::from(spec.cwd.as_os_str());
        let batch = spec.batch.clone().unwrap_or_default();
        let at_cwd = |p: &Option<OsBytes>| -> Option<PathBuf> {
            p.as_ref()
                .filter(|p| !p.as_bytes().is_empty())
                .map(|p| cwd.join(p.as_path()))
        };
        let ckpt_dir = at_cwd(&batch.ckpt_dir).unwrap_or_else(|| cfg.default_ckpt_dir.clone());
        let image = ckpt_dir.join(format!("job{job}.mosimg"));
        let ckpt_every = batch_interval(&batch);
        let mos = cfg.bin_dir.join("mos");
        if let Some(from) = &spec.restart_from {
            if from.as_bytes().is_empty() {
                return Err(bad("empty restart image path".into()));
            }
            let from = cwd.join(from.as_path());
            let mut args: Vec<std::ffi::OsString> = vec!["restart".into()];
            if job.0 & crate::rsys::PROCESS_JOB_BIT != 0 && cfg.migration_dirs.iter().any(|d| from.starts_with(d)) {
                args.push("--unlink".into());
            }
            args.push(from.into_os_string());
            return Ok(LaunchPlan {
                program: mos,
                args,
                cwd,
                env: None,
                restart: true,
                input: None,
                output: None,
                error: None,
                ckpt_dir,
                image,
                ckpt_every,
            });
        }
        let (first, rest) = spec
            .argv
            .split_first()
            .ok_or_else(|| bad("empty argv".into()))?;
        if first.as_bytes().is_empty() {
            return Err(bad("empty program path".into()));
        }
        let shim = cfg.bin_dir.join("libmosshim.so");
        if !shim.exists() {
            return Err(bad(format!("{} is missing on this node (run `make build`)", shim.display())));
        }
        let mut env = guest_env(&spec.env, &shim, &ckpt_dir);
        let program = cwd.join(first.as_path());
        let remote = batch.remote_home.is_some();
        if let Some((token, addr)) = &batch.remote_home {
            // the job's files and cwd are at its home: the shim runs it in remote mode
            let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
            env.push(("MOS_REMOTE_HOME".into(), format!("{hex}@{addr}").into()));
        }
        let run_dir = if remote && !cwd.is_dir() { PathBuf::from("/") } else { cwd.clone() };
        Ok(LaunchPlan {
            program,
            args: rest.iter().map(|a| a.as_os_str().to_owned()).collect(),
            cwd: run_dir,
            env: Some(env),
            restart: false,
            input: if remote { None } else { at_cwd(&batch.input) },
            output: if remote { None } else { at_cwd(&batch.output) },
            error: if remote { None } else { at_cwd(&batch.error) },
            ckpt_dir,
            image,
            ckpt_every,
        })
    }

    /// Where a restart's own error messages go (None for a fresh start).
    fn restart_log(&self, job: JobId) -> Option<PathBuf> {
        self.restart.then(|| self.ckpt_dir.join(format!("job{job}.restart.log")))
    }

    fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// The command, stdio opened, ready for the spawner.
    fn command(&self, job: JobId) -> Result<Command, GuestError> {
        let open_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| GuestError::Open {
                job,
                what,
                path,
                source,
            }
        };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).current_dir(&self.cwd);
        match &self.env {
            Some(env) => {
                cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
            }
            None => {
                cmd.env_remove("LD_PRELOAD");
            }
        }
        if let Some(log) = self.restart_log(job) {
            // The image reopens its own files; until then, errors of `mos restart` itself
            // go to a file the watcher puts into the node's log.
            let err = create_output(&log).map_err(open_err("restart log", &log))?;
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(err));
        } else {
            let stdin = match &self.input {
                Some(p) => Stdio::from(File::open(p).map_err(open_err("input", p))?),
                None => Stdio::null(),
            };
            let out = match &self.output {
                Some(p) => Some(create_output(p).map_err(open_err("output", p))?),
                None => None,
            };
            let err = match (&self.error, &self.output, &out) {
                (Some(e), Some(o), Some(f)) if e == o => {
                    Some(f.try_clone().map_err(open_err("error", e))?)
                }
                (Some(e), _, _) => Some(create_output(e).map_err(open_err("error", e))?),
                (None, _, _) => None,
            };
            cmd.stdin(stdin)
                .stdout(out.map_or_else(Stdio::null, Stdio::from))
                .stderr(err.map_or_else(Stdio::null, Stdio::from));
        }
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // The closure runs in the forked child before exec and only makes async-signal-safe
        // system calls (sigprocmask, close_range/fcntl, prctl, getppid, setpgid).
        // SAFETY: it allocates nothing and takes no lock (see above).
        unsafe {
            cmd.pre_exec(move || guest_pre_exec(parent));
        }
        Ok(cmd)
    }
}

/// In the forked guest, before exec: no inherited fds beyond stdio, no signals blocked (the
/// daemon blocks SIGTERM/SIGINT in all its threads, and a mask survives exec), death with the
/// daemon, its own process group. Async-signal-safe only: no allocation, no locks.
fn guest_pre_exec(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain system calls on integers, and one on a local, initialised sigset_t
    // (sigemptyset initialises it; a zeroed sigset_t is a valid value to start from).
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            // Kernels before 5.11: mark them one by one.
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The daemon may have died between fork and prctl: then nobody would kill us.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// stdout/stderr of a fresh job: truncated, never `O_APPEND` (a restart rewrites the file at
/// its saved offset).
fn create_output(p: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).open(p)
}

fn batch_interval(b: &BatchIo) -> Option<Duration> {
    b.ckpt_interval_s.filter(|&n| n > 0).map(Duration::from_secs)
}

/// A fresh guest's environment: the job's, plus the shim (ahead of any preload of its own)
/// and the checkpoint directory.
fn guest_env(env: &[(OsBytes, OsBytes)], shim: &Path, ckpt_dir: &Path) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = Vec::with_capacity(env.len() + 2);
    let mut preload = shim.as_os_str().to_owned();
    for (k, v) in env {
        match k.as_bytes() {
            b"LD_PRELOAD" => {
                if !v.as_bytes().is_empty() && v.as_os_str() != shim.as_os_str() {
                    preload.push(":");
                    preload.push(v.as_os_str());
                }
            }
            b"MOS_CKPT_DIR" => {}
            _ => out.push((k.as_os_str().to_owned(), v.as_os_str().to_owned())),
        }
    }
    out.push(("LD_PRELOAD".into(), preload));
    out.push(("MOS_CKPT_DIR".into(), ckpt_dir.as_os_str().to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuestsConfig {
        GuestsConfig {
            node: "n1".into(),
            bin_dir: PathBuf::from("/opt/mos/bin"),
            default_ckpt_dir: PathBuf::from("/var/mos/ckpt"),
            key: None,
            migration_dirs: vec![PathBuf::from("/dev/shm/mos-n1-1")],
        }
    }

    fn spec() -> JobSpec {
        JobSpec {
            argv: vec!["./app".into(), "7".into()],
            env: vec![("A".into(), "1".into())],
            cwd: "/home/u".into(),
            home: "h".into(),
            mem_mib: 0,
            restart_from: None,
            batch: None,
        }
    }

    #[test]
    fn env_adds_shim_first_and_replaces_ckpt_dir() {
        let env = vec![
            (OsBytes::from("LD_PRELOAD"), OsBytes::from("/x/other.so")),
            (OsBytes::from("MOS_CKPT_DIR"), OsBytes::from("/old")),
            (OsBytes::from("PATH"), OsBytes::from("/bin")),
        ];
        let out = guest_env(&env, Path::new("/b/libmosshim.so"), Path::new("/ck"));
        let get = |k: &str| {
            let hits: Vec<_> = out.iter().filter(|(n, _)| n == k).collect();
            assert_eq!(hits.len(), 1, "{k} in {out:?}");
            hits[0].1.clone()
        };
        assert_eq!(get("LD_PRELOAD"), "/b/libmosshim.so:/x/other.so");
        assert_eq!(get("MOS_CKPT_DIR"), "/ck");
        assert_eq!(get("PATH"), "/bin");
    }

    #[test]
    fn restart_plan_runs_mos_restart_on_the_image() {
        let mut s = spec();
        s.restart_from = Some("img/job3.mosimg".into());
        s.batch = Some(BatchIo {
            ckpt_dir: Some("ck".into()),
            ckpt_interval_s: Some(0),
            home_addr: None,
            remote_home: None,
            ..Default::default()
        });
        let p = LaunchPlan::new(&cfg(), JobId(3), &s).unwrap();
        assert_eq!(p.program, PathBuf::from("/opt/mos/bin/mos"));
        assert_eq!(p.args, vec![OsString::from("restart"), "/home/u/img/job3.mosimg".into()]);
        assert_eq!(p.image, PathBuf::from("/home/u/ck/job3.mosimg"));
        assert_eq!(p.ckpt_every, None, "an interval of 0 means off");
        assert!(p.restart && p.env.is_none());
    }

    #[test]
    fn bad_specs_are_refused_by_name() {
        let mut s = spec();
        s.argv.clear();
        let e = LaunchPlan::new(&cfg(), JobId(1), &s).unwrap_err();
        assert_eq!(e.to_string(), "job 1: empty argv");
        let mut s = spec();
        s.cwd = OsBytes::default();
        assert!(LaunchPlan::new(&cfg(), JobId(1), &s).is_err());
        // The shim is missing from this fake bin dir.
        let e = LaunchPlan::new(&cfg(), JobId(2), &spec()).unwrap_err();
        assert!(e.to_string().contains("libmosshim.so is missing"), "{e}");
    }

    #[test]
    fn fresh_plan_resolves_files_against_cwd() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("libmosshim.so"), b"").unwrap();
        let mut c = cfg();
        c.bin_dir = dir.path().to_path_buf();
        let mut s = spec();
        s.batch = Some(BatchIo {
            input: Some("in".into()),
            output: Some("/abs/out".into()),
            error: Some("".into()),
            ckpt_dir: None,
            ckpt_interval_s: Some(5),
            home_addr: None,
            remote_home: None,
        });
        let p = LaunchPlan::new(&c, JobId(9), &s).unwrap();
        assert_eq!(p.program, PathBuf::from("/home/u/app"));
        assert_eq!(p.args, vec![OsString::from("7")]);
        assert_eq!(p.input, Some(PathBuf::from("/home/u/in")));
        assert_eq!(p.output, Some(PathBuf::from("/abs/out")));
        assert_eq!(p.error, None);
        assert_eq!(p.image, PathBuf::from("/var/mos/ckpt/job9.mosimg"));
        assert_eq!(p.ckpt_every, Some(Duration::from_secs(5)));
    }

    #[test]
    fn exit_states() {
        assert_eq!(exit_state(ExitStatus::from_raw(3 << 8)), JobState::Exited { code: 3 });
        assert_eq!(exit_state(ExitStatus::from_raw(9)), JobState::Killed { signal: 9 });
    }

    #[test]
    fn shared_output_and_error_are_one_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::write(&out, b"old contents, longer than the new").unwrap();
        let plan = LaunchPlan {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "echo one; echo two >&2; echo three".into()],
            cwd: dir.path().to_path_buf(),
            env: Some(vec![]),
            restart: false,
            input: None,
            output: Some(out.clone()),
            error: Some(out.clone()),
            ckpt_dir: dir.path().to_path_buf(),
            image: dir.path().join("img"),
            ckpt_every: None,
        };
        let status = plan.command(JobId(1)).unwrap().status().unwrap();
        assert!(status.success());
        assert_eq!(fs::read_to_string(&out).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn guests_run_in_their_own_group_without_inherited_fds() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // An fd of ours without CLOEXEC must not reach the guest.
        let leak = File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let fd = leak.as_raw_fd();
        // SAFETY: fd is open and owned by `leak` for the whole test.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let plan = LaunchPlan {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                format!("cut -d' ' -f5 /proc/$$/stat; echo $$; test -e /proc/self/fd/{fd} && echo leaked || echo closed; exec grep SigBlk /proc/self/status").into(),
            ],
            cwd: dir.path().to_path_buf(),
            env: Some(vec![("PATH".into(), "/usr/bin:/bin".into())]),
            restart: false,
            input: None,
            output: Some(out.clone()),
            error: None,
            ckpt_dir: dir.path().to_path_buf(),
            image: dir.path().join("img"),
            ckpt_every: None,
        };
        let cmd = plan.command(JobId(1)).unwrap();
        // Spawned from a thread that blocks SIGTERM, as the daemon's threads do.
        let status = std::thread::spawn(move || {
            let mut cmd = cmd;
            // SAFETY: `set` is a local sigset_t (all-zero is a valid value, and sigemptyset
            // initialises it); the mask change affects this short-lived thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            cmd.status().unwrap()
        })
        .join()
        .unwrap();
        assert!(status.success());
        let text = fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], lines[1], "pgid == pid: {text}");
        assert_eq!(lines[2], "closed");
        assert_eq!(lines[3], "SigBlk:\t0000000000000000");
        drop(leak);
    }
}
