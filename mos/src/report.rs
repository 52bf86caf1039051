//! The CLI's reports of the cluster's state, from the placer: `mos ps` (processes, where
//! they run, their moves), `mos q` / `mos history` (the job queue), `mos q -analyze`
//! (why a job is idle), `mos status` (nodes).

use anyhow::{bail, Result};
use proto::msg::{JobRow, LoadReport};
use proto::Msg;

use crate::cluster::{ask, load_run_state};

/// `mos ps`: every process under the shim the nodes report, where it runs, its moves.
pub fn ps(json: bool, events: bool) -> Result<()> {
    let (rows, log) = match ask(&Msg::QueryProcesses)? {
        Msg::ProcessTable { rows, events } => (rows, events),
        m => bail!("unexpected answer {}", m.name()),
    };
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                let c = &r.candidate;
                serde_json::json!({"pid": c.home_pid, "home": c.home, "node": r.node, "pid_there": c.pid,
                    "job": c.job.map(|j| placer::daemon::placer_id(j).to_string()),
                    "state": if c.runnable { "R" } else { "S" }, "cpu_permille": c.cpu_permille, "rss_mib": c.rss_mib,
                    "age_ms": c.age_ms, "migratable": c.migratable, "why_not": c.why_not, "migrations": r.migrations, "cmd": c.cmd})
            })
            .collect();
        let out = if events { serde_json::json!({"processes": v, "events": log}) } else { serde_json::Value::Array(v) };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<8} {:<8} {:<8} {:<5} {:>5} {:>7} {:>10}  CMD", "PID", "HOME", "WHERE", "STATE", "CPU%", "RSS", "MIGRATIONS");
    for r in &rows {
        let c = &r.candidate;
        let pid = match c.job {
            Some(j) => placer::daemon::placer_id(j).to_string(),
            None => c.home_pid.to_string(),
        };
        let note = if c.migratable { String::new() } else { format!("  [stays: {}]", c.why_not) };
        println!(
            "{:<8} {:<8} {:<8} {:<5} {:>5.1} {:>4} MiB {:>10}  {}{note}",
            pid,
            c.home,
            r.node,
            if c.runnable { "R" } else { "S" },
            f64::from(c.cpu_permille) / 10.0,
            c.rss_mib,
            r.migrations.len(),
            c.cmd
        );
        for m in &r.migrations {
            println!("{:>17} moved {m}", "");
        }
    }
    if events {
        for e in &log {
            println!("{e}");
        }
    }
    Ok(())
}

fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}+{:02}:{:02}:{:02}", s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// As condor_q shows SUBMITTED: `12/2 19:29`, local time.
fn when(ms: u64) -> String {
    // SAFETY: tm is plain data; localtime_r fills it from a valid time_t.
    let mut tm: libc::tm = unsafe { core::mem::zeroed() };
    let t = (ms / 1000) as libc::time_t;
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "-".into();
    }
    format!("{}/{} {:02}:{:02}", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min)
}

