//! The server: every accepted connection gets its own thread, proves the cluster key
//! (server handshake), sends one request and gets one answer (`Ack` or `Error`). A peer that
//! fails either step is logged with its address and dropped; nothing a peer sends can stop
//! the daemon from serving the others.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use proto::msg::MoveMode;
use proto::msg::OsBytes;
use proto::{auth, ClusterKey, FrameReader, FrameWriter, Hello, Msg, NoSigPipe, Role};

use crate::guests::Guests;
use crate::log;

/// How long a peer has to send its request once authenticated.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection thread shares.
pub struct ServerCtx {
    /// Our node name.
    pub node: String,
    /// Cluster key.
    pub key: ClusterKey,
    /// The guest table.
    pub guests: Arc<Guests>,
    /// Where images streamed to this node are kept.
    pub received_dir: std::path::PathBuf,
    /// Where migrating processes' images are received (in memory when the host can).
    pub migration_dir: std::path::PathBuf,
    /// Shadow sessions of processes homed here whose bodies run elsewhere.
    pub sessions: Arc<crate::rsys::Sessions>,
    /// The state directory (`shadow.sock`, `ckpt/`).
    pub state_dir: std::path::PathBuf,
    /// One migration of a process at a time: a second request (a `mos migrate` and an
    /// automatic one) waits for the first and then sees where it left the process.
    pub migrations: std::sync::Mutex<std::collections::HashMap<u32, Arc<std::sync::Mutex<()>>>>,
    /// Gossip mode: the window and the admission rule.
    pub gossip: Option<Arc<crate::gossip::Gossip>>,
    /// Images coming over lanes (`Msg::LanesReady`): by token, where their lanes go.
    pub lanes: std::sync::Mutex<std::collections::HashMap<u64, std::sync::mpsc::Sender<(u32, TcpStream)>>>,
}

/// Accept connections forever.
pub fn serve(listener: TcpListener, ctx: Arc<ServerCtx>) -> Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let c = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("conn-{peer}"))
                    .spawn(move || handle_connection(&c, stream, peer));
                if let Err(e) = spawned {
                    log!(ctx.node, "dropped connection from {peer}: no thread for it: {e}");
                }
            }
            Err(e) => {
                // Out of fds and the like: back off instead of spinning.
                log!(ctx.node, "accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn handle_connection(ctx: &ServerCtx, mut stream: TcpStream, peer: SocketAddr) {
    let hello = Hello::new(ctx.node.clone(), Role::Shadowd);
    let who = match auth::server_handshake(&mut stream, &ctx.key, &hello) {
        Ok(who) => who,
        Err(e) => {
            log!(ctx.node, "dropped connection from {peer}: {e}");
            return;
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(REQUEST_TIMEOUT)) {
        log!(ctx.node, "dropped connection from {peer}: {e}");
        return;
    }
    let reader = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log!(ctx.node, "dropped connection from {peer}: {e}");
            return;
        }
    };
    let mut r = FrameReader::new(reader);
    let mut w = FrameWriter::new(NoSigPipe::new(stream));
    let request: Msg = match r.read_msg() {
        Ok((m, _bulk)) => m,
        Err(e) => {
            log!(ctx.node, "dropped connection from {peer} ({} {}): bad request: {e}", who.role, who.node);
            return;
        }
    };
    let name = request.name();
    let answer = match request {
        // an image for a job that will be restarted here (no shared disk needed)
        Msg::ImageBegin { job, size, .. } => {
            let dest = ctx.received_dir.join(format!("job{job}.mosimg"));
            match proto::stream::recv_image(&mut r, size, &dest) {
                Ok(size) => Msg::ImageReceived { job, size, path: OsBytes::from(dest.as_path()) },
                Err(e) => Msg::Error { msg: format!("shadowd {}: image of job {job}: {e}", ctx.node) },
            }
        }
        // a migrating process's image, streamed while it is written (stop-and-copy), or a
        // live migration's (pages while it runs, then the rest); on disk where memory is
        // a cgroup limit (a live image is sparse there too: its offsets stay below ext4's
        // 16 TiB)
        // a lane of a stop-and-copy image: to the connection receiving that image
        Msg::ImageLane { token, lane } => {
            let to = crate::lock(&ctx.lanes).get(&token).cloned();
            match to {
                Some(tx) if tx.send((lane, r.into_inner())).is_ok() => return,
                _ => Msg::Error { msg: format!("shadowd {}: no image is waiting for lanes under that token", ctx.node) },
            }
        }
        Msg::MigrationImage { job, reserve, lanes, .. } => match receive_image(ctx, &mut r, &mut w, job, Some((reserve, lanes))) {
            Some(m) => m,
            None => return,
        },
        Msg::LiveMigrationImage { job, .. } => match receive_image(ctx, &mut r, &mut w, job, None) {
            Some(m) => m,
            None => return,
        },
        // post-copy: the image, then (the body running) its pages
        Msg::LazyMigrationImage { job, .. } => {
            set_buffer(r.get_ref(), libc::SO_RCVBUF, LAZY_QUEUE);
            let dest = ctx.migration_dir.join(format!("job{job}.mosimg"));
            let t0 = std::time::Instant::now();
            match crate::live::recv_lazy(&mut r, &mut w, job, &dest) {
                Ok(n) => {
                    log!(ctx.node, "job {job}: post-copy stream of {n} bytes: every page in at {} ms", t0.elapsed().as_millis());
                    Msg::Ack
                }
                Err(e) => Msg::Error { msg: format!("shadowd {}: post-copy image of job {job}: {e}", ctx.node) },
            }
        }
        // a migration whose requester follows its progress
        Msg::MigrateProcess { pid, to, mode, progress: true, compress } => {
            let sent = Progress::default();
            let done = std::sync::atomic::AtomicBool::new(false);
            let w = std::sync::Mutex::new(&mut w);
            let r = std::thread::scope(|sc| {
                sc.spawn(|| {
                    let mut last = u64::MAX;
                    while !done.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(250));
                        let b = sent.bytes.load(Ordering::Relaxed);
                        if b != last && !done.load(Ordering::Acquire) {
                            last = b;
                            let round = sent.round.load(Ordering::Relaxed).checked_sub(1);
                            if crate::lock(&w).write_msg(&Msg::MigrationProgress { bytes: b, round }, &[]).is_err() {
                                return;
                            }
                        }
                    }
                });
                let r = migrate_process(ctx, pid, &to, mode, compress, Some(&sent));
                done.store(true, Ordering::Release);
                r
            });
            match r {
                Ok((pid, stats)) => Msg::Migrated { pid, stats: Some(stats) },
                Err(msg) => Msg::Error { msg: format!("shadowd {}: migrate pid {pid} to {to}: {msg}", ctx.node) },
            }
        }
        // only the placer writes event logs (any other peer: refused)
        Msg::AppendUserLog { path, text } if who.role == Role::Placer => match append_user_log(path.as_path(), &text) {
            Ok(()) => {
                tracing::debug!(target: "shadowd", node = %ctx.node, path = %path.as_path().display(), bytes = text.len(), "user log record appended");
                Msg::Ack
            }
            Err(e) => Msg::Error { msg: format!("shadowd {}: event log {}: {e}", ctx.node, path.as_path().display()) },
        },
        Msg::AppendUserLog { .. } => Msg::Error { msg: format!("shadowd {}: only the placer writes event logs", ctx.node) },
        request => handle_request(ctx, request),
    };
    if let Msg::Error { msg } = &answer {
        log!(ctx.node, "{name} from {peer} ({} {}) refused: {msg}", who.role, who.node);
    }
    if let Err(e) = w.write_msg(&answer, &[]) {
        log!(ctx.node, "cannot answer {name} to {peer}: {e}");
    }
}

