//! What happens to each kind of the application's state at checkpoint, at restart and in
//! a forked child: one file per kind, each with its capture side and the shim's restart
//! side; the restorer's half of the same kind is its namesake in `ckpt/src/restore/`
//! (CRIU's `files-reg.c` holds dump and restore of regular files side by side).
//! `threads.rs` (contexts, per-thread kernel state, resuming after a restart), `fds.rs`
//! (the application's file descriptors), `signals.rs` (dispositions, masks, pending
//! signals), `timers.rs` (itimers, POSIX timers), `memory.rs` (the shared-anonymous
//! copies; the writer child's scan of regions and extents stays in `dump/writer.rs`).
//!
//! Every kind implements [`StateKind`], and the phases that the code runs as one sequence
//! iterate [`KINDS`]: `restarted` (after a restart, in the manager: pending signals, then
//! POSIX timers, as before) and `atfork_child` (in a forked child: the trigger pipe is
//! the parent's). Two phases stay direct calls, because a loop over the kinds would change
//! their order:
//! - capture: `dump::capture_process` reads each kind's state in between the process-wide
//!   fields (dispositions and itimers before /proc/self/stat, fds before and POSIX timers
//!   after the cwd check), so which error a checkpoint reports when two things fail
//!   depends on that order; thread contexts are captured in the freeze handler, thread
//!   records and the shared-memory copies later in `manager::prepare`.
//! - resume (the checkpointed process running on): the only per-kind work is freeing the
//!   shared-memory copies, a scope guard in `manager::checkpoint_frozen` that runs after
//!   the writer's report is read; a phase call would move it.
//!
//! Nothing here imports `manager`. Code called from a signal handler or by a restored
//! thread before it is released (`threads::capture_thread_state`,
//! `threads::mos_thread_resumed`) is marked so where it stands: no allocation, no locks.

use crate::log::log;
use crate::rawfs;
use ckpt::image::ImageMeta;

pub mod fds;
pub mod memory;
pub mod signals;
pub mod threads;
pub mod timers;

/// One kind of state in the lifecycle of a checkpointed process (DMTCP's plugin events).
/// Every method defaults to doing nothing.
pub trait StateKind: Sync {
    /// After a restart, in the manager, once every restored thread has resumed and before
    /// they are released. An error is logged; the restart goes on.
    fn restarted(&self, _meta: &ImageMeta) -> Result<(), String> {
        Ok(())
    }
    /// In the child of the application's fork (the pthread_atfork child handler): no
    /// allocation, no locks.
    fn atfork_child(&self) {}
}

/// Every kind, in the order the phases run them.
pub static KINDS: [&dyn StateKind; 5] = [&threads::Threads, &fds::Fds, &memory::Memory, &signals::Signals, &timers::Timers];

/// The restart phase of every kind, in [`KINDS`] order.
pub fn restarted(meta: &ImageMeta) {
    for k in KINDS {
        if let Err(e) = k.restarted(meta) {
            log(&format!("restart: {e}"));
        }
    }
}

/// The fork-child phase of every kind, in [`KINDS`] order.
pub fn atfork_child() {
    for k in KINDS {
        k.atfork_child();
    }
}

/// A /proc file as text (the kinds' captures, `dump` and the writer child read these).
pub fn read_str(path: &str) -> Result<String, String> {
    rawfs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

/// Where a /proc symlink points (empty if it cannot be read).
pub fn link(path: &str) -> String {
    std::fs::read_link(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}
