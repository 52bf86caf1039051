use super::super::testutil::*;
use super::*;
use proptest::prelude::*;

const MIN: u64 = 60_000;

fn params() -> BalanceParams {
    BalanceParams {
        min_gain: 0.5,
        gain_per_gib: 0.0,
        min_age_ms: 1_000,
        max_migrations: 10,
        mem_reserve_mib: 100,
    }
}

fn job(cluster: u64, node: usize, mem_mib: u64) -> RunningJob {
    RunningJob {
        id: JobId::new(cluster, 0),
        node,
        mem_mib,
        cpus: 1,
        since_ms: 0,
        migratable: true,
    }
}

/// A snapshot at t = 1 min whose run queues count exactly the jobs given.
fn cluster(nodes: Vec<NodeInfo>, jobs: &[RunningJob]) -> Snapshot {
    let mut s = snap(nodes);
    s.now_ms = MIN;
    for n in &mut s.nodes {
        n.run_queue = 0;
    }
    for j in jobs {
        s.nodes[j.node].run_queue += 1;
    }
    s
}

fn jobs_on(n: usize, count: u64, mem: u64) -> Vec<RunningJob> {
    (0..count)
        .map(|c| job(n as u64 * 1000 + c, n, mem))
        .collect()
}

/// Applies a plan as the daemon would once the moves complete.
fn apply(s: &mut Snapshot, jobs: &mut [RunningJob], plan: &[Migration]) {
    for m in plan {
        let j = jobs.iter_mut().find(|j| j.id == m.job).unwrap();
        assert_eq!(j.node, m.from);
        s.nodes[m.from].run_queue -= 1;
        s.nodes[m.from].free_mem_mib += j.mem_mib;
        s.nodes[m.to].run_queue += 1;
        s.nodes[m.to].free_mem_mib -= j.mem_mib;
        j.node = m.to;
        j.since_ms = s.now_ms;
    }
}

fn moves(plan: &[Migration]) -> Vec<(usize, usize)> {
    plan.iter().map(|m| (m.from, m.to)).collect()
}

#[test]
fn balanced_cluster_stays_put() {
    let jobs: Vec<_> = [jobs_on(0, 2, 10), jobs_on(1, 2, 10)].concat();
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    assert!(plan_migrations(&s, &jobs, &params()).is_empty());
}

#[test]
fn moves_from_most_to_least_loaded_until_balanced() {
    let jobs = jobs_on(0, 4, 10);
    let mut s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    let plan = plan_migrations(&s, &jobs, &params());
    // 4 vs 0: gain 4-1 = 3, then 3-2 = 1, then 2-3 < 0.5: two moves.
    assert_eq!(moves(&plan), [(0, 1), (0, 1)]);
    assert!(matches!(plan[0].reason, MigrationReason::LoadBalance { gain } if gain == 3.0));
    let mut jobs = jobs;
    apply(&mut s, &mut jobs, &plan);
    s.now_ms += MIN;
    assert!(
        plan_migrations(&s, &jobs, &params()).is_empty(),
        "converged, no ping-pong"
    );
}

#[test]
fn most_loaded_source_goes_first() {
    let jobs: Vec<_> = [jobs_on(0, 3, 10), jobs_on(1, 5, 10)].concat();
    let s = cluster(
        vec![
            node("a", 1, 1.0, 0, 1000),
            node("b", 1, 1.0, 0, 1000),
            node("c", 1, 1.0, 0, 1000),
        ],
        &jobs,
    );
    let p = BalanceParams {
        max_migrations: 1,
        ..params()
    };
    assert_eq!(moves(&plan_migrations(&s, &jobs, &p)), [(1, 2)]);
}

#[test]
fn hysteresis_threshold() {
    // 2 vs 1 on equal nodes: the job would see 2 either way; never moves.
    let jobs: Vec<_> = [jobs_on(0, 2, 10), jobs_on(1, 1, 10)].concat();
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    assert!(plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            min_gain: 0.0,
            ..params()
        }
    )
    .is_empty());
    // 3 vs 1: gain 1. Beats 0.5, does not beat 1.0.
    let jobs: Vec<_> = [jobs_on(0, 3, 10), jobs_on(1, 1, 10)].concat();
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    assert_eq!(plan_migrations(&s, &jobs, &params()).len(), 1);
    assert!(plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            min_gain: 1.0,
            ..params()
        }
    )
    .is_empty());
}

