//! Live balancing (DESIGN.md §9, central mode): from the nodes' latest load reports to
//! the balancer's inputs, and the cost model fed by measured migrations. Pure functions
//! over reports, tested below; the daemon orders what [`crate::policy::plan_migrations`]
//! plans and records the outcome here.

use std::collections::HashMap;

use proto::msg::{Candidate, LoadReport};

use crate::id::JobId;
use crate::policy::{BalanceParams, RunningJob};

/// Who a balancing candidate is: a process (by home and home pid, and where it runs now)
/// or a batch job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// A process under the shim; `pid` is its real pid on the node it runs on.
    Process { home: String, home_pid: u32, pid: u32 },
    /// A batch job (moved by checkpoint and restart).
    Job(JobId),
}

impl Who {
    /// How people name it: `node1:4242` for a process, `job 12.0` for a job; also the key
    /// its history is kept under (stable across its moves).
    pub fn label(&self) -> String {
        self.key()
    }

    /// The key its history is kept under (stable across its moves).
    pub fn key(&self) -> String {
        match self {
            Who::Process { home, home_pid, .. } => format!("{home}:{home_pid}"),
            Who::Job(id) => format!("job {id}"),
        }
    }
}

/// A candidate with who it is and where it runs (index into the reports).
#[derive(Debug, Clone)]
pub struct Located {
    pub who: Who,
    pub node: usize,
    pub cand: Candidate,
}

/// Every candidate the reports name, with its home resolved: a body reports no home, its
/// home reports it among its bodies away (by the address the body reported from and its
/// pid there). A body whose home has not said so yet is left out.
pub fn locate(reports: &[LoadReport]) -> Vec<Located> {
    let mut away: HashMap<(&str, u32), (&str, u32)> = HashMap::new();
    for r in reports {
        for (home_pid, addr, body_pid) in &r.away {
            away.insert((addr.as_str(), *body_pid), (r.node.as_str(), *home_pid));
        }
    }
    let mut out = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        for c in &r.candidates {
            let who = match (c.job, c.home.is_empty()) {
                (Some(j), _) => Who::Job(crate::daemon::placer_id(j)),
                (None, false) => Who::Process { home: c.home.clone(), home_pid: c.home_pid, pid: c.pid },
                (None, true) => match away.get(&(r.addr.as_str(), c.pid)) {
                    Some(&(home, home_pid)) => Who::Process { home: home.to_string(), home_pid, pid: c.pid },
                    None => continue,
                },
            };
            let mut cand = c.clone();
            if let Who::Process { home, home_pid, .. } = &who {
                cand.home = home.clone();
                cand.home_pid = *home_pid;
            }
            out.push(Located { who, node: i, cand });
        }
    }
    out
}

/// Whether a candidate competes for CPU (moving one that sleeps gains nothing).
pub fn is_busy(c: &Candidate) -> bool {
    c.runnable || c.cpu_permille >= 200
}

/// The balancer's jobs for `located` (indexes into it are the `proc` of each job id):
/// `blocked(who)` says whether a move of it is in flight or has failed. A node short of
/// memory may send away idle processes too; load balancing moves busy ones only.
pub fn running_jobs(located: &[Located], now_ms: u64, blocked: impl Fn(&Who) -> bool, short: impl Fn(usize) -> bool) -> Vec<RunningJob> {
    located
        .iter()
        .enumerate()
        .map(|(k, l)| RunningJob {
            id: JobId::new(u64::MAX, k as u32),
            node: l.node,
            mem_mib: l.cand.rss_mib,
            cpus: 1,
            since_ms: now_ms.saturating_sub(l.cand.age_ms),
            migratable: l.cand.migratable && !blocked(&l.who) && (is_busy(&l.cand) || short(l.node)),
        })
        .collect()
}

/// A move ordered whose effect the nodes' reports may not show yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Who moves ([`Who::key`]): not planned again until its new place shows.
    pub key: String,
    pub from: String,
    pub to: String,
    pub mib: u64,
    /// Its pid on the source, and on the target once the move is done.
    pub src_pid: u32,
    pub new_pid: Option<u32>,
    /// When it finished (placer clock); `None` while it runs.
    pub done_ms: Option<u64>,
}

