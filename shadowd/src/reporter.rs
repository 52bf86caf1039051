//! The reporter: one authenticated connection to the placer, kept open (reconnecting every
//! interval while the placer is down). It sends a [`LoadReport`] every interval and, in
//! between, the job events ([`Msg::JobStatus`], [`Msg::Checkpointed`]) that the rest of the
//! daemon queues in the [`EventQueue`]. An event leaves the queue only once it was written,
//! so none is lost while the placer is away.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use proto::msg::LoadReport;
use proto::{auth, ClusterKey, FrameWriter, Hello, Msg, NoSigPipe, Role};

use crate::candidates::Registry;
use crate::guests::Guests;
use crate::rsys::Sessions;
use crate::{load, lock, log};

/// Job events waiting for the placer, oldest first. Single consumer (the reporter).
pub struct EventQueue {
    enabled: bool,
    events: Mutex<VecDeque<Msg>>,
    cv: Condvar,
}

impl EventQueue {
    /// A queue; a disabled one (no placer) drops what it is given.
    pub fn new(enabled: bool) -> Self {
        EventQueue {
            enabled,
            events: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
        }
    }

    /// Queue an event.
    pub fn push(&self, msg: Msg) {
        if !self.enabled {
            return;
        }
        lock(&self.events).push_back(msg);
        self.cv.notify_all();
    }

