//! The persistent job queue: clusters, jobs, history and per-job event logs in ONE redb
//! file (`<state-dir>/placer.redb`), so the placer's state survives its own restart
//! (DESIGN.md §5).
//!
//! Crash safety: every mutation is exactly one write transaction, committed with redb's
//! default immediate durability (fsync) before the call returns; a mutation that fails
//! part-way aborts its transaction and changes nothing. A reader sees whole transactions
//! only. The file is opened in redb's `SingleWriter` mode: one placer writes, and
//! `placer --dump` (or `mos q`) may open it read-only at the same time.
//!
//! Tables (keys are `(cluster, proc)` so a cluster's jobs are contiguous):
//! - `meta`: `schema`, `next_cluster`, `next_event`
//! - `clusters`: cluster -> [`ClusterRecord`]
//! - `jobs`: active jobs (Idle, Running, Held) -> [`JobRecord`]
//! - `history`: Completed and Removed jobs -> [`JobRecord`]
//! - `events`: `(cluster, proc, seq)` -> [`JobEvent`]
//!
//! Values are a version byte ([`RECORD_VERSION`]) plus postcard; unknown versions are refused.

mod records;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, WriteTransaction,
};

pub use records::{
    ClusterRecord, DecodeError, EncodeError, EventKind, JobEvent, JobRecord, JobState,
    RECORD_VERSION,
};

use crate::id::JobId;
use crate::jobfile::{JobSpec, JobTemplate};

/// File name of the database inside the state directory.
pub const DB_FILE_NAME: &str = "placer.redb";
/// Layout of the tables; a file with another schema is refused.
pub const SCHEMA_VERSION: u64 = 1;

type Key = (u64, u32);
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CLUSTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("clusters");
const JOBS: TableDefinition<Key, &[u8]> = TableDefinition::new("jobs");
const HISTORY: TableDefinition<Key, &[u8]> = TableDefinition::new("history");
const EVENTS: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("events");

const META_SCHEMA: &str = "schema";
const META_NEXT_CLUSTER: &str = "next_cluster";
const META_NEXT_EVENT: &str = "next_event";

/// A job-queue operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("placer state {} is open for writing by another process (one placer per state dir); stop it, or read with `placer --dump`", path.display())]
    Locked { path: PathBuf },
    #[error("placer state {} does not exist; check --state-dir, or start the placer once to create it", path.display())]
    Missing { path: PathBuf },
    #[error("placer state {}: {source}", path.display())]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("placer state {} has schema {found}; this placer reads schema {SCHEMA_VERSION}: run the placer version that wrote it", path.display())]
    Schema { path: PathBuf, found: u64 },
    #[error("placer state {}: stored {what} is unreadable: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        what: String,
        #[source]
        source: DecodeError,
    },
    #[error("cannot store {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: EncodeError,
    },
    #[error("placer state {} is open read-only; changes go through the running placer", path.display())]
    ReadOnly { path: PathBuf },
    #[error("no job {0} in the queue or its history")]
    NoSuchJob(JobId),
    #[error("job {id} is {from}: cannot {action} it (only when {allowed})")]
    InvalidTransition {
        id: JobId,
        from: JobState,
        action: &'static str,
        allowed: String,
    },
    #[error("submission queues no jobs")]
    EmptySubmission,
    #[error("submission for cluster {cluster} contains job {bad}, which is of another cluster or given twice")]
    BadSubmission { cluster: u64, bad: JobId },
}

/// How a job leaves or re-enters the Running state (hold/release/remove have their own calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Idle -> Running on `node`.
    Start { node: String },
    /// Running -> Running on another node (a completed migration).
    Move { node: String },
    /// Running -> Idle. `restart`: the run failed (node lost, crash) and counts against
    /// `max_retries`; past it the job is Held instead. `false`: vacated on purpose.
    Requeue { reason: String, restart: bool },
    /// Running -> Completed (the record moves to history).
    Complete { exit_status: i32 },
}

/// What [`Db::record_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// The image is now the job's restart point. `previous` was replaced: the caller may
    /// delete that file now, since the new path is durably recorded.
    Recorded { previous: Option<PathBuf> },
    /// The image was incomplete; the previous checkpoint stays the restart point. The
    /// caller should delete the incomplete file.
    Ignored,
}

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Handle {
    Write(Database),
    Read(ReadOnlyDatabase),
}

