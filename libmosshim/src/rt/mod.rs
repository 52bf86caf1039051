//! The shim's floor: the async-signal-safe zone. Everything else in the shim stands on it,
//! and it stands on nothing of the shim's (it imports no module of this crate outside
//! `rt/`; only `core`, `libc` and `ckpt`).
//!
//! - [`syscall`]: the one raw system-call primitive ([`syscall::raw`], an `unsafe fn`)
//!   and its call form `r!` (the SIGSYS handler's system calls go through it).
//! - [`user`]: the only code that reads or writes the application's memory through a
//!   pointer the application passed in a call (buffers, iovecs, sockaddrs, pollfds,
//!   sigsets, timespecs, paths...), as the kernel would have: the forwarders and the libc
//!   hooks get and put such memory only through it.
//! - [`alloc`]: the shim's own allocator (the global allocator of the cdylib).
//!
//! Code here may run in a signal handler (the SIGSYS handler, the freeze handler), in a
//! thread that a checkpoint freezes, or in the image writer's child after a raw fork.
//! Never do here: allocate (but the allocator itself, which only maps memory), take a
//! lock (but the allocator's spin lock, which is not for signal handlers), panic, format
//! (`format!`, `{}`), use std I/O or libc's stdio, log, or call up into the rest of the
//! shim.

pub mod alloc;
pub mod syscall;
pub mod user;
