//! What happens to each kind of the application's state at checkpoint, at restart and in
//! a forked child: one file per kind, each with its capture side and the shim's restart
//! side; the restorer's half of the same kind is its namesake in `ckpt/src/restore/`
//! (CRIU's `files-reg.c` holds dump and restore of regular files side by side).
//! `threads.rs` (contexts, per-thread kernel state, resuming after a restart), `fds.rs`
//! (the application's file descriptors), `signals.rs` (dispositions, masks, pending
//! signals), `timers.rs` (itimers, POSIX timers), `memory.rs` (the shared-anonymous
//! copies; the writer child's scan of regions and extents stays in `dump/writer.rs`).
//!
//! Every kind implements [`StateKind`], and the manager runs each phase over [`KINDS`]:
//! - `capture` (threads frozen, in the manager): each kind writes its part of the image's
//!   metadata ([`capture`]; the process-wide fields come first, in `dump::capture_process`).
//!   Thread contexts are taken earlier, by each thread in the freeze handler
//!   (`process::slots::capture_thread_state`), and memory later, by the writer child.
//! - `resumed` (the checkpointed process running on, its image written or given up):
//!   memory frees the copies of shared-anonymous memory made for the writer.
//! - `restarted` (after a restart, in the manager: pending signals, then POSIX timers).
//! - `atfork_child` (in a forked child: the trigger pipe is the parent's).
//!
//! Nothing here imports `manager`. Code called from a signal handler or by a restored
//! thread before it is released (`threads::capture_thread_state`,
//! `threads::mos_thread_resumed`) is marked so where it stands: no allocation, no locks.

use crate::log::log;
use crate::rawfs;
use ckpt::image::ImageMeta;

pub mod clocks;
pub mod dirty;
pub mod fds;
pub mod inotify;
pub mod membarrier;
pub mod memory;
pub mod signals;
pub mod threads;
pub mod timers;

/// One kind of state in the lifecycle of a checkpointed process (DMTCP's plugin events).
/// Every method defaults to doing nothing.
pub trait StateKind: Sync {
    /// Threads frozen, in the manager: this kind's part of the image's metadata. An error
    /// names what cannot be checkpointed, and the checkpoint fails with it.
    fn capture(&self, _meta: &mut ImageMeta, _cx: &CaptureCx<'_>) -> Result<(), String> {
        Ok(())
    }
    /// The checkpointed process runs on (its image written, or the checkpoint given up):
    /// release what the capture held.
    fn resumed(&self, _cx: &ResumeCx<'_>) {}
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
pub static KINDS: [&dyn StateKind; 7] = [&threads::Threads, &fds::Fds, &memory::Memory, &signals::Signals, &timers::Timers, &clocks::Clocks, &membarrier::Membarrier];

/// What a capture may need that the manager has: the shim's own fds (not the
/// application's), `/proc/self/status` as read for this checkpoint.
pub struct CaptureCx<'a> {
    /// The shim's own descriptors.
    pub internal_fds: &'a [i32],
    /// `/proc/self/status`.
    pub status: &'a str,
}

/// What the resumed phase gets: the shared-anonymous copies made for the writer.
pub struct ResumeCx<'a> {
    /// (start, end, copy) of each shared-anonymous region.
    pub shared: &'a [(u64, u64, u64)],
}

/// The capture phase of every kind, in [`KINDS`] order; the first error ends it.
pub fn capture(meta: &mut ImageMeta, cx: &CaptureCx<'_>) -> Result<(), String> {
    KINDS.iter().try_for_each(|k| k.capture(meta, cx))
}

/// The resumed phase of every kind, in [`KINDS`] order.
pub fn resumed(cx: &ResumeCx<'_>) {
    for k in KINDS {
        k.resumed(cx);
    }
}

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