#[test]
fn young_jobs_stay() {
    let mut jobs = jobs_on(0, 4, 10);
    for j in &mut jobs {
        j.since_ms = MIN - 500; // 0.5 s on the node, min age 1 s
    }
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    assert!(plan_migrations(&s, &jobs, &params()).is_empty());
    jobs[2].since_ms = 0;
    let plan = plan_migrations(&s, &jobs, &params());
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].job, jobs[2].id);
}

#[test]
fn cap_per_interval() {
    let jobs = jobs_on(0, 20, 10);
    let s = cluster(
        (0..10)
            .map(|i| node(&format!("n{i}"), 1, 1.0, 0, 1000))
            .collect(),
        &jobs,
    );
    assert_eq!(
        plan_migrations(
            &s,
            &jobs,
            &BalanceParams {
                max_migrations: 3,
                ..params()
            }
        )
        .len(),
        3
    );
    assert!(plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            max_migrations: 0,
            ..params()
        }
    )
    .is_empty());
}

#[test]
fn destination_is_speed_normalized() {
    // fast: 1 cpu at 4.0 with 2 jobs -> (2+1)/4 = 0.75; slow: 1 cpu at 1.0 idle -> 1.0.
    let jobs: Vec<_> = [jobs_on(0, 4, 10), jobs_on(1, 2, 10)].concat();
    let s = cluster(
        vec![
            node("src", 1, 1.0, 0, 1000),
            node("fast", 1, 4.0, 0, 1000),
            node("slow", 1, 1.0, 0, 1000),
        ],
        &jobs,
    );
    let plan = plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            max_migrations: 1,
            ..params()
        },
    );
    assert_eq!(moves(&plan), [(0, 1)]);
}

#[test]
fn smallest_eligible_job_moves_and_big_images_need_more_gain() {
    let jobs = vec![job(1, 0, 4096), job(2, 0, 512), job(3, 0, 2048)];
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 10_000), node("b", 1, 1.0, 0, 10_000)],
        &jobs,
    );
    let plan = plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            max_migrations: 1,
            ..params()
        },
    );
    assert_eq!(plan[0].job, JobId::new(2, 0));
    // 3 vs 0: gain 2. With 1.0/GiB the 512 MiB job needs 1.0 (moves), the others 2.5 / 4.5.
    let p = BalanceParams {
        gain_per_gib: 1.0,
        ..params()
    };
    let plan = plan_migrations(&s, &jobs, &p);
    assert_eq!(
        plan.iter().map(|m| m.job).collect::<Vec<_>>(),
        [JobId::new(2, 0)]
    );
}

#[test]
fn receiver_must_keep_its_memory_reserve() {
    // b is idle but has 150 MiB free: taking 100 MiB would leave 50 < reserve 100.
    let jobs = jobs_on(0, 4, 100);
    let mut s = cluster(
        vec![
            node("a", 1, 1.0, 0, 5000),
            node("b", 1, 1.0, 0, 150),
            node("c", 1, 1.0, 0, 5000),
        ],
        &jobs,
    );
    s.nodes[2].run_queue = 1; // c is worse than b by load, but b lacks memory
    let plan = plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            max_migrations: 1,
            ..params()
        },
    );
    assert_eq!(moves(&plan), [(0, 2)]);
}

#[test]
fn non_migratable_and_down_nodes_are_left_alone() {
    let mut jobs = jobs_on(0, 4, 10);
    for j in &mut jobs {
        j.migratable = false;
    }
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    assert!(plan_migrations(&s, &jobs, &params()).is_empty());

    let jobs = jobs_on(0, 4, 10);
    let mut s = cluster(
        vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 0, 1000)],
        &jobs,
    );
    s.nodes[1].up = false;
    assert!(
        plan_migrations(&s, &jobs, &params()).is_empty(),
        "never to a down node"
    );
    s.nodes[1].up = true;
    s.nodes[0].up = false;
    assert!(
        plan_migrations(&s, &jobs, &params()).is_empty(),
        "jobs on a down node are the restart path's business"
    );
}

#[test]
fn ushering_moves_the_smallest_job_that_frees_enough() {
    // a: 60 MiB free, reserve 100 -> short by 40. Jobs 10, 50, 300 MiB: the 50 MiB one goes.
    let jobs = vec![job(1, 0, 10), job(2, 0, 50), job(3, 0, 300)];
    let mut s = cluster(
        vec![
            node("a", 4, 1.0, 0, 60),
            node("b", 4, 1.0, 0, 2000),
            node("c", 4, 1.0, 0, 9000),
        ],
        &jobs,
    );
    for j in &mut s.nodes {
        j.run_queue = 3; // equal load: any move here is ushering
    }
    let plan = plan_migrations(&s, &jobs, &params());
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].job, JobId::new(2, 0));
    assert_eq!(
        (plan[0].from, plan[0].to),
        (0, 2),
        "to the node with most free memory"
    );
    assert_eq!(
        plan[0].reason,
        MigrationReason::MemoryUshering { deficit_mib: 40 }
    );
}

