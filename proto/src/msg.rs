//! Messages: every value that travels between mos parts (DESIGN.md §1, §2).
//!
//! One enum, [`Msg`], is the header of every frame. A message that carries raw bytes (an
//! image chunk) states their length in one of its fields; [`WireHeader::bulk_len`] reads it,
//! and the bytes follow the header raw. Forwarded system calls do not travel as `Msg`: they
//! have their own fixed-size frames, in [`crate::rsys`].
//!
//! Compatibility rules (postcard encodes an enum variant by its index and a struct by its
//! field order, with no names on the wire):
//! - [`Msg::Hello`] stays variant 0 and [`Hello::version`] its first field in every version,
//!   so peers of any two versions can read each other's version and refuse cleanly.
//! - Minor version: new variants appended at the end of an enum. A peer never sends a variant
//!   newer than the minor version the other side announced.
//! - Major version: anything else (a field added, removed, reordered, retyped). Peers with
//!   different majors refuse each other at the handshake.
//!
//! This module holds data only: no I/O, no policy.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::frame::WireHeader;

/// The protocol version this build speaks.
pub const PROTO_VERSION: Version = Version { major: 2, minor: 0 };

/// Length of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a handshake MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// A protocol version. Peers must agree on `major`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Additive changes.
    pub minor: u16,
}

impl Version {
    /// True if a peer speaking `other` can talk to us.
    pub fn compatible_with(&self, other: &Version) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A node's name, unique in the cluster (a shadowd's `--name`).
pub type NodeName = String;

/// A job, as numbered by the placer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Unix byte string: a path, an argument, an environment entry. Unix paths are bytes, not
/// UTF-8, so they travel as bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OsBytes(pub Vec<u8>);

impl OsBytes {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As an OS string.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// As a path.
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_os_str())
    }
}

impl fmt::Debug for OsBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_os_str(), f)
    }
}

impl From<&OsStr> for OsBytes {
    fn from(s: &OsStr) -> Self {
        OsBytes(s.as_bytes().to_vec())
    }
}

impl From<OsString> for OsBytes {
    fn from(s: OsString) -> Self {
        OsBytes(s.into_vec())
    }
}

impl From<&Path> for OsBytes {
    fn from(p: &Path) -> Self {
        p.as_os_str().into()
    }
}

impl From<PathBuf> for OsBytes {
    fn from(p: PathBuf) -> Self {
        p.into_os_string().into()
    }
}

impl From<&str> for OsBytes {
    fn from(s: &str) -> Self {
        OsBytes(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for OsBytes {
    fn from(s: &[u8]) -> Self {
        OsBytes(s.to_vec())
    }
}

impl From<OsBytes> for PathBuf {
    fn from(b: OsBytes) -> Self {
        PathBuf::from(OsString::from_vec(b.0))
    }
}

/// What a connecting program is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// `mos` / `mossubmit`.
    Cli,
    /// The placer.
    Placer,
    /// A node daemon (shadow and starter).
    Shadowd,
    /// `libmosshim` inside an application (forwarding client, registration).
    Shim,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Cli => "cli",
            Role::Placer => "placer",
            Role::Shadowd => "shadowd",
            Role::Shim => "shim",
        })
    }
}

/// The first message on every connection, both ways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field: see the module's compatibility rules.
    pub version: Version,
    /// The sender's node.
    pub node: NodeName,
    /// The sender's role.
    pub role: Role,
}

impl Hello {
    /// A hello for this build's [`PROTO_VERSION`].
    pub fn new(node: impl Into<NodeName>, role: Role) -> Self {
        Hello {
            version: PROTO_VERSION,
            node: node.into(),
            role,
        }
    }
}

