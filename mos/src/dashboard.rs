//! `mos dashboard --listen ADDR`: the cluster live in a web browser, read-only. A sampler
//! asks the placer every interval for the nodes' information vectors, the processes
//! under the shim and the job queue, keeps each node's load and memory over time, and
//! notes every migration (the placer's automatic ones with their reasons, and any move
//! seen between two looks) and every job state change as events. An HTTP server (tiny_http)
//! serves one page that redraws itself from `/api/cluster` every second (plots as inline
//! SVG, no script from elsewhere) and the JSON under `/api/`.
//!
//! Bound to loopback by default. Anywhere else it asks for a token derived from the
//! cluster key (`proto::auth::dashboard_token`): `?token=` on the page's address (the
//! page passes it on to the API) or `Authorization: Bearer`. The URL it prints has it.

use anyhow::{anyhow, bail, Context, Result};
use proto::msg::{JobRow, LoadReport, ProcessRow};
use proto::Msg;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cluster::ask;
use crate::watch::{Change, Tracker};

/// Samples kept per node (at 1 s: ten minutes).
const HISTORY: usize = 600;
/// Events and migrations kept.
const KEEP: usize = 500;

#[derive(Clone, Serialize)]
struct Sample {
    t_ms: u64,
    /// runnable processes per cpu, as the information vector's load
    load: f64,
    run_queue: u32,
    used_mem_mib: u64,
    free_mem_mib: u64,
}

#[derive(Clone, Serialize)]
struct Migration {
    t_ms: u64,
    home: String,
    pid: u32,
    cmd: String,
    from: String,
    to: String,
    /// "automatic (reason)" from the placer, or "seen" (a move between two looks)
    how: String,
}

#[derive(Clone, Serialize)]
struct Event {
    t_ms: u64,
    text: String,
}

#[derive(Default, Serialize)]
struct State {
    /// when the last look was taken, unix ms (0: none yet)
    updated_ms: u64,
    /// why the last look failed, if it did
    error: Option<String>,
    nodes: Vec<LoadReport>,
    history: BTreeMap<String, VecDeque<Sample>>,
    processes: Vec<ProcessRow>,
    queue: Vec<JobRow>,
    migrations: VecDeque<Migration>,
    events: VecDeque<Event>,
    /// the placer's last event taken in (its lines carry their time: they differ)
    #[serde(skip)]
    placer_last: Option<String>,
    #[serde(skip)]
    tracker: Tracker,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    q.push_back(v);
    while q.len() > KEEP {
        q.pop_front();
    }
}