    /// The oldest event, without removing it, waiting for one until `deadline`.
    pub fn peek_until(&self, deadline: Instant) -> Option<Msg> {
        let mut q = lock(&self.events);
        loop {
            if let Some(m) = q.front() {
                return Some(m.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            q = self
                .cv
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Remove the oldest event (after it was sent).
    pub fn pop(&self) {
        lock(&self.events).pop_front();
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        lock(&self.events).len()
    }

    /// True if no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the reporter needs to know.
#[derive(Clone, Debug)]
pub struct ReporterConfig {
    /// Our node name.
    pub node: String,
    /// Our listening address, as reported.
    pub addr: String,
    /// The placer's address.
    pub placer: String,
    /// Cpus to report.
    pub cpus: u32,
    /// Speed to report.
    pub speed: u32,
    /// Report interval.
    pub interval: Duration,
}

/// Start the reporter thread.
pub fn start(
    cfg: ReporterConfig,
    key: ClusterKey,
    events: Arc<EventQueue>,
    node: NodeState,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reporter".into())
        .spawn(move || run(&cfg, &key, &events, &node))
}

/// What a load report is made of.
#[derive(Clone)]
pub struct NodeState {
    /// The guest table.
    pub guests: Arc<Guests>,
    /// Processes registered here.
    pub registry: Arc<Registry>,
    /// Sessions of processes homed here.
    pub sessions: Arc<Sessions>,
}

fn run(cfg: &ReporterConfig, key: &ClusterKey, events: &EventQueue, guests: &NodeState) {
    let mut was_down = false;
    loop {
        match connect(cfg, key) {
            Ok(stream) => {
                log!(cfg.node, "connected to the placer at {}", cfg.placer);
                was_down = false;
                if let Err(e) = serve(cfg, stream, events, guests) {
                    log!(cfg.node, "lost the placer at {}: {e}", cfg.placer);
                }
            }
            Err(e) => {
                if !was_down {
                    log!(cfg.node, "cannot reach the placer at {} (retrying every {:?}): {e}", cfg.placer, cfg.interval);
                    was_down = true;
                }
            }
        }
        std::thread::sleep(cfg.interval);
    }
}

fn connect(cfg: &ReporterConfig, key: &ClusterKey) -> Result<TcpStream, String> {
    let addrs = cfg
        .placer
        .to_socket_addrs()
        .map_err(|e| format!("bad placer address: {e}"))?;
    let timeout = cfg.interval.max(Duration::from_millis(200));
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(mut s) => {
                auth::client_handshake(&mut s, key, &Hello::new(cfg.node.clone(), Role::Shadowd))
                    .map_err(|e| format!("handshake with {a}: {e}"))?;
                return Ok(s);
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// Send reports and events until the connection fails.
fn serve(
    cfg: &ReporterConfig,
    stream: TcpStream,
    events: &EventQueue,
    node: &NodeState,
) -> Result<(), String> {
    stream
        .set_write_timeout(Some(cfg.interval.max(Duration::from_secs(5))))
        .map_err(|e| format!("cannot set a write timeout: {e}"))?;
    let probe = stream
        .try_clone()
        .map_err(|e| format!("cannot clone the socket: {e}"))?;
    let mut w = FrameWriter::new(NoSigPipe::new(stream));
    let mut next_report = Instant::now();
    loop {
        // A placer that closed its end must not swallow the next event: check first.
        check_alive(&probe).map_err(|e| format!("placer connection: {e}"))?;
        if Instant::now() >= next_report {
            let rep = load_report(cfg, &node.guests, &node.registry, &node.sessions);
            tracing::debug!(target: "shadowd", node = %rep.node, run_queue = rep.run_queue, guests = rep.guests, free_mem_mib = rep.free_mem_mib, "load report sent");
            w.write_msg(&Msg::LoadReport(rep), &[]).map_err(|e| e.to_string())?;
            next_report += cfg.interval;
            let now = Instant::now();
            if next_report < now {
                next_report = now + cfg.interval;
            }
        }
        if let Some(ev) = events.peek_until(next_report) {
            check_alive(&probe).map_err(|e| format!("placer connection: {e}"))?;
            w.write_msg(&ev, &[]).map_err(|e| e.to_string())?;
            events.pop();
        }
    }
}

/// Ok if the peer has not closed the connection. Whatever the placer sent is read and
/// dropped: the reporter's connection is one-way.
fn check_alive(s: &TcpStream) -> io::Result<()> {
    s.set_nonblocking(true)?;
    let mut buf = [0u8; 4096];
    let res = loop {
        match (&*s).read(&mut buf) {
            Ok(0) => break Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the placer")),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    s.set_nonblocking(false)?;
    res
}

/// This node's load now: its run queue counts the runnable processes of this node (its
/// guests and the processes registered here whose bodies have not left), so that nodes
/// sharing one host (a localhost cluster) each count their own.
pub fn load_report(cfg: &ReporterConfig, guests: &Guests, reg: &Registry, sessions: &Sessions) -> LoadReport {
    let pids = guests.pids();
    let away = sessions.away();
    let mut running = guests.running();
    running.extend(reg.local(&cfg.node, |pid| away.iter().any(|a| a.0 == pid) || sessions.by_vpid(pid).is_some()));
    let candidates = reg.candidates(running);
    // runnable now, or used CPU over the interval: one sample of the run state can catch
    // a CPU-bound process in a short wait (a forwarded write, a page fault)
    let mut counted: Vec<u32> = candidates.iter().filter(|c| c.runnable || c.cpu_permille >= 20).map(|c| c.pid).collect();
    counted.extend(pids.iter().copied().filter(|&p| !candidates.iter().any(|c| c.pid == p) && load::is_runnable(p)));
    counted.sort_unstable();
    counted.dedup();
    let run_queue = counted.len();
    let mem = load::memory();
    LoadReport {
        node: cfg.node.clone(),
        addr: cfg.addr.clone(),
        cpus: cfg.cpus,
        speed: cfg.speed,
        run_queue: u32::try_from(run_queue).unwrap_or(u32::MAX),
        guests: u32::try_from(pids.len()).unwrap_or(u32::MAX),
        free_mem_mib: mem.free_mib,
        total_mem_mib: mem.total_mib,
        interval_ms: u32::try_from(cfg.interval.as_millis()).unwrap_or(u32::MAX),
        guest_list: guests.describe(),
        candidates,
        away,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_queued_until_popped() {
        let q = EventQueue::new(true);
        q.push(Msg::Ack);
        q.push(Msg::Error { msg: "x".into() });
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(q.peek_until(soon), Some(Msg::Ack));
        // Not popped (say the write failed): the same event comes again.
        assert_eq!(q.peek_until(soon), Some(Msg::Ack));
        q.pop();
        assert_eq!(q.peek_until(soon), Some(Msg::Error { msg: "x".into() }));
        q.pop();
        assert!(q.is_empty());
        assert_eq!(q.peek_until(Instant::now() + Duration::from_millis(5)), None);
    }

    #[test]
    fn disabled_queue_drops_events() {
        let q = EventQueue::new(false);
        q.push(Msg::Ack);
        assert!(q.is_empty());
    }

    #[test]
    fn peek_wakes_when_an_event_arrives() {
        let q = Arc::new(EventQueue::new(true));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.peek_until(Instant::now() + Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        q.push(Msg::Ack);
        assert_eq!(t.join().unwrap(), Some(Msg::Ack));
    }
}
