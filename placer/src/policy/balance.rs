//! The balancer: which running jobs should move, decided once per balancing interval.
//!
//! Two rules, in this order (the first prevails, as in MOSIX):
//!
//! 1. **Memory ushering.** A usable node whose free memory is below `mem_reserve_mib` is
//!    short by the difference (its *deficit*). It sends away its smallest migratable job
//!    whose memory covers the deficit (if none does, its largest job, and repeats) to the
//!    usable node with the most free memory, provided that node stays at or above the
//!    reserve after receiving it. Job age does not matter here: a node about to swap or hit
//!    the OOM killer cannot wait.
//! 2. **Load balancing.** A job moves from node S to node D when
//!    `load(S) - (run_queue(D) + 1) / capacity(D) > min_gain + gain_per_gib * mem_gib(job)`,
//!    i.e. the job would see a load at D lower than it sees at S by more than the cost of
//!    moving it (hysteresis: a job that just moved can never qualify to move straight back,
//!    since the reverse move has negative gain). Only jobs that have been on their node for
//!    at least `min_age_ms` move. Sources are tried from the most loaded node down; from a
//!    source the smallest eligible job goes first (cheapest to move); the destination is the
//!    node with the lowest load after the move among those with memory to spare (the
//!    receiving node must stay at or above the reserve, so balancing never triggers
//!    ushering).
//!
//! A negative `min_gain` or `gain_per_gib` counts as 0.
//!
//! At most `max_migrations` moves are planned per call, ushering first. Each plan step
//! updates a private copy of run queues and free memory, so later steps see earlier moves.
//! A job moves at most once per plan. Ties are broken by name (nodes) and id (jobs), so the
//! plan is a function of the snapshot and the job set, not of their order.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::{normalized, NodeInfo, Snapshot};
use crate::id::JobId;

/// A job running on a node, as the balancer needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningJob {
    pub id: JobId,
    /// Index into `snapshot.nodes`.
    pub node: usize,
    /// Memory the job occupies (resident size, or its request if larger).
    pub mem_mib: u64,
    pub cpus: u32,
    /// When the job started on its current node (placer clock, ms).
    pub since_ms: u64,
    /// False for processes that cannot move safely (DESIGN.md §4).
    pub migratable: bool,
}

/// Balancer knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceParams {
    /// Load difference a move must beat, in runnable processes per reference cpu.
    pub min_gain: f64,
    /// Extra gain required per GiB of the job's memory (bigger images cost more to move).
    pub gain_per_gib: f64,
    /// A job must have been on its node this long before load balancing moves it.
    pub min_age_ms: u64,
    /// Cap on moves per call (per balancing interval).
    pub max_migrations: usize,
    /// Free memory below this makes a node short (ushering); receivers must keep it.
    pub mem_reserve_mib: u64,
}

impl Default for BalanceParams {
    fn default() -> Self {
        BalanceParams {
            min_gain: 0.5,
            gain_per_gib: 0.1,
            min_age_ms: 30_000,
            max_migrations: 4,
            mem_reserve_mib: 256,
        }
    }
}

/// Why a move was planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MigrationReason {
    /// The source was `deficit_mib` below the memory reserve.
    MemoryUshering { deficit_mib: u64 },
    /// The job sees `gain` less normalized load at the destination.
    LoadBalance { gain: f64 },
}

/// One planned move; `from`/`to` index `snapshot.nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub job: JobId,
    pub from: usize,
    pub to: usize,
    pub reason: MigrationReason,
}

/// The balancer's private, updated view of one node.
#[derive(Debug, Clone, Copy)]
struct Work {
    run_queue: u32,
    free_mem_mib: u64,
    capacity: f64,
    usable: bool,
    cpus: u32,
}

impl Work {
    fn load(&self) -> f64 {
        normalized(self.run_queue, self.capacity)
    }
    fn load_with_one_more(&self) -> f64 {
        normalized(self.run_queue.saturating_add(1), self.capacity)
    }
}

/// Plans this interval's migrations. Pure: same inputs, same plan.
pub fn plan_migrations(
    snapshot: &Snapshot,
    jobs: &[RunningJob],
    params: &BalanceParams,
) -> Vec<Migration> {
    let nodes = &snapshot.nodes;
    let mut work: Vec<Work> = nodes
        .iter()
        .map(|n| Work {
            run_queue: n.run_queue,
            free_mem_mib: n.free_mem_mib,
            capacity: n.capacity(),
            usable: n.is_usable(),
            cpus: n.cpus,
        })
        .collect();
    // Candidates: on a usable node, movable. Sorted by (node, mem, id) so input order is moot.
    let mut cand: Vec<&RunningJob> = jobs
        .iter()
        .filter(|j| j.migratable && j.node < nodes.len() && work[j.node].usable)
        .collect();
    cand.sort_by_key(|j| (j.node, j.mem_mib, j.id));
    let mut moved = vec![false; cand.len()];
    let mut plan = Vec::new();

    let rank = name_ranks(nodes);
    usher_memory(&rank, &mut work, &cand, &mut moved, params, &mut plan);
    balance_load(snapshot, &rank, &mut work, &cand, &mut moved, params, &mut plan);
    plan
}

/// Each node's place in name order (ties broken by index): computed once per plan, so
/// that the many tie-breaks of the sorts below compare numbers, not names.
fn name_ranks(nodes: &[NodeInfo]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name).then(a.cmp(&b)));
    let mut rank = vec![0; nodes.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    rank
}

