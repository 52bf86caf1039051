//! The placer's answers about its state: `mos q` rows, `mos q -analyze` (why a job is
//! idle, on the live snapshot), `mos ps`'s process table.

use super::*;

impl Placer {
    pub(super) fn row(r: &JobRecord, now: u64) -> JobRow {
        let mut cmd = r.spec.executable.display().to_string();
        for a in &r.spec.arguments {
            cmd.push(' ');
            cmd.push_str(a);
        }
        JobRow {
            id: r.id.to_string(),
            owner: r.owner.clone(),
            submitted_ms: r.submitted_ms,
            run_time_ms: r.run_time_at(now),
            state: r.state.code().to_string(),
            node: r.node.clone().unwrap_or_default(),
            ckpts: r.checkpoints,
            restarts: r.restarts,
            cmd,
            exit: r.exit_status,
            reason: r.reason.clone().unwrap_or_default(),
        }
    }

    /// `mos q -analyze ID`: why the job is where it is (an idle one: requirement by
    /// requirement, on the live snapshot).
    pub(super) fn analyze(&self, id: &str, better: bool) -> Msg {
        let Ok(pid) = id.parse::<PJobId>() else {
            return Msg::Error { msg: format!("bad job id {id:?} (want CLUSTER.PROC, like 1.0)") };
        };
        let jobs = match self.db.list() {
            Ok(j) => j,
            Err(e) => return Msg::Error { msg: e.to_string() },
        };
        let Some(r) = jobs.iter().find(|r| r.id == pid) else {
            return Msg::Error { msg: format!("no job {id} in the queue (mos history lists finished ones)") };
        };
        let mut lines = vec![format!("job {id}: {}", r.spec.executable.display())];
        match r.state {
            DbState::Idle => {
                let idle: Vec<_> = jobs.iter().filter(|j| j.state == DbState::Idle).collect();
                let position = idle.iter().position(|j| j.id == pid).unwrap_or(0);
                let snapshot = self.live_snapshot();
                lines.extend(policy::analyze::analyze(&snapshot, &JobReq::from(&r.spec), position, idle.len(), better));
            }
            DbState::Held => lines.push(format!("held: {} (mos release {id} to let it run)", r.reason.as_deref().unwrap_or("no reason recorded"))),
            DbState::Running => lines.push(format!("running on {}", r.node.as_deref().unwrap_or("?"))),
            _ => lines.push(format!("state {}", r.state.code())),
        }
        Msg::Analysis { lines }
    }

    /// The nodes as the next scheduling round would see them (nothing marked down here).
    pub(super) fn live_snapshot(&self) -> Snapshot {
        let now = now_ms();
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<NodeInfo> = st
            .nodes
            .iter()
            .map(|(name, n)| NodeInfo {
                name: name.clone(),
                cpus: n.report.cpus.max(1),
                speed: n.report.speed.max(1) as f64 / 1000.0,
                run_queue: n.report.run_queue,
                guests: n.report.guests,
                free_mem_mib: n.report.free_mem_mib,
                last_report_ms: n.last_ms,
                up: n.up,
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot { nodes, now_ms: now }
    }

    pub(super) fn table(&self, history: bool) -> Msg {
        let now = now_ms();
        let recs = if history { self.db.history() } else { self.db.list() };
        match recs {
            Ok(v) => Msg::JobTable { rows: v.iter().map(|r| Self::row(r, now)).collect() },
            Err(e) => Msg::Error { msg: e.to_string() },
        }
    }

    /// `mos ps`: every process and job the nodes report, where it runs, its moves.
    pub(super) fn process_table(&self) -> Msg {
        let (reports, _) = self.live_reports();
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<ProcessRow> = crate::balancer::locate(&reports)
            .into_iter()
            .map(|l| {
                let mut cand = l.cand;
                if let Some(why) = st.failed.get(&l.who.key()) {
                    cand.migratable = false;
                    cand.why_not = why.clone();
                }
                ProcessRow { node: reports[l.node].node.clone(), migrations: st.moves.get(&l.who.key()).cloned().unwrap_or_default(), candidate: cand }
            })
            .collect();
        rows.sort_by(|a, b| (&a.candidate.home, a.candidate.home_pid, a.candidate.job).cmp(&(&b.candidate.home, b.candidate.home_pid, b.candidate.job)));
        Msg::ProcessTable { rows, events: st.events.clone() }
    }
}