/// `mos q -analyze ID`: the placer's account of why job ID is where it is.
pub fn analyze(id: &str, better: bool) -> Result<()> {
    match ask(&Msg::AnalyzeJob { id: id.to_string(), better })? {
        Msg::Analysis { lines } => {
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
        m => bail!("unexpected answer {}", m.name()),
    }
}

pub fn queue(history: bool, json: bool) -> Result<()> {
    queue_of(history, json, &[])
}

/// `mos q [WHICH...]`: only the jobs named (CLUSTER, CLUSTER.PROC or an owner), as condor_q.
pub fn queue_of(history: bool, json: bool, which: &[String]) -> Result<()> {
    let mut rows: Vec<JobRow> = match ask(&Msg::QueryQueue { history })? {
        Msg::JobTable { rows } => rows,
        m => bail!("unexpected answer {}", m.name()),
    };
    if !which.is_empty() {
        rows.retain(|r| which.iter().any(|w| *w == r.id || *w == r.owner || r.id.split('.').next() == Some(w.as_str())));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"id": r.id, "owner": r.owner, "submitted_ms": r.submitted_ms, "run_time_ms": r.run_time_ms,
                "state": r.state, "node": r.node, "ckpts": r.ckpts, "restarts": r.restarts, "cmd": r.cmd, "exit": r.exit,
                "hold_reason": if r.state == "H" { Some(&r.reason) } else { None }}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<8} {:<10} {:<9} {:<12} {:<2} {:<8} {:>5} {:>8}  CMD", "ID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "NODE", "CKPTS", "RESTARTS");
    for r in &rows {
        println!(
            "{:<8} {:<10} {:<9} {:<12} {:<2} {:<8} {:>5} {:>8}  {}{}",
            r.id, r.owner, when(r.submitted_ms), hms(r.run_time_ms), r.state, r.node, r.ckpts, r.restarts, r.cmd,
            r.exit.map_or(String::new(), |c| format!("  (exit {c})"))
        );
    }
    let held: Vec<&JobRow> = rows.iter().filter(|r| r.state == "H").collect();
    if !held.is_empty() {
        println!("\n{:<8} HOLD_REASON", "ID");
        for r in held {
            println!("{:<8} {}", r.id, if r.reason.is_empty() { "-" } else { &r.reason });
        }
    }
    let count = |s: &str| rows.iter().filter(|r| r.state == s).count();
    if !history {
        println!("{} jobs; {} idle, {} running, {} held", rows.len(), count("I"), count("R"), count("H"));
    }
    Ok(())
}

pub fn status(json: bool) -> Result<()> {
    let nodes: Vec<LoadReport> = match ask(&Msg::QueryNodes)? {
        Msg::NodeList { nodes } => nodes,
        m => bail!("unexpected answer {}", m.name()),
    };
    // the nodes there should be: the cluster description's, else the localhost cluster's
    let known: Vec<String> = match crate::cluster::description() {
        Ok(Some(f)) => f.nodes.into_iter().map(|n| n.name).collect(),
        _ => load_run_state().map(|rs| rs.nodes.into_iter().map(|n| n.name).collect()).unwrap_or_default(),
    };
    if json {
        let mut v: Vec<_> = nodes
            .iter()
            .map(|n| serde_json::json!({"node": n.node, "state": "up", "addr": n.addr, "cpus": n.cpus, "speed": n.speed,
                "run_queue": n.run_queue, "load": load_of(n), "guests": n.guests, "free_mem_mib": n.free_mem_mib,
                "total_mem_mib": n.total_mem_mib, "guest_list": n.guest_list,
                "candidates": n.candidates.iter().map(|c| serde_json::json!({"pid": c.pid, "cmd": c.cmd, "cpu_permille": c.cpu_permille,
                    "rss_mib": c.rss_mib, "migratable": c.migratable, "why_not": c.why_not})).collect::<Vec<_>>()}))
            .collect();
        for k in known.iter().filter(|k| !nodes.iter().any(|n| &n.node == *k)) {
            v.push(serde_json::json!({"node": k, "state": "down"}));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<8} {:<5} {:<21} {:>4} {:>6} {:>5} {:>6} {:>10} {:>6} {:>6}", "NODE", "STATE", "ADDR", "CPUS", "SPEED", "RUNQ", "LOAD", "FREE_MEM", "GUESTS", "CANDS");
    for n in &nodes {
        println!(
            "{:<8} {:<5} {:<21} {:>4} {:>6.2} {:>5} {:>6.2} {:>7} MiB {:>6} {:>6}",
            n.node, "up", n.addr, n.cpus, n.speed as f64 / 1000.0, n.run_queue, load_of(n), n.free_mem_mib, n.guests, n.candidates.len()
        );
        for g in &n.guest_list {
            println!("           {g}");
        }
        for c in n.candidates.iter().filter(|c| !c.migratable) {
            println!("           pid {} stays: {}", c.pid, c.why_not);
        }
    }
    for k in known.iter().filter(|k| !nodes.iter().any(|n| &n.node == *k)) {
        println!("{k:<8} {:<5}", "down");
    }
    Ok(())
}

/// The MOSIX load unit: runnable processes per reference cpu (cpus x speed).
pub(crate) fn load_of(n: &LoadReport) -> f64 {
    let cap = f64::from(n.cpus.max(1)) * f64::from(n.speed.max(1)) / 1000.0;
    f64::from(n.run_queue) / cap
}
