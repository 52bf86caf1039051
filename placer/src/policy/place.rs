//! Where a new job goes: the usable node with the lowest placement score among those whose
//! free memory and cpu count fit the request.

use std::cmp::Ordering;

use super::{normalized, JobReq, NodeInfo, Snapshot};

/// `(run_queue + 1) / (cpus * speed)`: the normalized load the node would carry with the new
/// job on it. Lower is better: on an idle 4-cpu node at speed 1.0 a new job scores 0.25, on
/// a 1-cpu node already running one process it scores 2.0 (it would get half a cpu).
/// Unusable nodes score +inf.
pub fn placement_score(node: &NodeInfo) -> f64 {
    normalized(node.run_queue.saturating_add(1), node.capacity())
}

/// The total order placement uses: score, then name, then index (names are unique, so the
/// index only matters for malformed snapshots; it keeps the order total anyway).
pub(crate) fn candidate_order(a: (usize, &NodeInfo), b: (usize, &NodeInfo)) -> Ordering {
    placement_score(a.1)
        .total_cmp(&placement_score(b.1))
        .then_with(|| a.1.name.cmp(&b.1.name))
        .then_with(|| a.0.cmp(&b.0))
}

/// Index (into `snapshot.nodes`) of the node a job with `req` should start on, or `None`
/// if no up node has the memory and cpus. Ties go to the node whose name sorts first.
/// O(nodes); see [`super::PlacementIndex`] for the O(log n) version.
pub fn place_job(snapshot: &Snapshot, req: &JobReq) -> Option<usize> {
    snapshot
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.fits(req))
        .min_by(|&a, &b| candidate_order(a, b))
        .map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    const ANY: JobReq = JobReq {
        mem_mib: 0,
        cpus: 1,
    };

    fn placed_name(s: &Snapshot, req: &JobReq) -> Option<String> {
        place_job(s, req).map(|i| s.nodes[i].name.clone())
    }

    #[test]
    fn picks_the_lowest_normalized_run_queue() {
        let s = snap(vec![
            node("a", 1, 1.0, 3, 1000),
            node("b", 1, 1.0, 1, 1000),
            node("c", 1, 1.0, 2, 1000),
        ]);
        assert_eq!(placed_name(&s, &ANY).as_deref(), Some("b"));
    }

    #[test]
    fn normalizes_by_cpus_and_speed() {
        // a: (3+1)/(4*1.0) = 1.0; b: (0+1)/(1*2.0) = 0.5; c: (1+1)/(8*0.2) = 1.25
        let s = snap(vec![
            node("a", 4, 1.0, 3, 1000),
            node("b", 1, 2.0, 0, 1000),
            node("c", 8, 0.2, 1, 1000),
        ]);
        assert_eq!(placement_score(&s.nodes[0]), 1.0);
        assert_eq!(placement_score(&s.nodes[1]), 0.5);
        assert_eq!(placed_name(&s, &ANY).as_deref(), Some("b"));
        // A busy fast node loses to an idle slow one once it is busy enough.
        let s = snap(vec![
            node("fast", 1, 4.0, 4, 1000),
            node("slow", 1, 1.0, 0, 1000),
        ]);
        assert_eq!(placed_name(&s, &ANY).as_deref(), Some("slow"));
    }

    #[test]
    fn memory_is_a_constraint_not_a_preference() {
        let s = snap(vec![
            node("idle-small", 8, 1.0, 0, 500),
            node("busy-big", 1, 1.0, 5, 8000),
        ]);
        let req = JobReq {
            mem_mib: 501,
            cpus: 1,
        };
        assert_eq!(placed_name(&s, &req).as_deref(), Some("busy-big"));
        let exact = JobReq {
            mem_mib: 500,
            cpus: 1,
        };
        assert_eq!(
            placed_name(&s, &exact).as_deref(),
            Some("idle-small"),
            "equal memory fits"
        );
    }

    #[test]
    fn cpus_request_must_fit_the_node() {
        let s = snap(vec![
            node("one", 1, 1.0, 0, 1000),
            node("four", 4, 1.0, 12, 1000),
        ]);
        assert_eq!(
            placed_name(
                &s,
                &JobReq {
                    mem_mib: 0,
                    cpus: 2
                }
            )
            .as_deref(),
            Some("four")
        );
        assert_eq!(
            placed_name(
                &s,
                &JobReq {
                    mem_mib: 0,
                    cpus: 5
                }
            ),
            None
        );
    }

    #[test]
    fn down_and_nonsense_nodes_are_never_chosen() {
        let mut down = node("down", 64, 4.0, 0, 1 << 20);
        down.up = false;
        let zero = node("zero-cpus", 0, 1.0, 0, 1 << 20);
        let nan = node("nan-speed", 8, f64::NAN, 0, 1 << 20);
        let s = snap(vec![
            down.clone(),
            zero.clone(),
            nan.clone(),
            node("ok", 1, 1.0, 9, 10),
        ]);
        assert_eq!(placed_name(&s, &ANY).as_deref(), Some("ok"));
        let s = snap(vec![down, zero, nan]);
        assert_eq!(place_job(&s, &ANY), None);
    }

    #[test]
    fn ties_go_to_the_first_name_whatever_the_order() {
        let a = node("alpha", 2, 1.0, 1, 100);
        let b = node("bravo", 1, 2.0, 1, 100); // same score: 2/2
        assert_eq!(
            placed_name(&snap(vec![a.clone(), b.clone()]), &ANY).as_deref(),
            Some("alpha")
        );
        assert_eq!(
            placed_name(&snap(vec![b, a]), &ANY).as_deref(),
            Some("alpha")
        );
    }

    #[test]
    fn empty_cluster_places_nothing() {
        assert_eq!(place_job(&Snapshot::default(), &ANY), None);
    }

    fn arb_node(i: usize) -> impl Strategy<Value = NodeInfo> {
        (
            0u32..6,
            prop_oneof![Just(0.0), Just(f64::NAN), Just(1.0), 0.1f64..4.0],
            0u32..12,
            0u64..4000,
            proptest::bool::weighted(0.8),
        )
            .prop_map(move |(cpus, speed, rq, mem, up)| {
                let mut n = node(&format!("n{i:03}"), cpus, speed, rq, mem);
                n.up = up;
                n
            })
    }

    pub(crate) fn arb_nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
        (0usize..40).prop_flat_map(|len| (0..len).map(arb_node).collect::<Vec<_>>())
    }

    fn arb_req() -> impl Strategy<Value = JobReq> {
        (0u64..4500, 1u32..5).prop_map(|(mem_mib, cpus)| JobReq { mem_mib, cpus })
    }

    proptest! {
        #[test]
        fn never_places_where_the_job_cannot_run(nodes in arb_nodes(), req in arb_req()) {
            let s = snap(nodes);
            match place_job(&s, &req) {
                Some(i) => {
                    let n = &s.nodes[i];
                    prop_assert!(n.up && n.capacity() > 0.0);
                    prop_assert!(n.free_mem_mib >= req.mem_mib && n.cpus >= req.cpus);
                }
                None => prop_assert!(s.nodes.iter().all(|n| !n.fits(&req))),
            }
        }

        #[test]
        fn chosen_node_is_minimal(nodes in arb_nodes(), req in arb_req()) {
            let s = snap(nodes);
            if let Some(i) = place_job(&s, &req) {
                let best = &s.nodes[i];
                for other in s.nodes.iter().filter(|n| n.fits(&req)) {
                    let (bs, os) = (placement_score(best), placement_score(other));
                    prop_assert!(bs < os || (bs == os && best.name <= other.name));
                }
            }
        }

        #[test]
        fn decision_does_not_depend_on_node_order(
            (nodes, perm) in arb_nodes().prop_flat_map(|n| {
                let len = n.len();
                (Just(n), Just((0..len).collect::<Vec<_>>()).prop_shuffle())
            }),
            req in arb_req(),
        ) {
            let s = snap(nodes);
            let shuffled = snap(perm.iter().map(|&i| s.nodes[i].clone()).collect());
            prop_assert_eq!(placed_name(&s, &req), placed_name(&shuffled, &req));
            prop_assert_eq!(place_job(&s, &req), place_job(&s, &req));
        }
    }
}
