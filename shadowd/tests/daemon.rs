//! shadowd end to end: real daemons on 127.0.0.1, a fake placer, a tiny C job.
//! Needs the release binaries (`make build`): mos and libmosshim.so next to shadowd.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use proto::auth::{self, ClusterKey};
use proto::msg::{BatchIo, JobSpec, JobState, JobStatus, LoadReport, OsBytes};
use proto::{FrameReader, FrameWriter, Hello, JobId, Msg, Role};

const WAIT: Duration = Duration::from_secs(20);

fn bin_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_shadowd"));
    let dir = exe.parent().unwrap().to_path_buf();
    for need in ["mos", "mosrestart", "libmosshim.so"] {
        assert!(
            dir.join(need).exists(),
            "{} is missing: run `make build` first (shadowd runs guests with it)",
            dir.join(need).display()
        );
    }
    dir
}

const JOB_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    struct timespec nap = {0, 50 * 1000 * 1000};
    for (int i = 1; i <= n; i++) {
        printf("line %d of %d\n", i, n);
        fflush(stdout);
        nanosleep(&nap, NULL);
    }
    return 0;
}
"#;

/// A test's world: temp dir, key, compiled job.
struct World {
    dir: tempfile::TempDir,
    key_path: PathBuf,
    key: ClusterKey,
    job: PathBuf,
}

impl World {
    fn new() -> World {
        bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("cluster.key");
        let key = auth::create_key_file(&key_path, false).unwrap();
        let src = dir.path().join("job.c");
        fs::write(&src, JOB_C).unwrap();
        let job = dir.path().join("job");
        let st = Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&job)
            .arg(&src)
            .status()
            .expect("cannot run cc");
        assert!(st.success(), "cc failed");
        World {
            dir,
            key_path,
            key,
            job,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spec(&self, lines: u32, out: &str, ckpt_interval_s: Option<u64>) -> JobSpec {
        JobSpec {
            argv: vec![OsBytes::from(self.job.as_path()), lines.to_string().as_str().into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: OsBytes::from(self.dir.path()),
            home: "home".into(),
            mem_mib: 0,
            restart_from: None,
            batch: Some(BatchIo {
                input: None,
                output: Some(out.into()),
                error: Some(out.into()),
                ckpt_dir: Some("ckpt".into()),
                ckpt_interval_s,
                home_addr: None,
                remote_home: None,
            }),
        }
    }

    fn expected(lines: u32) -> String {
        (1..=lines).map(|i| format!("line {i} of {lines}\n")).collect()
    }
}

/// A running shadowd, SIGKILLed on drop.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: PathBuf,
    state_dir: PathBuf,
}

impl Daemon {
    fn start(w: &World, node: &str, placer: Option<SocketAddr>, interval_ms: u32) -> Daemon {
        let state_dir = w.path(&format!("state-{node}"));
        let stderr = w.path(&format!("{node}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowd"));
        cmd.args(["--node", node, "--listen", "127.0.0.1:0", "--cpus", "3", "--speed", "1500"])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--key")
            .arg(&w.key_path)
            .arg("--interval-ms")
            .arg(interval_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap());
        if let Some(p) = placer {
            cmd.arg("--placer").arg(p.to_string());
        }
        let mut child = cmd.spawn().expect("cannot start shadowd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr,
            state_dir,
        };
        let prefix = format!("shadowd {node} listening on ");
        let addr = line
            .trim_end()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; stderr: {}", d.log()));
        d.addr = addr.parse().unwrap();
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Send one request, return the answer.
    fn request(&self, key: &ClusterKey, msg: &Msg) -> Msg {
        let mut s = TcpStream::connect(self.addr).unwrap();
        auth::client_handshake(&mut s, key, &Hello::new("test", Role::Placer)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = FrameWriter::new(s.try_clone().unwrap());
        w.write_msg(msg, &[]).unwrap();
        let (answer, _): (Msg, Vec<u8>) = FrameReader::new(s).read_msg().unwrap();
        answer
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "shadowd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// A placer that only listens: accepts shadowd connections and records what they send.
struct FakePlacer {
    addr: SocketAddr,
    got: Arc<(Mutex<Vec<Msg>>, Condvar)>,
}

impl FakePlacer {
    fn start(key: &ClusterKey) -> FakePlacer {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), key)
    }

    fn on(listener: TcpListener, key: &ClusterKey) -> FakePlacer {
        let addr = listener.local_addr().unwrap();
        let got = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let g = got.clone();
        let key = key.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let g = g.clone();
                let key = key.clone();
                std::thread::spawn(move || {
                    let peer = auth::server_handshake(&mut s, &key, &Hello::new("placer", Role::Placer));
                    let Ok(peer) = peer else { return };
                    assert_eq!(peer.role, Role::Shadowd);
                    let mut r = FrameReader::new(s);
                    while let Ok((m, _)) = r.read_msg::<Msg>() {
                        g.0.lock().unwrap().push(m);
                        g.1.notify_all();
                    }
                });
            }
        });
        FakePlacer { addr, got }
    }