/// A node's periodic load report to the placer (doubles as its heartbeat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Reporting node.
    pub node: NodeName,
    /// Where its shadowd accepts connections (`host:port`), for image streams.
    pub addr: String,
    /// Online cpus.
    pub cpus: u32,
    /// Relative cpu speed, 1000 = the reference machine.
    pub speed: u32,
    /// Runnable processes (run-queue length), all of the node's, not only guests.
    pub run_queue: u32,
    /// Guest processes running there for other homes.
    pub guests: u32,
    /// Free (available) memory.
    pub free_mem_mib: u64,
    /// Total memory.
    pub total_mem_mib: u64,
    /// The interval at which the node reports; the placer counts missed reports with it.
    pub interval_ms: u32,
    /// One line per guest, for `mos status`: its pid here and what it is (a batch job,
    /// or the body of a process migrated from its home).
    pub guest_list: Vec<String>,
    /// Every process under the shim that runs here (registered at home, or a guest): what
    /// the balancer may move, and what `mos ps` shows.
    pub candidates: Vec<Candidate>,
    /// Processes homed here whose bodies run elsewhere: (pid here, the shadowd address
    /// the body reported from, its pid there). The placer joins them with the guests the
    /// other nodes report, so a body is known by its home and home pid.
    pub away: Vec<(u32, String, u32)>,
}

/// One process under the shim on a node, as its shadowd reports it (DESIGN.md §9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its real pid on the reporting node (at home: its pid; away: its body's pid).
    pub pid: u32,
    /// Its home node (name) and its pid there (what the user knows it by).
    pub home: NodeName,
    /// Its pid at home.
    pub home_pid: u32,
    /// The batch job it is, if it is one (moved by checkpoint and restart).
    pub job: Option<JobId>,
    /// Its command line (truncated), for people.
    pub cmd: String,
    /// CPU used over the last report interval, in thousandths of one cpu.
    pub cpu_permille: u32,
    /// Resident memory.
    pub rss_mib: u64,
    /// How long it has been on this node.
    pub age_ms: u64,
    /// Runnable now.
    pub runnable: bool,
    /// Whether it may be moved; `why_not` says why when it may not.
    pub migratable: bool,
    /// The reason it may not move (empty when it may).
    pub why_not: String,
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Program and arguments.
    pub argv: Vec<OsBytes>,
    /// Environment, `(name, value)`.
    pub env: Vec<(OsBytes, OsBytes)>,
    /// Working directory at home.
    pub cwd: OsBytes,
    /// The home node: where the job's files, terminal and stub are.
    pub home: NodeName,
    /// Expected memory use, 0 if unknown.
    pub mem_mib: u64,
    /// Restart from this checkpoint image instead of starting `argv`.
    pub restart_from: Option<OsBytes>,
    /// Batch jobs: files for stdin/stdout/stderr (at home), the event log, and
    /// where periodic checkpoints are kept (at home), every `ckpt_interval_s` seconds.
    pub batch: Option<BatchIo>,
}

/// The files of a batch job (HTCondor's input/output/error/log) and its checkpointing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchIo {
    /// stdin file, `/dev/null` when none.
    pub input: Option<OsBytes>,
    /// stdout file (truncated when the job first starts).
    pub output: Option<OsBytes>,
    /// stderr file (truncated when the job first starts).
    pub error: Option<OsBytes>,
    /// Directory that keeps the job's checkpoint image.
    pub ckpt_dir: Option<OsBytes>,
    /// Periodic checkpoint interval; `None` = off.
    pub ckpt_interval_s: Option<u64>,
    /// Stream every checkpoint image of the job to this address (the job's home, which
    /// stores and records it) instead of reporting a local path.
    pub home_addr: Option<String>,
    /// The job's shadow session at its home node (its stdin/stdout/stderr and cwd are
    /// there): `(token, rsys address)`. The starter passes it to the shim, which runs the
    /// job in remote mode from its first instruction. `None`: files opened on the node.
    pub remote_home: Option<(Vec<u8>, String)>,
}

