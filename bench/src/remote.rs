//! "remote execution" figures: a process under the shim migrated to node2 of a loopback
//! cluster reads a file it opened at home (every call forwarded to node1's shadowd), beside
//! raw unix-socket / TCP round trips and throughput measured in the same run; and the
//! shim's overhead at home on a syscall-heavy loop (plain shim, and SUD self-test mode).
//! Everything this module starts (cluster daemons, the subject, its body) is stopped by a
//! guard on drop, also when a step fails.
//!
//! The machine is shared and its cross-CPU wake-up latency swings by up to 10x between
//! runs, so the forwarded passes and their baselines alternate round by round, each ratio
//! is the median of the per-round ratios (their range is printed too), and the unix round
//! trip is also measured with both ends pinned to one CPU.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{bin, compile, compile_threaded};

/// Rounds of (baseline pass, forwarded pass).
const ROUNDS: usize = 7;
/// Random 4 KiB preads per subject pass, and round trips per baseline pass.
const PREADS: u32 = 5_000;
/// Size of the file the subject reads, and of one sequential pass.
const FILE_MIB: usize = 64;
/// Request and answer sizes of a baseline round trip: a small header in, a header plus
/// one 4 KiB page out, the shape of a forwarded pread.
const REQ: usize = 64;
const ANS: usize = 64 + 4096;
/// Bytes pushed through a socket per throughput pass, in CHUNK writes.
const STREAM_BYTES: usize = 256 << 20;
const CHUNK: usize = 1 << 20;
/// No step of this section should take longer; past it the section fails (and cleans up).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback cluster in its own MOS_HOME; `mos cluster down` on drop.
struct Cluster {
    home: PathBuf,
}

impl Cluster {
    fn up(home: &Path, nodes: u32) -> Cluster {
        std::fs::create_dir_all(home).unwrap();
        let c = Cluster { home: home.to_path_buf() };
        c.mos(&["cluster", "init"]);
        c.mos(&["cluster", "up", "--nodes", &nodes.to_string()]);
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("mos"));
        cmd.args(args).env("MOS_HOME", &self.home).env_remove("MOS_HOME_NODE").stdin(Stdio::null());
        cmd
    }

    /// Run a mos command against this cluster; its stdout, or a panic with its stderr.
    fn mos(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("running mos");
        assert!(out.status.success(), "mos {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command(&["cluster", "down"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// The benchmark subject (remote_read.c), driven one pass per stdin line. Its stdout lines
/// arrive on a channel (a reader thread), so a hung subject fails the step after
/// STEP_TIMEOUT instead of hanging the bench.
struct Subject {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// pid of the migrated body (on node2), killed on drop unless the subject finished
    body: Option<i32>,
    finished: bool,
}

impl Subject {
    fn start(exe: &Path, data: &Path, cwd: &Path, env: &[(&str, &Path)]) -> Subject {
        std::fs::create_dir_all(cwd).unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg(data).arg(PREADS.to_string()).current_dir(cwd).envs(env.iter().map(|(k, v)| (*k, v.as_os_str())));
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn subject");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let s = Subject { child, stdin, lines, body: None, finished: false };
        assert_eq!(s.line("ready"), "ready");
        s
    }

    fn line(&self, what: &str) -> String {
        self.lines.recv_timeout(STEP_TIMEOUT).unwrap_or_else(|_| panic!("subject pid {}: no {what} line within {:?}", self.child.id(), STEP_TIMEOUT))
    }

    /// Run one pass ("pread" or "seq") and return the value it prints.
    fn pass(&mut self, cmd: &str, key: &str) -> f64 {
        writeln!(self.stdin.as_mut().unwrap(), "{cmd}").expect("writing to the subject");
        let l = self.line(key);
        let mut w = l.split_whitespace();
        assert_eq!(w.next(), Some(key), "subject printed {l:?}, expected {key}");
        w.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("subject printed {l:?}"))
    }

    fn finish(&mut self) {
        drop(self.stdin.take());
        let l = self.line("done");
        assert!(l.starts_with("done "), "subject printed {l:?}, expected done");
        let st = self.child.wait().expect("wait subject");
        assert!(st.success(), "subject pid {} ended with {st}", self.child.id());
        self.finished = true;
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(p) = self.body {
            // SAFETY: kill(2) on the body this run migrated; it has not been seen to
            // finish, so the pid is still the body's.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_file(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..FILE_MIB {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
}

/// Pin the calling thread to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for cpu <
    // CPU_SETSIZE; sched_setaffinity(0, ..) only changes the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Pin every thread of process `pid` to `cpus` (a list for taskset-like use).
fn pin_process(pid: i32, cpus: &[usize]) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for
        // cpu < CPU_SETSIZE; sched_setaffinity on a thread of a process this run started.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus {
                libc::CPU_SET(c, &mut set);
            }
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect()
}

/// The pid of node `name`'s shadowd, from the cluster file.
fn node_pid(home: &Path, name: &str) -> i32 {
    let j = std::fs::read_to_string(home.join("cluster.json")).expect("cluster.json");
    let at = j.find(&format!("\"name\": \"{name}\"")).unwrap_or_else(|| panic!("{name} not in cluster.json"));
    let rest = &j[at..];
    let p = rest.find("\"pid\":").expect("pid in cluster.json") + 6;
    rest[p..].trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|v| v.parse().ok()).expect("pid value")
}

