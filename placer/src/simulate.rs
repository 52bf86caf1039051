//! A time-stepped model of a cluster driven by the real policy functions.
//!
//! N nodes (random cpus, speed, memory) and M jobs queued at t = 0 (random memory and cpu
//! work). Every step each live node reports; the placer marks silent nodes down and requeues
//! their jobs, places queued jobs with [`PlacementIndex`] (optionally cross-checked against
//! [`place_job`]) and, every balancing interval, runs [`plan_migrations`]. Nodes also carry
//! background (non-mos) processes and memory that change at random, which is what makes
//! balancing and memory ushering matter.
//!
//! Execution model: each runnable process on a node gets `speed * min(1, cpus / runnable)`
//! reference-cpu seconds per second; a node whose memory is overcommitted (background plus
//! jobs above its RAM) thrashes and its jobs progress at 1/10 speed. A migrating job pauses
//! for `migration_ms_per_gib` per GiB of its memory. A job on a node that dies loses its
//! progress and is requeued when the placer notices (no checkpoints in this model).
//!
//! Deterministic: the same [`SimConfig`] gives the same [`SimReport`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::id::JobId;
use crate::policy::{
    mark_down, place_job, placement_score, plan_migrations, BalanceParams, JobReq, MigrationReason,
    NodeInfo, PlacementIndex, RunningJob, Snapshot,
};

/// SplitMix64: small, fast, reproducible; good enough for workloads and tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n == 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Log-uniform in [lo, hi] (lo > 0): as many small values as large ones per decade.
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub nodes: usize,
    pub jobs: usize,
    pub seed: u64,
    pub step_ms: u64,
    pub balance_every_ms: u64,
    /// `None` = no balancer (no ushering either).
    pub balance: Option<BalanceParams>,
    /// Jobs start only where their placement score would be at most this (1.0 = no more
    /// runnable processes than reference cpus); `f64::INFINITY` = start everything at once.
    pub admit_score: f64,
    pub migration_ms_per_gib: u64,
    pub report_timeout_ms: u64,
    /// (node, time): the node dies then and never comes back.
    pub failures: Vec<(usize, u64)>,
    /// Background load changes on a node about this often (0 = never).
    pub background_every_ms: u64,
    pub max_time_ms: u64,
    /// Compare every index decision with `place_job` (slow for big clusters).
    pub cross_check: bool,
}