/// One row of `mos q`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// "cluster.proc".
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Submission time, unix ms.
    pub submitted_ms: u64,
    /// Accumulated run time, ms.
    pub run_time_ms: u64,
    /// State letter or word (I, R, H, C, X...).
    pub state: String,
    /// Node it runs on (or ran last).
    pub node: String,
    /// Checkpoints taken.
    pub ckpts: u32,
    /// Restarts.
    pub restarts: u32,
    /// Command line.
    pub cmd: String,
    /// Exit status, once completed.
    pub exit: Option<i32>,
    /// Why it is held (or was removed); empty otherwise.
    pub reason: String,
}

/// What `mos rm/hold/release/vacate` asks of the placer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobCommand {
    /// Remove (kill if running).
    Remove,
    /// Hold (stop if running, keep in the queue).
    Hold,
    /// Release a held job.
    Release,
    /// Checkpoint and requeue.
    Vacate,
}

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for a node.
    Queued,
    /// Being started or restarted.
    Starting,
    /// Running.
    Running,
    /// A checkpoint is being taken.
    Checkpointing,
    /// The image is on its way to another node.
    Migrating,
    /// Checkpointed and stopped (vacated); waiting to be placed again.
    Vacated,
    /// Exited with this status code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Killed by this signal.
    Killed {
        /// Signal number.
        signal: i32,
    },
    /// mos could not run it.
    Failed {
        /// Why, for a person.
        reason: String,
    },
}

/// A job's (or a guest's) status, from a node to the placer and from the placer to the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub job: JobId,
    /// Where its body runs (or ran last).
    pub node: NodeName,
    /// Its home node.
    pub home: NodeName,
    /// Its state.
    pub state: JobState,
    /// Its pid on `node`, while it has one.
    pub pid: Option<u32>,
    /// Why it cannot migrate, if it cannot (shown by `mos q`).
    pub non_migratable: Option<String>,
}