/// Make `snapshot` show the moves in `pending` that its reports do not show yet (a move
/// runs longer than an interval, and the nodes report on their own clocks): without this
/// the next round would see the source as loaded as before and send more processes to
/// the same idle node. `counts(p)` says whether the source's report still counts the
/// process and whether the target's does already; only what a report lacks is added (a
/// process in transit is counted by neither, a body that arrived by its target). A move
/// leaves `pending` once the target counts it and the source no longer does, or
/// `expire_ms` after it finished (the process may have ended meanwhile).
pub fn account_pending(snapshot: &mut crate::policy::Snapshot, pending: &mut Vec<Pending>, counts: impl Fn(&Pending) -> (bool, bool), expire_ms: u64) {
    let idx = |s: &crate::policy::Snapshot, n: &str| s.nodes.iter().position(|x| x.name == n);
    let now = snapshot.now_ms;
    pending.retain(|p| {
        let (Some(f), Some(t)) = (idx(snapshot, &p.from), idx(snapshot, &p.to)) else { return false };
        let (at_src, at_dst) = counts(p);
        if p.done_ms.is_some_and(|d| (at_dst && !at_src) || now.saturating_sub(d) > expire_ms) {
            return false;
        }
        let n = &mut snapshot.nodes;
        if at_src {
            n[f].run_queue = n[f].run_queue.saturating_sub(1);
        }
        // its memory stays in use at the source until the old process is gone (after the
        // move), whether the source still lists it or not
        if at_src || p.done_ms.is_none() {
            n[f].free_mem_mib = n[f].free_mem_mib.saturating_add(p.mib);
        }
        if !at_dst {
            n[t].run_queue = n[t].run_queue.saturating_add(1);
            n[t].free_mem_mib = n[t].free_mem_mib.saturating_sub(p.mib);
        }
        true
    });
}

/// [`account_pending`]'s `counts` from the reports' candidates: the source still lists
/// the process's pid there (and counts it as running), the target lists its new pid.
pub fn counted_in(reports: &[LoadReport], p: &Pending) -> (bool, bool) {
    let has = |node: &str, pid: u32| reports.iter().any(|r| r.node == node && r.candidates.iter().any(|c| c.pid == pid && (c.runnable || c.cpu_permille >= 20)));
    (has(&p.from, p.src_pid), p.new_pid.is_some_and(|n| has(&p.to, n)))
}

/// What moving memory costs, learnt from the migrations done: their bytes and time.
#[derive(Debug, Clone)]
pub struct CostModel {
    /// Measured migration speed, MiB/s (exponentially weighted).
    pub mib_per_s: f64,
    /// Load units a second of migration costs (a process frozen that long).
    pub load_per_s: f64,
    /// Migrations measured.
    pub samples: u32,
}

impl Default for CostModel {
    fn default() -> Self {
        // before any measurement: `mos migrate` of 2 GiB took 12 s here (DESIGN.md §11)
        CostModel { mib_per_s: 170.0, load_per_s: 0.25, samples: 0 }
    }
}

impl CostModel {
    /// One migration of `mib` MiB that took `secs` seconds.
    pub fn observe(&mut self, mib: u64, secs: f64) {
        if secs <= 0.0 || !secs.is_finite() {
            return;
        }
        // a small process's time is mostly fixed cost: count at least 1 MiB
        let speed = (mib.max(1) as f64) / secs;
        self.mib_per_s = if self.samples == 0 { speed } else { 0.7 * self.mib_per_s + 0.3 * speed };
        self.samples += 1;
    }

