//! The placer daemon: node table from shadowd load reports, the persistent queue, and
//! the scheduling loop that places idle jobs, notices dead nodes and requeues their jobs
//! from their last checkpoint. Threads and blocking sockets; every peer authenticated
//! with the cluster key; a peer that fails or sends garbage is dropped and logged.

use crate::db::{CheckpointOutcome, Db, StateChange};
use crate::db::{JobRecord, JobState as DbState};
use crate::id::JobId as PJobId;
use crate::jobfile::{JobSpec, JobTemplate};
use crate::balancer::{CostModel, Located, Who};
use crate::policy::{self, JobReq, NodeInfo, Snapshot};
use proto::auth::{self, ClusterKey};
use proto::frame::{FrameReader, FrameWriter};
use proto::msg::{BatchIo, Hello, JobCommand, JobId, JobRow, JobState, LoadReport, Msg, OsBytes, ProcessRow, Role};
use proto::socket::NoSigPipe;
use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod balancing;
mod queries;

pub struct Config {
    pub listen: String,
    pub state_dir: PathBuf,
    pub key: ClusterKey,
    pub interval_ms: u64,
    /// reports missed before a node is declared down
    pub missed: u64,
    /// Automatic balancing (central mode): the balancer's knobs, or `None` to place only
    /// (`--no-balance`).
    pub balance: Option<policy::BalanceParams>,
}

struct Node {
    report: LoadReport,
    last_ms: u64,
    up: bool,
}

struct State {
    nodes: HashMap<String, Node>,
    /// jobs being vacated, held or removed on purpose: their exit is not a failure
    stopping: HashMap<u64, JobCommand>,
    /// jobs that `mos migrate` sends to a given node when they are placed next
    pinned: HashMap<u64, String>,
    /// idle jobs that fit no node at the last round, with why (logged once per reason)
    unplaceable: HashMap<u64, String>,
    /// jobs whose PlaceJob is on its way: a status the node reports before the placer has
    /// recorded the start (a job that ends at once) waits here, then is applied
    placing: HashMap<u64, Vec<proto::msg::JobStatus>>,
    /// automatic migrations ordered and not finished yet (by [`Who::key`])
    in_flight: std::collections::HashSet<String>,
    /// processes a migration of failed for: never tried again, with the reason
    failed: HashMap<String, String>,
    /// each process's automatic migrations: "from->to (reason)"
    moves: HashMap<String, Vec<String>>,
    /// the event log of automatic migrations (also in `<state>/events.log`)
    events: Vec<String>,
    /// what moving memory costs, as measured
    cost: CostModel,
    /// moves the reports may not show yet
    pending: Vec<crate::balancer::Pending>,
}


pub struct Placer {
    cfg: Config,
    started_ms: u64,
    /// our listen address, where shadowds stream checkpoint images home
    addr: std::sync::OnceLock<String>,
    db: Db,
    st: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// proto's job number for a placer job id: cluster in the high half.
pub fn wire_id(id: PJobId) -> JobId {
    JobId((id.cluster << 32) | id.proc as u64)
}
pub fn placer_id(id: JobId) -> PJobId {
    PJobId::new(id.0 >> 32, (id.0 & 0xffff_ffff) as u32)
}

fn log(msg: &str) {
    crate::logging::job_line(tracing::Level::INFO, msg);
}

/// A line about something that went wrong (level WARN).
fn warn(msg: &str) {
    crate::logging::job_line(tracing::Level::WARN, msg);
}

/// Why a request to a shadowd failed: it could not be reached or the request not sent
/// (worth trying again), it was sent but no answer came (it may have been carried out),
/// or it answered with an error (it will answer the same again).
#[derive(Debug)]
enum AskError {
    Unreachable(String),
    Unanswered(String),
    Refused(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Unreachable(e) | AskError::Unanswered(e) | AskError::Refused(e) => f.write_str(e),
        }
    }
}