#[test]
fn ushering_ignores_age_and_takes_the_largest_when_none_covers() {
    // Short by 90; jobs of 30 and 40: move 40, then 30, then still short by 20: nothing left.
    let mut jobs = vec![job(1, 0, 30), job(2, 0, 40)];
    for j in &mut jobs {
        j.since_ms = MIN; // brand new
    }
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 10), node("b", 1, 1.0, 0, 5000)],
        &jobs,
    );
    let plan = plan_migrations(&s, &jobs, &params());
    assert_eq!(
        plan.iter().map(|m| m.job.cluster).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        plan[1].reason,
        MigrationReason::MemoryUshering { deficit_mib: 50 }
    );
}

#[test]
fn ushering_needs_a_receiver_with_room() {
    let jobs = vec![job(1, 0, 500)];
    let s = cluster(
        vec![node("a", 1, 1.0, 0, 10), node("b", 1, 1.0, 0, 550)],
        &jobs,
    );
    assert!(
        plan_migrations(&s, &jobs, &params()).is_empty(),
        "b would drop below its reserve"
    );
}

#[test]
fn ushering_comes_first_and_shares_the_cap() {
    // Node a is short of memory; node c is overloaded. Cap 1: the ushering move wins.
    let jobs: Vec<_> = [vec![job(1, 0, 200)], jobs_on(2, 6, 10)].concat();
    let s = cluster(
        vec![
            node("a", 1, 1.0, 0, 50),
            node("b", 1, 1.0, 0, 9000),
            node("c", 1, 1.0, 0, 9000),
        ],
        &jobs,
    );
    let plan = plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            max_migrations: 1,
            ..params()
        },
    );
    assert_eq!(plan.len(), 1);
    assert!(matches!(
        plan[0].reason,
        MigrationReason::MemoryUshering { .. }
    ));
    let plan = plan_migrations(
        &s,
        &jobs,
        &BalanceParams {
            max_migrations: 3,
            ..params()
        },
    );
    assert!(matches!(
        plan[0].reason,
        MigrationReason::MemoryUshering { .. }
    ));
    assert!(plan[1..]
        .iter()
        .all(|m| matches!(m.reason, MigrationReason::LoadBalance { .. })));
    assert!(plan
        .iter()
        .all(|m| m.job != JobId::new(1, 0) || m.from == 0));
}

#[test]
fn multi_cpu_jobs_only_go_where_the_cpus_are() {
    let mut jobs = jobs_on(0, 4, 10);
    for j in &mut jobs {
        j.cpus = 2;
    }
    let s = cluster(
        vec![
            node("a", 2, 1.0, 0, 1000),
            node("one-cpu", 1, 1.0, 0, 1000),
            node("two-cpu", 2, 0.5, 0, 1000),
        ],
        &jobs,
    );
    let plan = plan_migrations(&s, &jobs, &params());
    assert!(!plan.is_empty());
    assert!(plan.iter().all(|m| m.to == 2));
}

// ---- randomized invariants ----

#[derive(Debug, Clone)]
struct Case {
    snapshot: Snapshot,
    jobs: Vec<RunningJob>,
    params: BalanceParams,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let nodes = proptest::collection::vec(
        (
            1u32..5,
            prop_oneof![Just(1.0), 0.25f64..3.0],
            0u64..6000,
            proptest::bool::weighted(0.85),
        ),
        1..12,
    );
    let params = (0.0f64..2.0, 0.0f64..0.5, 0u64..5_000, 0usize..8, 0u64..600).prop_map(
        |(min_gain, gain_per_gib, min_age_ms, max_migrations, mem_reserve_mib)| BalanceParams {
            min_gain,
            gain_per_gib,
            min_age_ms,
            max_migrations,
            mem_reserve_mib,
        },
    );
    (nodes, params).prop_flat_map(|(nodes, params)| {
        let n = nodes.len();
        let jobs = proptest::collection::vec(
            (
                0..n,
                0u64..1500,
                1u32..3,
                0u64..10_000,
                proptest::bool::weighted(0.9),
            ),
            0..40,
        );
        (Just(nodes), jobs, Just(params)).prop_map(|(nodes, jobs, params)| {
            let nodes: Vec<NodeInfo> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (cpus, speed, mem, up))| {
                    let mut x = node(&format!("n{i:02}"), cpus, speed, 0, mem);
                    x.up = up;
                    x
                })
                .collect();
            let jobs: Vec<RunningJob> = jobs
                .into_iter()
                .enumerate()
                .map(
                    |(k, (node, mem_mib, cpus, since_ms, migratable))| RunningJob {
                        id: JobId::new(k as u64, 0),
                        node,
                        mem_mib,
                        cpus,
                        since_ms,
                        migratable,
                    },
                )
                .collect();
            let mut snapshot = cluster(nodes, &jobs);
            snapshot.now_ms = 10_000;
            Case {
                snapshot,
                jobs,
                params,
            }
        })
    })
}