    /// `params` with the cost per GiB set from the measured speed.
    pub fn apply(&self, params: &BalanceParams) -> BalanceParams {
        let secs_per_gib = 1024.0 / self.mib_per_s.max(1.0);
        BalanceParams { gain_per_gib: self.load_per_s * secs_per_gib, ..params.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(pid: u32, home: &str, home_pid: u32) -> Candidate {
        Candidate {
            pid,
            home: home.into(),
            home_pid,
            job: None,
            cmd: "crunch".into(),
            cpu_permille: 900,
            rss_mib: 2,
            age_ms: 5000,
            runnable: true,
            migratable: true,
            why_not: String::new(),
        }
    }

    fn report(node: &str, addr: &str, candidates: Vec<Candidate>, away: Vec<(u32, String, u32)>) -> LoadReport {
        LoadReport {
            node: node.into(),
            addr: addr.into(),
            cpus: 1,
            speed: 1000,
            run_queue: candidates.len() as u32,
            guests: 0,
            free_mem_mib: 1000,
            total_mem_mib: 2000,
            interval_ms: 100,
            guest_list: vec![],
            candidates,
            away,
        }
    }

    #[test]
    fn a_body_is_known_by_its_home_and_home_pid() {
        let reports = vec![
            report("n1", "a1", vec![cand(10, "n1", 10)], vec![(11, "a2".into(), 77)]),
            // a body on n2 (pid 77 there) and one whose home has not reported it yet
            report("n2", "a2", vec![cand(77, "", 0), cand(78, "", 0)], vec![]),
        ];
        let l = locate(&reports);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[0].who, Who::Process { home: "n1".into(), home_pid: 10, pid: 10 });
        assert_eq!(l[1].who, Who::Process { home: "n1".into(), home_pid: 11, pid: 77 });
        assert_eq!((l[1].node, l[1].cand.home.as_str(), l[1].cand.home_pid), (1, "n1", 11));
    }

    #[test]
    fn idle_blocked_and_refused_processes_are_not_moved_for_load() {
        let mut idle = cand(2, "n1", 2);
        idle.runnable = false;
        idle.cpu_permille = 10;
        let mut refused = cand(3, "n1", 3);
        refused.migratable = false;
        let reports = vec![report("n1", "a1", vec![cand(1, "n1", 1), idle, refused, cand(4, "n1", 4)], vec![])];
        let l = locate(&reports);
        let jobs = running_jobs(&l, 10_000, |w| matches!(w, Who::Process { home_pid: 4, .. }), |_| false);
        assert_eq!(jobs.iter().map(|j| j.migratable).collect::<Vec<_>>(), vec![true, false, false, false]);
        assert_eq!(jobs[0].since_ms, 5000);
        // a node short of memory may send the idle one away too
        let jobs = running_jobs(&l, 10_000, |_| false, |_| true);
        assert!(jobs[1].migratable);
    }

    #[test]
    fn moves_under_way_count_until_the_reports_show_them() {
        use crate::policy::{NodeInfo, Snapshot};
        let node = |name: &str, rq: u32| NodeInfo { name: name.into(), cpus: 1, speed: 1.0, run_queue: rq, guests: 0, free_mem_mib: 1000, last_report_ms: 0, up: true };
        let snap = || Snapshot { nodes: vec![node("a", 8), node("b", 0)], now_ms: 1000 };
        let mv = |key: &str, done: Option<u64>| Pending { key: key.into(), from: "a".into(), to: "b".into(), mib: 100, src_pid: 1, new_pid: done.map(|_| 2), done_ms: done };
        // still counted at the source, not yet at the target: both adjusted
        let mut pending = vec![mv("n:1", None)];
        let mut s = snap();
        account_pending(&mut s, &mut pending, |_| (true, false), 5000);
        assert_eq!((s.nodes[0].run_queue, s.nodes[1].run_queue, s.nodes[1].free_mem_mib), (7, 1, 900));
        // in transit (the source's report no longer counts it): only the target gains a
        // process; the source's memory is still the process's until the move is done
        let mut s = snap();
        account_pending(&mut s, &mut pending, |_| (false, false), 5000);
        assert_eq!((s.nodes[0].run_queue, s.nodes[1].run_queue, s.nodes[0].free_mem_mib), (8, 1, 1100));
        // arrived, and the target already counts it: nothing to add, but kept while running
        let mut s = snap();
        account_pending(&mut s, &mut pending, |_| (false, true), 5000);
        assert_eq!((s.nodes[0].run_queue, s.nodes[1].run_queue, pending.len()), (8, 0, 1));
        // done and shown where it went: dropped
        let mut pending = vec![mv("n:1", Some(900))];
        account_pending(&mut snap(), &mut pending, |_| (false, true), 5000);
        assert!(pending.is_empty());
        // done long ago and never shown (it ended): dropped too
        let mut pending = vec![mv("n:1", Some(10))];
        let mut s = Snapshot { now_ms: 9000, ..snap() };
        account_pending(&mut s, &mut pending, |_| (false, false), 5000);
        assert!(pending.is_empty());
        // a node that left: its moves are forgotten
        let mut pending = vec![mv("n:1", None)];
        let mut s = Snapshot { nodes: vec![node("a", 8)], now_ms: 0 };
        account_pending(&mut s, &mut pending, |_| (true, false), 5000);
        assert!(pending.is_empty());
    }

    #[test]
    fn the_cost_follows_the_measured_speed() {
        let mut m = CostModel::default();
        let p = BalanceParams::default();
        let before = m.apply(&p).gain_per_gib;
        m.observe(1024, 1.0);
        assert_eq!(m.mib_per_s, 1024.0);
        assert!((m.apply(&p).gain_per_gib - 0.25).abs() < 1e-9);
        assert!(before > m.apply(&p).gain_per_gib);
        m.observe(1024, 4.0);
        assert!(m.mib_per_s < 1024.0 && m.mib_per_s > 256.0);
        m.observe(5, 0.0);
        assert_eq!(m.samples, 2);
    }
}