impl State {
    /// Take in one look at the cluster.
    fn update(&mut self, nodes: Vec<LoadReport>, procs: Vec<ProcessRow>, placer_events: Vec<String>, queue: Vec<JobRow>) {
        let t = now_ms();
        for n in &nodes {
            let h = self.history.entry(n.node.to_string()).or_default();
            h.push_back(Sample {
                t_ms: t,
                load: f64::from(n.run_queue) / f64::from(n.cpus.max(1)),
                run_queue: n.run_queue,
                used_mem_mib: n.total_mem_mib.saturating_sub(n.free_mem_mib),
                free_mem_mib: n.free_mem_mib,
            });
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        // the placer's own events (its automatic migrations, with their reasons): those
        // after the last one seen (the placer keeps its latest 1000; one not found again
        // means it restarted or rolled past it: all are new)
        let from = match &self.placer_last {
            Some(last) => placer_events.iter().rposition(|e| e == last).map_or(0, |i| i + 1),
            None => 0,
        };
        for e in &placer_events[from..] {
            push(&mut self.events, Event { t_ms: t, text: format!("placer: {e}") });
        }
        if let Some(e) = placer_events.last() {
            self.placer_last = Some(e.clone());
        }
        for ch in self.tracker.changes(&self.processes, &procs, t) {
            let text = match ch {
                Change::Appeared(p) => format!("pid {} ({}) appeared at {} (home {})", p.candidate.home_pid, p.candidate.cmd, p.node, p.candidate.home),
                Change::Gone(o) => format!("pid {} ({}) is gone (it was at {})", o.candidate.home_pid, o.candidate.cmd, o.node),
                Change::Moved { row: p, from, auto_before } => {
                    let c = &p.candidate;
                    let how = if p.migrations.len() > auto_before { format!("automatic ({})", p.migrations.last().map(String::as_str).unwrap_or("")) } else { "seen".to_string() };
                    let m = Migration { t_ms: t, home: c.home.to_string(), pid: c.home_pid, cmd: c.cmd.clone(), from, to: p.node.to_string(), how };
                    let text = format!("pid {} ({}) moved {} -> {} ({})", m.pid, m.cmd, m.from, m.to, m.how);
                    push(&mut self.migrations, m);
                    text
                }
            };
            push(&mut self.events, Event { t_ms: t, text });
        }
        for j in &queue {
            match self.queue.iter().find(|o| o.id == j.id) {
                None => push(&mut self.events, Event { t_ms: t, text: format!("job {} queued ({}): {}", j.id, j.state, j.cmd) }),
                Some(o) if o.state != j.state || o.node != j.node => {
                    push(&mut self.events, Event { t_ms: t, text: format!("job {}: {} -> {}{}", j.id, o.state, j.state, if j.node.is_empty() { String::new() } else { format!(" at {}", j.node) }) })
                }
                Some(_) => {}
            }
        }
        (self.nodes, self.processes, self.queue) = (nodes, procs, queue);
        self.updated_ms = t;
        self.error = None;
    }
}

/// One look at the cluster: nodes, processes, the placer's events, the queue.
type Look = (Vec<LoadReport>, Vec<ProcessRow>, Vec<String>, Vec<JobRow>);

fn look() -> Result<Look> {
    let (nodes, procs, events) = crate::watch::look()?;
    let queue = match ask(&Msg::QueryQueue { history: false })? {
        Msg::JobTable { rows } => rows,
        m => bail!("unexpected answer {}", m.name()),
    };
    Ok((nodes, procs, events, queue))
}

/// Is `addr` (as given to --listen) a loopback address?
fn loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

pub fn run(listen: &str, interval: Duration) -> Result<()> {
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .with_context(|| format!("--listen {listen}: not an address (host:port)"))?
        .next()
        .ok_or_else(|| anyhow!("--listen {listen}: no address"))?;
    // the first look before anything is served: a cluster that is not there is one line
    let first = look()?;
    let token = if loopback(&addr) {
        None
    } else {
        let key = proto::auth::load_key(&crate::cluster::key_path()).with_context(|| format!("cluster key {} (a dashboard beyond loopback needs it)", crate::cluster::key_path().display()))?;
        Some(key)
    };
    let server = tiny_http::Server::http(addr).map_err(|e| anyhow!("cannot listen on {listen}: {e}"))?;
    let bound = server.server_addr().to_ip().ok_or_else(|| anyhow!("cannot listen on {listen}: not an IP socket"))?;
    let state = Arc::new(Mutex::new(State::default()));
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let (n, p, e, q) = first;
        st.update(n, p, e, q);
    }
    let sampler = state.clone();
    std::thread::Builder::new().name("sampler".into()).spawn(move || loop {
        std::thread::sleep(interval);
        let got = look();
        let mut st = sampler.lock().unwrap_or_else(|e| e.into_inner());
        match got {
            Ok((n, p, e, q)) => st.update(n, p, e, q),
            Err(e) => st.error = Some(format!("{e:#}")),
        }
    })?;
    let shown = if bound.ip().is_unspecified() { "127.0.0.1".to_string() } else { bound.ip().to_string() };
    match &token {
        None => println!("dashboard at http://{shown}:{}/ (read-only; Ctrl-C stops it)", bound.port()),
        Some(k) => println!("dashboard at http://{shown}:{}/?token={} (read-only; the token is derived from the cluster key; Ctrl-C stops it)", bound.port(), proto::auth::dashboard_token(k)),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // a few workers: a client that does not read its answer holds up only one
    let server = Arc::new(server);
    let port = bound.port();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (server, state, token) = (server.clone(), state.clone(), token.clone());
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    let r = respond(&req, &state, token.as_ref(), port);
                    let _ = req.respond(r);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// Without a token (loopback), only requests addressed to a loopback name: a web page
/// elsewhere cannot read the API through a DNS name that resolves here (rebinding).
fn host_ok(req: &tiny_http::Request, port: u16) -> bool {
    let Some(h) = req.headers().iter().find(|h| h.field.equiv("Host")) else { return true };
    let h = h.value.as_str();
    let name = h.strip_suffix(&format!(":{port}")).unwrap_or(h);
    matches!(name, "127.0.0.1" | "localhost" | "[::1]") || name.starts_with("127.")
}

type Reply = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn reply(code: u16, ctype: &str, body: Vec<u8>) -> Reply {
    let mut r = tiny_http::Response::from_data(body).with_status_code(code);
    for (k, v) in [("Content-Type", ctype), ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")] {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            r.add_header(h);
        }
    }
    r
}

fn json<T: Serialize>(v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(b) => reply(200, "application/json", b),
        Err(e) => reply(500, "text/plain; charset=utf-8", e.to_string().into_bytes()),
    }
}

/// The token the request presents: `?token=` or `Authorization: Bearer`.
fn presented(req: &tiny_http::Request) -> Option<String> {
    let q = req.url().split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&').find_map(|kv| kv.strip_prefix("token=").map(str::to_string)).or_else(|| {
        req.headers().iter().find(|h| h.field.equiv("Authorization")).and_then(|h| h.value.as_str().strip_prefix("Bearer ").map(str::to_string))
    })
}

fn respond(req: &tiny_http::Request, state: &Mutex<State>, key: Option<&proto::auth::ClusterKey>, port: u16) -> Reply {
    if !matches!(req.method(), tiny_http::Method::Get | tiny_http::Method::Head) {
        return reply(405, "text/plain; charset=utf-8", b"read-only: GET only\n".to_vec());
    }
    if key.is_none() && !host_ok(req, port) {
        return reply(403, "text/plain; charset=utf-8", b"this dashboard answers only requests to a loopback address\n".to_vec());
    }
    if let Some(k) = key {
        if !presented(req).is_some_and(|t| proto::auth::dashboard_token_ok(k, &t)) {
            return reply(401, "text/plain; charset=utf-8", b"this dashboard needs its token (?token=..., printed by mos dashboard)\n".to_vec());
        }
    }
    let path = req.url().split('?').next().unwrap_or("/");
    let st = state.lock().unwrap_or_else(|e| e.into_inner());
    match path {
        "/" | "/index.html" => reply(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
        "/api/" | "/api" => json(&serde_json::json!({"endpoints": ["/api/cluster", "/api/nodes", "/api/history", "/api/processes", "/api/migrations", "/api/queue", "/api/events"]})),
        "/api/cluster" => json(&*st),
        "/api/nodes" => json(&st.nodes),
        "/api/history" => json(&st.history),
        "/api/processes" => json(&st.processes),
        "/api/migrations" => json(&st.migrations),
        "/api/queue" => json(&st.queue),
        "/api/events" => json(&st.events),
        _ => reply(404, "text/plain; charset=utf-8", format!("no such page: {path}\n").into_bytes()),
    }
}

/// The page: plain HTML, CSS and script, all here (nothing fetched from elsewhere).
const PAGE: &str = include_str!("dashboard.html");