/// Receive a migrating process's image (`reserve`: stop-and-copy, with that much memory
/// made ready first, over that many lanes; None: a live migration's stream); the
/// answer, or None when the source was already told why not.
fn receive_image<R: std::io::Read + AsFd, W: std::io::Write>(ctx: &ServerCtx, r: &mut FrameReader<R>, w: &mut FrameWriter<W>, job: proto::JobId, reserve: Option<(u64, u32)>) -> Option<Msg> {
    let in_memory = !crate::load::memory_limited();
    let dir = if in_memory { &ctx.migration_dir } else { &ctx.received_dir };
    let dest = dir.join(format!("job{job}.mosimg"));
    let what = if reserve.is_some() { "migration image" } else { "live migration stream" };
    let mut over = String::new();
    let got = match reserve {
        None => {
            let t0 = std::time::Instant::now();
            crate::live::recv_live_to_file(r, &dest).map(|n| (n, t0))
        }
        Some((reserve, lanes)) => {
            let landing = match ready_landing(ctx, w, job, &dest, reserve, in_memory, lanes) {
                Ok(l) => l,
                Err(Some(msg)) => return Some(Msg::Error { msg }),
                Err(None) => return None,
            };
            let t0 = std::time::Instant::now();
            match landing {
                (l, None) => l.receive(r).map(|n| (n, t0)),
                (l, Some(lanes)) => {
                    over = format!(" over {} lanes", lanes.len());
                    l.receive_laned(r, lanes).map(|n| (n, t0))
                }
            }
        }
    };
    Some(match got {
        // the size is what the stream carried (a sparse live image's file is larger)
        Ok((size, t0)) => {
            log!(ctx.node, "job {job}: {what} of {size} bytes received in {} ms{over}", t0.elapsed().as_millis());
            Msg::ImageReceived { job, size, path: OsBytes::from(dest.as_path()) }
        }
        Err(e) => Msg::Error { msg: format!("shadowd {}: {what} of job {job}: {e}", ctx.node) },
    })
}

