//! Gossip mode (MOSIX's decentralized balancing, DESIGN.md §9): no placer decides.
//!
//! - Every interval this shadowd sends its load vector (and the freshest vectors it has
//!   heard) over UDP to a few random peers: the seeds it was started with and the nodes it
//!   has heard of. Datagrams are signed with the cluster key, replay-protected and at most
//!   512 bytes ([`proto::gossip`]); anything else is dropped and logged.
//! - It keeps a window of the freshest vector per node, bounded by age: a node that stops
//!   sending ages out, a new one joins by sending to a seed.
//! - Every interval it decides for its own processes with the placer's policy functions
//!   (the same `plan_migrations`, over itself and its window), and asks the chosen target
//!   to admit the move ([`Msg::AdmitMigration`]); a target whose own load no longer
//!   justifies it refuses, and the source tries the next node. Admitted moves go the way
//!   of `mos migrate`.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use placer::balancer::{self, Located, Pending, Who};
use placer::policy::{self, BalanceParams, NodeInfo, Snapshot};
use proto::gossip::{self, LoadVector, Packet, ReplayGuard};
use proto::{ClusterKey, Msg};

use crate::{lock, log};

/// How gossip runs.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Where to send first (UDP addresses of other shadowds).
    pub seeds: Vec<String>,
    /// Peers each vector goes to per interval.
    pub fanout: usize,
    /// Decide and move processes (false: only spread vectors).
    pub balance: bool,
    /// The balancer's knobs.
    pub params: BalanceParams,
}

/// A vector heard, and when (this clock) it was measured.
#[derive(Clone, Debug)]
struct Heard {
    v: LoadVector,
    at: Instant,
}

/// What this node knows of the others, and its own moves.
pub struct Gossip {
    cfg: GossipConfig,
    node: String,
    key: ClusterKey,
    sock: UdpSocket,
    /// Our UDP address, as we announce it.
    pub addr: String,
    window: Mutex<HashMap<String, Heard>>,
    guard: Mutex<ReplayGuard>,
    seq: Mutex<u64>,
    /// Admissions given and not yet arrived (expire after a few intervals).
    admitted: Mutex<Vec<Instant>>,
    /// Our moves the vectors may not show yet; processes in a move; processes whose move failed.
    pending: Mutex<Vec<Pending>>,
    in_flight: Mutex<HashSet<u32>>,
    failed: Mutex<HashSet<u32>>,
    /// Datagrams dropped (for the log's rate limit).
    dropped: Mutex<(u64, Option<Instant>)>,
    interval: Duration,
    /// Where moves are told to the placer (for `mos ps`), if there is one.
    events: Mutex<Option<Arc<crate::reporter::EventQueue>>>,
    /// What our vector and candidates are made of.
    state: crate::reporter::NodeState,
    report: crate::reporter::ReporterConfig,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Gossip {
    /// Bind the UDP socket next to `tcp` (same address, a free port).
    /// `tcp`: where the node's TCP listener is bound (the UDP socket binds the same IP);
    /// `public`: the IP peers reach it at (what it announces).
    pub fn bind(cfg: GossipConfig, key: ClusterKey, tcp: SocketAddr, public: std::net::IpAddr, state: crate::reporter::NodeState, report: crate::reporter::ReporterConfig) -> std::io::Result<Arc<Gossip>> {
        let (node, interval) = (report.node.clone(), report.interval);
        // the node's TCP port number if free (a cluster description's seeds are the
        // nodes' addresses), else any
        let sock = UdpSocket::bind((tcp.ip(), tcp.port())).or_else(|_| UdpSocket::bind((tcp.ip(), 0)))?;
        let addr = SocketAddr::new(public, sock.local_addr()?.port()).to_string();
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Ok(Arc::new(Gossip {
            cfg,
            node,
            key,
            sock,
            addr,
            window: Mutex::new(HashMap::new()),
            guard: Mutex::new(ReplayGuard::default()),
            seq: Mutex::new(start),
            admitted: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashSet::new()),
            dropped: Mutex::new((0, None)),
            interval,
            events: Mutex::new(None),
            state,
            report,
        }))
    }

