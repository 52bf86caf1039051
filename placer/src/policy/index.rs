//! An incrementally maintained placement index: the same answers as
//! [`super::place_job`], in O(log n) per update and typically O(log n) per decision.
//!
//! Usable nodes sit in a `BTreeSet` ordered exactly like `place_job` orders candidates
//! (placement score, then name, then index). A decision walks that set from the best end
//! and takes the first node whose memory and cpus fit. Two multisets (free memory, cpus)
//! answer "fits nowhere" at once, so a job too big for every node costs O(log n), not a full
//! walk. The remaining slow case is a job that fits only on nodes far down the order (every
//! lightly loaded node is short of memory); then the walk is as long as the skipped prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::place::placement_score;
use super::{JobReq, NodeInfo};

/// An f64 mapped to a u64 with the same order as `f64::total_cmp`.
fn total_order_bits(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Order: score, name, index (= `place_job`'s order; the index is unique, so the fields
/// after it never decide a comparison). Free memory and cpus ride along so a decision's walk
/// reads only the tree, not the node table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    score: u64,
    name: Arc<str>,
    idx: usize,
    free_mem_mib: u64,
    cpus: u32,
}

/// Placement index over a node table; keep it in step by calling [`Self::update`] whenever
/// `nodes[idx]` changes (a report, a placement, a job exit, a node marked down).
#[derive(Debug, Clone, Default)]
pub struct PlacementIndex {
    order: BTreeSet<Key>,
    slots: Vec<Option<Key>>,
    free_mem: BTreeMap<u64, u32>,
    cpus: BTreeMap<u32, u32>,
}

fn multiset_add<K: Ord>(m: &mut BTreeMap<K, u32>, k: K) {
    *m.entry(k).or_insert(0) += 1;
}

fn multiset_remove<K: Ord>(m: &mut BTreeMap<K, u32>, k: K) {
    if let std::collections::btree_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl PlacementIndex {
    pub fn build(nodes: &[NodeInfo]) -> Self {
        let mut index = PlacementIndex::default();
        index.slots.reserve_exact(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            index.update(i, n);
        }
        index
    }

    /// Records the current state of node `idx` (new or changed). O(log n).
    pub fn update(&mut self, idx: usize, node: &NodeInfo) {
        if self.slots.len() <= idx {
            self.slots.resize(idx + 1, None);
        }
        let old = self.slots[idx].take();
        if let Some(old) = &old {
            self.order.remove(old);
            multiset_remove(&mut self.free_mem, old.free_mem_mib);
            multiset_remove(&mut self.cpus, old.cpus);
        }
        if node.is_usable() {
            // Reuse the shared name unless the node was renamed: no allocation per update.
            let name = match old {
                Some(o) if *o.name == *node.name => o.name,
                _ => Arc::from(node.name.as_str()),
            };
            let key = Key {
                score: total_order_bits(placement_score(node)),
                name,
                idx,
                free_mem_mib: node.free_mem_mib,
                cpus: node.cpus,
            };
            multiset_add(&mut self.free_mem, key.free_mem_mib);
            multiset_add(&mut self.cpus, key.cpus);
            self.order.insert(key.clone());
            self.slots[idx] = Some(key);
        }
    }

    /// Usable nodes in the index.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The node `place_job` would choose for `req` on the nodes as last updated.
    pub fn place(&self, req: &JobReq) -> Option<usize> {
        let max_mem = self.free_mem.last_key_value().map(|(&m, _)| m)?;
        let max_cpus = self.cpus.last_key_value().map(|(&c, _)| c)?;
        if req.mem_mib > max_mem || req.cpus > max_cpus {
            return None;
        }
        self.order
            .iter()
            .find(|k| k.free_mem_mib >= req.mem_mib && k.cpus >= req.cpus)
            .map(|k| k.idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{place_job, Snapshot};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn total_order_bits_matches_total_cmp() {
        let xs = [
            f64::NEG_INFINITY,
            -2.0,
            -0.0,
            0.0,
            1e-300,
            0.5,
            1.0,
            3.0,
            f64::INFINITY,
            f64::NAN,
        ];
        for a in xs {
            for b in xs {
                assert_eq!(
                    total_order_bits(a).cmp(&total_order_bits(b)),
                    a.total_cmp(&b),
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn follows_updates() {
        let mut nodes = vec![node("a", 1, 1.0, 0, 1000), node("b", 1, 1.0, 1, 1000)];
        let mut idx = PlacementIndex::build(&nodes);
        let any = JobReq {
            mem_mib: 0,
            cpus: 1,
        };
        assert_eq!(idx.place(&any), Some(0));
        nodes[0].run_queue = 5;
        idx.update(0, &nodes[0]);
        assert_eq!(idx.place(&any), Some(1));
        nodes[1].up = false;
        idx.update(1, &nodes[1]);
        assert_eq!(idx.place(&any), Some(0));
        assert_eq!(idx.len(), 1);
        nodes.push(node("c", 8, 1.0, 0, 10));
        idx.update(2, &nodes[2]);
        assert_eq!(idx.place(&any), Some(2));
        assert_eq!(
            idx.place(&JobReq {
                mem_mib: 11,
                cpus: 1
            }),
            Some(0)
        );
        assert_eq!(
            idx.place(&JobReq {
                mem_mib: 1001,
                cpus: 1
            }),
            None
        );
        assert_eq!(
            idx.place(&JobReq {
                mem_mib: 0,
                cpus: 9
            }),
            None
        );
    }

    #[test]
    fn empty_index_places_nothing() {
        let idx = PlacementIndex::build(&[]);
        assert!(idx.is_empty());
        assert_eq!(
            idx.place(&JobReq {
                mem_mib: 0,
                cpus: 1
            }),
            None
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Report {
            node: usize,
            rq: u32,
            mem: u64,
            up: bool,
        },
        Place {
            mem: u64,
            cpus: u32,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0usize..40,
                0u32..10,
                0u64..3000,
                proptest::bool::weighted(0.8)
            )
                .prop_map(|(node, rq, mem, up)| Op::Report { node, rq, mem, up }),
            (0u64..3500, 1u32..5).prop_map(|(mem, cpus)| Op::Place { mem, cpus }),
        ]
    }

    proptest! {
        /// After any sequence of reports and placements (a placement bumps the run queue and
        /// takes the memory, as the daemon will), the index agrees with the pure function.
        #[test]
        fn agrees_with_place_job(
            initial in super::super::place::tests::arb_nodes(),
            ops in proptest::collection::vec(arb_op(), 0..80),
        ) {
            let mut s = Snapshot { nodes: initial, now_ms: 0 };
            let mut idx = PlacementIndex::build(&s.nodes);
            for op in ops {
                match op {
                    Op::Report { node, rq, mem, up } => {
                        if s.nodes.is_empty() { continue; }
                        let i = node % s.nodes.len();
                        let n = &mut s.nodes[i];
                        n.run_queue = rq;
                        n.free_mem_mib = mem;
                        n.up = up;
                        idx.update(i, n);
                    }
                    Op::Place { mem, cpus } => {
                        let req = JobReq { mem_mib: mem, cpus };
                        let want = place_job(&s, &req);
                        prop_assert_eq!(idx.place(&req), want);
                        if let Some(i) = want {
                            let n = &mut s.nodes[i];
                            n.run_queue += 1;
                            n.free_mem_mib -= mem;
                            idx.update(i, n);
                        }
                    }
                }
            }
        }
    }
}