/// µs per round trip (REQ bytes in, ANS bytes out) over a connected stream pair, client
/// and server each on a thread of their own, both pinned to `cpu` if given; PREADS round
/// trips after a short warm-up.
fn rtt_us<S: Read + Write + Send + 'static>(mut client: S, mut server: S, cpu: Option<usize>) -> f64 {
    const WARM: u32 = 200;
    let srv = std::thread::spawn(move || {
        if let Some(c) = cpu {
            pin_to(c);
        }
        let mut req = [0u8; REQ];
        let ans = vec![7u8; ANS];
        for _ in 0..WARM + PREADS {
            server.read_exact(&mut req).unwrap();
            server.write_all(&ans).unwrap();
        }
    });
    let cli = std::thread::spawn(move || {
        if let Some(c) = cpu {
            pin_to(c);
        }
        let req = [1u8; REQ];
        let mut ans = vec![0u8; ANS];
        let mut t = Instant::now();
        for i in 0..WARM + PREADS {
            if i == WARM {
                t = Instant::now();
            }
            client.write_all(&req).unwrap();
            client.read_exact(&mut ans).unwrap();
        }
        t.elapsed().as_secs_f64() * 1e6 / PREADS as f64
    });
    srv.join().unwrap();
    cli.join().unwrap()
}

/// MB/s of STREAM_BYTES written in CHUNK writes and read in CHUNK reads.
fn stream_mbps<S: Read + Write + Send + 'static>(mut rx: S, mut tx: S) -> f64 {
    let writer = std::thread::spawn(move || {
        let buf = vec![5u8; CHUNK];
        for _ in 0..STREAM_BYTES / CHUNK {
            tx.write_all(&buf).unwrap();
        }
    });
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    let mut got = 0;
    while got < STREAM_BYTES {
        let n = rx.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed early");
        got += n;
    }
    let mbps = STREAM_BYTES as f64 / t.elapsed().as_secs_f64() / 1e6;
    writer.join().unwrap();
    mbps
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

/// Per-round samples of one quantity.
#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn median(&self) -> f64 {
        median(self.0.clone())
    }
    /// median, min and max of the per-round ratios self / base
    fn ratio(&self, base: &Samples) -> (f64, f64, f64) {
        let r: Vec<f64> = self.0.iter().zip(&base.0).map(|(a, b)| a / b).collect();
        let lo = r.iter().copied().fold(f64::MAX, f64::min);
        let hi = r.iter().copied().fold(0.0, f64::max);
        (median(r), lo, hi)
    }
}

