//! What the job queue stores: job records, their states, per-job events, clusters; and the
//! byte encoding of each (one version byte, then postcard).

use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::id::JobId;
use crate::jobfile::JobSpec;

/// Version byte in front of every stored record. Bump it when a record's shape changes;
/// a reader refuses versions it does not know instead of misreading them.
pub const RECORD_VERSION: u8 = 1;

/// HTCondor's job states (minus the transient ones mos does not need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Queued, waiting for a node.
    Idle,
    Running,
    /// Kept out of scheduling until released (by a user, or after too many failures).
    Held,
    /// Exited; in history.
    Completed,
    /// Removed by a user; in history.
    Removed,
}

impl JobState {
    /// Completed and Removed jobs live in the history table and never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Removed)
    }

    /// One-letter code as in `condor_q` (I, R, H, C, X).
    pub fn code(self) -> char {
        match self {
            JobState::Idle => 'I',
            JobState::Running => 'R',
            JobState::Held => 'H',
            JobState::Completed => 'C',
            JobState::Removed => 'X',
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Everything the placer knows about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub owner: String,
    pub submitted_ms: u64,
    pub spec: JobSpec,
    pub state: JobState,
    /// When `state` was entered.
    pub state_since_ms: u64,
    /// Where it runs (Running), or ran last.
    pub node: Option<String>,
    /// Accumulated wall time in Running, excluding the current run.
    pub run_time_ms: u64,
    /// Start of the current run, while Running.
    pub running_since_ms: Option<u64>,
    /// Complete checkpoints recorded.
    pub checkpoints: u32,
    /// Runs that failed (node lost, crash) and were queued again.
    pub restarts: u32,
    /// The newest complete checkpoint image: where a restart resumes from.
    pub last_checkpoint: Option<PathBuf>,
    pub exit_status: Option<i32>,
    /// Why the job is Held or was Removed.
    pub reason: Option<String>,
}

impl JobRecord {
    /// Run time including the current run as of `now_ms`.
    pub fn run_time_at(&self, now_ms: u64) -> u64 {
        self.run_time_ms
            + self
                .running_since_ms
                .map_or(0, |s| now_ms.saturating_sub(s))
    }
}

/// One submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster: u64,
    pub owner: String,
    pub submitted_ms: u64,
    pub procs: u32,
}

/// One entry of a job's event log (HTCondor's user log, kept in the database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Submitted {
        owner: String,
    },
    Started {
        node: String,
    },
    Migrated {
        from: String,
        to: String,
    },
    /// Back to the queue. `restart` = the run failed and counts against `max_retries`.
    Requeued {
        reason: String,
        restart: bool,
    },
    CheckpointRecorded {
        path: PathBuf,
    },
    /// An incomplete image: the previous good checkpoint stays in force.
    CheckpointIgnored {
        path: PathBuf,
    },
    Held {
        reason: String,
    },
    Released,
    Removed {
        reason: String,
    },
    Completed {
        exit_status: i32,
    },
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Submitted { owner } => write!(f, "submitted by {owner}"),
            EventKind::Started { node } => write!(f, "started on {node}"),
            EventKind::Migrated { from, to } => write!(f, "migrated {from} -> {to}"),
            EventKind::Requeued { reason, restart } => {
                write!(
                    f,
                    "requeued{}: {reason}",
                    if *restart {
                        " (counts as a restart)"
                    } else {
                        ""
                    }
                )
            }
            EventKind::CheckpointRecorded { path } => write!(f, "checkpoint {}", path.display()),
            EventKind::CheckpointIgnored { path } => {
                write!(f, "incomplete checkpoint {} ignored", path.display())
            }
            EventKind::Held { reason } => write!(f, "held: {reason}"),
            EventKind::Released => write!(f, "released"),
            EventKind::Removed { reason } => write!(f, "removed: {reason}"),
            EventKind::Completed { exit_status } => {
                write!(f, "completed, exit status {exit_status}")
            }
        }
    }
}

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("record version {0}, this placer reads version {RECORD_VERSION}; use the placer that wrote it or a newer one")]
    Version(u8),
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// Why a value could not be stored (e.g. a path that is not UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode record: {0}")]
pub struct EncodeError(pub String);

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_extend(value, vec![RECORD_VERSION]).map_err(|e| EncodeError(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&RECORD_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))
        }
        Some((&v, _)) => Err(DecodeError::Version(v)),
    }
}