/// Make memory ready for `reserve` bytes of the image coming to `dest` (none for 0), and
/// tell the source (for 0 it expects no answer); with `lanes`, take them first (the
/// source is told `LanesReady`, opens them, then hears `Ack`). If it could not be done:
/// the answer still to give, or None when the source was told why (this node has not
/// that much memory free, or no room, or the lanes did not come).
#[allow(clippy::type_complexity)]
fn ready_landing<W: std::io::Write>(ctx: &ServerCtx, w: &mut FrameWriter<W>, job: proto::JobId, dest: &std::path::Path, reserve: u64, in_memory: bool, lanes: u32) -> Result<(crate::landing::Landing, Option<Vec<TcpStream>>), Option<String>> {
    let t0 = std::time::Instant::now();
    let free = crate::load::memory().free_mib << 20;
    let landing = if in_memory && reserve > free {
        Err(format!("no room for its image: about {} MiB, and this node has {} MiB of memory free", reserve >> 20, free >> 20))
    } else {
        crate::landing::Landing::prepare(dest, reserve, in_memory).map_err(|e| format!("cannot make room for its image ({} MiB): {e}", reserve >> 20))
    };
    let landing = landing.and_then(|l| match lanes as usize {
        0 => Ok(l),
        1..=ckpt::image::lanes::MAX_LANES if reserve > 0 => Ok(l),
        n => Err(format!("an image over {n} lanes (at most {}, with memory made ready)", ckpt::image::lanes::MAX_LANES)),
    });
    if reserve == 0 {
        return landing.map(|l| (l, None)).map_err(|e| Some(format!("shadowd {}: job {job}: {e}", ctx.node)));
    }
    let answer = match &landing {
        Ok(_) => {
            log!(ctx.node, "job {job}: memory for a {} MiB image ready in {} ms", reserve >> 20, t0.elapsed().as_millis());
            if lanes > 0 {
                Msg::LanesReady { token: lane_token() }
            } else {
                Msg::Ack
            }
        }
        Err(e) => Msg::Error { msg: format!("shadowd {}: job {job}: {e}", ctx.node) },
    };
    if let Err(e) = w.write_msg(&answer, &[]) {
        log!(ctx.node, "job {job}: cannot answer the image's announcement: {e}");
        return Err(None);
    }
    let landing = landing.map_err(|e| {
        log!(ctx.node, "job {job}: refused: {e}");
        None
    })?;
    let Msg::LanesReady { token } = answer else {
        return Ok((landing, None));
    };
    let got = take_lanes(ctx, token, lanes as usize);
    let answer = match &got {
        Ok(_) => Msg::Ack,
        Err(e) => Msg::Error { msg: format!("shadowd {}: job {job}: {e}", ctx.node) },
    };
    if let Err(e) = w.write_msg(&answer, &[]) {
        log!(ctx.node, "job {job}: cannot answer the image's lanes: {e}");
        return Err(None);
    }
    match got {
        Ok(l) => Ok((landing, Some(l))),
        Err(e) => {
            log!(ctx.node, "job {job}: refused: {e}");
            Err(None)
        }
    }
}

/// How long a source has to open an image's lanes once told where.
const LANES_WAIT: Duration = Duration::from_secs(10);

/// Wait for the `n` lanes of the image `token` names, each once; in lane order.
fn take_lanes(ctx: &ServerCtx, token: u64, n: usize) -> Result<Vec<TcpStream>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    crate::lock(&ctx.lanes).insert(token, tx);
    let deadline = std::time::Instant::now() + LANES_WAIT;
    let mut got: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let r = loop {
        if got.iter().all(Option::is_some) {
            break Ok(());
        }
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok((k, s)) => match got.get_mut(k as usize) {
                Some(slot @ None) => {
                    // a lane that stops bringing bytes must not hold the image for ever
                    let _ = s.set_read_timeout(Some(STREAM_STALL));
                    *slot = Some(s);
                }
                _ => break Err(format!("lane {k} of {n} came twice or is not one of them")),
            },
            Err(_) => break Err(format!("{} of its {n} lanes came within {} s", got.iter().filter(|g| g.is_some()).count(), LANES_WAIT.as_secs())),
        }
    };
    crate::lock(&ctx.lanes).remove(&token);
    r.map(|()| got.into_iter().flatten().collect())
}

/// A token no one can guess (the kernel's random bytes).
fn lane_token() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom fills our 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // (cannot fail for 8 bytes once the pool is ready; a clock-based token still
        // names this landing, and lanes are authenticated connections either way)
        return std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_ne_bytes(b)
}

/// Append one event-log record at `path` (absolute; the last component not a symlink),
/// in one write with O_APPEND: records of several writers never interleave.
fn append_user_log(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !path.is_absolute() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an absolute path"));
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o644).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    f.write_all(text.as_bytes())
}

/// One request, one answer.
pub fn handle_request(ctx: &ServerCtx, request: Msg) -> Msg {
    let result = match request {
        Msg::OpenJobSession { job, cwd, input, output, error, fresh } => {
            return match open_job_session(ctx, job, &cwd, input, output, error, fresh) {
                Ok(m) => m,
                Err(msg) => Msg::Error { msg: format!("shadowd {}: job {job}: {msg}", ctx.node) },
            }
        }
        Msg::WhereIsBody { pid } => {
            return match ctx.sessions.where_is(pid) {
                Ok((node, body_pid)) => Msg::BodyAt { node, body_pid },
                Err(msg) => Msg::Error { msg: format!("shadowd {}: {msg}", ctx.node) },
            }
        }
        Msg::AdmitMigration { from, source_load_milli, mem_mib } => {
            let Some(g) = &ctx.gossip else {
                return Msg::Error { msg: format!("shadowd {} does not gossip", ctx.node) };
            };
            return match g.admit(f64::from(source_load_milli) / 1000.0, mem_mib) {
                Ok(()) => {
                    log!(ctx.node, "gossip: admitted a process from {from} (its load {:.2})", f64::from(source_load_milli) / 1000.0);
                    Msg::Ack
                }
                Err(e) => Msg::Error { msg: format!("shadowd {}: {e}", ctx.node) },
            };
        }
        Msg::MigrateProcess { pid, to, mode, compress, .. } => {
            return match migrate_process(ctx, pid, &to, mode, compress, None) {
                Ok((pid, stats)) => Msg::Migrated { pid, stats: Some(stats) },
                Err(msg) => Msg::Error { msg: format!("shadowd {}: migrate pid {pid} to {to}: {msg}", ctx.node) },
            }
        }
        // a single migrated process: the answer carries its pid here
        Msg::PlaceJob { job, spec } if job.0 & crate::rsys::PROCESS_JOB_BIT != 0 => {
            let image = spec.restart_from.clone();
            return match ctx.guests.place(job, spec) {
                Ok(pid) => Msg::Migrated { pid, stats: None },
                Err(e) => {
                    // an image in memory that will not run is only memory lost
                    if let Some(p) = image.filter(|p| p.as_path().starts_with(&ctx.migration_dir) || p.as_path().starts_with(&ctx.received_dir)) {
                        let _ = std::fs::remove_file(p.as_path());
                    }
                    Msg::Error { msg: format!("shadowd {}: {e}", ctx.node) }
                }
            };
        }
        Msg::PlaceJob { job, spec } => ctx.guests.place(job, spec).map(|_| ()),
        Msg::Vacate { job } => ctx.guests.vacate(job).map(|_| ()),
        Msg::Kill { job, signal } => ctx.guests.kill(job, signal),
        other => {
            return Msg::Error {
                msg: format!("shadowd {} does not handle {}", ctx.node, other.name()),
            }
        }
    };
    match result {
        Ok(()) => Msg::Ack,
        Err(e) => Msg::Error {
            msg: format!("shadowd {}: {e}", ctx.node),
        },
    }
}

