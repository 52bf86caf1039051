//! The CLI's reports of the cluster's state, from the placer: `mos ps` (processes, where
//! they run, their moves), `mos q` / `mos history` (the job queue), `mos q -analyze`
//! (why a job is idle), `mos status` (nodes).

use anyhow::{bail, Result};
use proto::msg::{JobRow, LoadReport};
use proto::Msg;

use crate::cluster::{ask, load_run_state};

/// The one table renderer of `mos q`, `mos history`, `mos status` and `mos ps`
/// (comfy-table): a header line, columns as wide as their widest cell, two spaces apart,
/// no borders (so that each line still splits on whitespace and starts with the row's
/// id, as condor_q's do); the columns in `right` aligned right (numbers).
pub fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{CellAlignment, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    let n = header.len();
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 == n { 0 } else { 2 }));
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

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
    let mut moves = Vec::new();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let c = &r.candidate;
            let pid = match c.job {
                Some(j) => placer::daemon::placer_id(j).to_string(),
                None => c.home_pid.to_string(),
            };
            for m in &r.migrations {
                moves.push(format!("{pid} moved {m}"));
            }
            let note = if c.migratable { String::new() } else { format!("  [stays: {}]", c.why_not) };
            vec![pid, c.home.clone(), r.node.clone(), (if c.runnable { "R" } else { "S" }).into(), format!("{:.1}", f64::from(c.cpu_permille) / 10.0), format!("{} MiB", c.rss_mib), r.migrations.len().to_string(), format!("{}{note}", c.cmd)]
        })
        .collect();
    println!("{}", table(&["PID", "HOME", "WHERE", "STATE", "CPU%", "RSS", "MIGRATIONS", "CMD"], body, &[4, 5, 6]));
    for m in moves {
        println!("  {m}");
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
    let body = rows
        .iter()
        .map(|r| {
            vec![r.id.clone(), r.owner.clone(), when(r.submitted_ms), hms(r.run_time_ms), r.state.clone(), r.node.clone(), r.ckpts.to_string(), r.restarts.to_string(), format!("{}{}", r.cmd, r.exit.map_or(String::new(), |c| format!("  (exit {c})")))]
        })
        .collect();
    println!("{}", table(&["ID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "NODE", "CKPTS", "RESTARTS", "CMD"], body, &[6, 7]));
    let held: Vec<&JobRow> = rows.iter().filter(|r| r.state == "H").collect();
    if !held.is_empty() {
        let body = held.iter().map(|r| vec![r.id.clone(), if r.reason.is_empty() { "-".into() } else { r.reason.clone() }]).collect();
        println!("\n{}", table(&["ID", "HOLD_REASON"], body, &[]));
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
    let mut notes = Vec::new();
    let mut body: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            for g in &n.guest_list {
                notes.push(format!("{}: {g}", n.node));
            }
            for c in n.candidates.iter().filter(|c| !c.migratable) {
                notes.push(format!("{}: pid {} stays: {}", n.node, c.pid, c.why_not));
            }
            vec![n.node.clone(), "up".into(), n.addr.clone(), n.cpus.to_string(), format!("{:.2}", n.speed as f64 / 1000.0), n.run_queue.to_string(), format!("{:.2}", load_of(n)), format!("{} MiB", n.free_mem_mib), n.guests.to_string(), n.candidates.len().to_string()]
        })
        .collect();
    for k in known.iter().filter(|k| !nodes.iter().any(|n| &n.node == *k)) {
        body.push(vec![k.clone(), "down".into(), String::new(), String::new(), String::new(), String::new(), String::new(), String::new(), String::new(), String::new()]);
    }
    println!("{}", table(&["NODE", "STATE", "ADDR", "CPUS", "SPEED", "RUNQ", "LOAD", "FREE_MEM", "GUESTS", "CANDS"], body, &[3, 4, 5, 6, 7, 8, 9]));
    for n in notes {
        println!("  {n}");
    }
    Ok(())
}

/// The MOSIX load unit: runnable processes per reference cpu (cpus x speed).
pub(crate) fn load_of(n: &LoadReport) -> f64 {
    let cap = f64::from(n.cpus.max(1)) * f64::from(n.speed.max(1)) / 1000.0;
    f64::from(n.run_queue) / cap
}