/// One request to the shadowd at `addr`, as the placer, one answer.
fn ask_node_with(key: &ClusterKey, addr: &str, msg: &Msg) -> Result<Msg, AskError> {
    let u = AskError::Unreachable;
    let c = TcpStream::connect_timeout(&addr.parse().map_err(|e| AskError::Refused(format!("bad address {addr}: {e}")))?, Duration::from_secs(3))
        .map_err(|e| u(format!("cannot reach {addr}: {e}")))?;
    let mut s = NoSigPipe::new(c);
    auth::client_handshake(&mut s, key, &Hello::new("placer", Role::Placer)).map_err(|e| u(e.to_string()))?;
    let c = s.into_inner();
    let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
    FrameWriter::new(NoSigPipe::new(c.try_clone().map_err(|e| u(e.to_string()))?)).write_msg(msg, &[]).map_err(|e| u(e.to_string()))?;
    match FrameReader::new(c).read_msg::<Msg>() {
        Ok((Msg::Error { msg }, _)) => Err(AskError::Refused(msg)),
        Ok((m, _)) => Ok(m),
        Err(e) => Err(AskError::Unanswered(format!("{addr}: no answer: {e}"))),
    }
}

/// One event-log record on its way: (log path, record, told when it was delivered or
/// dropped).
type Record = (PathBuf, String, Option<std::sync::mpsc::SyncSender<()>>);

/// Where event-log records go to be written at their job's submit host: one relay
/// thread per home shadowd (by address), and the key they connect with. Set when the
/// placer serves.
struct Relays {
    key: ClusterKey,
    homes: Mutex<HashMap<String, std::sync::mpsc::SyncSender<Record>>>,
}
static USER_LOGS: std::sync::OnceLock<Relays> = std::sync::OnceLock::new();

/// Records waiting for one home, at most (a home down for long: newer ones are dropped,
/// with a warning).
const USER_LOG_BACKLOG: usize = 10_000;

/// Bytes of records sent in one request, at most (consecutive records of one log).
const USER_LOG_BATCH: usize = 256 << 10;