/// The job queue. Cheap to share across threads (`&Db` is enough; redb serializes writers).
pub struct Db {
    handle: Handle,
    path: PathBuf,
    clock: Clock,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("read_only", &matches!(self.handle, Handle::Read(_)))
            .finish()
    }
}

/// The tables of one write transaction, opened together (redb opens a table once per txn).
struct Tables<'txn> {
    meta: redb::Table<'txn, &'static str, u64>,
    clusters: redb::Table<'txn, u64, &'static [u8]>,
    jobs: redb::Table<'txn, Key, &'static [u8]>,
    history: redb::Table<'txn, Key, &'static [u8]>,
    events: redb::Table<'txn, (u64, u32, u64), &'static [u8]>,
}

impl Db {
    /// Opens (creating if needed) the queue file at `path` for writing.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = redb::Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let me = Db {
            handle: Handle::Write(db),
            path: path.to_owned(),
            clock: Arc::new(system_clock_ms),
        };
        me.init()?;
        Ok(me)
    }

    /// Opens `<state_dir>/placer.redb` for writing, creating the directory if needed.
    pub fn open_in(state_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(state_dir).map_err(|e| DbError::Storage {
            path: state_dir.to_owned(),
            source: redb::Error::Io(e),
        })?;
        Db::open(&state_dir.join(DB_FILE_NAME))
    }

    /// Opens an existing queue file read-only; works while a placer has it open for writing.
    pub fn open_read_only(path: &Path) -> Result<Db, DbError> {
        if !path.exists() {
            return Err(DbError::Missing {
                path: path.to_owned(),
            });
        }
        let db = redb::Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .open_read_only(path)
            .map_err(|e| open_error(path, e))?;
        let me = Db {
            handle: Handle::Read(db),
            path: path.to_owned(),
            clock: Arc::new(system_clock_ms),
        };
        me.check_schema()?;
        Ok(me)
    }

    /// Replaces the wall clock (ms since the epoch) used to stamp records; for tests and
    /// simulations.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn storage(&self, e: impl Into<redb::Error>) -> DbError {
        DbError::Storage {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    fn corrupt(&self, what: impl Into<String>, source: DecodeError) -> DbError {
        DbError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
            source,
        }
    }

    fn init(&self) -> Result<(), DbError> {
        self.write(|t| {
            let found = t
                .meta
                .get(META_SCHEMA)
                .map_err(|e| self.storage(e))?
                .map(|g| g.value());
            match found {
                None => {
                    t.meta
                        .insert(META_SCHEMA, SCHEMA_VERSION)
                        .map_err(|e| self.storage(e))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(DbError::Schema {
                        path: self.path.clone(),
                        found,
                    })
                }
            }
            Ok(())
        })
    }

    fn check_schema(&self) -> Result<(), DbError> {
        let txn = self.read_txn()?;
        let found = match txn.open_table(META) {
            Ok(t) => t
                .get(META_SCHEMA)
                .map_err(|e| self.storage(e))?
                .map(|g| g.value()),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.storage(e)),
        };
        match found {
            None | Some(SCHEMA_VERSION) => Ok(()),
            Some(found) => Err(DbError::Schema {
                path: self.path.clone(),
                found,
            }),
        }
    }

    fn read_txn(&self) -> Result<ReadTransaction, DbError> {
        match &self.handle {
            Handle::Write(d) => d.begin_read(),
            Handle::Read(d) => d.begin_read(),
        }
        .map_err(|e| self.storage(e))
    }

    /// Runs `f` in one write transaction; commits if it returns Ok, aborts otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let Handle::Write(db) = &self.handle else {
            return Err(DbError::ReadOnly {
                path: self.path.clone(),
            });
        };
        let txn = db.begin_write().map_err(|e| self.storage(e))?;
        let result = self.open_tables(&txn).and_then(|mut t| f(&mut t));
        match result {
            Ok(v) => {
                txn.commit().map_err(|e| self.storage(e))?;
                Ok(v)
            }
            Err(e) => {
                // The tables were dropped with `result`'s closure; nothing was written.
                txn.abort().map_err(|ae| self.storage(ae))?;
                Err(e)
            }
        }
    }

    fn open_tables<'txn>(&self, txn: &'txn WriteTransaction) -> Result<Tables<'txn>, DbError> {
        Ok(Tables {
            meta: txn.open_table(META).map_err(|e| self.storage(e))?,
            clusters: txn.open_table(CLUSTERS).map_err(|e| self.storage(e))?,
            jobs: txn.open_table(JOBS).map_err(|e| self.storage(e))?,
            history: txn.open_table(HISTORY).map_err(|e| self.storage(e))?,
            events: txn.open_table(EVENTS).map_err(|e| self.storage(e))?,
        })
    }

    fn encode<T: serde::Serialize>(
        what: impl FnOnce() -> String,
        value: &T,
    ) -> Result<Vec<u8>, DbError> {
        records::encode(value).map_err(|source| DbError::Encode {
            what: what(),
            source,
        })
    }

    fn append_events(
        &self,
        t: &mut Tables<'_>,
        id: JobId,
        now: u64,
        kinds: Vec<EventKind>,
    ) -> Result<(), DbError> {
        if kinds.is_empty() {
            return Ok(());
        }
        let mut seq = t
            .meta
            .get(META_NEXT_EVENT)
            .map_err(|e| self.storage(e))?
            .map_or(0, |g| g.value());
        for kind in kinds {
            let bytes = Self::encode(
                || format!("an event of job {id}"),
                &JobEvent {
                    seq,
                    time_ms: now,
                    kind,
                },
            )?;
            t.events
                .insert((id.cluster, id.proc, seq), bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            seq += 1;
        }
        t.meta
            .insert(META_NEXT_EVENT, seq)
            .map_err(|e| self.storage(e))?;
        Ok(())
    }

    // ---- submission ----

    /// Queues every process of a job file as a new cluster; returns the cluster id.
    pub fn submit(&self, owner: &str, template: &JobTemplate) -> Result<u64, DbError> {
        self.submit_with(owner, |cluster| template.expand(cluster))
    }

    /// Queues the specs `make(cluster)` returns, in one transaction, under a fresh cluster
    /// id (ids start at 1). Every spec must carry that cluster id and a distinct process
    /// number; otherwise nothing is queued and the id is not used up.
    pub fn submit_with(
        &self,
        owner: &str,
        make: impl FnOnce(u64) -> Vec<JobSpec>,
    ) -> Result<u64, DbError> {
        let now = self.now();
        self.write(|t| {
            let cluster = t
                .meta
                .get(META_NEXT_CLUSTER)
                .map_err(|e| self.storage(e))?
                .map_or(1, |g| g.value());
            let specs = make(cluster);
            if specs.is_empty() {
                return Err(DbError::EmptySubmission);
            }
            let mut procs = std::collections::BTreeSet::new();
            for s in &specs {
                if s.cluster != cluster || !procs.insert(s.process) {
                    return Err(DbError::BadSubmission {
                        cluster,
                        bad: JobId::new(s.cluster, s.process),
                    });
                }
            }
            t.meta
                .insert(META_NEXT_CLUSTER, cluster + 1)
                .map_err(|e| self.storage(e))?;
            let c = ClusterRecord {
                cluster,
                owner: owner.to_owned(),
                submitted_ms: now,
                procs: specs.len() as u32,
            };
            let bytes = Self::encode(|| format!("cluster {cluster}"), &c)?;
            t.clusters
                .insert(cluster, bytes.as_slice())
                .map_err(|e| self.storage(e))?;
            for spec in specs {
                let id = JobId::new(cluster, spec.process);
                let rec = JobRecord {
                    id,
                    owner: owner.to_owned(),
                    submitted_ms: now,
                    spec,
                    state: JobState::Idle,
                    state_since_ms: now,
                    node: None,
                    run_time_ms: 0,
                    running_since_ms: None,
                    checkpoints: 0,
                    restarts: 0,
                    last_checkpoint: None,
                    exit_status: None,
                    reason: None,
                };
                let bytes = Self::encode(|| format!("job {id}"), &rec)?;
                t.jobs
                    .insert((cluster, id.proc), bytes.as_slice())
                    .map_err(|e| self.storage(e))?;
                self.append_events(
                    t,
                    id,
                    now,
                    vec![EventKind::Submitted {
                        owner: owner.to_owned(),
                    }],
                )?;
            }
            Ok(cluster)
        })
    }

    // ---- reads ----

    /// Active jobs (Idle, Running, Held) in id order.
    pub fn list(&self) -> Result<Vec<JobRecord>, DbError> {
        self.scan(JOBS)
    }

    /// Completed and Removed jobs in id order.
    pub fn history(&self) -> Result<Vec<JobRecord>, DbError> {
        self.scan(HISTORY)
    }

    fn scan(&self, table: TableDefinition<Key, &[u8]>) -> Result<Vec<JobRecord>, DbError> {
        let txn = self.read_txn()?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.storage(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.storage(e))? {
            let (k, v) = row.map_err(|e| self.storage(e))?;
            let (c, p) = k.value();
            out.push(
                records::decode(v.value()).map_err(|e| self.corrupt(format!("job {c}.{p}"), e))?,
            );
        }
        Ok(out)
    }

    /// The job, active or in history.
    pub fn get(&self, id: JobId) -> Result<Option<JobRecord>, DbError> {
        let txn = self.read_txn()?;
        for table in [JOBS, HISTORY] {
            let t = match txn.open_table(table) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(self.storage(e)),
            };
            if let Some(v) = t.get((id.cluster, id.proc)).map_err(|e| self.storage(e))? {
                return records::decode(v.value())
                    .map(Some)
                    .map_err(|e| self.corrupt(format!("job {id}"), e));
            }
        }
        Ok(None)
    }

    pub fn cluster(&self, cluster: u64) -> Result<Option<ClusterRecord>, DbError> {
        let txn = self.read_txn()?;
        let t = match txn.open_table(CLUSTERS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.storage(e)),
        };
        let v = t.get(cluster).map_err(|e| self.storage(e))?;
        v.map(|v| {
            records::decode(v.value()).map_err(|e| self.corrupt(format!("cluster {cluster}"), e))
        })
        .transpose()
    }

    /// The id the next submission will get.
    pub fn next_cluster_id(&self) -> Result<u64, DbError> {
        let txn = self.read_txn()?;
        match txn.open_table(META) {
            Ok(t) => Ok(t
                .get(META_NEXT_CLUSTER)
                .map_err(|e| self.storage(e))?
                .map_or(1, |g| g.value())),
            Err(TableError::TableDoesNotExist(_)) => Ok(1),
            Err(e) => Err(self.storage(e)),
        }
    }

    /// The job's event log, oldest first.
    pub fn events(&self, id: JobId) -> Result<Vec<JobEvent>, DbError> {
        let txn = self.read_txn()?;
        let t = match txn.open_table(EVENTS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.storage(e)),
        };
        let range = (id.cluster, id.proc, 0)..=(id.cluster, id.proc, u64::MAX);
        let mut out = Vec::new();
        for row in t.range(range).map_err(|e| self.storage(e))? {
            let (_, v) = row.map_err(|e| self.storage(e))?;
            out.push(
                records::decode(v.value())
                    .map_err(|e| self.corrupt(format!("an event of job {id}"), e))?,
            );
        }
        Ok(out)
    }

    // ---- mutations ----

    /// Loads job `id`, checks its state is in `allowed`, applies `f`, stores the result
    /// (moving it to history if it became terminal) and appends the events `f` returns.
    fn mutate<T>(
        &self,
        id: JobId,
        action: &'static str,
        allowed: &[JobState],
        f: impl FnOnce(&mut JobRecord, u64) -> (T, Vec<EventKind>),
    ) -> Result<T, DbError> {
        let now = self.now();
        self.write(|t| {
            let key = (id.cluster, id.proc);
            let active = t
                .jobs
                .get(key)
                .map_err(|e| self.storage(e))?
                .map(|g| g.value().to_vec());
            let bytes = match active {
                Some(b) => b,
                None => match t.history.get(key).map_err(|e| self.storage(e))? {
                    Some(g) => g.value().to_vec(),
                    None => return Err(DbError::NoSuchJob(id)),
                },
            };
            let mut rec: JobRecord =
                records::decode(&bytes).map_err(|e| self.corrupt(format!("job {id}"), e))?;
            if !allowed.contains(&rec.state) {
                return Err(DbError::InvalidTransition {
                    id,
                    from: rec.state,
                    action,
                    allowed: allowed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" or "),
                });
            }
            let (out, events) = f(&mut rec, now);
            let bytes = Self::encode(|| format!("job {id}"), &rec)?;
            if rec.state.is_terminal() {
                t.jobs.remove(key).map_err(|e| self.storage(e))?;
                t.history
                    .insert(key, bytes.as_slice())
                    .map_err(|e| self.storage(e))?;
            } else {
                t.jobs
                    .insert(key, bytes.as_slice())
                    .map_err(|e| self.storage(e))?;
            }
            self.append_events(t, id, now, events)?;
            Ok(out)
        })
    }

    /// Moves a job between Idle, Running and Completed (see [`StateChange`]).
    pub fn set_state(&self, id: JobId, change: StateChange) -> Result<JobState, DbError> {
        use JobState::*;
        match change {
            StateChange::Start { node } => self.mutate(id, "start", &[Idle], |r, now| {
                enter(r, Running, now);
                r.running_since_ms = Some(now);
                r.node = Some(node.clone());
                (Running, vec![EventKind::Started { node }])
            }),
            StateChange::Move { node } => self.mutate(id, "move", &[Running], |r, _| {
                let from = r.node.replace(node.clone()).unwrap_or_default();
                (Running, vec![EventKind::Migrated { from, to: node }])
            }),
            StateChange::Requeue { reason, restart } => {
                self.mutate(id, "requeue", &[Running], |r, now| {
                    stop_clock(r, now);
                    let mut events = vec![EventKind::Requeued { reason, restart }];
                    if restart {
                        r.restarts += 1;
                    }
                    if restart && r.restarts > r.spec.max_retries {
                        let why = format!(
                        "failed {} times (max_retries = {}); fix the cause, then release the job",
                        r.restarts, r.spec.max_retries
                    );
                        enter(r, Held, now);
                        r.reason = Some(why.clone());
                        events.push(EventKind::Held { reason: why });
                        (Held, events)
                    } else {
                        enter(r, Idle, now);
                        (Idle, events)
                    }
                })
            }
            StateChange::Complete { exit_status } => {
                self.mutate(id, "complete", &[Running], |r, now| {
                    stop_clock(r, now);
                    enter(r, Completed, now);
                    r.exit_status = Some(exit_status);
                    (Completed, vec![EventKind::Completed { exit_status }])
                })
            }
        }
    }

    /// Idle or Running -> Held. A Running job's clock stops here; stopping the process
    /// (after checkpointing it) is the caller's business.
    pub fn hold(&self, id: JobId, reason: &str) -> Result<(), DbError> {
        self.mutate(
            id,
            "hold",
            &[JobState::Idle, JobState::Running],
            |r, now| {
                stop_clock(r, now);
                enter(r, JobState::Held, now);
                r.reason = Some(reason.to_owned());
                (
                    (),
                    vec![EventKind::Held {
                        reason: reason.to_owned(),
                    }],
                )
            },
        )
    }

    /// Held -> Idle.
    pub fn release(&self, id: JobId) -> Result<(), DbError> {
        self.mutate(id, "release", &[JobState::Held], |r, now| {
            enter(r, JobState::Idle, now);
            r.reason = None;
            ((), vec![EventKind::Released])
        })
    }

    /// Idle, Running or Held -> Removed (into history).
    pub fn remove(&self, id: JobId, reason: &str) -> Result<(), DbError> {
        use JobState::*;
        self.mutate(id, "remove", &[Idle, Running, Held], |r, now| {
            stop_clock(r, now);
            enter(r, Removed, now);
            r.reason = Some(reason.to_owned());
            (
                (),
                vec![EventKind::Removed {
                    reason: reason.to_owned(),
                }],
            )
        })
    }

    /// Records a checkpoint image of an active job. Only a `complete` image becomes the
    /// restart point (atomically, with the count and the event); an incomplete one is
    /// logged and ignored, leaving the previous good checkpoint in force.
    pub fn record_checkpoint(
        &self,
        id: JobId,
        path: &Path,
        complete: bool,
    ) -> Result<CheckpointOutcome, DbError> {
        use JobState::*;
        self.mutate(id, "checkpoint", &[Idle, Running, Held], |r, _| {
            if complete {
                let previous = r.last_checkpoint.replace(path.to_owned());
                r.checkpoints += 1;
                (
                    CheckpointOutcome::Recorded { previous },
                    vec![EventKind::CheckpointRecorded {
                        path: path.to_owned(),
                    }],
                )
            } else {
                (
                    CheckpointOutcome::Ignored,
                    vec![EventKind::CheckpointIgnored {
                        path: path.to_owned(),
                    }],
                )
            }
        })
    }
}

fn enter(r: &mut JobRecord, state: JobState, now: u64) {
    r.state = state;
    r.state_since_ms = now;
}

fn stop_clock(r: &mut JobRecord, now: u64) {
    if let Some(since) = r.running_since_ms.take() {
        r.run_time_ms += now.saturating_sub(since);
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> DbError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => DbError::Locked {
            path: path.to_owned(),
        },
        e => DbError::Storage {
            path: path.to_owned(),
            source: e.into(),
        },
    }
}

#[cfg(test)]
mod tests;
