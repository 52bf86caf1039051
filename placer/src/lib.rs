//! mos placer: the node table, the persistent job queue, and the placement and migration
//! policy (DESIGN.md §1, §2 "Placement", §5).
//!
//! - [`jobfile`]: job.toml -> [`jobfile::JobSpec`]s.
//! - [`policy`]: pure placement / liveness / balancing decisions over a [`policy::Snapshot`].
//! - [`simulate`]: a time-stepped cluster model driven by the same policy functions.
//! - [`taxonomy`]: the classic load-distribution policies side by side (`mos sim`).
//! - [`db`]: the job queue in one crash-safe redb file.
//! - [`dump`]: `condor_q`-like table and JSON views of the queue (`placer --dump`).
//! - [`id`]: job ids, `cluster.proc`.
//! - [`balancer`]: live balancing: load reports -> balancer inputs, the measured cost model.
//!
//! Nothing here talks to the network; the daemon wiring feeds snapshots in and carries
//! decisions out.

pub mod balancer;
pub mod clusterfile;
pub mod daemon;
pub mod db;
pub mod dump;
pub mod id;
pub mod jobfile;
pub mod logging;
pub mod policy;
pub mod simulate;
pub mod taxonomy;
pub mod ulog;