/// Checkpoint local process `pid` for migration (it hands its files home to us first if it
/// is at home, then stays as the stub), streaming the image to the shadowd at `to` as it
/// is written, and restart it there as a guest; its pid there. The process stays frozen
/// until it runs there, and runs on here if anything fails before (no image is written
/// on this node).
/// How a migration is going, for its requester: image bytes on the wire, and the live
/// copy round under way plus one (0: none).
#[derive(Default)]
pub(crate) struct Progress {
    bytes: AtomicU64,
    round: std::sync::atomic::AtomicU32,
}

pub(crate) fn migrate_process(ctx: &ServerCtx, pid: u32, to: &str, mode: MoveMode, compress: Option<bool>, progress: Option<&Progress>) -> Result<(u32, proto::msg::MoveStats), String> {
    let sent = progress.map(|p| &p.bytes);
    let real = i32::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
    let one = crate::lock(&ctx.migrations).entry(pid).or_default().clone();
    let _serial = crate::lock(&one);
    let live = match mode {
        MoveMode::Lazy => {
            let r = migrate_lazy(ctx, pid, real, to, sent);
            let mut all = crate::lock(&ctx.migrations);
            if Arc::strong_count(&one) == 2 {
                all.remove(&pid);
            }
            return r;
        }
        MoveMode::Live => true,
        MoveMode::StopAndCopy => false,
        MoveMode::Auto => {
            // Live only with room to spare: while the rounds run the process keeps
            // running (and growing), and every page it writes after it was queued is
            // copied for it. A node short of memory (ushering) moves it frozen, at once.
            let rss = crate::candidates::stat_of(pid).map_or(0, |s| s.rss_pages * 4096);
            rss >= live_min_bytes() && crate::load::memory().free_mib << 20 >= rss
        }
    };
    let compress = compress.unwrap_or_else(|| !on_this_machine(to));
    let r = migrate_process_now(ctx, pid, real, to, live, compress, progress);
    let mut all = crate::lock(&ctx.migrations);
    // forgotten once nobody else waits for it (the map's reference and ours)
    if Arc::strong_count(&one) == 2 {
        all.remove(&pid);
    }
    r
}

/// Smaller processes go over one connection: opening lanes (a handshake each, in
/// parallel) costs ~20 ms before the freeze, more than they save on a few MiB.
const LANES_MIN: u64 = 64 << 20;

/// How many connections a stop-and-copy image goes over: `MOS_MIGRATION_LANES`, 2 by
/// default (0: one stream through this daemon, as a compressed one goes). Measured here
/// (`MOS_BENCH_ONLY=stop-and-copy make bench`, 2 GiB over loopback): frozen 0.77-0.88 s
/// over one, 0.70-0.78 s over two or three (`ckpt::image::lanes`).
fn migration_lanes() -> u32 {
    std::env::var("MOS_MIGRATION_LANES").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(2).min(ckpt::image::lanes::MAX_LANES as u32)
}

/// Open `n` lanes to the shadowd at `to` for the image `token` names (at once: each
/// costs a handshake).
fn open_lanes(ctx: &ServerCtx, to: &str, token: u64, n: u32) -> Result<Vec<TcpStream>, String> {
    let open = |lane: u32| -> Result<TcpStream, String> {
        let (r, mut w) = connect_shadowd(ctx, to)?;
        w.write_msg(&Msg::ImageLane { token, lane }, &[]).map_err(|e| format!("{to}: lane {lane}: {e}"))?;
        let s = r.into_inner();
        // a target that stops reading must not hold the process frozen for ever
        let _ = s.set_write_timeout(Some(STREAM_STALL));
        Ok(s)
    };
    std::thread::scope(|sc| {
        let threads: Vec<_> = (0..n).map(|lane| sc.spawn(move || open(lane))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("a thread opening a lane panicked".into()))).collect()
    })
}

