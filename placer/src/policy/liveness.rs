//! Which nodes stopped reporting. A node is down once its last report is older than the
//! timeout; it comes back with its next report ([`super::Snapshot::apply_report`]).

use super::{NodeInfo, Snapshot};

/// True if the node's last report is more than `timeout_ms` before `now_ms`. A report
/// stamped in the future (clock step) counts as fresh.
pub fn is_stale(node: &NodeInfo, now_ms: u64, timeout_ms: u64) -> bool {
    now_ms.saturating_sub(node.last_report_ms) > timeout_ms
}

/// Marks every up node whose report is stale as down; returns the indices of the nodes that
/// went down now (already-down nodes are not repeated), in index order.
pub fn mark_down(snapshot: &mut Snapshot, now_ms: u64, timeout_ms: u64) -> Vec<usize> {
    snapshot.now_ms = snapshot.now_ms.max(now_ms);
    let mut newly_down = Vec::new();
    for (i, n) in snapshot.nodes.iter_mut().enumerate() {
        if n.up && is_stale(n, now_ms, timeout_ms) {
            n.up = false;
            newly_down.push(i);
        }
    }
    newly_down
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    fn reported(name: &str, at: u64) -> NodeInfo {
        let mut n = node(name, 1, 1.0, 0, 0);
        n.last_report_ms = at;
        n
    }

    #[test]
    fn marks_only_nodes_past_the_timeout() {
        let mut s = snap(vec![
            reported("fresh", 9_000),
            reported("edge", 7_000),
            reported("late", 6_999),
        ]);
        assert_eq!(mark_down(&mut s, 10_000, 3_000), vec![2]);
        assert!(
            s.nodes[0].up && s.nodes[1].up,
            "exactly at the timeout is still up"
        );
        assert!(!s.nodes[2].up);
        assert_eq!(s.now_ms, 10_000);
    }

    #[test]
    fn down_nodes_are_reported_once() {
        let mut s = snap(vec![reported("a", 0)]);
        assert_eq!(mark_down(&mut s, 5_000, 1_000), vec![0]);
        assert!(mark_down(&mut s, 6_000, 1_000).is_empty());
    }

    #[test]
    fn a_new_report_brings_a_node_back() {
        let mut s = snap(vec![reported("a", 0)]);
        mark_down(&mut s, 5_000, 1_000);
        s.apply_report(node("a", 1, 1.0, 0, 0), 5_500);
        assert!(s.nodes[0].up);
        assert!(mark_down(&mut s, 6_000, 1_000).is_empty());
    }

    #[test]
    fn future_reports_are_fresh() {
        let mut s = snap(vec![reported("skewed", 50_000)]);
        assert!(mark_down(&mut s, 10_000, 1_000).is_empty());
    }

    proptest! {
        #[test]
        fn after_marking_every_up_node_is_fresh(
            reports in proptest::collection::vec((0u64..20_000, any::<bool>()), 0..30),
            now in 0u64..25_000,
            timeout in 0u64..10_000,
        ) {
            let mut s = snap(reports.iter().enumerate().map(|(i, &(at, up))| {
                let mut n = reported(&format!("n{i}"), at);
                n.up = up;
                n
            }).collect());
            let before = s.clone();
            let down = mark_down(&mut s, now, timeout);
            for (i, n) in s.nodes.iter().enumerate() {
                if n.up {
                    prop_assert!(!is_stale(n, now, timeout));
                }
                let went_down = before.nodes[i].up && !n.up;
                prop_assert_eq!(went_down, down.contains(&i));
                prop_assert!(before.nodes[i].up || !n.up, "never brings a node up");
            }
        }
    }
}
