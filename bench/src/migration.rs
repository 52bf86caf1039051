//! "migration" figures: a 2 GiB process (`MOS_BENCH_MIB`) moved node1 -> node2 of a
//! loopback cluster by `mos migrate` (stop-and-copy, the image streamed as it is written),
//! beside a raw TCP loopback transfer of the same size measured in the same run. The
//! subject prints its monotonic clock every 5 ms; the largest gap between two prints is
//! the freeze it saw. Its final checksum is compared with a run that never moved. Every
//! cluster and process this section starts is stopped on drop, also when a step fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{bin, compile};

const STEP_TIMEOUT: Duration = Duration::from_secs(120);

struct Cluster {
    home: PathBuf,
}

impl Cluster {
    fn up(home: &Path) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(home);
        std::fs::create_dir_all(home).map_err(|e| e.to_string())?;
        let c = Cluster { home: home.to_path_buf() };
        c.mos(&["cluster", "init"])?;
        c.mos(&["cluster", "up", "--nodes", "2", "--no-balance"])?;
        Ok(c)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("mos"));
        cmd.args(args).env("MOS_HOME", &self.home).env("MOS_HOME_NODE", "node1").stdin(Stdio::null());
        cmd
    }

    fn mos(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command(args).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("mos {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command(&["cluster", "down"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// The subject, its stdout lines on a channel; killed on drop.
struct Subject {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subject {
    fn start(mut cmd: Command) -> Subject {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("starting the subject");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Subject { child, lines }
    }

    /// Lines until one starting with `prefix` (returned with the ones before it).
    fn until(&mut self, prefix: &str) -> Result<(Vec<String>, String), String> {
        let mut before = Vec::new();
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok((before, l)),
                Ok(l) => before.push(l),
                Err(_) => return Err(format!("no {prefix:?} line from the subject within {STEP_TIMEOUT:?}")),
            }
        }
    }

    fn say(&mut self, what: &[u8]) {
        if let Some(i) = self.child.stdin.as_mut() {
            let _ = i.write_all(what);
            let _ = i.flush();
        }
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bytes` over a TCP loopback connection, 1 MiB writes and reads: the wire's speed.
fn raw_tcp(bytes: usize) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let rx = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    });
    let buf = vec![7u8; 1 << 20];
    let t0 = Instant::now();
    let mut s = TcpStream::connect(a).unwrap();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).unwrap();
        sent += buf.len();
    }
    drop(s);
    let got = rx.join().unwrap();
    assert!(got >= bytes, "raw TCP: {got} of {bytes} bytes");
    t0.elapsed()
}

/// `bytes` over a TCP loopback connection into a new file in /dev/shm (1 MiB writes,
/// reads written on): the wire plus what a migration target must do as well, put every
/// byte into memory it has not used before. On a virtual machine whose freed memory goes
/// back to its host (free page reporting), first touches cost a host fault each, which a
/// reused 1 MiB buffer never pays.
fn raw_tcp_into_fresh_memory(bytes: usize) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let path = std::path::PathBuf::from(format!("/dev/shm/mos-bench-fresh-{}", std::process::id()));
    let p2 = path.clone();
    let rx = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut f = std::fs::File::create(&p2).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    f.write_all(&buf[..n]).unwrap();
                    got += n;
                }
            }
        }
        got
    });
    let buf = vec![7u8; 1 << 20];
    let t0 = Instant::now();
    let mut s = TcpStream::connect(a).unwrap();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).unwrap();
        sent += buf.len();
    }
    drop(s);
    let got = rx.join().unwrap();
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(got >= bytes, "raw TCP into fresh memory: {got} of {bytes} bytes");
    took
}

/// `bytes` over a TCP loopback connection between two processes, memory to memory: a
/// sender process that filled `bytes` of its own memory sends them (1 MiB writes) to
/// this one, which receives them into a /dev/shm mapping of that size made ready before
/// (as a migration's target does). The same bytes, memory states and process boundary
/// as a stop-and-copy migration, minus everything mos does. None if it could not run.
fn raw_tcp_memory_to_memory(bytes: usize) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    let l = TcpListener::bind("127.0.0.1:0").ok()?;
    let a = l.local_addr().ok()?;
    let path = std::path::PathBuf::from(format!("/dev/shm/mos-bench-m2m-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    f.set_len(bytes as u64).ok()?;
    // SAFETY: a new shared mapping of our own file, `bytes` long; unmapped below.
    let dst = unsafe { libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, f.as_raw_fd(), 0) };
    if dst == libc::MAP_FAILED {
        return None;
    }
    let (go_r, go_w) = std::io::pipe().ok()?;
    let (ready_r, ready_w) = std::io::pipe().ok()?;
    let sa = match a {
        std::net::SocketAddr::V4(v) => v,
        std::net::SocketAddr::V6(_) => return None,
    };
    // SAFETY: the child fills its own memory and sends it with raw calls only (no
    // allocation, no locks: the parent may have threads), then leaves with _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: (child) mmap, memset, socket, connect, send, _exit on our own buffers.
        unsafe {
            let src = libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            if src == libc::MAP_FAILED {
                libc::_exit(1);
            }
            libc::memset(src, 7, bytes);
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            let sin = libc::sockaddr_in { sin_family: libc::AF_INET as u16, sin_port: sa.port().to_be(), sin_addr: libc::in_addr { s_addr: u32::from(*sa.ip()).to_be() }, sin_zero: [0; 8] };
            // filled: say so, and wait for the parent's go (the filling is not timed)
            libc::write(ready_w.as_raw_fd(), b"r".as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            if libc::connect(s, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
                libc::_exit(2);
            }
            let mut sent = 0;
            while sent < bytes {
                let n = libc::send(s, src.cast::<u8>().add(sent).cast(), (bytes - sent).min(1 << 20), libc::MSG_NOSIGNAL);
                if n <= 0 {
                    libc::_exit(3);
                }
                sent += n as usize;
            }
            libc::close(s);
            libc::_exit(0);
        }
    }
    drop((go_r, ready_w));
    if child < 0 {
        return None;
    }
    // the child's memory filled, start the clock
    let mut ready_r = ready_r;
    let mut b = [0u8; 1];
    let _ = ready_r.read(&mut b);
    let mut go_w = go_w;
    let t0 = Instant::now();
    let _ = go_w.write_all(b"g");
    let got = (|| {
        let (mut c, _) = l.accept().ok()?;
        let mut got = 0;
        while got < bytes {
            // SAFETY: inside our mapping of `bytes`.
            let buf = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>().add(got), bytes - got) };
            match c.read(buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Some(got)
    })();
    let took = t0.elapsed();
    let mut st = 0;
    // SAFETY: reaping our child; unmapping our mapping.
    unsafe {
        libc::waitpid(child, &mut st, 0);
        libc::munmap(dst, bytes);
    }
    (got == Some(bytes)).then_some(took)
}

/// The subject's checksum when it never moves.
fn unmoved(exe: &Path, mib: usize) -> Result<String, String> {
    let mut c = Command::new(exe);
    c.args([mib.to_string(), "0".into()]);
    let mut s = Subject::start(c);
    s.until("ready")?;
    s.say(b"end\n");
    Ok(sum_of(&s.until("sum ")?.1))
}

/// "sum X" of the subject's last line (without its tick count).
fn sum_of(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// The subject's checksum after exactly `ticks` ticks of dirtying `mbs` MB/s, never moved.
fn replayed(exe: &Path, mib: usize, mbs: u32, ticks: &str) -> Result<String, String> {
    let out = Command::new(exe).args([mib.to_string(), mbs.to_string(), "--replay".into(), ticks.to_string()]).output().map_err(|e| e.to_string())?;
    Ok(sum_of(&String::from_utf8_lossy(&out.stdout)))
}

fn gib_s(bytes: f64, d: Duration) -> f64 {
    bytes / d.as_secs_f64() / f64::from(1u32 << 30)
}

/// The stop-and-copy figures alone (`MOS_BENCH_ONLY=stop-and-copy`).
pub fn stop_and_copy_only(dir: &Path) {
    println!("== mos bench: migration (stop-and-copy, image streamed as written) ==");
    if let Err(e) = stop_and_copy(dir) {
        println!("migration: FAILED: {e}");
    }
}

pub fn run(dir: &Path) {
    println!("== mos bench: migration (stop-and-copy, image streamed as written) ==");
    if let Err(e) = stop_and_copy(dir) {
        println!("migration: FAILED: {e}");
    }
    println!("== mos bench: live migration (pre-copy) ==");
    if let Err(e) = live(dir) {
        println!("live migration: FAILED: {e}");
    }
    println!("== mos bench: post-copy migration ==");
    if let Err(e) = post_copy(dir) {
        println!("post-copy: FAILED: {e}");
    }
}

/// A 2 GiB process dirtying 50 MB/s moved by `mos migrate --lazy`: when it ran again
/// (the largest stall it saw), when every page had arrived, its memory checked as above.
fn post_copy(dir: &Path) -> Result<(), String> {
    let Moved { mib, mbs, j, took, gap, ticks, sum, want } = move_writer(dir, "--lazy")?;
    println!(
        "mos migrate --lazy of a {mib} MiB process writing {mbs} MB/s: running on the target {} ms after the request (its image without memory there at {} ms); the application's largest stall {:.0} ms; every page there at {} ms (mos migrate: {:.0} ms); {:.0} MiB sent",
        j["frozen_ms"],
        j["resumed_ms"],
        gap as f64 / 1e6,
        j["source_ms"],
        took.as_secs_f64() * 1e3,
        j["bytes"].as_u64().unwrap_or(0) as f64 / f64::from(1u32 << 20)
    );
    println!("  checksum after the move {} a never-moved run's of as many ticks ({ticks})", if sum == want { "equals" } else { "DIFFERS FROM" });
    if sum != want {
        return Err(format!("checksum {sum} after the post-copy move, {want} replayed"));
    }
    Ok(())
}

/// How a process writing its memory moved.
struct Moved {
    mib: usize,
    mbs: u32,
    /// `mos migrate --json`
    j: serde_json::Value,
    took: Duration,
    /// The largest gap between two of its clock prints, ns.
    gap: u64,
    ticks: String,
    /// Its checksum after the move, and a never-moved run's of as many ticks.
    sum: String,
    want: String,
}

/// A `MOS_BENCH_MIB` (2048) MiB ticker writing `MOS_BENCH_DIRTY_MBS` (50) MB/s, moved to
/// node2 with `how` (`--live`, `--lazy`).
fn move_writer(dir: &Path, how: &str) -> Result<Moved, String> {
    let mib: usize = std::env::var("MOS_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let mbs: u32 = std::env::var("MOS_BENCH_DIRTY_MBS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let exe = dir.join("ticker");
    compile("ticker.c", &exe);
    let c = Cluster::up(&dir.join("migration-cluster"))?;
    let mut cmd = c.command(&["run", "--"]);
    cmd.arg(&exe).args([mib.to_string(), mbs.to_string()]);
    let mut s = Subject::start(cmd);
    s.until("ready")?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id().to_string();
    let t0 = Instant::now();
    let out = c.mos(&["migrate", &pid, "node2", how, "--json"])?;
    let took = t0.elapsed();
    let j: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| format!("mos migrate --json: {e}: {out}"))?;
    std::thread::sleep(Duration::from_millis(300));
    s.say(b"end\n");
    let (lines, last) = s.until("sum ")?;
    let stamps: Vec<u64> = lines.iter().filter_map(|l| l.strip_prefix("t ")?.parse().ok()).collect();
    let gap = stamps.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0);
    let ticks = last.split_whitespace().nth(3).unwrap_or("0").to_string();
    let want = replayed(&exe, mib, mbs, &ticks)?;
    Ok(Moved { mib, mbs, j, took, gap, ticks, sum: sum_of(&last), want })
}

/// A 2 GiB process dirtying 50 MB/s (`MOS_BENCH_DIRTY_MBS`) moved by `mos migrate --live`:
/// the largest stall it saw, total time, bytes and rounds; its memory checked against a
/// run that never moved and did as many ticks.
fn live(dir: &Path) -> Result<(), String> {
    let Moved { mib, mbs, j, took, gap, ticks, sum, want } = move_writer(dir, "--live")?;
    let mib_of = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / f64::from(1u32 << 20);
    let rounds: Vec<String> = j["round_bytes"].as_array().map(|a| a.iter().map(|b| format!("{:.0}", mib_of(b))).collect()).unwrap_or_default();
    println!(
        "mos migrate --live of a {mib} MiB process writing {mbs} MB/s: the application's largest stall {:.0} ms (goal <= 100); total {:.0} ms; {:.0} MiB sent in {} copy rounds while it ran (MiB per round: {}) and the rest frozen",
        gap as f64 / 1e6,
        took.as_secs_f64() * 1e3,
        mib_of(&j["bytes"]),
        j["rounds"],
        rounds.join(", ")
    );
    println!("  the source's figures: frozen {} ms, source total {} ms", j["frozen_ms"], j["source_ms"]);
    println!("  checksum after the move {} a never-moved run's of as many ticks ({ticks})", if sum == want { "equals" } else { "DIFFERS FROM" });
    println!("  anchor (published): CRIU pre-copy moved a 24 GB process with 8 s of downtime (280 s without pre-copy)");
    if sum != want {
        return Err(format!("checksum {sum} after the live move, {want} replayed"));
    }
    Ok(())
}

fn stop_and_copy(dir: &Path) -> Result<(), String> {
    let mib: usize = std::env::var("MOS_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let exe = dir.join("ticker");
    compile("ticker.c", &exe);
    let bytes = mib << 20;
    let raw = raw_tcp(bytes);
    let want = unmoved(&exe, mib)?;
    let c = Cluster::up(&dir.join("migration-cluster"))?;
    let mut cmd = c.command(&["run", "--"]);
    cmd.arg(&exe).args([mib.to_string(), "0".into()]);
    let mut s = Subject::start(cmd);
    s.until("ready")?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id().to_string();
    let t0 = Instant::now();
    let out = c.mos(&["migrate", &pid, "node2", "--json"])?;
    let took = t0.elapsed();
    let j: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| format!("mos migrate --json: {e}: {out}"))?;
    std::thread::sleep(Duration::from_millis(300));
    s.say(b"end\n");
    let (ticks, sum) = s.until("sum ")?;
    let sum = sum_of(&sum);
    let stamps: Vec<u64> = ticks.iter().filter_map(|l| l.strip_prefix("t ")?.parse().ok()).collect();
    let gap = stamps.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0);
    let log = std::fs::read_to_string(c.home.join("node1.log")).unwrap_or_default();
    let image = j["bytes"].as_u64().unwrap_or(bytes as u64) as f64;
    let stall = Duration::from_nanos(gap);
    let (wire, frozen, whole) = (gib_s(bytes as f64, raw), gib_s(image, stall), gib_s(image, took));
    println!("raw TCP loopback, {mib} MiB in 1 MiB writes: {:.0} ms = {wire:.2} GiB/s (baseline, same run)", raw.as_secs_f64() * 1e3);
    println!(
        "mos migrate of a {mib} MiB process (image {:.0} MiB), frozen part (the application's largest stall, 5 ms clock prints): {:.0} ms = {frozen:.2} GiB/s = {:.2} x raw TCP (goal >= 0.70)",
        image / f64::from(1u32 << 20),
        stall.as_secs_f64() * 1e3,
        frozen / wire
    );
    println!(
        "  the whole command, with the target making memory ready first ({} ms, while the process ran): {:.0} ms = {whole:.2} GiB/s = {:.2} x raw TCP",
        j["ready_ms"],
        took.as_secs_f64() * 1e3,
        whole / wire
    );
    match raw_tcp_memory_to_memory(bytes) {
        Some(m2m) => println!(
            "  third baseline, same run: raw TCP loopback from one process's memory into another's made ready (the same bytes and memory states as the migration, none of its work): {:.0} ms = {:.2} GiB/s; the frozen part = {:.2} x that",
            m2m.as_secs_f64() * 1e3,
            gib_s(bytes as f64, m2m),
            m2m.as_secs_f64() / stall.as_secs_f64() * image / bytes as f64
        ),
        None => println!("  third baseline: could not run"),
    }
    let fresh = raw_tcp_into_fresh_memory(bytes);
    println!(
        "  second baseline, same run: raw TCP loopback into a new /dev/shm file (fresh memory, as a target must): {:.0} ms = {:.2} GiB/s; the whole mos migrate = {:.2} x that",
        fresh.as_secs_f64() * 1e3,
        gib_s(bytes as f64, fresh),
        whole / gib_s(bytes as f64, fresh)
    );
    if let Some(l) = log.lines().find(|l| l.contains(&format!("pid {pid}: migrated to "))) {
        println!("  source: {}", l.split(": ").skip(2).collect::<Vec<_>>().join(": "));
    }
    println!("  checksum after the move {} the unmoved run's", if sum == want { "equals" } else { "DIFFERS FROM" });
    println!("  anchor (published): CRIU moved a 24 GB process with 8 s downtime using pre-copy, 280 s without");
    if sum != want {
        return Err(format!("checksum {sum} after the move, {want} unmoved"));
    }
    Ok(())
}