/// While the shim sends an image over `lanes`: wait for it to close the (empty) image
/// pipe, telling `sent` the bytes the target has acknowledged so far. 0, the pipe's bytes.
fn follow_lanes(pipe: std::os::fd::BorrowedFd<'_>, lanes: &[TcpStream], sent: Option<&AtomicU64>) -> Result<u64, proto::stream::StreamError> {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd { fd: pipe.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: polling one pollfd of ours.
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r > 0 {
            let mut b = [0u8; 1];
            // SAFETY: reading at most one byte into our buffer.
            let n = unsafe { libc::read(pipe.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            return match n {
                0 => Ok(0),
                n if n > 0 => Err(proto::stream::StreamError::Corrupt("image bytes in the pipe of an image sent over lanes".into())),
                _ => Err(proto::stream::StreamError::File { path: "image pipe".into(), source: std::io::Error::last_os_error() }),
            };
        }
        if let Some(s) = sent {
            s.store(lanes.iter().map(acked).sum(), Ordering::Relaxed);
        }
    }
}

/// Bytes a TCP connection's peer has acknowledged (tcp_info's tcpi_bytes_acked; 0 if
/// the kernel does not say).
fn acked(s: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    // struct tcp_info: tcpi_bytes_acked is the u64 at byte 120 (Linux 4.1 and later)
    const AT: usize = 120;
    let mut b = [0u8; 256];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our buffer and sets `len`.
    let r = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, b.as_mut_ptr().cast(), &mut len) };
    if r != 0 || (len as usize) < AT + 8 {
        return 0;
    }
    u64::from_ne_bytes(b[AT..AT + 8].try_into().unwrap_or([0; 8]))
}

/// Automatic migrations of processes this big (resident) go live (pre-copy) when the
/// node has at least as much memory free: `MOS_LIVE_MIN_MIB`, 256 MiB by default. Below
/// it a stop-and-copy freeze is short anyway, and the copy rounds would only add work.
fn live_min_bytes() -> u64 {
    std::env::var("MOS_LIVE_MIN_MIB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(256) << 20
}

/// Whether shadowd address `to` is on this machine (loopback, or an address of ours:
/// one a socket can be bound to). There the wire is faster than lz4 compresses.
fn on_this_machine(to: &str) -> bool {
    use std::net::ToSocketAddrs;
    match to.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(sa) => sa.ip().is_loopback() || std::net::UdpSocket::bind((sa.ip(), 0)).is_ok(),
        None => true,
    }
}

