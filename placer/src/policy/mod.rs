//! Placement and migration policy: pure functions over a [`Snapshot`] of the cluster.
//!
//! No I/O, no clocks, no randomness: every decision is a function of its arguments, so the
//! same snapshot always yields the same decision (ties are broken by node name), and the
//! simulator and the daemon run exactly the same code.
//!
//! Load is the *speed-normalized run-queue length*: runnable processes divided by the node's
//! capacity, `cpus * speed` (speed is relative, 1.0 = the reference cpu). A job counts as
//! one runnable process in these formulas (as in MOSIX); `request_cpus` is a constraint on
//! the node (it must have that many cpus), not a weight.
//! - [`place`]: where a new job goes.
//! - [`liveness`]: which nodes stopped reporting.
//! - [`balance`]: which running jobs move (memory ushering first, then load balancing).
//! - [`index`]: an incrementally updated index that answers [`place::place_job`] in
//!   O(log n) for large clusters.

pub mod analyze;
pub mod balance;
pub mod index;
pub mod liveness;
pub mod place;

use serde::{Deserialize, Serialize};

use crate::jobfile::JobSpec;

pub use balance::{plan_migrations, BalanceParams, Migration, MigrationReason, RunningJob};
pub use index::PlacementIndex;
pub use liveness::mark_down;
pub use place::{place_job, placement_score};

/// The placer's latest knowledge of one node (from its shadowd's load reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub cpus: u32,
    /// Relative cpu speed; 1.0 = reference.
    pub speed: f64,
    /// Runnable processes on the node (all of them, not only mos guests).
    pub run_queue: u32,
    /// mos guest processes running there.
    pub guests: u32,
    pub free_mem_mib: u64,
    /// When the last report arrived (placer clock, ms).
    pub last_report_ms: u64,
    pub up: bool,
}

impl NodeInfo {
    /// `cpus * speed`; 0 for a node whose report makes no sense.
    pub fn capacity(&self) -> f64 {
        let c = f64::from(self.cpus) * self.speed;
        if c.is_finite() && c > 0.0 {
            c
        } else {
            0.0
        }
    }

    /// Up and with a sane report (cpus > 0, finite positive speed).
    pub fn is_usable(&self) -> bool {
        self.up && self.capacity() > 0.0
    }

    /// Current normalized load: `run_queue / (cpus * speed)`.
    pub fn load(&self) -> f64 {
        normalized(self.run_queue, self.capacity())
    }

    /// Whether a job with `req` may run here at all (usable, memory and cpus fit).
    pub fn fits(&self, req: &JobReq) -> bool {
        self.is_usable() && self.free_mem_mib >= req.mem_mib && self.cpus >= req.cpus
    }
}

/// `run_queue / capacity`, infinite for an unusable node so it sorts last.
pub(crate) fn normalized(run_queue: u32, capacity: f64) -> f64 {
    if capacity > 0.0 {
        f64::from(run_queue) / capacity
    } else {
        f64::INFINITY
    }
}

/// The cluster as the placer sees it at `now_ms`. Node names are unique.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    pub now_ms: u64,
}

impl Snapshot {
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Records a load report: replaces the node of that name (or adds it), marks it up and
    /// stamps it with `now_ms`. Returns its index.
    pub fn apply_report(&mut self, mut report: NodeInfo, now_ms: u64) -> usize {
        report.up = true;
        report.last_report_ms = now_ms;
        self.now_ms = self.now_ms.max(now_ms);
        match self.node_index(&report.name) {
            Some(i) => {
                self.nodes[i] = report;
                i
            }
            None => {
                self.nodes.push(report);
                self.nodes.len() - 1
            }
        }
    }
}

/// What a job needs from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReq {
    pub mem_mib: u64,
    pub cpus: u32,
}

impl From<&JobSpec> for JobReq {
    fn from(spec: &JobSpec) -> Self {
        JobReq {
            mem_mib: spec.request_memory_mib.unwrap_or(0),
            cpus: spec.request_cpus,
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn node(name: &str, cpus: u32, speed: f64, run_queue: u32, free_mem_mib: u64) -> NodeInfo {
        NodeInfo {
            name: name.to_owned(),
            cpus,
            speed,
            run_queue,
            guests: 0,
            free_mem_mib,
            last_report_ms: 0,
            up: true,
        }
    }

    pub fn snap(nodes: Vec<NodeInfo>) -> Snapshot {
        Snapshot { nodes, now_ms: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn capacity_and_load() {
        let n = node("a", 4, 1.5, 3, 0);
        assert_eq!(n.capacity(), 6.0);
        assert_eq!(n.load(), 0.5);
        assert!(n.is_usable());
    }

    #[test]
    fn nonsense_reports_are_unusable() {
        for (cpus, speed) in [
            (0, 1.0),
            (2, 0.0),
            (2, -1.0),
            (2, f64::NAN),
            (2, f64::INFINITY),
        ] {
            let n = node("a", cpus, speed, 0, 1000);
            assert!(!n.is_usable(), "{cpus} {speed}");
            assert_eq!(n.load(), f64::INFINITY);
        }
    }

    #[test]
    fn fits_checks_up_memory_and_cpus() {
        let mut n = node("a", 2, 1.0, 0, 1000);
        assert!(n.fits(&JobReq {
            mem_mib: 1000,
            cpus: 2
        }));
        assert!(!n.fits(&JobReq {
            mem_mib: 1001,
            cpus: 1
        }));
        assert!(!n.fits(&JobReq {
            mem_mib: 0,
            cpus: 3
        }));
        n.up = false;
        assert!(!n.fits(&JobReq {
            mem_mib: 0,
            cpus: 1
        }));
    }

    #[test]
    fn apply_report_replaces_or_adds_and_marks_up() {
        let mut s = snap(vec![node("a", 1, 1.0, 0, 10)]);
        s.nodes[0].up = false;
        let i = s.apply_report(node("a", 2, 1.0, 5, 20), 100);
        assert_eq!(i, 0);
        assert!(s.nodes[0].up);
        assert_eq!((s.nodes[0].cpus, s.nodes[0].last_report_ms), (2, 100));
        assert_eq!(s.apply_report(node("b", 1, 1.0, 0, 0), 150), 1);
        assert_eq!(s.now_ms, 150);
    }

    #[test]
    fn job_req_from_spec() {
        let spec = crate::jobfile::parse_job_file(
            "executable = \"x\"\nrequest_memory = \"1 GiB\"\nrequest_cpus = 2",
            "j",
            std::path::Path::new("/"),
            1,
        )
        .unwrap();
        assert_eq!(
            JobReq::from(&spec[0]),
            JobReq {
                mem_mib: 1024,
                cpus: 2
            }
        );
        let spec =
            crate::jobfile::parse_job_file("executable = \"x\"", "j", std::path::Path::new("/"), 1)
                .unwrap();
        assert_eq!(
            JobReq::from(&spec[0]),
            JobReq {
                mem_mib: 0,
                cpus: 1
            }
        );
    }
}
