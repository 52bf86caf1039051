//! Why a job is idle (`mos q -analyze`, like `condor_q -analyze`): for each of its
//! requirements, how many nodes meet it, which one no node meets, and (`better`) each
//! node's verdict. Pure: the placer hands it its live snapshot.

use super::{JobReq, Snapshot};

/// The analysis of one idle job, as lines for a person.
pub fn analyze(snapshot: &Snapshot, req: &JobReq, position: usize, idle: usize, better: bool) -> Vec<String> {
    let nodes = &snapshot.nodes;
    let up: Vec<_> = nodes.iter().filter(|n| n.is_usable()).collect();
    let cpus = up.iter().filter(|n| n.cpus >= req.cpus).count();
    let mem = up.iter().filter(|n| n.free_mem_mib >= req.mem_mib).count();
    let both = up.iter().filter(|n| n.fits(req)).count();
    let mut out = vec![
        format!("position {} of {idle} idle job(s)", position + 1),
        format!("{} node(s) known, {} up and reporting", nodes.len(), up.len()),
        format!("request_cpus = {}: {cpus} node(s) have that many cpus", req.cpus),
        format!("request_memory = {} MiB: {mem} node(s) have that much free", req.mem_mib),
        format!("both: {both} node(s) match"),
    ];
    let most_cpus = up.iter().map(|n| n.cpus).max().unwrap_or(0);
    let most_mem = up.iter().map(|n| n.free_mem_mib).max().unwrap_or(0);
    out.push(if up.is_empty() {
        "why idle: no node is up (the job starts when one reports)".to_string()
    } else if cpus == 0 {
        format!("why idle: no node has request_cpus = {} cpus (the most any up node has is {most_cpus}); it will never start unless such a node joins: lower request_cpus or mos rm it", req.cpus)
    } else if mem == 0 {
        format!("why idle: no node has request_memory = {} MiB free (the most free is {most_mem} MiB)", req.mem_mib)
    } else if both == 0 {
        "why idle: the nodes with enough cpus lack the memory, and the others the cpus".to_string()
    } else {
        format!("why idle: {both} node(s) match; it starts at the next scheduling round")
    });
    if better {
        for n in nodes {
            let verdict = if !n.is_usable() {
                "down or not reporting".to_string()
            } else {
                let c = if n.cpus >= req.cpus { "ok" } else { "too few" };
                let m = if n.free_mem_mib >= req.mem_mib { "ok" } else { "too little" };
                format!("{} cpus ({c}), {} MiB free ({m}){}", n.cpus, n.free_mem_mib, if n.fits(req) { ": matches" } else { "" })
            };
            out.push(format!("  {}: {verdict}", n.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn a_job_no_node_can_take_says_which_requirement() {
        let s = snap(vec![node("a", 1, 1.0, 0, 4000), node("b", 1, 1.0, 2, 500)]);
        let l = analyze(&s, &JobReq { mem_mib: 0, cpus: 2 }, 0, 3, false);
        assert!(l.contains(&"request_cpus = 2: 0 node(s) have that many cpus".to_string()), "{l:#?}");
        assert!(l.last().unwrap().starts_with("why idle: no node has request_cpus = 2 cpus (the most any up node has is 1)"), "{l:#?}");
        assert_eq!(l[0], "position 1 of 3 idle job(s)");
        let l = analyze(&s, &JobReq { mem_mib: 1000, cpus: 1 }, 1, 3, true);
        assert!(l.contains(&"request_memory = 1000 MiB: 1 node(s) have that much free".to_string()), "{l:#?}");
        assert!(l.iter().any(|x| x.starts_with("why idle: 1 node(s) match")), "{l:#?}");
        assert!(l.contains(&"  b: 1 cpus (ok), 500 MiB free (too little)".to_string()), "{l:#?}");
        assert!(l.contains(&"  a: 1 cpus (ok), 4000 MiB free (ok): matches".to_string()), "{l:#?}");
        let l = analyze(&snap(vec![]), &JobReq { mem_mib: 0, cpus: 1 }, 0, 1, false);
        assert!(l.last().unwrap().contains("no node is up"), "{l:#?}");
    }
}