fn migrate_process_now(ctx: &ServerCtx, pid: u32, real: i32, to: &str, live: bool, compress: bool, progress: Option<&Progress>) -> Result<(u32, proto::msg::MoveStats), String> {
    let sent = progress.map(|p| &p.bytes);
    // a migration that came first may have moved it already
    if let Ok((node, body_pid)) = ctx.sessions.where_is(pid) {
        return Err(format!("process {pid} is no longer here: its body runs at {node} as pid {body_pid} (moved by an earlier request)"));
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("process {pid} {ENDED_BEFORE_MOVE} (no such process here)"));
    }
    // the target first: one that cannot be reached costs the process nothing
    let (mut r, mut w) = connect_shadowd(ctx, to)?;
    // a target that stops reading must not hold the process frozen for ever
    let _ = w.get_ref().get_ref().set_write_timeout(Some(STREAM_STALL));
    let (pipe_r, pipe_w) = proto::spliced::image_pipe().map_err(|e| format!("cannot make the image pipe: {e}"))?;
    let req = ckpt::control::CkptRequest {
        out: None,
        exit: true,
        migrate: Some(ctx.state_dir.join("shadow.sock").to_string_lossy().into_owned()),
        stream: true,
        strict: false,
        exit_code: 0,
        live,
        lazy: false,
        lanes: 0,
    };
    let job = proto::JobId(crate::rsys::PROCESS_JOB_BIT | u64::from(pid));
    let gone = || crate::candidates::stat_of(pid).is_none_or(|s| s.state == 'Z' || s.state == 'X');
    // Stop-and-copy: the target makes memory ready for the image while the process still
    // runs (its resident size and a little for the image's own records), so the frozen
    // stream lands in memory already there; a target without room says so now.
    let t_ready = std::time::Instant::now();
    // (an lz4 stream goes through the pump here, which compresses it)
    let rss = crate::candidates::stat_of(pid).map_or(0, |s| s.rss_pages * 4096);
    let nlanes = if live || compress || rss < LANES_MIN { 0 } else { migration_lanes() };
    let mut lanes: Vec<TcpStream> = Vec::new();
    if !live {
        let reserve = rss + rss / 64 + (1 << 20);
        w.write_msg(&Msg::MigrationImage { job, home: ctx.node.clone(), reserve, lanes: nlanes }, &[]).map_err(|e| format!("{to}: {e}"))?;
        match r.read_msg::<Msg>() {
            Ok((Msg::Ack, _)) if nlanes == 0 => {}
            Ok((Msg::LanesReady { token }, _)) if nlanes > 0 => {
                lanes = open_lanes(ctx, to, token, nlanes).map_err(|e| format!("{e} (the process keeps running here)"))?;
                match r.read_msg::<Msg>() {
                    Ok((Msg::Ack, _)) => {}
                    Ok((Msg::Error { msg }, _)) => return Err(format!("{msg} (the process keeps running here)")),
                    Ok((m, _)) => return Err(format!("unexpected answer {} to the image's lanes (the process keeps running here)", m.name())),
                    Err(e) => return Err(format!("{to}: {e} (the process keeps running here)")),
                }
            }
            Ok((Msg::Error { msg }, _)) => return Err(format!("{msg} (the process keeps running here)")),
            Ok((m, _)) => return Err(format!("unexpected answer {} to the image's announcement (the process keeps running here)", m.name())),
            Err(e) => return Err(format!("{to}: {e} (the process keeps running here)")),
        }
    }
    let ready_ms = t_ready.elapsed().as_millis() as u64;
    log!(ctx.node, "pid {pid}: streaming its image to {to}{}{}", if live { " (live: copy rounds while it runs)".to_string() } else { format!(" (memory ready there in {ready_ms} ms)") }, if compress { "; lz4 on the wire" } else { "" });
    let t0 = std::time::Instant::now();
    // The shim writes the image into the pipe while a second thread moves it on to the
    // target (splice: no copy through here, no file on this node).
    let (reply, sent) = std::thread::scope(|sc| {
        let sock = w.get_mut();
        let node = ctx.node.as_str();
        // (a stop-and-copy image was announced above)
        let first = live.then(|| Msg::LiveMigrationImage { job, home: node.to_string() });
        // (a live stream's records are compressed as a stop-and-copy image's bytes are)
        let lanes = &lanes;
        let pump = sc.spawn(move || {
            if lanes.is_empty() {
                proto::spliced::send_stream(sock, pipe_r.as_fd(), first.as_ref(), sent, compress)
            } else {
                // the shim sends on the lanes; the pipe only ends
                follow_lanes(pipe_r.as_fd(), lanes, sent)
            }
        });
        let on_round = |n: u32| {
            if let Some(p) = progress {
                p.round.store(n + 1, Ordering::Relaxed);
            }
        };
        let lane_fds: Vec<_> = lanes.iter().map(|l| l.as_fd()).collect();
        let reply = ckpt::control::request_streamed(real, &req, pipe_w.as_fd(), &lane_fds, &on_round);
        // our copy of the write end: the pump sees the image end when the writer is done
        drop(pipe_w);
        let sent = pump.join().unwrap_or_else(|_| Err(proto::stream::StreamError::Corrupt("the streaming thread panicked".into())));
        (reply, sent)
    });
    let (done, round_bytes, copy_us, verdict) = match reply {
        Ok((ckpt::control::CkptReply::Done { bytes, round_bytes, copy_us, .. }, v)) => (bytes, round_bytes, copy_us, v),
        Ok(_) | Err(_) if gone() => return Err(format!("process {pid} {ENDED_BEFORE_MOVE}")),
        Ok((ckpt::control::CkptReply::Failed(e), _)) => return Err(format!("checkpoint failed: {e} (the process keeps running)")),
        Err(e) => return Err(format!("checkpoint: {e}")),
    };
    let written = t0.elapsed();
    // From here on the process is frozen, whole in its image; it leaves only on commit,
    // and any failure below drops the verdict: the process runs on here as before.
    let keep = |e: String| format!("{e} (the process keeps running here)");
    let n = match sent {
        Ok(n) if n == done => n,
        // over lanes: each lane's share is checked by the target against the seal
        Ok(0) if !lanes.is_empty() => done,
        Ok(n) => return Err(keep(format!("the image was {done} bytes but {n} reached the stream"))),
        Err(e) => return Err(keep(format!("streaming the image to {to}: {e}"))),
    };
    proto::spliced::seal(w.get_mut(), n).map_err(|e| keep(format!("streaming the image to {to}: {e}")))?;
    let there = match r.read_msg::<Msg>() {
        Ok((Msg::ImageReceived { size, path, .. }, _)) if size == n => path,
        Ok((Msg::ImageReceived { size, .. }, _)) => return Err(keep(format!("{to} received {size} of {n} bytes"))),
        Ok((Msg::Error { msg }, _)) => return Err(keep(msg)),
        Ok((m, _)) => return Err(keep(format!("unexpected answer {} to the image", m.name()))),
        Err(e) => return Err(keep(format!("{to}: {e}"))),
    };
    let stored = t0.elapsed();
    let body = place_restart(ctx, job, there, to).map_err(keep)?;
    verdict.commit().map_err(|e| format!("process {pid} restarted at {to} as pid {body}, but could not be told to leave here: {e}"))?;
    let ms = t0.elapsed().as_millis() as u64;
    // frozen from the end of the copy rounds (all of it for stop-and-copy)
    let frozen_ms = ms.saturating_sub(copy_us / 1000);
    if live {
        log!(
            ctx.node,
            "pid {pid}: migrated to {to} (pid {body}): {n} bytes; live: copy rounds {round_bytes:?} bytes in {} ms while it ran, then frozen; image whole there at {} ms, running there at {} ms (frozen {frozen_ms} ms)",
            copy_us / 1000,
            stored.as_millis(),
            ms
        );
    } else {
        log!(
            ctx.node,
            "pid {pid}: migrated to {to} (pid {body}): {n} bytes; memory ready there in {ready_ms} ms while it ran, then frozen: image written and streamed in {} ms, stored there at {} ms, running there at {} ms",
            written.as_millis(),
            stored.as_millis(),
            ms
        );
    }
    let rounds = round_bytes.len() as u32;
    Ok((body, proto::msg::MoveStats { bytes: n, rounds, frozen_ms, total_ms: ready_ms + ms, round_bytes, resumed_ms: 0, ready_ms }))
}