fn by_name(rank: &[usize], a: usize, b: usize) -> Ordering {
    rank[a].cmp(&rank[b])
}

/// Positions in `cand` (sorted by node first) of the jobs on `node`.
fn jobs_on(cand: &[&RunningJob], node: usize) -> std::ops::Range<usize> {
    cand.partition_point(|j| j.node < node)..cand.partition_point(|j| j.node <= node)
}

fn apply_move(work: &mut [Work], job: &RunningJob, from: usize, to: usize) {
    work[from].run_queue = work[from].run_queue.saturating_sub(1);
    work[from].free_mem_mib = work[from].free_mem_mib.saturating_add(job.mem_mib);
    work[to].run_queue = work[to].run_queue.saturating_add(1);
    work[to].free_mem_mib = work[to].free_mem_mib.saturating_sub(job.mem_mib);
}

/// Whether node `to` can take `job` and keep its memory reserve.
fn can_receive(w: &Work, job: &RunningJob, reserve: u64) -> bool {
    w.usable && w.cpus >= job.cpus && w.free_mem_mib >= job.mem_mib.saturating_add(reserve)
}

fn usher_memory(
    rank: &[usize],
    work: &mut [Work],
    cand: &[&RunningJob],
    moved: &mut [bool],
    p: &BalanceParams,
    plan: &mut Vec<Migration>,
) {
    let mut short: Vec<usize> = (0..work.len())
        .filter(|&i| work[i].usable && work[i].free_mem_mib < p.mem_reserve_mib)
        .collect();
    // Worst deficit first.
    short.sort_by(|&a, &b| {
        work[a]
            .free_mem_mib
            .cmp(&work[b].free_mem_mib)
            .then(by_name(rank, a, b))
    });
    for src in short {
        while plan.len() < p.max_migrations {
            let deficit = p.mem_reserve_mib.saturating_sub(work[src].free_mem_mib);
            if deficit == 0 {
                break;
            }
            let on_src = || jobs_on(cand, src).filter(|&k| !moved[k] && cand[k].mem_mib > 0);
            // cand is sorted by mem then id within a node: the first that covers is the smallest.
            let pick = on_src().find(|&k| cand[k].mem_mib >= deficit).or_else(|| {
                on_src().max_by(|&a, &b| {
                    cand[a]
                        .mem_mib
                        .cmp(&cand[b].mem_mib)
                        .then(cand[b].id.cmp(&cand[a].id))
                })
            });
            let Some(k) = pick else { break };
            let job = cand[k];
            let target = (0..work.len())
                .filter(|&t| t != src && can_receive(&work[t], job, p.mem_reserve_mib))
                .max_by(|&a, &b| {
                    work[a]
                        .free_mem_mib
                        .cmp(&work[b].free_mem_mib)
                        .then(by_name(rank, b, a))
                });
            let Some(to) = target else { break };
            apply_move(work, job, src, to);
            moved[k] = true;
            plan.push(Migration {
                job: job.id,
                from: src,
                to,
                reason: MigrationReason::MemoryUshering {
                    deficit_mib: deficit,
                },
            });
        }
    }
}

fn balance_load(
    snapshot: &Snapshot,
    rank: &[usize],
    work: &mut [Work],
    cand: &[&RunningJob],
    moved: &mut [bool],
    p: &BalanceParams,
    plan: &mut Vec<Migration>,
) {
    // A negative threshold would let a job qualify to move straight back; treat it as 0.
    let min_gain = p.min_gain.max(0.0);
    while plan.len() < p.max_migrations {
        let usable: Vec<usize> = (0..work.len()).filter(|&i| work[i].usable).collect();
        if usable.len() < 2 {
            return;
        }
        let mut sources = usable.clone();
        sources.sort_by(|&a, &b| {
            work[b]
                .load()
                .total_cmp(&work[a].load())
                .then(by_name(rank, a, b))
        });
        let mut dests = usable;
        dests.sort_by(|&a, &b| {
            work[a]
                .load_with_one_more()
                .total_cmp(&work[b].load_with_one_more())
                .then(by_name(rank, a, b))
        });
        let mut chosen = None;
        'sources: for &src in &sources {
            let src_load = work[src].load();
            // Best possible destination for any job, ignoring memory: if even that does not
            // beat the threshold, no less loaded source can either.
            let Some(&best_any) = dests.iter().find(|&&d| d != src) else {
                break;
            };
            if src_load - work[best_any].load_with_one_more() <= min_gain {
                break;
            }
            for k in jobs_on(cand, src) {
                let job = cand[k];
                if moved[k] || snapshot.now_ms.saturating_sub(job.since_ms) < p.min_age_ms {
                    continue;
                }
                let Some(&to) = dests
                    .iter()
                    .find(|&&d| d != src && can_receive(&work[d], job, p.mem_reserve_mib))
                else {
                    continue;
                };
                let gain = src_load - work[to].load_with_one_more();
                let cost = min_gain + p.gain_per_gib.max(0.0) * (job.mem_mib as f64 / 1024.0);
                if gain > cost {
                    chosen = Some((k, src, to, gain));
                    break 'sources;
                }
            }
        }
        let Some((k, from, to, gain)) = chosen else {
            return;
        };
        apply_move(work, cand[k], from, to);
        moved[k] = true;
        plan.push(Migration {
            job: cand[k].id,
            from,
            to,
            reason: MigrationReason::LoadBalance { gain },
        });
    }
}

#[cfg(test)]
mod tests;
