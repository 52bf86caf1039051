//! Central-mode balancing (DESIGN.md §9): each interval the live reports become the
//! balancer's snapshot, `plan_migrations` picks the moves, and each is carried out through
//! the shadowd the process runs on (or by checkpoint and restart for a batch job), with
//! one event-log line naming its reason.

use super::*;

impl Placer {
    /// The live nodes' latest reports, by name, and the balancer's snapshot of them.
    pub(super) fn live_reports(&self) -> (Vec<LoadReport>, Snapshot) {
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let mut reports: Vec<(LoadReport, u64)> = st.nodes.values().filter(|n| n.up).map(|n| (n.report.clone(), n.last_ms)).collect();
        reports.sort_by(|a, b| a.0.node.cmp(&b.0.node));
        let nodes = reports
            .iter()
            .map(|(r, last)| NodeInfo {
                name: r.node.clone(),
                cpus: r.cpus.max(1),
                speed: r.speed.max(1) as f64 / 1000.0,
                run_queue: r.run_queue,
                guests: r.guests,
                free_mem_mib: r.free_mem_mib,
                last_report_ms: *last,
                up: true,
            })
            .collect();
        (reports.into_iter().map(|r| r.0).collect(), Snapshot { nodes, now_ms: now_ms() })
    }

    /// One balancing round (central mode): plan on the live snapshot, order each move
    /// (a process through the shadowd it runs on, as `mos migrate` does; a batch job by
    /// checkpoint and restart), each in its own thread so a slow move does not hold the
    /// next round. A process is in at most one move at a time.
    pub(super) fn balance_once(self: Arc<Self>, params: &policy::BalanceParams) {
        let (reports, mut snapshot) = self.live_reports();
        if reports.len() < 2 {
            return;
        }
        let located = crate::balancer::locate(&reports);
        let (params, jobs) = {
            let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
            // a report samples run states: let one full interval pass after a move
            crate::balancer::account_pending(&mut snapshot, &mut st.pending, |p| crate::balancer::counted_in(&reports, p), 20 * self.cfg.interval_ms.max(250));
            // in a move, failed, or moved so recently that the reports may still show it
            // where it was
            let blocked = |w: &Who| {
                let k = w.key();
                st.in_flight.contains(&k) || st.failed.contains_key(&k) || st.pending.iter().any(|p| p.key == k)
            };
            let short = |i: usize| snapshot.nodes[i].free_mem_mib < params.mem_reserve_mib;
            (st.cost.apply(params), crate::balancer::running_jobs(&located, snapshot.now_ms, blocked, short))
        };
        for m in policy::plan_migrations(&snapshot, &jobs, &params) {
            let l = located[m.job.proc as usize].clone();
            let (from, to) = (&reports[m.from], &reports[m.to]);
            let why = match m.reason {
                policy::MigrationReason::LoadBalance { gain } => {
                    format!("load: {} {:.2} -> {} {:.2}, gain {gain:.2}", from.node, snapshot.nodes[m.from].load(), to.node, snapshot.nodes[m.to].load())
                }
                policy::MigrationReason::MemoryUshering { deficit_mib } => format!("memory ushering: {} short by {deficit_mib} MiB", from.node),
            };
            self.event(&format!("migrate {} ({}, {} MiB) from {} to {}: {why}", l.who.label(), l.cand.cmd, l.cand.rss_mib, from.node, to.node));
            {
                let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                st.in_flight.insert(l.who.key());
                st.pending.push(crate::balancer::Pending {
                    key: l.who.key(),
                    from: from.node.clone(),
                    to: to.node.clone(),
                    mib: l.cand.rss_mib,
                    src_pid: l.cand.pid,
                    new_pid: None,
                    done_ms: None,
                });
            }
            let me = self.clone();
            let (from_addr, to_addr, from_name, to_name) = (from.addr.clone(), to.addr.clone(), from.node.clone(), to.node.clone());
            let spawned = std::thread::Builder::new().name("migrate".into()).spawn(move || me.carry_out(&l, &from_addr, &to_addr, &from_name, &to_name, &why));
            if spawned.is_err() {
                log("no thread for a migration");
            }
        }
    }

    /// Order one planned move and record how it went.
    pub(super) fn carry_out(&self, l: &Located, from_addr: &str, to_addr: &str, from: &str, to: &str, why: &str) {
        let t = std::time::Instant::now();
        let mut there = None;
        let result = match &l.who {
            Who::Process { pid, .. } => match self.ask_node(from_addr, &Msg::MigrateProcess { pid: *pid, to: to_addr.to_string(), mode: proto::msg::MoveMode::Auto, progress: false, compress: None }) {
                Ok(Msg::Migrated { pid, .. }) => {
                    there = Some(pid);
                    Ok(())
                }
                Ok(m) => Err(format!("unexpected answer {}", m.name())),
                Err(e) => Err(e),
            },
            Who::Job(id) => self.migrate(*id, to),
        };
        let secs = t.elapsed().as_secs_f64();
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.in_flight.remove(&l.who.key());
        // this move's entry (the first of its pair still running)
        let ok = result.is_ok();
        if let Some(k) = st.pending.iter().position(|p| p.key == l.who.key() && p.done_ms.is_none()) {
            if ok {
                st.pending[k].done_ms = Some(now_ms());
                // (a batch job's new pid is not known here: its move expires by time)
                st.pending[k].new_pid = there;
            } else {
                st.pending.remove(k);
            }
        }
        match result {
            Ok(()) => {
                if matches!(l.who, Who::Process { .. }) {
                    st.cost.observe(l.cand.rss_mib, secs);
                }
                let short = why.split(':').next().unwrap_or(why);
                st.moves.entry(l.who.key()).or_default().push(format!("{from}->{to} ({short})"));
                drop(st);
                self.event(&format!("migrated {} from {from} to {to} in {:.0} ms", l.who.label(), secs * 1000.0));
            }
            // (the shadowd's words for a process that ended while its move was ordered)
            // (a view older than the move it races: the process is fine where it is)
            Err(e) if e.contains("no longer here") => {
                drop(st);
                self.event(&format!("{} had already left {from}; not moved to {to}", l.who.label()));
            }
            Err(e) if e.contains("ended before it could move") => {
                drop(st);
                self.event(&format!("{} ended before its move from {from} to {to}", l.who.label()));
            }
            Err(e) => {
                st.failed.insert(l.who.key(), format!("a migration failed: {e}"));
                drop(st);
                self.event(&format!("migration of {} from {from} to {to} failed (it stays where it was, and is not moved again): {e}", l.who.label()));
            }
        }
    }

    /// An event-log line: the placer's log, `<state>/events.log`, and `mos ps`.
    pub(super) fn event(&self, line: &str) {
        let stamped = format!("{} {line}", chrono_like(now_ms()));
        log(line);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(self.cfg.state_dir.join("events.log")) {
            let _ = writeln!(f, "{stamped}");
        }
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.events.push(stamped);
        let n = st.events.len();
        if n > 1000 {
            st.events.drain(..n - 1000);
        }
    }
}