/// Post-copy: checkpoint local process `pid` for migration and stream the image without
/// its private anonymous memory to `to`, restart it there at once, then send that memory
/// (the pages it faults on first, relayed from the target, then the rest in order).
/// Until the body runs there the process runs on here if anything fails; from then on
/// it lives there, and a failure (either node dying) loses it.
fn migrate_lazy(ctx: &ServerCtx, pid: u32, real: i32, to: &str, sent: Option<&AtomicU64>) -> Result<(u32, proto::msg::MoveStats), String> {
    use std::io::Write;
    if let Ok((node, body_pid)) = ctx.sessions.where_is(pid) {
        return Err(format!("process {pid} is no longer here: its body runs at {node} as pid {body_pid} (moved by an earlier request)"));
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("process {pid} {ENDED_BEFORE_MOVE} (no such process here)"));
    }
    let (mut r, w) = connect_shadowd(ctx, to)?;
    let _ = w.get_ref().get_ref().set_write_timeout(Some(STREAM_STALL));
    let tcp = w.get_ref().get_ref().try_clone().map_err(|e| e.to_string())?;
    // Little in flight: a page the body faults on waits behind what is queued before it.
    let (pipe_r, pipe_w) = proto::spliced::image_pipe().map_err(|e| format!("cannot make the image pipe: {e}"))?;
    let _ = rustix_free_pipe_size(&pipe_r, LAZY_QUEUE);
    set_buffer(&tcp, libc::SO_SNDBUF, LAZY_QUEUE);
    let (req_r, req_w) = proto::spliced::image_pipe().map_err(|e| format!("cannot make the request pipe: {e}"))?;
    let req = ckpt::control::CkptRequest {
        out: None,
        exit: true,
        migrate: Some(ctx.state_dir.join("shadow.sock").to_string_lossy().into_owned()),
        stream: true,
        strict: false,
        exit_code: 0,
        live: false,
        lazy: true,
        lanes: 0,
    };
    let job = proto::JobId(crate::rsys::PROCESS_JOB_BIT | u64::from(pid));
    log!(ctx.node, "pid {pid}: post-copy to {to}: image first, memory after it runs there");
    let t0 = std::time::Instant::now();
    let node = ctx.node.clone();
    std::thread::scope(|sc| {
        let mut sock = NoSigPipe::new(tcp.try_clone().map_err(|e| e.to_string())?);
        let mut seal_sock = NoSigPipe::new(tcp.try_clone().map_err(|e| e.to_string())?);
        let first = Msg::LazyMigrationImage { job, home: node.clone() };
        let pump = sc.spawn(move || proto::spliced::send_stream(&mut sock, pipe_r.as_fd(), Some(&first), sent, false));
        let ckpt = sc.spawn(|| {
            let r = ckpt::control::request_streamed_lazy(real, &req, pipe_w.as_fd(), req_r.as_fd());
            drop(pipe_w);
            drop(req_r);
            r
        });
        let cut = || {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        };
        // the image is whole there: start the body
        let there = match r.read_msg::<Msg>() {
            Ok((Msg::ImageReceived { path, .. }, _)) => path,
            Ok((Msg::Error { msg }, _)) => {
                cut();
                return Err(format!("{msg} (the process keeps running here)"));
            }
            Ok((m, _)) => {
                cut();
                return Err(format!("unexpected answer {} to the image (the process keeps running here)", m.name()));
            }
            Err(e) => {
                cut();
                let why = match ckpt.join() {
                    Ok(Ok((ckpt::control::CkptReply::Failed(f), _))) => format!("checkpoint failed: {f}"),
                    _ => format!("{to}: {e}"),
                };
                return Err(format!("{why} (the process keeps running here)"));
            }
        };
        let resumed_ms = t0.elapsed().as_millis() as u64;
        let body = match place_restart(ctx, job, there, to) {
            Ok(b) => b,
            Err(e) => {
                cut();
                return Err(format!("{e} (the process keeps running here)"));
            }
        };
        let running_ms = t0.elapsed().as_millis() as u64;
        log!(ctx.node, "pid {pid}: post-copy: running at {to} (pid {body}) {running_ms} ms after the request; its memory follows");
        // relay the body's faults to the writer while its pages stream
        let relay = sc.spawn(move || -> Result<(), String> {
            let mut req_w = std::fs::File::from(req_w);
            loop {
                match r.read_msg::<Msg>() {
                    Ok((Msg::PageRequest { addr }, _)) => {
                        // the writer may be done: a request it no longer reads is moot
                        let _ = req_w.write_all(&addr.to_le_bytes());
                    }
                    Ok((Msg::Ack, _)) => return Ok(()),
                    Ok((Msg::Error { msg }, _)) => return Err(msg),
                    Ok((m, _)) => return Err(format!("unexpected {} during post-copy", m.name())),
                    Err(e) => return Err(format!("{to}: {e}")),
                }
            }
        });
        let done = ckpt.join().map_err(|_| "the checkpoint thread panicked".to_string())?;
        let sent = pump.join().map_err(|_| "the streaming thread panicked".to_string())?;
        // From here the process lives at the target, whatever happens: leave.
        let (bytes, verdict) = match done {
            Ok((ckpt::control::CkptReply::Done { bytes, .. }, v)) => (bytes, Some(v)),
            _ => (0, None),
        };
        let outcome = match sent {
            Ok(n) if n == bytes => proto::spliced::seal(&mut seal_sock, n).map_err(|e| e.to_string()).and_then(|()| relay.join().unwrap_or_else(|_| Err("the relay thread panicked".into()))),
            Ok(n) => Err(format!("the image was {bytes} bytes but {n} reached the stream")),
            Err(e) => Err(e.to_string()),
        };
        if let Some(v) = verdict {
            let _ = v.commit();
        }
        let ms = t0.elapsed().as_millis() as u64;
        match outcome {
            Ok(()) => {
                log!(ctx.node, "pid {pid}: migrated to {to} (pid {body}) by post-copy: {bytes} bytes; running there at {running_ms} ms, every page there at {ms} ms");
                Ok((body, proto::msg::MoveStats { bytes, rounds: 0, frozen_ms: running_ms, total_ms: ms, round_bytes: Vec::new(), resumed_ms, ready_ms: 0 }))
            }
            Err(e) => {
                log!(ctx.node, "pid {pid}: post-copy to {to} failed after the body started there (pid {body}): {e}; the process is lost");
                cut();
                Err(format!("post-copy failed after the process started at {to}: {e}; the process is lost"))
            }
        }
    })
}

