//! What `mos top` and `mos dashboard` share: one look at the cluster from the placer, and
//! the changes between two looks at its processes (appeared, moved, gone).

use anyhow::{bail, Result};
use proto::msg::{LoadReport, ProcessRow};
use proto::Msg;

use crate::cluster::ask;

/// The nodes (by name), the processes under the shim, and the placer's events.
pub fn look() -> Result<(Vec<LoadReport>, Vec<ProcessRow>, Vec<String>)> {
    let mut nodes = match ask(&Msg::QueryNodes)? {
        Msg::NodeList { nodes } => nodes,
        m => bail!("unexpected answer {}", m.name()),
    };
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let (procs, events) = match ask(&Msg::QueryProcesses)? {
        Msg::ProcessTable { rows, events } => (rows, events),
        m => bail!("unexpected answer {}", m.name()),
    };
    Ok((nodes, procs, events))
}

/// A change between two looks.
pub enum Change {
    Appeared(ProcessRow),
    /// The process now runs at `row.node`; it ran at `from`, with `auto_before` automatic
    /// moves then.
    Moved { row: ProcessRow, from: String, auto_before: usize },
    Gone(ProcessRow),
}

/// How long a process may be missing from the looks before it is gone (a moving one is
/// missing for a report interval or two: its home reports it away before the target
/// reports it there).
const GONE_MS: u64 = 3000;

/// Processes missing from the last looks, and since when (ms).
#[derive(Default)]
pub struct Tracker {
    missing: Vec<(ProcessRow, u64)>,
}

fn same(a: &ProcessRow, b: &ProcessRow) -> bool {
    a.candidate.home == b.candidate.home && a.candidate.home_pid == b.candidate.home_pid
}

impl Tracker {
    /// The changes from the look `old` to the look `new`, taken at `now_ms`.
    pub fn changes(&mut self, old: &[ProcessRow], new: &[ProcessRow], now_ms: u64) -> Vec<Change> {
        let mut out = Vec::new();
        for o in old {
            if !new.iter().any(|p| same(p, o)) && !self.missing.iter().any(|(m, _)| same(m, o)) {
                self.missing.push((o.clone(), now_ms));
            }
        }
        for p in new {
            let back = self.missing.iter().position(|(m, _)| same(m, p)).map(|i| self.missing.remove(i).0);
            match old.iter().find(|o| same(o, p)).or(back.as_ref()) {
                None => out.push(Change::Appeared(p.clone())),
                Some(o) if o.node != p.node => out.push(Change::Moved { row: p.clone(), from: o.node.clone(), auto_before: o.migrations.len() }),
                Some(_) => {}
            }
        }
        let (gone, missing): (Vec<_>, Vec<_>) = std::mem::take(&mut self.missing).into_iter().partition(|(_, since)| now_ms.saturating_sub(*since) >= GONE_MS);
        self.missing = missing;
        out.extend(gone.into_iter().map(|(o, _)| Change::Gone(o)));
        out
    }
}