fn names(s: &Snapshot, plan: &[Migration]) -> Vec<(JobId, String, String)> {
    plan.iter()
        .map(|m| {
            (
                m.job,
                s.nodes[m.from].name.clone(),
                s.nodes[m.to].name.clone(),
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn plans_respect_every_rule(case in arb_case()) {
        let Case { snapshot: s, jobs, params: p } = case;
        let plan = plan_migrations(&s, &jobs, &p);
        prop_assert!(plan.len() <= p.max_migrations);
        let mut free: Vec<u64> = s.nodes.iter().map(|n| n.free_mem_mib).collect();
        let mut seen = std::collections::BTreeSet::new();
        for m in &plan {
            prop_assert!(seen.insert(m.job), "a job moves at most once per plan");
            let j = jobs.iter().find(|j| j.id == m.job).unwrap();
            prop_assert!(j.migratable);
            prop_assert_eq!(j.node, m.from);
            prop_assert!(m.from != m.to);
            prop_assert!(s.nodes[m.from].is_usable());
            prop_assert!(s.nodes[m.to].is_usable(), "never onto a down node");
            prop_assert!(s.nodes[m.to].cpus >= j.cpus);
            prop_assert!(free[m.to] >= j.mem_mib + p.mem_reserve_mib, "receiver keeps its reserve");
            free[m.to] -= j.mem_mib;
            free[m.from] += j.mem_mib;
            match m.reason {
                MigrationReason::LoadBalance { gain } => {
                    prop_assert!(s.now_ms - j.since_ms >= p.min_age_ms);
                    prop_assert!(gain > p.min_gain.max(0.0));
                }
                MigrationReason::MemoryUshering { deficit_mib } => prop_assert!(deficit_mib > 0),
            }
        }
    }

    #[test]
    fn plans_do_not_depend_on_input_order(
        case in arb_case(),
        job_perm_seed in any::<u64>(),
        node_perm_seed in any::<u64>(),
    ) {
        let Case { snapshot: s, jobs, params: p } = case;
        let plan = plan_migrations(&s, &jobs, &p);
        prop_assert_eq!(&plan, &plan_migrations(&s, &jobs, &p));
        // Shuffle jobs and nodes (remapping job.node); the plan by name must not change.
        let mut jobs2 = jobs.clone();
        crate::simulate::Rng::new(job_perm_seed).shuffle(&mut jobs2);
        let mut order: Vec<usize> = (0..s.nodes.len()).collect();
        crate::simulate::Rng::new(node_perm_seed).shuffle(&mut order);
        let mut new_pos = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_pos[old] = new;
        }
        let s2 = Snapshot { nodes: order.iter().map(|&i| s.nodes[i].clone()).collect(), now_ms: s.now_ms };
        for j in &mut jobs2 {
            j.node = new_pos[j.node];
        }
        prop_assert_eq!(names(&s, &plan), names(&s2, &plan_migrations(&s2, &jobs2, &p)));
    }

    /// Repeated planning on a static cluster converges: each load move lowers
    /// sum over nodes of sum_{k=1..rq} k/capacity by more than min_gain, and ushering only
    /// ever relieves short nodes, so the balancer cannot oscillate.
    #[test]
    fn repeated_planning_converges(case in arb_case()) {
        let Case { snapshot: mut s, mut jobs, params: mut p } = case;
        p.min_gain = p.min_gain.max(0.05);
        p.max_migrations = p.max_migrations.max(1);
        let mut rounds = 0;
        loop {
            s.now_ms += p.min_age_ms + 1;
            let plan = plan_migrations(&s, &jobs, &p);
            if plan.is_empty() {
                break;
            }
            apply(&mut s, &mut jobs, &plan);
            rounds += 1;
            prop_assert!(rounds < 2_000, "balancer did not converge");
        }
    }
}