impl SimConfig {
    pub fn new(nodes: usize, jobs: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            jobs,
            seed,
            step_ms: 1_000,
            balance_every_ms: 10_000,
            balance: Some(BalanceParams::default()),
            admit_score: 1.0,
            migration_ms_per_gib: 1_000,
            report_timeout_ms: 5_000,
            failures: Vec::new(),
            background_every_ms: 60_000,
            max_time_ms: 30 * 24 * 3600 * 1000,
            cross_check: false,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub finished_jobs: usize,
    /// Jobs bigger (memory or cpus) than every node: never placed.
    pub unplaceable_jobs: usize,
    /// Time of the last completion.
    pub makespan_ms: u64,
    /// Mean queue-to-completion time of finished jobs.
    pub mean_turnaround_ms: f64,
    pub placements: usize,
    pub balance_migrations: usize,
    pub ushering_migrations: usize,
    pub nodes_marked_down: usize,
    /// Jobs lost with a dead node and queued again.
    pub requeued_jobs: usize,
    /// Sum over steps of nodes whose memory was overcommitted, times the step (node-ms).
    pub thrashing_node_ms: u64,
    /// Index decisions that differed from `place_job` (only counted with `cross_check`).
    pub index_mismatches: usize,
    pub steps: u64,
    /// The run hit `max_time_ms` with jobs unfinished.
    pub timed_out: bool,
}

#[derive(Debug, Clone)]
struct SimNode {
    cpus: u32,
    speed: f64,
    total_mem_mib: u64,
    bg_run_queue: u32,
    bg_mem_mib: u64,
    alive: bool,
    jobs: Vec<usize>,
}

impl SimNode {
    fn job_mem(&self, jobs: &[SimJob]) -> u64 {
        self.jobs.iter().map(|&j| jobs[j].mem_mib).sum()
    }
    fn free_mem(&self, jobs: &[SimJob]) -> i64 {
        self.total_mem_mib as i64 - self.bg_mem_mib as i64 - self.job_mem(jobs) as i64
    }
}

#[derive(Debug, Clone)]
struct SimJob {
    mem_mib: u64,
    cpus: u32,
    /// Remaining work in reference-cpu milliseconds.
    work_left: f64,
    work_total: f64,
    node: Option<usize>,
    since_ms: u64,
    paused_until_ms: u64,
    done_ms: Option<u64>,
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    nodes: Vec<SimNode>,
    jobs: Vec<SimJob>,
    queue: VecDeque<usize>,
    snapshot: Snapshot,
    index: PlacementIndex,
    report: SimReport,
    now: u64,
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    sim.report
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let nodes: Vec<SimNode> = (0..cfg.nodes)
            .map(|_| SimNode {
                cpus: rng.pick(&[1, 2, 4, 8]),
                speed: rng.range(0.5, 2.0),
                total_mem_mib: rng.pick(&[4u64, 8, 16, 32, 64]) * 1024,
                bg_run_queue: 0,
                bg_mem_mib: 0,
                alive: true,
                jobs: Vec::new(),
            })
            .collect();
        let jobs: Vec<SimJob> = (0..cfg.jobs)
            .map(|_| {
                let work = rng.log_range(10_000.0, 3_600_000.0);
                SimJob {
                    mem_mib: rng.log_range(64.0, 8192.0) as u64,
                    cpus: if rng.chance(0.1) { 2 } else { 1 },
                    work_left: work,
                    work_total: work,
                    node: None,
                    since_ms: 0,
                    paused_until_ms: 0,
                    done_ms: None,
                }
            })
            .collect();
        let snapshot = Snapshot {
            nodes: (0..nodes.len())
                .map(|i| NodeInfo {
                    name: format!("node{i:05}"),
                    cpus: nodes[i].cpus,
                    speed: nodes[i].speed,
                    run_queue: 0,
                    guests: 0,
                    free_mem_mib: nodes[i].total_mem_mib,
                    last_report_ms: 0,
                    up: true,
                })
                .collect(),
            now_ms: 0,
        };
        let index = PlacementIndex::build(&snapshot.nodes);
        let report = SimReport {
            finished_jobs: 0,
            unplaceable_jobs: 0,
            makespan_ms: 0,
            mean_turnaround_ms: 0.0,
            placements: 0,
            balance_migrations: 0,
            ushering_migrations: 0,
            nodes_marked_down: 0,
            requeued_jobs: 0,
            thrashing_node_ms: 0,
            index_mismatches: 0,
            steps: 0,
            timed_out: false,
        };
        let max_mem = nodes.iter().map(|n| n.total_mem_mib).max().unwrap_or(0);
        let max_cpus = nodes.iter().map(|n| n.cpus).max().unwrap_or(0);
        let mut sim = Sim {
            queue: VecDeque::new(),
            cfg,
            rng,
            nodes,
            jobs,
            snapshot,
            index,
            report,
            now: 0,
        };
        for j in 0..sim.jobs.len() {
            if sim.jobs[j].mem_mib > max_mem || sim.jobs[j].cpus > max_cpus {
                sim.report.unplaceable_jobs += 1;
            } else {
                sim.queue.push_back(j);
            }
        }
        sim
    }

    fn all_done(&self) -> bool {
        self.report.finished_jobs + self.report.unplaceable_jobs == self.jobs.len()
    }

    fn run(&mut self) {
        let mut next_balance = self.cfg.balance_every_ms;
        while !self.all_done() {
            if self.now >= self.cfg.max_time_ms {
                self.report.timed_out = true;
                break;
            }
            self.now += self.cfg.step_ms;
            self.report.steps += 1;
            self.fail_nodes();
            self.change_background();
            self.progress_jobs();
            self.collect_reports();
            self.detect_dead_nodes();
            self.place_queued();
            if self.now >= next_balance {
                next_balance += self.cfg.balance_every_ms;
                self.balance();
            }
        }
        let finished: Vec<&SimJob> = self.jobs.iter().filter(|j| j.done_ms.is_some()).collect();
        if !finished.is_empty() {
            let total: f64 = finished.iter().map(|j| j.done_ms.unwrap_or(0) as f64).sum();
            self.report.mean_turnaround_ms = total / finished.len() as f64;
        }
    }

    fn fail_nodes(&mut self) {
        for &(n, at) in &self.cfg.failures {
            if n < self.nodes.len() && at <= self.now {
                self.nodes[n].alive = false;
            }
        }
    }

    fn change_background(&mut self) {
        if self.cfg.background_every_ms == 0 {
            return;
        }
        let p = self.cfg.step_ms as f64 / self.cfg.background_every_ms as f64;
        for n in &mut self.nodes {
            if self.rng.chance(p) {
                n.bg_run_queue = self.rng.below(u64::from(n.cpus) * 2 + 1) as u32;
                // Mostly light, sometimes a memory hog (up to 60% of RAM).
                let frac = if self.rng.chance(0.2) {
                    self.rng.range(0.3, 0.6)
                } else {
                    self.rng.range(0.0, 0.1)
                };
                n.bg_mem_mib = (n.total_mem_mib as f64 * frac) as u64;
            }
        }
    }