/// Every message between mos parts. Bulk-carrying variants say so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    // --- handshake (auth module) ---
    /// First message both ways. Must stay variant 0.
    Hello(Hello),
    /// The sender's fresh random nonce.
    AuthChallenge {
        /// Nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// The sender's proof: HMAC of the handshake under the cluster key.
    AuthResponse {
        /// MAC.
        mac: [u8; MAC_LEN],
    },
    /// The server accepted the client's proof; the connection is open.
    AuthOk,

    // --- generic ---
    /// Success with nothing else to say.
    Ack,
    /// A refusal or failure, for a person; the sender may close the connection after it.
    Error {
        /// What went wrong.
        msg: String,
    },

    // --- load (shadowd -> placer) ---
    /// Periodic load report.
    LoadReport(LoadReport),

    // --- CLI <-> placer ---
    /// Ask for the node table. Answered by `NodeList`.
    QueryNodes,
    /// The latest report of every live node.
    NodeList {
        /// Reports.
        nodes: Vec<LoadReport>,
    },

    // --- placer orders (placer -> shadowd; Migrate and Kill also CLI -> placer) ---
    /// Start (or restart) a job on the receiving node.
    PlaceJob {
        /// Job.
        job: JobId,
        /// What to run.
        spec: JobSpec,
    },
    /// Checkpoint the job and move it to `to`.
    Migrate {
        /// Job.
        job: JobId,
        /// Target node.
        to: NodeName,
        /// Target's shadowd address; the placer fills it in, the CLI sends `None`.
        addr: Option<String>,
    },
    /// Checkpoint the job and stop it here; the placer places it again later.
    Vacate {
        /// Job.
        job: JobId,
    },
    /// Send a signal to the job (SIGKILL for `mos rm`).
    Kill {
        /// Job.
        job: JobId,
        /// Signal number.
        signal: i32,
    },

    // --- status (shadowd -> placer, placer -> CLI) ---
    /// A job's or guest's new state.
    JobStatus(JobStatus),

    // --- image stream (source shadowd -> target shadowd) ---
    /// An image follows.
    ImageBegin {
        /// Job.
        job: JobId,
        /// Its home node.
        home: NodeName,
        /// Total image bytes, when known before the dump ends.
        size: Option<u64>,
    },
    /// `len` bytes of the image follow as bulk.
    ImageChunk {
        /// Bulk bytes.
        len: u32,
    },
    /// The image is complete; `checksum` is [`ImageChecksum`] over all chunk bytes.
    ImageEnd {
        /// xxh3-64 of the image bytes.
        checksum: u64,
    },
    /// The receiver has the whole image and its checksum matched.
    ImageReceived {
        /// Job.
        job: JobId,
        /// Bytes received.
        size: u64,
        /// Where the receiver keeps it (a restart there names this path).
        path: OsBytes,
    },

    // --- batch queue (protocol 1.1) ---
    /// mossubmit -> placer: one job file (job.toml text; relative paths resolve against
    /// `submit_dir`). Answered by `SubmittedCluster`, or `Error` naming key and line.
    SubmitFile {
        /// Submitting user.
        owner: String,
        /// Name of the file, for error messages.
        label: String,
        /// The file's text.
        text: String,
        /// Directory it was submitted from.
        submit_dir: OsBytes,
        /// Address of the submitting node's shadowd: the jobs' home (their input,
        /// output and error stay there). `None`: files are opened where a job runs.
        home: Option<String>,
    },
    /// The cluster number the jobs got.
    SubmittedCluster {
        /// Cluster.
        cluster: u64,
        /// Jobs queued.
        count: u32,
    },
    /// `mos q` / `mos history`: answered by `JobTable`.
    QueryQueue {
        /// Completed and removed jobs instead of the queue.
        history: bool,
    },
    /// Rows for `mos q`.
    JobTable {
        /// Rows.
        rows: Vec<JobRow>,
    },
    /// `mos rm/hold/release/vacate` on "cluster.proc" (or "cluster" for all its jobs).
    Command {
        /// Target id.
        id: String,
        /// What to do.
        cmd: JobCommand,
    },
    /// shim -> its home shadowd over `<state>/shadow.sock`, with the process's open files
    /// attached as SCM_RIGHTS (in this order): the process's body is about to leave, open
    /// a shadow session for it. Answered by `SessionOpened` (or `Error`). The connection
    /// then stays open as the home stub's: the stub sends `StubSignal`, the shadowd sends
    /// `BodyExited` or `BodyLost` once. The stub closing it ends the session.
    OpenSession {
        /// The process's pid (the stub keeps it; the body reports it as its own).
        pid: u32,
        /// The process's cwd at home.
        cwd: OsBytes,
        /// The process's fd numbers, one per attached descriptor.
        fds: Vec<i32>,
    },
    /// shadowd -> shim: the session is open.
    SessionOpened {
        /// The session token (32 bytes; see `proto::rsys`).
        token: Vec<u8>,
        /// Address of the shadowd's rsys listener.
        rsys_addr: String,
    },
    /// stub -> shadowd: deliver this signal to the body.
    StubSignal {
        /// Signal number.
        signal: i32,
    },
    /// shadowd -> stub: the body ended; `status` as waitpid reports it.
    BodyExited {
        /// Wait status.
        status: i32,
    },
    /// shadowd -> stub: the body is gone without an exit status (its node died, or it
    /// was killed there).
    BodyLost {
        /// What happened, for the user.
        reason: String,
    },
    /// CLI -> home shadowd: where is the body of process `pid` (homed here)?
    /// Answered by `BodyAt` or `Error`.
    WhereIsBody {
        /// The process's pid at home.
        pid: u32,
    },
    /// shadowd -> CLI: the body runs on `node` as real pid `body_pid`.
    BodyAt {
        /// Node name the body reported.
        node: String,
        /// The body's pid there.
        body_pid: u32,
    },
    /// CLI -> the shadowd of the node a process (or its body) runs on: checkpoint it (its
    /// files handed home first if it is at home), stream the image to the shadowd at `to`
    /// and restart it there. Answered by `Migrated` or `Error`.
    MigrateProcess {
        /// The process's real pid on this node.
        pid: u32,
        /// Target shadowd address.
        to: String,
        /// Stop-and-copy, live, or by size.
        mode: MoveMode,
        /// Send [`Msg::MigrationProgress`] while it moves (before the answer).
        progress: bool,
        /// Compress a stop-and-copy image on the wire (lz4): Some(yes/no), or None to
        /// decide by the target's address (yes unless it is on this machine, where the
        /// wire is faster than lz4).
        compress: Option<bool>,
    },
    /// shadowd -> CLI: the process now runs on the target as `pid`.
    Migrated {
        /// The body's pid on the target node.
        pid: u32,
        /// How the move went (the source's figures; none from a target placing a body).
        stats: Option<MoveStats>,
    },
    /// placer -> a batch job's home shadowd: open (or find) the shadow session of `job`,
    /// with its stdin/stdout/stderr (`/dev/null` when `None`) opened here at home as fds
    /// 0, 1, 2 and `cwd` as its directory. `fresh`: the job starts from the beginning
    /// (outputs truncated, any older session of the job ended); otherwise an existing
    /// session is kept (a restart from a checkpoint reconnects to it). Answered by
    /// `SessionOpened`.
    OpenJobSession {
        /// Job.
        job: JobId,
        /// The job's directory at home.
        cwd: OsBytes,
        /// stdin file.
        input: Option<OsBytes>,
        /// stdout file.
        output: Option<OsBytes>,
        /// stderr file (the same file as stdout shares its open file).
        error: Option<OsBytes>,
        /// Start from scratch.
        fresh: bool,
    },
    /// shadowd -> placer: the job's checkpoint image at `path` is complete.
    Checkpointed {
        /// Job.
        job: JobId,
        /// Image path (at home).
        path: OsBytes,
        /// Image size.
        bytes: u64,
    },
    /// `mos run` -> its node's shadowd over `<state>/shadow.sock`: process `pid` (the
    /// sender itself, about to exec its program under the shim) runs here and may be
    /// balanced unless `no_migrate`. Answered by `Ack`. The sender's credentials must own
    /// the process.
    RegisterProcess {
        /// The process (the sender's own pid).
        pid: u32,
        /// Never move it (`mos run --no-migrate`).
        no_migrate: bool,
    },
    /// CLI -> placer: the processes under the shim and the automatic migrations so far.
    /// Answered by `ProcessTable`.
    QueryProcesses,
    /// A shadowd (gossip mode) -> the shadowd it would send a process to: may it come?
    /// The target admits only while its own load still justifies the move (so two
    /// sources cannot both pile onto one idle node in a round). Answered by `Ack` or
    /// `Error` (refused, with why).
    AdmitMigration {
        /// The source node.
        from: NodeName,
        /// The source's load, in thousandths (runnable processes per reference cpu).
        source_load_milli: u32,
        /// The process's resident memory.
        mem_mib: u64,
    },
    /// shadowd -> placer (gossip mode): a migration the shadowd decided, for `mos ps`.
    MigrationEvent {
        /// The event-log line (source, target, reason).
        line: String,
        /// The process as `home:home_pid` when known (its moves are listed under it).
        who: String,
        /// "from->to (reason)".
        moved: String,
    },
    /// placer -> CLI: one row per process, and the event log of automatic migrations.
    ProcessTable {
        /// Processes, by home and home pid.
        rows: Vec<ProcessRow>,
        /// Automatic migration events, oldest first (one line each, with its reason).
        events: Vec<String>,
    },
    /// CLI -> placer: why is job `id` ("cluster.proc") where it is (`mos q -analyze`);
    /// `better`: node by node too.
    AnalyzeJob {
        /// "cluster.proc".
        id: String,
        /// One line per node as well.
        better: bool,
    },
    /// placer -> CLI: the analysis, as lines for a person.
    Analysis {
        /// Lines.
        lines: Vec<String>,
    },
    /// source shadowd -> target shadowd: a migrating process's image will follow as it is
    /// written (its size unknown until the end). If `reserve` is not 0 the target first
    /// makes memory ready for that many bytes and answers [`Msg::Ack`] (or [`Msg::Error`]:
    /// no room, and the process is not frozen); then the image comes in [`Msg::ImageChunk`]s and
    /// [`Msg::ImageSealed`], answered with [`Msg::ImageReceived`]. It lives only until the
    /// restart, so it is not synced to disk, and it carries no stream checksum: an image
    /// verifies itself at restart (its metadata hash and one CRC per region).
    MigrationImage {
        /// The process, as a job id (`PROCESS_JOB_BIT | pid`).
        job: JobId,
        /// Its home node.
        home: NodeName,
        /// About how big the image will be (its resident memory): what the target
        /// allocates before the process is frozen. 0: nothing.
        reserve: u64,
        /// Send the image striped over this many more connections ("lanes",
        /// `ckpt::image::lanes`; 0: in this one's chunks). The target answers
        /// [`Msg::LanesReady`] instead of `Ack`; the source opens the lanes, each with
        /// [`Msg::ImageLane`], and the target answers `Ack` here once all came. The
        /// stream here then carries no chunk, only [`Msg::ImageSealed`].
        lanes: u32,
    },
    /// target shadowd -> source shadowd: memory is ready for a [`Msg::MigrationImage`]
    /// sent over lanes; open them, each naming `token`.
    LanesReady {
        /// Names this image's landing (random, one use).
        token: u64,
    },
    /// source shadowd -> target shadowd, first on a new connection: this connection is
    /// lane `lane` of the image whose landing `token` names; the lane's bytes follow,
    /// bare, once the main connection was answered `Ack`. Not answered (an unknown token
    /// is answered with an error and the connection closed).
    ImageLane {
        /// From [`Msg::LanesReady`].
        token: u64,
        /// 0-based.
        lane: u32,
    },
    /// The end of a [`Msg::MigrationImage`] stream: the source sent `bytes` in all.
    ImageSealed {
        /// Image bytes sent.
        bytes: u64,
    },
    /// source shadowd -> target shadowd: a live migration's stream follows (pre-copy:
    /// records of a sparse image, `ckpt::image::live`, sent while the process runs and
    /// then frozen), in [`Msg::ImageChunk`]s and then [`Msg::ImageSealed`]; answered
    /// with [`Msg::ImageReceived`].
    LiveMigrationImage {
        /// The process, as a job id (`PROCESS_JOB_BIT | pid`).
        job: JobId,
        /// Its home node.
        home: NodeName,
    },
    /// source shadowd -> target shadowd: a post-copy migration's stream follows: the
    /// image without the process's private anonymous memory, then (after the target
    /// answered [`Msg::ImageReceived`] and the body started) those pages, the ones the
    /// body faulted on first ([`Msg::PageRequest`] back on the same connection). The
    /// target answers [`Msg::Ack`] once every page arrived.
    LazyMigrationImage {
        /// The process, as a job id (`PROCESS_JOB_BIT | pid`).
        job: JobId,
        /// Its home node.
        home: NodeName,
    },
    /// target shadowd -> source shadowd during post-copy: the body faulted at `addr`.
    PageRequest {
        /// The faulting address.
        addr: u64,
    },
    /// source shadowd -> CLI, about every quarter second of a `MigrateProcess` that asked
    /// for it: the image bytes on the wire so far.
    MigrationProgress {
        /// Bytes sent.
        bytes: u64,
        /// A live migration's copy round under way (the last one frozen); None for
        /// stop-and-copy.
        round: Option<u32>,
    },
    /// Part of a [`Msg::MigrationImage`] stream, like [`Msg::ImageChunk`], compressed:
    /// `len` bytes of an lz4 block follow as bulk, `raw` bytes of the image once
    /// decompressed.
    ImageChunkLz4 {
        /// Bulk (compressed) bytes.
        len: u32,
        /// Image bytes they stand for.
        raw: u32,
    },
    /// placer -> a job's home (submit) shadowd: append one record to the job's event
    /// log there (user-facing files are written at the submit host); answered by `Ack`.
    AppendUserLog {
        /// The log file (absolute, at the home node).
        path: OsBytes,
        /// The record, as written (one `write` with O_APPEND).
        text: String,
    },
}