/// Deliver event-log records to the home shadowd at `addr`, in order, several of one log
/// per request. Not reachable: tried again every second (other homes have their own
/// relays). Refused (bad path, no permission): dropped, with a warning. Sent but not
/// answered: counted as written (a record is never written twice), with a warning.
fn user_log_relay(key: ClusterKey, addr: String, rx: std::sync::mpsc::Receiver<Record>) {
    let mut next: Option<Record> = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        // the batch: this record and the next ones of the same log that are there
        let (path, mut text, done) = first;
        let mut dones: Vec<std::sync::mpsc::SyncSender<()>> = done.into_iter().collect();
        while text.len() < USER_LOG_BATCH {
            match rx.try_recv() {
                Ok((p, t, d)) if p == path => {
                    text.push_str(&t);
                    dones.extend(d);
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let msg = Msg::AppendUserLog { path: OsBytes::from(path.as_os_str()), text };
        let mut warned = false;
        loop {
            match ask_node_with(&key, &addr, &msg) {
                Ok(_) => {
                    if warned {
                        log(&format!("event logs at {addr}: delivered again"));
                    }
                }
                Err(AskError::Refused(e)) => warn(&format!("event log {}: {e}; its records dropped", path.display())),
                Err(AskError::Unanswered(e)) => warn(&format!("event log {}: {e}; taken as written", path.display())),
                Err(AskError::Unreachable(e)) => {
                    if !warned {
                        warn(&format!("event logs at {addr}: {e}; kept, tried again every second"));
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
            break;
        }
        for d in dones {
            let _ = d.try_send(());
        }
    }
}

/// One event in the job's event log (HTCondor's ULOG format), if it has one. Written
/// at the job's submit host by its shadowd when the job has one (its record taken now,
/// delivered in order by `user_log_relay`), else here.
fn user_log(spec: &JobSpec, id: PJobId, ev: crate::ulog::Event<'_>) {
    user_log_then(spec, id, ev, None);
}

/// [`user_log`], and wait (at most `wait`) until the record is written: a submission is
/// answered once its jobs' submit events are in their log (`mos wait` may read it next).
fn user_log_then(spec: &JobSpec, id: PJobId, ev: crate::ulog::Event<'_>, wait: Option<Duration>) {
    let Some(path) = &spec.log else { return };
    let rec = crate::ulog::record(id, &ev);
    if let (Some(home), Some(relays)) = (spec.environment.get("MOS_HOME_NODE"), USER_LOGS.get()) {
        let (done, written) = match wait {
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let tx = {
            let mut homes = relays.homes.lock().unwrap_or_else(|e| e.into_inner());
            homes
                .entry(home.clone())
                .or_insert_with(|| {
                    let (tx, rx) = std::sync::mpsc::sync_channel(USER_LOG_BACKLOG);
                    let (key, addr) = (relays.key.clone(), home.clone());
                    if let Err(e) = std::thread::Builder::new().name("user-log".into()).spawn(move || user_log_relay(key, addr, rx)) {
                        warn(&format!("no thread for the event logs at {home}: {e}"));
                    }
                    tx
                })
                .clone()
        };
        let sent = match tx.try_send((path.clone(), rec, done)) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                warn(&format!("job {id}: {USER_LOG_BACKLOG} event-log records already wait for {home}; this one for {} is dropped", path.display()));
                false
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                warn(&format!("job {id}: the event-log relay for {home} is gone; record for {} lost", path.display()));
                false
            }
        };
        if let (true, Some(rx), Some(t)) = (sent, written, wait) {
            let _ = rx.recv_timeout(t);
        }
        return;
    }
    if let Err(e) = crate::ulog::append_record(path, &rec) {
        warn(&format!("job {id}: cannot write its event log {}: {e}", path.display()));
    }
}

fn chrono_like(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

impl Placer {
    pub fn new(cfg: Config) -> anyhow::Result<Arc<Placer>> {
        std::fs::create_dir_all(&cfg.state_dir)?;
        let db = Db::open_in(&cfg.state_dir)?;
        Ok(Arc::new(Placer { cfg, started_ms: now_ms(), addr: std::sync::OnceLock::new(), db, st: Mutex::new(State {
                nodes: HashMap::new(),
                stopping: HashMap::new(),
                pinned: HashMap::new(),
                unplaceable: HashMap::new(),
                placing: HashMap::new(),
                in_flight: Default::default(),
                failed: HashMap::new(),
                moves: HashMap::new(),
                events: Vec::new(),
                cost: CostModel::default(),
                pending: Vec::new(),
            }),
        }))
    }

    /// Bind, announce the address (stdout line and `<state>/addr`), then serve forever.
    pub fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let l = TcpListener::bind(&self.cfg.listen)?;
        let addr = l.local_addr()?.to_string();
        let _ = self.addr.set(addr.clone());
        let tmp = self.cfg.state_dir.join(".addr.tmp");
        std::fs::write(&tmp, &addr)?;
        std::fs::rename(&tmp, self.cfg.state_dir.join("addr"))?;
        println!("placer listening on {addr}");
        std::io::stdout().flush()?;
        let me = self.clone();
        std::thread::spawn(move || me.schedule_loop());
        // event-log records to the submit hosts (user_log)
        let _ = USER_LOGS.set(Relays { key: self.cfg.key.clone(), homes: Mutex::new(HashMap::new()) });
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let me = self.clone();
            std::thread::spawn(move || {
                let peer = c.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                if let Err(e) = me.serve(c) {
                    warn(&format!("connection from {peer} dropped: {e}"));
                }
            });
        }
        Ok(())
    }

    fn serve(&self, c: TcpStream) -> anyhow::Result<()> {
        let mut s = NoSigPipe::new(c);
        let peer = auth::server_handshake(&mut s, &self.cfg.key, &Hello::new("placer", Role::Placer))?;
        let c = s.into_inner();
        c.set_read_timeout(None)?;
        let mut r = FrameReader::new(c.try_clone()?);
        let mut w = FrameWriter::new(NoSigPipe::new(c));
        loop {
            let (msg, _bulk): (Msg, Vec<u8>) = match r.read_msg() {
                Ok(m) => m,
                Err(e) if peer.role == Role::Cli => return Err(e.into()),
                Err(e) => {
                    return Err(anyhow::anyhow!("{:?} {}: {e}", peer.role, peer.node));
                }
            };
            let reply = match msg {
                Msg::ImageBegin { job, size, .. } => Some(self.receive_image(&mut r, job, size, &peer.node)),
                msg => self.handle(msg),
            };
            if let Some(reply) = reply {
                w.write_msg(&reply, &[])?;
            }
        }
    }

    fn handle(&self, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::LoadReport(rep) => {
                tracing::debug!(target: "placer", node = %rep.node, run_queue = rep.run_queue, cpus = rep.cpus, guests = rep.guests, free_mem_mib = rep.free_mem_mib, "load report");
                let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                let name = rep.node.clone();
                let was_up = st.nodes.get(&name).is_some_and(|n| n.up);
                st.nodes.insert(name.clone(), Node { report: rep, last_ms: now_ms(), up: true });
                if !was_up {
                    log(&format!("node {name} is up"));
                }
                None
            }
            Msg::JobStatus(js) => {
                self.job_status(js);
                None
            }
            Msg::Checkpointed { job, path, bytes } => {
                let id = placer_id(job);
                match self.db.record_checkpoint(id, path.as_path(), bytes > 0) {
                    Ok(CheckpointOutcome::Recorded { .. }) => {
                        if let Ok(Some(r)) = self.db.get(id) {
                            log(&format!("job {id}: checkpointed to {} ({bytes} bytes)", path.as_path().display()));
                            user_log(&r.spec, id, crate::ulog::Event::Checkpointed);
                        }
                    }
                    Ok(CheckpointOutcome::Ignored) => {}
                    Err(e) => warn(&format!("checkpoint of {id}: {e}")),
                }
                None
            }
            Msg::SubmitFile { owner, label, text, submit_dir, home } => Some(self.submit(&owner, &label, &text, submit_dir.as_path(), home.as_deref())),
            Msg::QueryQueue { history } => Some(self.table(history)),
            Msg::AnalyzeJob { id, better } => Some(self.analyze(&id, better)),
            Msg::QueryNodes => {
                let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                let mut nodes: Vec<LoadReport> = st.nodes.values().filter(|n| n.up).map(|n| n.report.clone()).collect();
                nodes.sort_by(|a, b| a.node.cmp(&b.node));
                Some(Msg::NodeList { nodes })
            }
            Msg::QueryProcesses => Some(self.process_table()),
            Msg::MigrationEvent { line, who, moved } => {
                if !who.is_empty() {
                    self.st.lock().unwrap_or_else(|e| e.into_inner()).moves.entry(who).or_default().push(moved);
                }
                self.event(&line);
                None
            }
            Msg::Migrate { job, to, .. } => Some(match self.migrate(placer_id(job), &to) {
                Ok(()) => Msg::Ack,
                Err(e) => Msg::Error { msg: e },
            }),
            Msg::Command { id, cmd } => Some(match self.command(&id, cmd) {
                Ok(()) => Msg::Ack,
                Err(e) => Msg::Error { msg: e },
            }),
            other => Some(Msg::Error { msg: format!("unexpected message {}", other.name()) }),
        }
    }

    /// A checkpoint image streamed home by the node running the job: kept atomically
    /// (a broken stream leaves the previous image in force) and recorded.
    fn receive_image<R: std::io::Read>(&self, r: &mut FrameReader<R>, job: JobId, size: Option<u64>, node: &str) -> Msg {
        let id = placer_id(job);
        let dest = self.cfg.state_dir.join("ckpt").join(format!("job{id}.mosimg"));
        match proto::stream::recv_image(r, size, &dest) {
            Ok(bytes) => {
                match self.db.record_checkpoint(id, &dest, true) {
                    Ok(_) => {
                        if let Ok(Some(rec)) = self.db.get(id) {
                            log(&format!("job {id}: checkpointed on {node}, image streamed home ({bytes} bytes)"));
                            user_log(&rec.spec, id, crate::ulog::Event::Checkpointed);
                        }
                    }
                    Err(e) => warn(&format!("checkpoint of {id}: {e}")),
                }
                Msg::ImageReceived { job, size: bytes, path: OsBytes::from(dest.as_path()) }
            }
            Err(e) => {
                warn(&format!("image of {id} from {node}: {e}"));
                Msg::Error { msg: format!("image of job {id}: {e}") }
            }
        }
    }

    /// Stream the job's last checkpoint to the node that will restart it; the path there.
    fn send_image(&self, addr: &str, id: PJobId, path: &Path) -> Result<OsBytes, String> {
        let c = TcpStream::connect_timeout(&addr.parse().map_err(|e| format!("bad address {addr}: {e}"))?, Duration::from_secs(3))
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let mut s = NoSigPipe::new(c);
        auth::client_handshake(&mut s, &self.cfg.key, &Hello::new("placer", Role::Placer)).map_err(|e| e.to_string())?;
        let c = s.into_inner();
        let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
        let mut w = FrameWriter::new(NoSigPipe::new(c.try_clone().map_err(|e| e.to_string())?));
        proto::stream::send_image(&mut w, wire_id(id), "placer", path).map_err(|e| e.to_string())?;
        match FrameReader::new(c).read_msg::<Msg>() {
            Ok((Msg::ImageReceived { path, .. }, _)) => Ok(path),
            Ok((Msg::Error { msg }, _)) => Err(msg),
            Ok((m, _)) => Err(format!("unexpected answer {}", m.name())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn submit(&self, owner: &str, label: &str, text: &str, dir: &Path, home: Option<&str>) -> Msg {
        let mut t = match JobTemplate::parse(text, label, dir) {
            Ok(t) => t,
            Err(e) => return Msg::Error { msg: e.to_string() },
        };
        if let Some(h) = home.filter(|_| !t.is_vanilla()) {
            // the submitting node's shadowd: the job's files stay there
            t.set_env("MOS_HOME_NODE", h);
        }
        match self.db.submit(owner, &t) {
            Ok(cluster) => {
                let rows: Vec<_> = self.db.list().unwrap_or_default().into_iter().filter(|r| r.id.cluster == cluster).collect();
                let host = format!("<{}>", self.addr.get().map_or("127.0.0.1:0", String::as_str));
                for (i, r) in rows.iter().enumerate() {
                    // the last waits for all (they go in order)
                    let wait = (i + 1 == rows.len()).then_some(Duration::from_secs(5));
                    user_log_then(&r.spec, r.id, crate::ulog::Event::Submitted { host: &host }, wait);
                }
                Msg::SubmittedCluster { cluster, count: t.queue() }
            }
            Err(e) => Msg::Error { msg: e.to_string() },
        }
    }

    fn node_addr(&self, node: &str) -> Option<String> {
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.nodes.get(node).filter(|n| n.up).map(|n| n.report.addr.clone())
    }

    /// One order to a shadowd; Ok when it answered Ack.
    fn order(&self, addr: &str, msg: &Msg) -> Result<(), String> {
        match self.ask_node(addr, msg)? {
            Msg::Ack => Ok(()),
            m => Err(format!("unexpected answer {}", m.name())),
        }
    }

    /// A batch job's session at its home shadowd (`MOS_HOME_NODE` in its environment,
    /// set by mossubmit): its input/output/error are opened there, and it runs in remote
    /// mode wherever it is placed.
    fn job_session(&self, r: &JobRecord, fresh: bool) -> Option<Result<(Vec<u8>, String), String>> {
        let home = r.spec.environment.get("MOS_HOME_NODE")?;
        let b = |p: &Path| OsBytes::from(p.as_os_str());
        let s = &r.spec;
        let msg = Msg::OpenJobSession {
            job: wire_id(r.id),
            cwd: b(&s.initialdir),
            input: s.input.as_deref().map(b),
            output: s.output.as_deref().map(b),
            error: s.error.as_deref().map(b),
            fresh,
        };
        Some(match self.ask_node(home, &msg) {
            Ok(Msg::SessionOpened { token, rsys_addr }) => Ok((token, rsys_addr)),
            Ok(m) => Err(format!("unexpected answer {}", m.name())),
            Err(e) => Err(e),
        })
    }

    fn ask_node(&self, addr: &str, msg: &Msg) -> Result<Msg, String> {
        ask_node_with(&self.cfg.key, addr, msg).map_err(|e| e.to_string())
    }

    fn command(&self, id: &str, cmd: JobCommand) -> Result<(), String> {
        let ids: Vec<PJobId> = if id.contains('.') {
            vec![id.parse().map_err(|e| format!("{e}"))?]
        } else {
            let c: u64 = id.parse().map_err(|_| format!("bad job id {id:?} (want CLUSTER or CLUSTER.PROC)"))?;
            self.db.list().map_err(|e| e.to_string())?.iter().filter(|r| r.id.cluster == c).map(|r| r.id).collect()
        };
        if ids.is_empty() {
            return Err(format!("no job {id} in the queue"));
        }
        for jid in ids {
            let rec = self.db.get(jid).map_err(|e| e.to_string())?.ok_or_else(|| format!("no job {jid}"))?;
            let running_on = (rec.state == DbState::Running).then(|| rec.node.clone()).flatten();
            match cmd {
                JobCommand::Release => {
                    self.db.release(jid).map_err(|e| e.to_string())?;
                    user_log(&rec.spec, jid, crate::ulog::Event::Released { reason: "released by user (mos release)" });
                }
                JobCommand::Vacate => {
                    let node = running_on.ok_or_else(|| format!("job {jid} is not running"))?;
                    let addr = self.node_addr(&node).ok_or_else(|| format!("node {node} is down"))?;
                    self.st.lock().unwrap_or_else(|e| e.into_inner()).stopping.insert(wire_id(jid).0, cmd);
                    self.order(&addr, &Msg::Vacate { job: wire_id(jid) })?;
                }
                JobCommand::Remove | JobCommand::Hold => {
                    if let Some(node) = running_on {
                        self.st.lock().unwrap_or_else(|e| e.into_inner()).stopping.insert(wire_id(jid).0, cmd);
                        if let Some(addr) = self.node_addr(&node) {
                            let _ = self.order(&addr, &Msg::Kill { job: wire_id(jid), signal: libc::SIGKILL });
                        }
                    }
                    if cmd == JobCommand::Remove {
                        self.db.remove(jid, "removed by user").map_err(|e| e.to_string())?;
                        user_log(&rec.spec, jid, crate::ulog::Event::Aborted { reason: "removed by user (mos rm)" });
                    } else {
                        self.db.hold(jid, "held by user").map_err(|e| e.to_string())?;
                        user_log(&rec.spec, jid, crate::ulog::Event::Held { reason: "held by user" });
                    }
                }
            }
        }
        Ok(())
    }

    /// Checkpoint the job where it runs and restart it on `to` (a batch job's migration).
    fn migrate(&self, id: PJobId, to: &str) -> Result<(), String> {
        let rec = self.db.get(id).map_err(|e| e.to_string())?.ok_or_else(|| format!("no job {id}"))?;
        if rec.state != DbState::Running {
            return Err(format!("job {id} is not running"));
        }
        if rec.node.as_deref() == Some(to) {
            return Err(format!("job {id} already runs on {to}"));
        }
        if self.node_addr(to).is_none() {
            return Err(format!("no node {to} is up"));
        }
        self.st.lock().unwrap_or_else(|e| e.into_inner()).pinned.insert(wire_id(id).0, to.to_string());
        let r = self.command(&id.to_string(), JobCommand::Vacate);
        if r.is_err() {
            self.st.lock().unwrap_or_else(|e| e.into_inner()).pinned.remove(&wire_id(id).0);
        }
        r
    }

    fn job_status(&self, js: proto::msg::JobStatus) {
        {
            let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(early) = st.placing.get_mut(&js.job.0) {
                // the start is not recorded yet: applied right after it is
                early.push(js);
                return;
            }
        }
        let id = placer_id(js.job);
        let Ok(Some(rec)) = self.db.get(id) else { return };
        let intent = self.st.lock().unwrap_or_else(|e| e.into_inner()).stopping.remove(&js.job.0);
        let result = match js.state {
            JobState::Exited { code } if rec.state == DbState::Running => {
                log(&format!("job {id}: terminated on {} with status {code}", js.node));
                user_log(&rec.spec, id, crate::ulog::Event::Exited { code });
                self.db.set_state(id, StateChange::Complete { exit_status: code }).map(|_| ())
            }
            JobState::Killed { signal } if rec.state == DbState::Running && intent.is_none() => {
                log(&format!("job {id}: killed by signal {signal} on {}", js.node));
                user_log(&rec.spec, id, crate::ulog::Event::Signaled { signal });
                self.db.set_state(id, StateChange::Complete { exit_status: 128 + signal }).map(|_| ())
            }
            JobState::Vacated if rec.state == DbState::Running => {
                log(&format!("job {id}: evicted (vacated) from {}", js.node));
                user_log(&rec.spec, id, crate::ulog::Event::Evicted { checkpointed: true });
                self.db.set_state(id, StateChange::Requeue { reason: "vacated".into(), restart: false }).map(|_| ())
            }
            JobState::Failed { reason: ref why } if rec.state == DbState::Running => {
                log(&format!("job {id}: could not run on {}: {why}", js.node));
                user_log(&rec.spec, id, crate::ulog::Event::Evicted { checkpointed: rec.last_checkpoint.is_some() });
                self.db.set_state(id, StateChange::Requeue { reason: why.clone(), restart: true }).map(|_| ())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn(&format!("job {id}: {e}"));
        }
    }

    fn schedule_loop(self: Arc<Self>) {
        loop {
            std::thread::sleep(Duration::from_millis(self.cfg.interval_ms));
            if let Err(e) = self.schedule_once() {
                warn(&format!("scheduling: {e}"));
            }
            if let Some(params) = self.cfg.balance.clone() {
                self.clone().balance_once(&params);
            }
        }
    }


    fn schedule_once(&self) -> anyhow::Result<()> {
        let now = now_ms();
        let timeout = self.cfg.interval_ms * self.cfg.missed;
        let mut snapshot = Snapshot { nodes: Vec::new(), now_ms: now };
        let mut dead = Vec::new();
        {
            let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
            for (name, n) in st.nodes.iter_mut() {
                let interval = (n.report.interval_ms as u64).max(1);
                if n.up && now.saturating_sub(n.last_ms) > timeout.max(interval * self.cfg.missed) {
                    n.up = false;
                    dead.push(name.clone());
                }
                snapshot.nodes.push(NodeInfo {
                    name: name.clone(),
                    cpus: n.report.cpus.max(1),
                    speed: n.report.speed.max(1) as f64 / 1000.0,
                    run_queue: n.report.run_queue,
                    guests: n.report.guests,
                    free_mem_mib: n.report.free_mem_mib,
                    last_report_ms: n.last_ms,
                    up: n.up,
                });
            }
        }
        let jobs = self.db.list()?;
        // After a placer restart: a job the queue says is running on a node that has not
        // reported since is reconciled like one on a dead node once the node had time to.
        if now.saturating_sub(self.started_ms) > 2 * timeout {
            let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
            for r in jobs.iter().filter(|r| r.state == DbState::Running) {
                if let Some(n) = r.node.as_ref().filter(|n| !st.nodes.contains_key(*n)) {
                    if !dead.contains(n) {
                        dead.push(n.clone());
                    }
                }
            }
        }
        for name in &dead {
            log(&format!("node {name} missed its reports: down"));
            for r in jobs.iter().filter(|r| r.state == DbState::Running && r.node.as_deref() == Some(name)) {
                log(&format!("job {}: evicted: node {name} lost; will restart from {}", r.id, r.last_checkpoint.as_ref().map_or("the start".to_string(), |p| p.display().to_string())));
                user_log(&r.spec, r.id, crate::ulog::Event::Evicted { checkpointed: r.last_checkpoint.is_some() });
                self.db.set_state(r.id, StateChange::Requeue { reason: format!("node {name} lost"), restart: true })?;
            }
        }
        snapshot.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let jobs = self.db.list()?;
        for r in jobs.iter().filter(|r| r.state == DbState::Idle) {
            let req = JobReq::from(&r.spec);
            let pin = self.st.lock().unwrap_or_else(|e| e.into_inner()).pinned.remove(&wire_id(r.id).0);
            let pinned = pin.and_then(|n| snapshot.nodes.iter().position(|x| x.name == n && x.up));
            let Some(i) = pinned.or_else(|| policy::place_job(&snapshot, &req)) else {
                // It fits no node now: the jobs behind it may (no head-of-line stall).
                let why = policy::analyze::analyze(&snapshot, &req, 0, 1, false).pop().unwrap_or_default();
                let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                if st.unplaceable.get(&wire_id(r.id).0) != Some(&why) {
                    log(&format!("job {} stays idle: {}", r.id, why.trim_start_matches("why idle: ")));
                    st.unplaceable.insert(wire_id(r.id).0, why);
                }
                continue;
            };
            self.st.lock().unwrap_or_else(|e| e.into_inner()).unplaceable.remove(&wire_id(r.id).0);
            let node = snapshot.nodes[i].name.clone();
            let addr = {
                let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                st.nodes.get(&node).map(|n| n.report.addr.clone()).unwrap_or_default()
            };
            let mut spec = self.wire_spec(r);
            if let Some(img) = &r.last_checkpoint {
                match self.send_image(&addr, r.id, img) {
                    Ok(there) => spec.restart_from = Some(there),
                    Err(e) => {
                        warn(&format!("sending the image of {} to {node}: {e}", r.id));
                        snapshot.nodes[i].up = false;
                        continue;
                    }
                }
            }
            match self.job_session(r, r.last_checkpoint.is_none()) {
                Some(Ok(session)) => {
                    // its files are at home: the node opens none of them
                    if let Some(b) = spec.batch.as_mut() {
                        b.input = None;
                        b.output = None;
                        b.error = None;
                        b.remote_home = Some(session);
                    }
                }
                Some(Err(e)) => {
                    warn(&format!("job {}: its home shadowd cannot open its session: {e}; retrying later", r.id));
                    continue;
                }
                None => {}
            }
            self.st.lock().unwrap_or_else(|e| e.into_inner()).placing.insert(wire_id(r.id).0, Vec::new());
            let ordered = self.order(&addr, &Msg::PlaceJob { job: wire_id(r.id), spec });
            let early = |p: &Placer| p.st.lock().unwrap_or_else(|e| e.into_inner()).placing.remove(&wire_id(r.id).0).unwrap_or_default();
            match ordered {
                Ok(()) => {
                    let started = self.db.set_state(r.id, StateChange::Start { node: node.clone() });
                    if let Err(e) = started {
                        early(self);
                        return Err(e.into());
                    }
                    let how = match &r.last_checkpoint {
                        Some(p) => format!("restarted on {node} from {}", p.display()),
                        None => format!("placed on {node}"),
                    };
                    log(&format!("job {}: {how}", r.id));
                    let host = format!("<{addr}>");
                    user_log(&r.spec, r.id, crate::ulog::Event::Executing { host: &host });
                    snapshot.nodes[i].run_queue += 1;
                    snapshot.nodes[i].guests += 1;
                    // what the node reported while the start was being recorded
                    for js in early(self) {
                        self.job_status(js);
                    }
                }
                Err(e) => {
                    early(self);
                    warn(&format!("placing {} on {node}: {e}", r.id));
                    snapshot.nodes[i].up = false;
                }
            }
        }
        Ok(())
    }

    fn wire_spec(&self, r: &JobRecord) -> proto::msg::JobSpec {
        let s = &r.spec;
        let b = |p: &Path| OsBytes::from(p.as_os_str());
        let mut argv = vec![b(&s.executable)];
        argv.extend(s.arguments.iter().map(|a| OsBytes::from(std::ffi::OsStr::new(a))));

        proto::msg::JobSpec {
            argv,
            env: s.environment.iter().map(|(k, v)| (OsBytes::from(std::ffi::OsStr::new(k)), OsBytes::from(std::ffi::OsStr::new(v)))).collect(),
            cwd: b(&s.initialdir),
            home: "home".into(),
            mem_mib: s.request_memory_mib.unwrap_or(0),
            restart_from: r.last_checkpoint.as_deref().map(b),
            batch: Some(BatchIo {
                input: s.input.as_deref().map(b),
                output: s.output.as_deref().map(b),
                error: s.error.as_deref().map(b),
                // images stay on the node and are streamed home: no shared disk needed
                ckpt_dir: None,
                ckpt_interval_s: s.checkpoint_interval_s,
                home_addr: self.addr.get().cloned(),
                remote_home: None,
            }),
        }
    }
}
