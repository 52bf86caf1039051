//! The process as the shim sees it, below everything that uses it: the state handed
//! between the manager and the restorer (`ctx.rs`), the shim's own file descriptors
//! (`fds.rs`) and the per-thread context slots (`slots.rs`). Its identity (pids) is
//! `crate::identity`, below the logger.

pub mod ctx;
pub mod fds;
pub mod slots;