/// How `MigrateProcess` moves a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveMode {
    /// Frozen for the whole transfer.
    StopAndCopy,
    /// Pre-copy: memory in rounds while it runs, then frozen for the rest.
    Live,
    /// Live above the source's size threshold (`MOS_LIVE_MIN_MIB`), else stop-and-copy.
    Auto,
    /// Post-copy: runs on the target at once, its memory fetched from the source as it
    /// faults and pushed in the background (lost if the source dies meanwhile).
    Lazy,
}

/// One migration's figures, as the source measured them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MoveStats {
    /// Image bytes sent.
    pub bytes: u64,
    /// Copy rounds while the process ran (0: stop-and-copy).
    pub rounds: u32,
    /// How long the process did not run: from the checkpoint request until it ran on the
    /// target (stop-and-copy: the whole move).
    pub frozen_ms: u64,
    /// The move at the source, request to commit.
    pub total_ms: u64,
    /// Page bytes of each copy round while the process ran (live migration).
    pub round_bytes: Vec<u64>,
    /// Post-copy: when the image without its memory was whole at the target (the body
    /// starts right after); 0 otherwise.
    pub resumed_ms: u64,
    /// Stop-and-copy: how long the target took to make memory ready for the image,
    /// while the process still ran (part of `total_ms`, not of `frozen_ms`).
    pub ready_ms: u64,
}