    fn progress_jobs(&mut self) {
        let dt = self.cfg.step_ms as f64;
        for ni in 0..self.nodes.len() {
            let node = &self.nodes[ni];
            if !node.alive || node.jobs.is_empty() {
                continue;
            }
            let thrashing = node.free_mem(&self.jobs) < 0;
            if thrashing {
                self.report.thrashing_node_ms += self.cfg.step_ms;
            }
            let active: Vec<usize> = node
                .jobs
                .iter()
                .copied()
                .filter(|&j| self.jobs[j].paused_until_ms <= self.now)
                .collect();
            let runnable = active.len() as f64 + f64::from(node.bg_run_queue);
            let share = (f64::from(node.cpus) / runnable.max(1.0)).min(1.0);
            let rate = node.speed * share * if thrashing { 0.1 } else { 1.0 };
            for j in active {
                self.jobs[j].work_left -= dt * rate;
            }
            let now = self.now;
            let (done, still): (Vec<usize>, Vec<usize>) = self.nodes[ni]
                .jobs
                .iter()
                .partition(|&&j| self.jobs[j].work_left <= 0.0);
            self.nodes[ni].jobs = still;
            for j in done {
                self.jobs[j].done_ms = Some(now);
                self.jobs[j].node = None;
                self.report.finished_jobs += 1;
                self.report.makespan_ms = now;
            }
        }
    }

    fn refresh_row(&mut self, ni: usize) {
        let n = &self.nodes[ni];
        let row = &mut self.snapshot.nodes[ni];
        let run_queue = n.bg_run_queue + n.jobs.len() as u32;
        let free = n.free_mem(&self.jobs).max(0) as u64;
        let changed = row.run_queue != run_queue || row.free_mem_mib != free || !row.up;
        row.run_queue = run_queue;
        row.guests = n.jobs.len() as u32;
        row.free_mem_mib = free;
        row.last_report_ms = self.now;
        row.up = true;
        if changed {
            self.index.update(ni, row);
        }
    }

    fn collect_reports(&mut self) {
        self.snapshot.now_ms = self.now;
        for ni in 0..self.nodes.len() {
            if self.nodes[ni].alive {
                self.refresh_row(ni);
            }
        }
    }

    fn detect_dead_nodes(&mut self) {
        for ni in mark_down(&mut self.snapshot, self.now, self.cfg.report_timeout_ms) {
            self.report.nodes_marked_down += 1;
            self.index.update(ni, &self.snapshot.nodes[ni]);
            let lost = std::mem::take(&mut self.nodes[ni].jobs);
            for &j in lost.iter().rev() {
                let job = &mut self.jobs[j];
                job.node = None;
                job.work_left = job.work_total;
                self.queue.push_front(j);
                self.report.requeued_jobs += 1;
            }
        }
    }

    fn start(&mut self, j: usize, ni: usize) {
        self.nodes[ni].jobs.push(j);
        let job = &mut self.jobs[j];
        job.node = Some(ni);
        job.since_ms = self.now;
        let row = &mut self.snapshot.nodes[ni];
        row.run_queue += 1;
        row.guests += 1;
        row.free_mem_mib = row.free_mem_mib.saturating_sub(job.mem_mib);
        self.index.update(ni, row);
    }

    fn place_queued(&mut self) {
        const ANY: JobReq = JobReq {
            mem_mib: 0,
            cpus: 1,
        };
        let admit = self.cfg.admit_score;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(j) = self.queue.pop_front() {
            // No job can score better than the best node overall: once that one is full
            // enough, the rest of the queue waits for the next step.
            let best_any = self.index.place(&ANY);
            if best_any.is_none_or(|b| placement_score(&self.snapshot.nodes[b]) > admit) {
                kept.push_back(j);
                kept.extend(self.queue.drain(..));
                break;
            }
            let req = JobReq {
                mem_mib: self.jobs[j].mem_mib,
                cpus: self.jobs[j].cpus,
            };
            let choice = self.index.place(&req);
            if self.cfg.cross_check && choice != place_job(&self.snapshot, &req) {
                self.report.index_mismatches += 1;
            }
            match choice {
                Some(ni) if placement_score(&self.snapshot.nodes[ni]) <= admit => {
                    self.start(j, ni);
                    self.report.placements += 1;
                }
                _ => kept.push_back(j),
            }
        }
        self.queue = kept;
    }