    /// Our vector and our candidates, now.
    pub fn own(&self) -> (LoadVector, Vec<proto::msg::Candidate>) {
        let r = crate::reporter::load_report(&self.report, &self.state.guests, &self.state.registry, &self.state.sessions);
        let v = LoadVector {
            node: r.node,
            addr: r.addr,
            gossip: self.addr.clone(),
            run_queue: r.run_queue,
            cpus: r.cpus,
            speed: r.speed,
            free_mib: r.free_mem_mib,
            total_mib: r.total_mem_mib,
            age_ms: 0,
        };
        (v, r.candidates)
    }

    /// Every interval: spread our vector, then decide (a thread).
    pub fn run(self: &Arc<Self>, ask: impl Fn(&str, &Msg) -> Result<Msg, String>, migrate: impl Fn(u32, &str) -> Result<u32, String> + Send + Sync + Clone + 'static) {
        loop {
            std::thread::sleep(self.interval);
            let (own, cands) = self.own();
            self.spread(&own);
            self.decide(&own, &cands, &ask, migrate.clone());
        }
    }

    /// Vectors older than this leave the window.
    fn max_age(&self) -> Duration {
        (self.interval * 8).max(Duration::from_secs(2))
    }

    /// Receive forever (a thread).
    pub fn receive(&self) {
        let mut buf = [0u8; 2048];
        loop {
            let (n, peer) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let got = gossip::decode(&self.key, &buf[..n]).and_then(|p| lock(&self.guard).check(&p).map(|()| p));
            match got {
                Ok(p) => self.heard(p),
                Err(e) => self.dropped(peer, &e),
            }
        }
    }