/// One row of `mos ps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRow {
    /// What the node it runs on reports of it.
    pub candidate: Candidate,
    /// Where it runs now.
    pub node: NodeName,
    /// Its automatic migrations so far: "from->to (reason)".
    pub migrations: Vec<String>,
}

impl Msg {
    /// The variant's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "Hello",
            Msg::AuthChallenge { .. } => "AuthChallenge",
            Msg::AuthResponse { .. } => "AuthResponse",
            Msg::AuthOk => "AuthOk",
            Msg::Ack => "Ack",
            Msg::Error { .. } => "Error",
            Msg::LoadReport(_) => "LoadReport",
            Msg::QueryNodes => "QueryNodes",
            Msg::NodeList { .. } => "NodeList",
            Msg::PlaceJob { .. } => "PlaceJob",
            Msg::Migrate { .. } => "Migrate",
            Msg::Vacate { .. } => "Vacate",
            Msg::Kill { .. } => "Kill",
            Msg::JobStatus(_) => "JobStatus",
            Msg::ImageBegin { .. } => "ImageBegin",
            Msg::ImageChunk { .. } => "ImageChunk",
            Msg::ImageEnd { .. } => "ImageEnd",
            Msg::ImageReceived { .. } => "ImageReceived",
            Msg::SubmitFile { .. } => "SubmitFile",
            Msg::SubmittedCluster { .. } => "SubmittedCluster",
            Msg::QueryQueue { .. } => "QueryQueue",
            Msg::JobTable { .. } => "JobTable",
            Msg::Command { .. } => "Command",
            Msg::Checkpointed { .. } => "Checkpointed",
            Msg::OpenSession { .. } => "OpenSession",
            Msg::SessionOpened { .. } => "SessionOpened",
            Msg::StubSignal { .. } => "StubSignal",
            Msg::BodyExited { .. } => "BodyExited",
            Msg::BodyLost { .. } => "BodyLost",
            Msg::WhereIsBody { .. } => "WhereIsBody",
            Msg::BodyAt { .. } => "BodyAt",
            Msg::MigrateProcess { .. } => "MigrateProcess",
            Msg::Migrated { .. } => "Migrated",
            Msg::OpenJobSession { .. } => "OpenJobSession",
            Msg::RegisterProcess { .. } => "RegisterProcess",
            Msg::QueryProcesses => "QueryProcesses",
            Msg::ProcessTable { .. } => "ProcessTable",
            Msg::AdmitMigration { .. } => "AdmitMigration",
            Msg::MigrationEvent { .. } => "MigrationEvent",
            Msg::AnalyzeJob { .. } => "AnalyzeJob",
            Msg::Analysis { .. } => "Analysis",
            Msg::MigrationImage { .. } => "MigrationImage",
            Msg::LanesReady { .. } => "LanesReady",
            Msg::ImageLane { .. } => "ImageLane",
            Msg::LiveMigrationImage { .. } => "LiveMigrationImage",
            Msg::LazyMigrationImage { .. } => "LazyMigrationImage",
            Msg::PageRequest { .. } => "PageRequest",
            Msg::MigrationProgress { .. } => "MigrationProgress",
            Msg::ImageChunkLz4 { .. } => "ImageChunkLz4",
            Msg::ImageSealed { .. } => "ImageSealed",
            Msg::AppendUserLog { .. } => "AppendUserLog",
        }
    }
}

