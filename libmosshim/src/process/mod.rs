//! The process as the shim sees it, below everything that uses it: the state handed
//! between the manager and the restorer (`ctx.rs`) and the shim's own file descriptors
//! (`fds.rs`).

pub mod ctx;
pub mod fds;