/// Post-copy: bytes queued at most in each of the pipe and the socket buffers on either
/// side, so that a requested page overtakes little of the background push.
pub(crate) const LAZY_QUEUE: usize = 256 << 10;

fn rustix_free_pipe_size(p: &std::os::fd::OwnedFd, n: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETPIPE_SZ on our pipe.
    if unsafe { libc::fcntl(p.as_raw_fd(), libc::F_SETPIPE_SZ, n as i32) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Set a socket buffer size (SO_SNDBUF / SO_RCVBUF); best effort.
pub(crate) fn set_buffer(s: &TcpStream, which: i32, n: usize) {
    use std::os::fd::AsRawFd;
    let v = n as i32;
    // SAFETY: setsockopt with an int on our socket.
    unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, which, (&v as *const i32).cast(), 4) };
}

/// How long a target may stop taking a streamed image before the migration gives up.
const STREAM_STALL: Duration = Duration::from_secs(30);

/// What a migration refused because its process ended says (the placer tells such a
/// race from a failure by it).
pub const ENDED_BEFORE_MOVE: &str = "ended before it could move";

pub(crate) fn connect_shadowd(ctx: &ServerCtx, to: &str) -> Result<(FrameReader<TcpStream>, FrameWriter<NoSigPipe<TcpStream>>), String> {
    use std::net::ToSocketAddrs;
    let sa = to
        .to_socket_addrs()
        .map_err(|e| format!("bad address {to}: {e}"))?
        .next()
        .ok_or_else(|| format!("{to} resolves to nothing"))?;
    let c = TcpStream::connect_timeout(&sa, Duration::from_secs(5)).map_err(|e| format!("cannot connect to {to}: {e}"))?;
    let mut s = NoSigPipe::new(c);
    let hello = Hello::new(ctx.node.clone(), Role::Shadowd);
    auth::client_handshake(&mut s, &ctx.key, &hello).map_err(|e| format!("{to}: {e}"))?;
    let c = s.into_inner();
    let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
    let r = c.try_clone().map_err(|e| e.to_string())?;
    Ok((FrameReader::new(r), FrameWriter::new(NoSigPipe::new(c))))
}

/// Restart the image the target stored at `there` as the body of process `job` there;
/// the new body's pid.
fn place_restart(ctx: &ServerCtx, job: proto::JobId, there: OsBytes, to: &str) -> Result<u32, String> {
    let (mut r, mut w) = connect_shadowd(ctx, to)?;
    let spec = proto::msg::JobSpec {
        argv: vec![there.clone()],
        env: Vec::new(),
        // the restart needs a directory to start in; the image restores its own cwd
        cwd: OsBytes::from("/"),
        home: ctx.node.clone(),
        mem_mib: 0,
        restart_from: Some(there),
        batch: None,
    };
    w.write_msg(&Msg::PlaceJob { job, spec }, &[]).map_err(|e| format!("{to}: {e}"))?;
    match r.read_msg::<Msg>() {
        Ok((Msg::Migrated { pid, .. }, _)) => Ok(pid),
        // an older target: it does not say the pid
        Ok((Msg::Ack, _)) => Ok(0),
        Ok((Msg::Error { msg }, _)) => Err(msg),
        Ok((m, _)) => Err(format!("unexpected answer {} to PlaceJob", m.name())),
        Err(e) => Err(format!("{to}: {e}")),
    }
}

/// A batch job's files at home: stdin (or /dev/null), stdout and stderr (truncated on a
/// fresh start; the same open file when they name the same path), and its session.
fn open_job_session(
    ctx: &ServerCtx,
    job: proto::JobId,
    cwd: &OsBytes,
    input: Option<OsBytes>,
    output: Option<OsBytes>,
    error: Option<OsBytes>,
    fresh: bool,
) -> Result<Msg, String> {
    use std::fs::OpenOptions;
    use std::os::fd::OwnedFd;
    let cwd = cwd.as_path();
    let at = |p: &OsBytes| cwd.join(p.as_path());
    let open_out = |p: &OsBytes| -> Result<OwnedFd, String> {
        let path = at(p);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(fresh)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let null = || -> Result<OwnedFd, String> {
        OpenOptions::new().read(true).write(true).open("/dev/null").map(OwnedFd::from).map_err(|e| format!("/dev/null: {e}"))
    };
    let stdin = match &input {
        Some(p) => std::fs::File::open(at(p)).map(OwnedFd::from).map_err(|e| format!("cannot open input {}: {e}", at(p).display()))?,
        None => null()?,
    };
    let stdout = match &output {
        Some(p) => open_out(p)?,
        None => null()?,
    };
    let stderr = match (&error, &output) {
        (Some(e), Some(o)) if e == o => stdout.try_clone().map_err(|e| e.to_string())?,
        (Some(e), _) => open_out(e)?,
        (None, _) => null()?,
    };
    let s = ctx
        .sessions
        .open_job(job.0, cwd, vec![(0, stdin), (1, stdout), (2, stderr)], fresh)
        .map_err(|e| format!("cannot open its session: {e}"))?;
    Ok(Msg::SessionOpened { token: s.token().to_vec(), rsys_addr: ctx.sessions.addr() })
}