    fn balance(&mut self) {
        let Some(params) = self.cfg.balance.clone() else {
            return;
        };
        let running: Vec<RunningJob> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(ni, n)| n.jobs.iter().map(move |&j| (ni, j)))
            .map(|(ni, j)| RunningJob {
                id: JobId::new(j as u64, 0),
                node: ni,
                mem_mib: self.jobs[j].mem_mib,
                cpus: self.jobs[j].cpus,
                since_ms: self.jobs[j].since_ms,
                migratable: self.jobs[j].paused_until_ms <= self.now,
            })
            .collect();
        for m in plan_migrations(&self.snapshot, &running, &params) {
            let j = m.job.cluster as usize;
            self.nodes[m.from].jobs.retain(|&x| x != j);
            self.nodes[m.to].jobs.push(j);
            let job = &mut self.jobs[j];
            job.node = Some(m.to);
            job.since_ms = self.now;
            job.paused_until_ms = self.now + job.mem_mib * self.cfg.migration_ms_per_gib / 1024;
            let mem = job.mem_mib;
            let from = &mut self.snapshot.nodes[m.from];
            from.run_queue = from.run_queue.saturating_sub(1);
            from.free_mem_mib += mem;
            self.index.update(m.from, &self.snapshot.nodes[m.from]);
            let to = &mut self.snapshot.nodes[m.to];
            to.run_queue += 1;
            to.free_mem_mib = to.free_mem_mib.saturating_sub(mem);
            self.index.update(m.to, &self.snapshot.nodes[m.to]);
            match m.reason {
                MigrationReason::LoadBalance { .. } => self.report.balance_migrations += 1,
                MigrationReason::MemoryUshering { .. } => self.report.ushering_migrations += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SimConfig {
        SimConfig {
            cross_check: true,
            ..SimConfig::new(12, 120, seed)
        }
    }

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        for _ in 0..1000 {
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(10) < 10);
            let l = a.log_range(64.0, 8192.0);
            assert!((64.0..=8192.0 * 1.000_001).contains(&l));
        }
        assert_eq!(a.below(0), 0);
        let mut v: Vec<u32> = (0..50).collect();
        a.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn every_job_finishes_and_the_index_agrees_with_place_job() {
        let r = run(&small(1));
        assert!(!r.timed_out);
        assert_eq!(r.finished_jobs + r.unplaceable_jobs, 120);
        assert_eq!(r.index_mismatches, 0);
        assert!(r.placements >= r.finished_jobs);
        assert!(r.makespan_ms > 0 && r.mean_turnaround_ms > 0.0);
    }

    #[test]
    fn same_config_same_report() {
        assert_eq!(run(&small(5)), run(&small(5)));
        assert_ne!(run(&small(5)), run(&small(6)));
    }

    #[test]
    fn jobs_bigger_than_every_node_are_unplaceable() {
        let mut sim = Sim::new(small(2));
        let max = sim.nodes.iter().map(|n| n.total_mem_mib).max().unwrap();
        sim.jobs[0].mem_mib = max + 1;
        sim.queue.retain(|&j| j != 0);
        sim.report.unplaceable_jobs = sim.jobs.iter().filter(|j| j.mem_mib > max).count();
        sim.run();
        assert!(sim.report.unplaceable_jobs >= 1);
        assert_eq!(sim.jobs[0].done_ms, None);
        assert!(!sim.report.timed_out);
    }

    #[test]
    fn dead_nodes_are_detected_and_their_jobs_rerun() {
        let cfg = SimConfig {
            failures: vec![(0, 30_000), (3, 90_000)],
            ..small(3)
        };
        let r = run(&cfg);
        assert_eq!(r.nodes_marked_down, 2);
        assert!(r.requeued_jobs > 0, "{r:?}");
        assert!(!r.timed_out);
        assert_eq!(r.finished_jobs + r.unplaceable_jobs, 120);
        assert_eq!(r.index_mismatches, 0);
    }

    #[test]
    fn nothing_runs_on_a_dead_cluster() {
        let cfg = SimConfig {
            failures: (0..4).map(|n| (n, 0)).collect(),
            max_time_ms: 600_000,
            ..SimConfig::new(4, 10, 9)
        };
        let r = run(&cfg);
        assert!(r.timed_out);
        assert_eq!(r.finished_jobs, 0);
        assert_eq!(r.nodes_marked_down, 4);
    }

    #[test]
    fn balancer_and_ushering_act_and_help() {
        // Background hogs make nodes short of memory and unevenly loaded; the balancer
        // must move jobs and cut both thrashing and turnaround against no balancer.
        let with = SimConfig {
            balance: Some(BalanceParams {
                min_age_ms: 10_000,
                ..BalanceParams::default()
            }),
            background_every_ms: 120_000,
            ..SimConfig::new(24, 400, 11)
        };
        let without = SimConfig {
            balance: None,
            ..with.clone()
        };
        let (a, b) = (run(&with), run(&without));
        assert!(
            a.balance_migrations > 0 && a.ushering_migrations > 0,
            "{a:?}"
        );
        assert_eq!((b.balance_migrations, b.ushering_migrations), (0, 0));
        assert!(
            a.thrashing_node_ms < b.thrashing_node_ms,
            "with {a:?}\nwithout {b:?}"
        );
        assert!(
            a.mean_turnaround_ms < b.mean_turnaround_ms,
            "with {a:?}\nwithout {b:?}"
        );
    }
}