fn forwarded_reads(dir: &Path) {
    let exe = dir.join("remote_read");
    compile("remote_read.c", &exe);
    let data = dir.join("remote_read.data");
    data_file(&data);
    let shim = bin("libmosshim.so");

    // the same program at home under the shim, never migrated ("go" exists from the start)
    let (mut local_pread, mut local_seq) = (Samples::default(), Samples::default());
    {
        std::fs::create_dir_all(dir.join("local")).unwrap();
        std::fs::write(dir.join("local/go"), b"").unwrap();
        let mut s = Subject::start(&exe, &data, &dir.join("local"), &[("LD_PRELOAD", &shim)]);
        for _ in 0..3 {
            local_pread.0.push(s.pass("pread", "pread_us"));
            local_seq.0.push(s.pass("seq", "seq_mbps"));
        }
        s.finish();
    }

    let cluster = Cluster::up(&dir.join("mos-home"), 2);
    let home_shadowd = node_pid(&cluster.home, "node1");
    // the subject, migrated to node2; `tcp`: its calls stay on TCP (MOS_RSYS_TCP=1), as
    // between two hosts, instead of the home shadowd's local listener
    let migrated = |name: &str, tcp: bool| {
        let cwd = dir.join(name);
        let mut env: Vec<(&str, &Path)> = vec![("LD_PRELOAD", &shim), ("MOS_HOME", &cluster.home)];
        if tcp {
            env.push(("MOS_RSYS_TCP", Path::new("1")));
        }
        let mut s = Subject::start(&exe, &data, &cwd, &env);
        let t = Instant::now();
        // "process P migrated to node2 (pid Q there); ..."
        let out = cluster.mos(&["migrate", &s.child.id().to_string(), "node2"]);
        let wall = t.elapsed();
        s.body = out.split("(pid ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok());
        assert!(s.body.is_some(), "mos migrate printed {out:?}");
        std::fs::write(cwd.join("go"), b"").unwrap();
        // one warm-up pass each (first contact of the body with the home shadow's file)
        s.pass("pread", "pread_us");
        s.pass("seq", "seq_mbps");
        (s, wall)
    };
    let (mut s, migrate_wall) = migrated("remote", false);
    let body = s.body.unwrap();
    let [mut fwd, mut fwd_one, mut unix, mut unix_one, mut tcp, mut fwd_seq, mut unix_seq, mut tcp_seq, mut fwd_seq_split] = std::array::from_fn(|_| Samples::default());
    let two_cpus = all_cpus().len() >= 2;
    for _ in 0..ROUNDS {
        let (a, b) = UnixStream::pair().unwrap();
        unix.0.push(rtt_us(a, b, None));
        let (a, b) = UnixStream::pair().unwrap();
        unix_one.0.push(rtt_us(a, b, Some(0)));
        let (a, b) = tcp_pair();
        tcp.0.push(rtt_us(a, b, None));
        fwd.0.push(s.pass("pread", "pread_us"));
        // the same with the body and the home shadowd pinned to one CPU, as unix_one
        pin_process(body, &[0]);
        pin_process(home_shadowd, &[0]);
        fwd_one.0.push(s.pass("pread", "pread_us"));
        pin_process(body, &all_cpus());
        pin_process(home_shadowd, &all_cpus());
        let (a, b) = UnixStream::pair().unwrap();
        unix_seq.0.push(stream_mbps(a, b));
        let (a, b) = tcp_pair();
        tcp_seq.0.push(stream_mbps(a, b));
        fwd_seq.0.push(s.pass("seq", "seq_mbps"));
        if two_cpus {
            // the worst placement: body and home shadowd kept on different CPUs, so every
            // request wakes the other CPU (and, but for the body's short poll, every
            // answer too) (informational)
            pin_process(body, &[0]);
            pin_process(home_shadowd, &[1]);
            fwd_seq_split.0.push(s.pass("seq", "seq_mbps"));
            pin_process(body, &all_cpus());
            pin_process(home_shadowd, &all_cpus());
        }
    }
    s.finish();
    drop(s);
    // over TCP (the transport between hosts), fewer rounds, for context
    let (mut s, _) = migrated("remote-tcp", true);
    let [mut fwd_tcp, mut fwd_tcp_seq] = std::array::from_fn(|_| Samples::default());
    for _ in 0..3 {
        fwd_tcp.0.push(s.pass("pread", "pread_us"));
        fwd_tcp_seq.0.push(s.pass("seq", "seq_mbps"));
    }
    s.finish();
    drop(s);
    drop(cluster);

    println!(
        "forwarded reads: a {FILE_MIB} MiB file opened at home (node1), read by the body on node2 (mos migrate took {:.0} ms); both nodes are on this host, so the calls go to the home shadowd's local (unix) listener; medians of {ROUNDS} rounds, baselines alternating with the forwarded passes",
        migrate_wall.as_secs_f64() * 1e3
    );
    let (r, lo, hi) = fwd.ratio(&unix);
    let (r1, lo1, hi1) = fwd_one.ratio(&unix_one);
    println!("  4 KiB pread, random offsets ({PREADS} calls a round): forwarded {:.2} us/call; with the body and the home shadowd pinned to one CPU {:.2} us/call", fwd.median(), fwd_one.median());
    println!("    raw unix-socket round trip ({REQ} B request, {ANS} B answer), two threads: {:.2} us; pinned to one CPU: {:.2} us;  TCP loopback (context): {:.2} us", unix.median(), unix_one.median(), tcp.median());
    println!("    ratio forwarded / raw unix RTT, both unpinned: {r:.2} x (rounds {lo:.2}..{hi:.2})   (target <= 1.5 x): {}", verdict(r <= 1.5));
    println!("    ratio forwarded / raw unix RTT, both pinned to one CPU (no cross-CPU wake-ups: the like-for-like CPU cost): {r1:.2} x (rounds {lo1:.2}..{hi1:.2})   (target <= 1.5 x): {}", verdict(r1 <= 1.5));
    println!("    (unpinned, the raw pair's two threads wake each other across CPUs, which costs tens of us on this VM; the forwarded pair is not placed that way, so the unpinned ratio flatters it)");
    println!("    same program at home, not migrated (under the shim): {:.2} us/call", local_pread.median());
    println!("    forwarded over TCP (MOS_RSYS_TCP=1, the transport between hosts; 3 rounds): {:.2} us/call", fwd_tcp.median());
    let (r, lo, hi) = fwd_seq.ratio(&unix_seq);
    let (rt, _, _) = fwd_seq.ratio(&tcp_seq);
    println!("  sequential read in 1 MiB read() calls ({FILE_MIB} MiB a round): forwarded {:.0} MB/s", fwd_seq.median());
    println!("    raw unix socket, 1 MiB writes ({} MiB a round): {:.0} MB/s;  TCP loopback (context): {:.0} MB/s", STREAM_BYTES >> 20, unix_seq.median(), tcp_seq.median());
    println!(
        "    ratio forwarded / raw unix socket: {:.0} % (rounds {:.0}..{:.0} %)   (target >= 50 %): {};  forwarded / TCP loopback: {:.0} %",
        r * 100.0,
        lo * 100.0,
        hi * 100.0,
        verdict(r >= 0.5),
        rt * 100.0
    );
    if two_cpus {
        let (r, lo, hi) = fwd_seq_split.ratio(&unix_seq);
        println!(
            "    worst placement, body and home shadowd pinned to different CPUs (every request wakes the other CPU; informational): {:.0} MB/s, {:.0} % of raw unix (rounds {:.0}..{:.0} %)",
            fwd_seq_split.median(),
            r * 100.0,
            lo * 100.0,
            hi * 100.0
        );
    }
    println!("    forwarded over TCP (MOS_RSYS_TCP=1; 3 rounds): {:.0} MB/s, {:.0} % of TCP loopback", fwd_tcp_seq.median(), fwd_tcp_seq.median() / tcp_seq.median() * 100.0);
    println!("    same program at home, not migrated (under the shim): {:.0} MB/s", local_seq.median());
}

fn loop_ns(exe: &Path, iters: u32, args: &[&str], env: &[(&str, PathBuf)]) -> f64 {
    let mut c = Command::new(exe);
    c.arg(iters.to_string()).args(args).envs(env.iter().map(|(k, v)| (*k, v.as_os_str())));
    let out = c.stdin(Stdio::null()).output().expect("syscall_loop");
    assert!(out.status.success(), "syscall_loop: {}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("syscall_loop printed {s:?}"))
}

/// A run of syscall_loop: iterations, extra arguments, environment.
type Variant<'a> = (u32, &'a [&'a str], Vec<(&'a str, PathBuf)>);

fn shim_overhead(dir: &Path) {
    let exe = dir.join("syscall_loop");
    compile_threaded("syscall_loop.c", &exe);
    let shim = bin("libmosshim.so");
    // Every syscall traps in the SUD row (~1.5 us
    // each), so it runs a tenth of the iterations: the figures are per iteration.
    let variants: [Variant; 4] = [
        (2_000_000, &[], vec![]),
        (2_000_000, &["thread"], vec![]),
        (2_000_000, &[], vec![("LD_PRELOAD", shim.clone())]),
        (200_000, &[], vec![("LD_PRELOAD", shim), ("MOS_SUD_SELFTEST", "1".into())]),
    ];
    let mut best = [f64::MAX; 4];
    // interleaved rounds, so drift in the machine's load hits all variants alike
    for _ in 0..5 {
        for (i, (iters, args, env)) in variants.iter().enumerate() {
            best[i] = best[i].min(loop_ns(&exe, *iters, args, env));
        }
    }
    let [native, threaded, shim, sud] = best;
    let over = |x: f64| (x / native - 1.0) * 100.0;
    println!("shim overhead at home: syscall mix per iteration (getppid via syscall(), 1 B read of /dev/zero, 1 B write to /dev/null, fstat; best of 5):");
    println!("  native: {native:.0} ns");
    println!("  under the shim (LD_PRELOAD, at home, no SUD): {shim:.0} ns, overhead {:.1} %   (target <= 2 %): {}", over(shim), verdict(over(shim) <= 2.0));
    println!(
        "    native with one idle extra thread (the shim's manager thread makes the process multi-threaded; the kernel then takes fd references atomically): {threaded:.0} ns, {:+.1} %; shim vs this: {:+.1} %",
        over(threaded),
        (shim / threaded - 1.0) * 100.0
    );
    println!("  under the shim with MOS_SUD_SELFTEST=1 (every syscall trapped, run natively; what a migrated body's local calls cost): {sud:.0} ns, overhead {:.0} % (informational)", over(sud));
}

pub fn run(dir: &Path) {
    println!("== mos bench: remote execution (2-node loopback cluster) ==");
    forwarded_reads(dir);
    shim_overhead(dir);
}