    /// Log a dropped datagram: each one while they are rare, then at most one line a
    /// second with the count (a flood must not fill the log).
    fn dropped(&self, peer: SocketAddr, e: &gossip::GossipError) {
        let mut d = lock(&self.dropped);
        d.0 += 1;
        let now = Instant::now();
        if d.0 <= 10 || d.1.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            log!(self.node, "gossip: dropped a datagram from {peer}: {e} ({} dropped so far)", d.0);
            d.1 = Some(now);
        }
    }

    fn heard(&self, p: Packet) {
        let now = Instant::now();
        let mut w = lock(&self.window);
        for v in p.vectors {
            if v.node == self.node {
                continue;
            }
            let Some(at) = now.checked_sub(Duration::from_millis(u64::from(v.age_ms))) else { continue };
            if now.duration_since(at) > self.max_age() {
                continue;
            }
            if w.get(&v.node).is_none_or(|h| h.at < at) {
                w.insert(v.node.clone(), Heard { v, at });
            }
        }
    }

    /// The fresh part of the window (older vectors are dropped).
    fn fresh(&self) -> Vec<Heard> {
        let now = Instant::now();
        let max = self.max_age();
        let mut w = lock(&self.window);
        w.retain(|_, h| now.duration_since(h.at) <= max);
        let mut v: Vec<Heard> = w.values().cloned().collect();
        v.sort_by(|a, b| a.v.node.cmp(&b.v.node));
        v
    }

    /// Send `own` (and the freshest relayed vectors) to `fanout` random peers.
    pub fn spread(&self, own: &LoadVector) {
        let heard = self.fresh();
        let mut peers: Vec<String> = heard.iter().map(|h| h.v.gossip.clone()).chain(self.cfg.seeds.iter().cloned()).filter(|a| *a != self.addr).collect();
        peers.sort();
        peers.dedup();
        shuffle(&mut peers);
        let mut relayed: Vec<&Heard> = heard.iter().collect();
        relayed.sort_by_key(|h| std::cmp::Reverse(h.at));
        let now = Instant::now();
        let mut vectors = vec![own.clone()];
        vectors.extend(relayed.iter().map(|h| LoadVector { age_ms: now.duration_since(h.at).as_millis().min(u128::from(u32::MAX)) as u32, ..h.v.clone() }));
        let seq = {
            let mut s = lock(&self.seq);
            *s += 1;
            *s
        };
        let Some(b) = gossip::encode(&self.key, &Packet { seq, vectors }) else {
            log!(self.node, "gossip: our vector does not fit a datagram (node name or address too long)");
            return;
        };
        for p in peers.iter().take(self.cfg.fanout.max(1)) {
            let _ = self.sock.send_to(&b, p);
        }
    }

    /// One decision round for our own processes: plan with the policy over us and the
    /// window, and carry out what a target admits. `own`: our vector; `cands`: our
    /// processes; `migrate(pid, target addr)` moves one.
    pub fn decide(self: &Arc<Self>, own: &LoadVector, cands: &[proto::msg::Candidate], ask: &impl Fn(&str, &Msg) -> Result<Msg, String>, migrate: impl Fn(u32, &str) -> Result<u32, String> + Send + Sync + 'static) {
        if !self.cfg.balance {
            return;
        }
        let heard = self.fresh();
        if heard.is_empty() {
            return;
        }
        let now = now_ms();
        let info = |v: &LoadVector, last: u64| NodeInfo {
            name: v.node.clone(),
            cpus: v.cpus.max(1),
            speed: f64::from(v.speed.max(1)) / 1000.0,
            run_queue: v.run_queue,
            guests: 0,
            free_mem_mib: v.free_mib,
            last_report_ms: last,
            up: true,
        };
        let inst = Instant::now();
        let mut nodes = vec![info(own, now)];
        nodes.extend(heard.iter().map(|h| info(&h.v, now.saturating_sub(inst.duration_since(h.at).as_millis() as u64))));
        let mut snapshot = Snapshot { nodes, now_ms: now };
        // our own side is known exactly (our candidates); a target's by the age of its
        // vector: counted once it was measured well after the move was done
        let settle = Duration::from_millis(2 * self.interval.as_millis() as u64);
        let counts = |p: &Pending| {
            let at_src = cands.iter().any(|c| c.pid == p.src_pid);
            let at_dst = p.done_ms.is_some_and(|d| heard.iter().any(|h| h.v.node == p.to && now.saturating_sub(inst.duration_since(h.at).as_millis() as u64) >= d + settle.as_millis() as u64));
            (at_src, at_dst)
        };
        balancer::account_pending(&mut snapshot, &mut lock(&self.pending), counts, 20 * self.interval.as_millis().max(250) as u64);
        let located: Vec<Located> = cands
            .iter()
            .map(|c| Located { who: Who::Process { home: c.home.clone(), home_pid: c.home_pid, pid: c.pid }, node: 0, cand: c.clone() })
            .collect();
        let (in_flight, failed) = (lock(&self.in_flight).clone(), lock(&self.failed).clone());
        let blocked = |w: &Who| matches!(w, Who::Process { pid, .. } if in_flight.contains(pid) || failed.contains(pid));
        let reserve = self.cfg.params.mem_reserve_mib;
        let short = |i: usize| snapshot.nodes[i].free_mem_mib < reserve;
        let jobs = balancer::running_jobs(&located, now, blocked, short);
        let addr_of = |i: usize| if i == 0 { own.addr.clone() } else { heard[i - 1].v.addr.clone() };
        // refused targets leave this round's snapshot, and the plan is made again
        for _ in 0..snapshot.nodes.len() {
            let plan: Vec<policy::Migration> = policy::plan_migrations(&snapshot, &jobs, &self.cfg.params).into_iter().filter(|m| m.from == 0).collect();
            let Some(m) = plan.first() else { return };
            let l = &located[m.job.proc as usize];
            let to = snapshot.nodes[m.to].name.clone();
            let load = snapshot.nodes[0].load();
            let ask_msg = Msg::AdmitMigration { from: self.node.clone(), source_load_milli: (load * 1000.0).min(f64::from(u32::MAX)) as u32, mem_mib: l.cand.rss_mib };
            match ask(&addr_of(m.to), &ask_msg) {
                Ok(Msg::Ack) => {}
                other => {
                    let why = match other {
                        Err(e) => e,
                        Ok(m) => format!("unexpected answer {}", m.name()),
                    };
                    log!(self.node, "gossip: {to} refused pid {}: {why}; trying the next node", l.cand.pid);
                    snapshot.nodes[m.to].up = false;
                    continue;
                }
            }
            let why = match m.reason {
                policy::MigrationReason::LoadBalance { gain } => format!("load: {} {:.2} -> {to} {:.2}, gain {gain:.2}", self.node, load, snapshot.nodes[m.to].load()),
                policy::MigrationReason::MemoryUshering { deficit_mib } => format!("memory ushering: {} short by {deficit_mib} MiB", self.node),
            };
            let label = if l.cand.home.is_empty() { format!("pid {} (a body here)", l.cand.pid) } else { format!("{}:{}", l.cand.home, l.cand.home_pid) };
            log!(self.node, "gossip: migrate {label} ({}, {} MiB) from {} to {to}: {why}", l.cand.cmd, l.cand.rss_mib, self.node);
            lock(&self.in_flight).insert(l.cand.pid);
            lock(&self.pending).push(Pending { key: l.cand.pid.to_string(), from: self.node.clone(), to: to.clone(), mib: l.cand.rss_mib, src_pid: l.cand.pid, new_pid: None, done_ms: None });
            let (me, pid, target, from) = (self.clone(), l.cand.pid, addr_of(m.to), self.node.clone());
            let who = if l.cand.home.is_empty() { String::new() } else { format!("{}:{}", l.cand.home, l.cand.home_pid) };
            let reason = why.split(':').next().unwrap_or("").to_string();
            let line = format!("gossip: migrate {label} from {from} to {to}: {why}");
            let events = self.events.lock().map(|e| e.clone()).unwrap_or(None);
            std::thread::spawn(move || {
                let r = migrate(pid, &target);
                lock(&me.in_flight).remove(&pid);
                let mut p = lock(&me.pending);
                if let Some(k) = p.iter().position(|x| x.key == pid.to_string() && x.done_ms.is_none()) {
                    if r.is_ok() {
                        p[k].done_ms = Some(now_ms());
                    } else {
                        p.remove(k);
                    }
                }
                drop(p);
                match r {
                    Ok(_) => {
                        log!(me.node, "gossip: migrated {label} to {to}");
                        if let Some(ev) = events {
                            ev.push(Msg::MigrationEvent { line, who, moved: format!("{from}->{to} ({reason})") });
                        }
                    }
                    Err(e) if e.contains(crate::server::ENDED_BEFORE_MOVE) => log!(me.node, "gossip: {label} ended before its move to {to}"),
                    Err(e) => {
                        lock(&me.failed).insert(pid);
                        log!(me.node, "gossip: migration of {label} to {to} failed (it stays here, and is not moved again): {e}");
                    }
                }
            });
            return;
        }
    }

    /// Admit a migration from a node whose load is `source_load`, of `mem_mib`, by our
    /// own vector now: only if the move still pays with the admissions already given
    /// counted in (they have not arrived yet), and we keep the memory reserve.
    pub fn admit(&self, source_load: f64, mem_mib: u64) -> Result<(), String> {
        let (own, _) = self.own();
        let mut adm = lock(&self.admitted);
        let ttl = (self.interval * 10).max(Duration::from_secs(3));
        adm.retain(|t| t.elapsed() < ttl);
        let cap = f64::from(own.cpus.max(1)) * f64::from(own.speed.max(1)) / 1000.0;
        let after = (f64::from(own.run_queue) + adm.len() as f64 + 1.0) / cap;
        let gain = source_load - after;
        if gain <= self.cfg.params.min_gain.max(0.0) {
            return Err(format!("refused: our load with it would be {after:.2} (and {} admitted on the way), the source's is {source_load:.2}", adm.len()));
        }
        if own.free_mib < mem_mib.saturating_add(self.cfg.params.mem_reserve_mib) {
            return Err(format!("refused: {} MiB free, {mem_mib} MiB asked (reserve {} MiB)", own.free_mib, self.cfg.params.mem_reserve_mib));
        }
        adm.push(Instant::now());
        Ok(())
    }

    /// Where moves are told to the placer (for `mos ps`), if there is one.
    pub fn set_events(&self, q: Arc<crate::reporter::EventQueue>) {
        if let Ok(mut e) = self.events.lock() {
            *e = Some(q);
        }
    }
}

/// Fisher-Yates with a small xorshift seeded by the clock (peer choice need not be
/// cryptographic, only different per node and round).
fn shuffle<T>(v: &mut [T]) {
    let mut x = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}