    /// Wait until `pred` holds for the messages received so far; returns them.
    fn wait_until(&self, what: &str, pred: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        let deadline = Instant::now() + WAIT;
        let mut got = self.got.0.lock().unwrap();
        loop {
            if pred(&got) {
                return got.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}; got {got:#?}");
            got = self.got.1.wait_timeout(got, deadline - now).unwrap().0;
        }
    }

    fn statuses(msgs: &[Msg], job: u64) -> Vec<JobStatus> {
        msgs.iter()
            .filter_map(|m| match m {
                Msg::JobStatus(s) if s.job == JobId(job) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn wait_state(&self, job: u64, what: &str, pred: impl Fn(&JobState) -> bool) -> JobStatus {
        let msgs = self.wait_until(what, |m| Self::statuses(m, job).iter().any(|s| pred(&s.state)));
        Self::statuses(&msgs, job)
            .into_iter()
            .find(|s| pred(&s.state))
            .unwrap()
    }

    fn reports(msgs: &[Msg]) -> Vec<LoadReport> {
        msgs.iter()
            .filter_map(|m| match m {
                Msg::LoadReport(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn checkpoints(msgs: &[Msg], job: u64) -> Vec<(PathBuf, u64)> {
        msgs.iter()
            .filter_map(|m| match m {
                Msg::Checkpointed { job: j, path, bytes } if *j == JobId(job) => {
                    Some((PathBuf::from(path.clone()), *bytes))
                }
                _ => None,
            })
            .collect()
    }
}

fn place(d: &Daemon, w: &World, job: u64, spec: JobSpec) {
    let a = d.request(&w.key, &Msg::PlaceJob { job: JobId(job), spec });
    assert_eq!(a, Msg::Ack, "PlaceJob: {a:?}; log: {}", d.log());
}

fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => !t.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn load_reports_arrive_periodically() {
    let w = World::new();
    let p = FakePlacer::start(&w.key);
    let d = Daemon::start(&w, "n1", Some(p.addr), 100);
    assert_eq!(
        fs::read_to_string(d.state_dir.join("addr")).unwrap().trim(),
        d.addr.to_string()
    );
    let t0 = Instant::now();
    let msgs = p.wait_until("4 load reports", |m| FakePlacer::reports(m).len() >= 4);
    // Four reports 100 ms apart: not all at once, not a second late.
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(3), "{took:?}");
    let r = &FakePlacer::reports(&msgs)[0];
    assert_eq!((r.node.as_str(), r.cpus, r.speed, r.interval_ms), ("n1", 3, 1500, 100));
    assert_eq!(r.addr, d.addr.to_string());
    assert_eq!((r.guests, r.run_queue), (0, 0));
    assert!(r.total_mem_mib > 0 && r.free_mem_mib <= r.total_mem_mib, "{r:?}");
}

#[test]
fn job_runs_to_completion_and_events_wait_for_a_late_placer() {
    let w = World::new();
    // The placer's port is known but nobody listens yet.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let placer_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let d = Daemon::start(&w, "n1", Some(placer_addr), 100);
    place(&d, &w, 1, w.spec(10, "out1.txt", None));
    // The job finishes (0.5 s) while the placer is still down.
    std::thread::sleep(Duration::from_millis(900));
    let p = FakePlacer::on(TcpListener::bind(placer_addr).unwrap(), &w.key);
    let running = p.wait_state(1, "Running", |s| *s == JobState::Running);
    assert!(running.pid.is_some() && running.node == "n1" && running.home == "home");
    let done = p.wait_state(1, "Exited", |s| matches!(s, JobState::Exited { .. }));
    assert_eq!(done.state, JobState::Exited { code: 0 });
    let msgs = p.wait_until("a report", |m| !FakePlacer::reports(m).is_empty());
    let st = FakePlacer::statuses(&msgs, 1);
    assert_eq!(st.len(), 2, "Running then Exited, once each: {st:?}");
    assert_eq!(fs::read_to_string(w.path("out1.txt")).unwrap(), World::expected(10));
    // A second PlaceJob of the same job number works once the first is over, and a
    // guest shows in the load report while it runs.
    place(&d, &w, 1, w.spec(30, "out1b.txt", None));
    p.wait_until("a report with one guest", |m| FakePlacer::reports(m).iter().any(|r| r.guests == 1));
    let a = d.request(&w.key, &Msg::PlaceJob { job: JobId(1), spec: w.spec(3, "x.txt", None) });
    assert!(matches!(&a, Msg::Error { msg } if msg.contains("already runs")), "{a:?}");
}

#[test]
fn periodic_checkpoints_produce_images() {
    let w = World::new();
    let p = FakePlacer::start(&w.key);
    let d = Daemon::start(&w, "n1", Some(p.addr), 200);
    place(&d, &w, 7, w.spec(50, "out7.txt", Some(1)));
    let msgs = p.wait_until("a Checkpointed", |m| !FakePlacer::checkpoints(m, 7).is_empty());
    let (path, bytes) = FakePlacer::checkpoints(&msgs, 7)[0].clone();
    assert_eq!(path, w.path("ckpt/job7.mosimg"));
    assert!(bytes > 0);
    assert!(fs::metadata(&path).unwrap().len() > 0);
    let done = p.wait_state(7, "Exited", |s| !matches!(s, JobState::Running));
    assert_eq!(done.state, JobState::Exited { code: 0 }, "log: {}", d.log());
    assert_eq!(fs::read_to_string(w.path("out7.txt")).unwrap(), World::expected(50));
}

#[test]
fn vacate_then_restart_matches_an_uninterrupted_run() {
    let w = World::new();
    let p = FakePlacer::start(&w.key);
    let d = Daemon::start(&w, "n1", Some(p.addr), 200);
    // The reference run, uninterrupted, meanwhile.
    let reference = Command::new(&w.job)
        .arg("40")
        .stdout(fs::File::create(w.path("ref.txt")).unwrap())
        .spawn()
        .unwrap();
    place(&d, &w, 3, w.spec(40, "out3.txt", None));
    p.wait_state(3, "Running", |s| *s == JobState::Running);
    std::thread::sleep(Duration::from_millis(600));
    let a = d.request(&w.key, &Msg::Vacate { job: JobId(3) });
    assert_eq!(a, Msg::Ack, "log: {}", d.log());
    let image = w.path("ckpt/job3.mosimg");
    assert!(fs::metadata(&image).unwrap().len() > 0);
    let vac = p.wait_state(3, "Vacated", |s| !matches!(s, JobState::Running));
    assert_eq!(vac.state, JobState::Vacated);
    let msgs = p.wait_until("Checkpointed", |m| !FakePlacer::checkpoints(m, 3).is_empty());
    // Checkpointed is sent before Vacated.
    let ck = msgs.iter().position(|m| matches!(m, Msg::Checkpointed { .. })).unwrap();
    let va = msgs
        .iter()
        .position(|m| matches!(m, Msg::JobStatus(s) if s.state == JobState::Vacated))
        .unwrap();
    assert!(ck < va);
    let partial = fs::read_to_string(w.path("out3.txt")).unwrap();
    assert!(partial.lines().count() < 40, "vacated too late to test anything: {partial}");
    // Vacating what no longer runs is refused.
    let a = d.request(&w.key, &Msg::Vacate { job: JobId(3) });
    assert!(matches!(a, Msg::Error { .. }), "{a:?}");

    let mut spec = w.spec(40, "out3.txt", None);
    spec.restart_from = Some(OsBytes::from(image.as_path()));
    place(&d, &w, 3, spec);
    let done = p.wait_state(3, "restarted job's end", |s| {
        matches!(s, JobState::Exited { .. } | JobState::Killed { .. } | JobState::Failed { .. })
    });
    assert_eq!(done.state, JobState::Exited { code: 0 }, "log: {}", d.log());
    assert!(reference.wait_with_output().unwrap().status.success());
    let want = fs::read_to_string(w.path("ref.txt")).unwrap();
    assert_eq!(want, World::expected(40));
    assert_eq!(fs::read_to_string(w.path("out3.txt")).unwrap(), want);
}

#[test]
fn kill_signals_the_job() {
    let w = World::new();
    let p = FakePlacer::start(&w.key);
    let d = Daemon::start(&w, "n1", Some(p.addr), 200);
    place(&d, &w, 4, w.spec(400, "out4.txt", None));
    p.wait_state(4, "Running", |s| *s == JobState::Running);
    let a = d.request(&w.key, &Msg::Kill { job: JobId(4), signal: libc::SIGTERM });
    assert_eq!(a, Msg::Ack);
    let end = p.wait_state(4, "its end", |s| *s != JobState::Running);
    assert_eq!(end.state, JobState::Killed { signal: libc::SIGTERM });
    let a = d.request(&w.key, &Msg::Kill { job: JobId(99), signal: libc::SIGKILL });
    assert!(matches!(&a, Msg::Error { msg } if msg.contains("job 99")), "{a:?}");
}

#[test]
fn bad_peers_are_dropped_and_good_ones_still_served() {
    let w = World::new();
    let d = Daemon::start(&w, "n1", None, 200);
    // A client with another key.
    let other = ClusterKey::generate().unwrap();
    let mut s = TcpStream::connect(d.addr).unwrap();
    let e = auth::client_handshake(&mut s, &other, &Hello::new("intruder", Role::Cli));
    assert!(e.is_err());
    drop(s);
    // A client sending garbage.
    let mut s = TcpStream::connect(d.addr).unwrap();
    let garbage_from = s.local_addr().unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    drop(s);
    // An authenticated client sending garbage instead of a request.
    let mut s = TcpStream::connect(d.addr).unwrap();
    auth::client_handshake(&mut s, &w.key, &Hello::new("t", Role::Cli)).unwrap();
    s.write_all(&[7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
    drop(s);
    // A client that connects and says nothing does not block the others.
    let _silent = TcpStream::connect(d.addr).unwrap();

    let a = d.request(&w.key, &Msg::Kill { job: JobId(1), signal: 0 });
    assert!(matches!(a, Msg::Error { .. }), "{a:?}");
    // A lane for an image nobody waits for (a guessed or stale token) is refused.
    let a = d.request(&w.key, &Msg::ImageLane { token: 0x5eed, lane: 0 });
    assert!(matches!(&a, Msg::Error { msg } if msg.contains("no image is waiting for lanes")), "{a:?}");
    place(&d, &w, 2, w.spec(2, "out2.txt", None));
    let a = d.request(&w.key, &Msg::QueryNodes);
    assert!(matches!(&a, Msg::Error { msg } if msg.contains("QueryNodes")), "{a:?}");

    let deadline = Instant::now() + WAIT;
    loop {
        let log = d.log();
        let drops = log.matches("dropped connection from 127.0.0.1:").count();
        if drops >= 3 && log.contains(&garbage_from.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "expected 3 drops in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_daemon_takes_its_guests_along() {
    let w = World::new();
    let p = FakePlacer::start(&w.key);
    let mut d = Daemon::start(&w, "n1", Some(p.addr), 200);
    place(&d, &w, 5, w.spec(400, "out5.txt", None));
    let pid = p.wait_state(5, "Running", |s| *s == JobState::Running).pid.unwrap();
    assert!(pid_alive(pid));
    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    assert_eq!(unsafe { libc::kill(d.pid(), libc::SIGKILL) }, 0);
    d.wait_exit();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "guest {pid} outlived its shadowd");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_kills_guests_and_exits_zero() {
    let w = World::new();
    let p = FakePlacer::start(&w.key);
    let mut d = Daemon::start(&w, "n1", Some(p.addr), 200);
    place(&d, &w, 6, w.spec(400, "out6.txt", None));
    let pid = p.wait_state(6, "Running", |s| *s == JobState::Running).pid.unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(d.pid(), libc::SIGTERM) }, 0);
    let st = d.wait_exit();
    assert_eq!(st.code(), Some(0), "log: {}", d.log());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "guest {pid} outlived its shadowd");
        std::thread::sleep(Duration::from_millis(20));
    }
}
