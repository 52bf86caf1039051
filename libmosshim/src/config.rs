//! What the shim reads from its environment, and the signal numbers it reserves.
//!
//! Every `MOS_*` variable the shim looks at is named here (one const each, with what it
//! means); [`Config`] holds the ones read once at start-up. Only constants and plain
//! readers: nothing here runs in a signal handler.

/// `MOS_DISABLE=1`: the shim does nothing (its hooks stay exported and go straight to libc).
pub const DISABLE: &str = "MOS_DISABLE";
/// Where the shim logs (appended, one line per event); never the application's stderr.
pub const LOG_FILE: &str = "MOS_LOG_FILE";
/// Default image directory (else the working directory at start).
pub const CKPT_DIR: &str = "MOS_CKPT_DIR";
/// The checkpoint trigger signal (default SIGUSR2), parsed by `signals::parse_signal`.
pub const CKPT_SIGNAL: &str = "MOS_CKPT_SIGNAL";
/// `TOKEN@ADDR`: a batch job placed away from its home runs in remote mode from the start.
pub const REMOTE_HOME: &str = "MOS_REMOTE_HOME";
/// `MOS_RSYS_TCP=1`: never use the local listener of the home shadow (kept in images).
pub const RSYS_TCP: &str = "MOS_RSYS_TCP";
/// Microseconds a forwarded call spins for its answer before it sleeps (0: never).
pub const RSYS_SPIN_US: &str = "MOS_RSYS_SPIN_US";
/// `MOS_SUD_SELFTEST=1`: trap every call but run them all natively (tests the trap path).
pub const SUD_SELFTEST: &str = "MOS_SUD_SELFTEST";
/// The node's shadowd socket, to register with for load balancing.
pub const SHADOW_SOCK: &str = "MOS_SHADOW_SOCK";
/// `MOS_NO_MIGRATE=1`: register as never movable.
pub const NO_MIGRATE: &str = "MOS_NO_MIGRATE";
/// The address of this node's shadowd, put by the starter in a remote-mode job's environment.
pub const NODE_ADDR: &str = "MOS_NODE_ADDR";
/// Set (for measurements): the image writer hashes inline instead of in a second process.
pub const SERIAL_HASH: &str = "MOS_SERIAL_HASH";
/// Set (with `MOS_LOG_FILE`): log how long the image writer's phases took.
pub const DEBUG_TIMING: &str = "MOS_DEBUG_TIMING";
/// `MOS_DEBUG_LAZY=1` (with `MOS_LOG_FILE`): a post-copy writer logs each lazy region
/// and the runs of pages it will push (the target's shadowd logs faults and copies).
pub const DEBUG_LAZY: &str = "MOS_DEBUG_LAZY";
/// The largest deleted-but-open file a checkpoint saves, in bytes (default 64 MiB).
pub const DELETED_MAX: &str = "MOS_DELETED_MAX";

/// glibc's internal cancellation signal (SIGCANCEL): never the shim's, never forwarded.
pub const SIG_CANCEL: i32 = 32;
/// glibc's internal set*id broadcast signal (SIGSETXID): never the shim's, never forwarded.
pub const SIG_SETXID: i32 = 33;
/// The private freeze signal that parks a thread for a checkpoint (SIGRTMAX-2).
pub const FREEZE_SIG_DEFAULT: i32 = 62;
/// The freeze signal when the trigger signal is [`FREEZE_SIG_DEFAULT`].
pub const FREEZE_SIG_ALT: i32 = 61;

/// What start-up read from the environment.
pub struct Config {
    pub ckpt_dir: String,
    pub log_file: Option<String>,
}
static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// What start-up read (None before, or when the shim is disabled).
pub fn get() -> Option<&'static Config> {
    CONFIG.get()
}

/// Start-up: what it read (only the first call counts).
pub fn set(c: Config) {
    let _ = CONFIG.set(c);
}

/// Whether `name` is set to exactly `1`.
pub fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}