impl WireHeader for Msg {
    fn bulk_len(&self) -> u64 {
        match self {
            Msg::ImageChunk { len } | Msg::ImageChunkLz4 { len, .. } => u64::from(*len),
            _ => 0,
        }
    }
}

/// The checksum of an image stream ([`Msg::ImageEnd`]): xxh3-64 over the bytes of all
/// chunks, in order. Sender and receiver both feed it the chunk payloads.
#[derive(Clone)]
pub struct ImageChecksum {
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl Default for ImageChecksum {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageChecksum {
    /// A fresh checksum.
    pub fn new() -> Self {
        ImageChecksum {
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        }
    }

    /// Add a chunk's bytes.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    /// Bytes added so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The checksum of the bytes added so far.
    pub fn digest(&self) -> u64 {
        self.hasher.digest()
    }
}

impl fmt::Debug for ImageChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageChecksum")
            .field("bytes", &self.bytes)
            .field("digest", &self.digest())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_variant_zero_with_version_first() {
        // The compatibility rule in the module header: a peer of any version reads these
        // three bytes the same way.
        let bytes = postcard::to_allocvec(&Msg::Hello(Hello::new("a", Role::Cli))).unwrap();
        assert_eq!(bytes[0], 0, "Hello must be variant 0");
        let v: (u8, Version) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(v.1, PROTO_VERSION);
    }

    #[test]
    fn bulk_lengths_come_from_the_stated_fields() {
        assert_eq!(Msg::ImageChunk { len: 9 }.bulk_len(), 9);
        assert_eq!(Msg::ImageEnd { checksum: 9 }.bulk_len(), 0);
        assert_eq!(Msg::Ack.bulk_len(), 0);
    }

    #[test]
    fn os_bytes_keep_non_utf8_paths() {
        let raw: &[u8] = b"/tmp/\xff\xfe";
        let p: PathBuf = OsBytes::from(raw).into();
        assert_eq!(OsBytes::from(p.as_path()).as_bytes(), raw);
    }

    #[test]
    fn image_checksum_is_independent_of_chunking() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut whole = ImageChecksum::new();
        whole.update(&data);
        let mut parts = ImageChecksum::new();
        for c in data.chunks(333) {
            parts.update(c);
        }
        assert_eq!(whole.digest(), parts.digest());
        assert_eq!(parts.bytes(), 10_000);
    }
}
