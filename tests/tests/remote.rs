//! Remote execution on a localhost cluster (real placer + shadowds on 127.0.0.1, free
//! ports, temp dirs): a process started under the shim at home is migrated with
//! `mos migrate PID NODE`; its body runs on another node while its files, stdin/stdout,
//! sockets, pid and exit status stay at home (the stub keeps the pid).

use mos_integration::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn cluster(nodes: u32) -> Cluster {
    cluster_on(nodes, false)
}

/// `netns`: every node in a network namespace of its own (`mos cluster up --netns`).
fn cluster_on(nodes: u32, netns: bool) -> Cluster {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    let n = nodes.to_string();
    let mut args = vec!["cluster", "up", "--nodes", &n, "--interval-ms", "200"];
    if netns {
        args.push("--netns");
    }
    c.mos(&args).assert_code(0, "mos cluster up");
    c
}

/// The address the test itself is reached at from every node: loopback, or with
/// `--netns` the bridge's (the placer's address).
fn test_host(c: &Cluster) -> String {
    let placer = c.run_state()["placer"]["addr"].as_str().unwrap().to_string();
    placer.rsplit_once(':').unwrap().0.to_string()
}

fn node_pid(c: &Cluster, name: &str) -> i32 {
    let rs = c.run_state();
    rs["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["pid"].as_i64())
        .unwrap_or_else(|| panic!("no node {name} in {rs}")) as i32
}

/// The processes whose parent is `ppid`.
fn children(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

fn state_of(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.get(stat.rfind(')').map_or(0, |i| i + 2)..).and_then(|s| s.chars().next()).unwrap_or('?')
}

/// The body of a migrated process: the one guest of `node`'s shadowd.
fn body_on(c: &Cluster, node: &str) -> i32 {
    let sh = node_pid(c, node);
    poll_until(
        || children(sh).len() == 1,
        || format!("one guest under {node}'s shadowd (pid {sh}); found {:?}", children(sh).iter().map(|&p| (p, state_of(p), std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default())).collect::<Vec<_>>()),
    );
    children(sh)[0]
}

fn app(c: &Cluster, dir: &Path, prog: &Path, args: &[&str]) -> Command {
    // with --netns the program runs on its home node: `mos run` enters its namespace
    let netns = c.run_state()["nodes"][0]["netns"].is_string();
    let mut cmd = if netns { c.cmd("mos") } else { Command::new(prog) };
    if netns {
        cmd.args(["run", "--"]).arg(prog);
    }
    if !netns {
        cmd.env("LD_PRELOAD", shim());
    }
    cmd.args(args)
        .current_dir(dir)
        .env("MOS_HOME", c.home.path())
        .env("MOS_SYNC", dir)
        .env("MOS_LOG_FILE", dir.join("shim.log"));
    cmd
}

fn migrate(c: &Cluster, pid: i32, node: &str) {
    let out = c.mos(&["migrate", &pid.to_string(), node]);
    out.assert_code(0, &format!("mos migrate {pid} {node}"));
    assert!(out.stdout_str().contains(&format!("migrated to {node}")), "{}", out.describe());
}

/// remote_io (endless ticks) started at home and migrated to node2: (stub, its dir, body).
fn migrated_ticker(c: &Cluster) -> (Proc, tempfile::TempDir, i32) {
    migrated_ticker_with(c, |_| {})
}

/// [`migrated_ticker`], its command first changed by `f`.
fn migrated_ticker_with(c: &Cluster, f: impl FnOnce(&mut Command)) -> (Proc, tempfile::TempDir, i32) {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c("remote_io");
    let mut cmd = app(c, dir.path(), &prog, &["100000"]);
    f(&mut cmd);
    let mut p = Proc::spawn("remote_io", cmd);
    p.wait_stdout("tick 2");
    migrate(c, p.pid(), "node2");
    let b = body_on(c, "node2");
    (p, dir, b)
}

fn wait_file(p: &Path) {
    poll_until(|| p.exists(), || format!("{} to appear", p.display()));
}

fn lines_0_to(n: usize, prefix: &str) -> String {
    (0..n).map(|i| format!("{prefix} {i}\n")).collect()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default()
}

/// home -> node2 -> home -> node3 mid-run: output, files and a deleted temp file are
/// those of an uninterrupted run, stdin written after each migration reaches it, and the
/// exit status comes back through the stub (which kept the pid all along).
#[test]
fn migrates_home_b_home_c() {
    home_b_home_c(false);
}

/// The same with every node in a network namespace of its own: nothing relies on the
/// nodes sharing one loopback.
#[test]
fn migrates_home_b_home_c_across_network_namespaces() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    home_b_home_c(true);
}

fn home_b_home_c(netns: bool) {
    let c = cluster_on(3, netns);
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c("remote_io");
    let mut p = Proc::spawn("remote_io", app(&c, dir.path(), &prog, &["80"]));
    let pid = p.pid();
    p.wait_stdout("tick 5");
    migrate(&c, pid, "node2");
    let b = body_on(&c, "node2");
    assert_ne!(b, pid);
    assert!(p.is_running(), "the stub keeps the pid\n{}", p.describe());
    p.write_stdin(b"hello-1\n");
    p.wait_stdout("got: hello-1");
    migrate(&c, pid, "node1");
    body_on(&c, "node1");
    migrate(&c, pid, "node3");
    body_on(&c, "node3");
    assert!(children(node_pid(&c, "node2")).is_empty(), "the body left node2");
    // `mos status` lists the guest on node3
    let body = body_on(&c, "node3");
    poll_until(
        || {
            let st = c.mos(&["status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            v.as_array().is_some_and(|a| {
                a.iter().any(|n| n["node"] == "node3" && n["guest_list"].to_string().contains(&format!("pid {body}: body of a migrated process")))
            })
        },
        || format!("mos status lists pid {body} on node3: {}", c.mos(&["status"]).stdout_str()),
    );
    p.write_stdin(b"hello-2\n");
    p.wait_stdout("got: hello-2");
    p.close_stdin();
    let out = p.wait_timeout(Duration::from_secs(60));
    assert_eq!(out.code(), Some(7), "exit status through the stub\n{}\n{}", out.describe(), log_of(dir.path()));
    let stdout = out.stdout_str();
    let ticks: String = stdout.lines().filter(|l| l.starts_with("tick ")).map(|l| format!("{l}\n")).collect();
    assert_same_bytes("ticks on stdout", ticks.as_bytes(), lines_0_to(80, "tick").as_bytes());
    assert!(stdout.contains("got: hello-1\n") && stdout.contains("got: hello-2\n"), "{stdout}");
    let tmp: String = (0..80).map(|i| format!("t{i};")).collect();
    assert!(stdout.contains(&format!("tmp: {} bytes, ends 8;t79;", tmp.len())), "deleted temp file\n{stdout}");
    assert_same_bytes("out.txt", &std::fs::read(dir.path().join("out.txt")).unwrap(), lines_0_to(80, "line").as_bytes());
    assert_eq!(std::fs::read_to_string(dir.path().join("raw.txt")).unwrap(), "raw\n");
    let log = log_of(dir.path());
    assert_eq!(log.matches("restarted as pid").count(), 3, "{log}");
}

/// Signals sent to the stub reach the body: SIGTERM to the application's handler (exit
/// status 42 comes back), SIGSTOP/SIGCONT stop and continue the body, and a default
/// SIGINT (Ctrl-C) ends the body and the stub dies of the same signal.
#[test]
fn stub_forwards_signals_and_exit_status() {
    let c = cluster(2);
    let prog = compile_c("remote_io");
    // SIGTERM -> the application's handler; started with `mos run` (same pid)
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(&prog).arg("100000").current_dir(dir.path()).env("MOS_LOG_FILE", dir.path().join("shim.log"));
    let mut p = Proc::spawn("mos run remote_io", cmd);
    p.wait_stdout("tick 2");
    migrate(&c, p.pid(), "node2");
    let b = body_on(&c, "node2");
    // stopping the stub stops the body; continuing it continues the body
    let _ = b;
    p.signal(libc::SIGSTOP);
    poll_until(|| state_of(p.pid()) == 'T', || "stub stopped".into());
    std::thread::sleep(Duration::from_millis(500));
    let n = p.stdout_now().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.stdout_now().len(), n, "the body goes on while its stub is stopped\n{}", p.describe());
    p.signal(libc::SIGCONT);
    poll_until(|| p.stdout_now().len() > n, || "ticks again after SIGCONT".into());
    p.signal(libc::SIGTERM);
    let out = p.wait_timeout(Duration::from_secs(30));
    assert_eq!(out.code(), Some(42), "{}", out.describe());
    assert!(out.stdout_str().ends_with("term\n"), "{}", out.describe());
    // and the body is gone: not left stopped by its session closing as it exits
    let sh = node_pid(&c, "node2");
    poll_until(|| children(sh).is_empty(), || format!("the body is gone; left: {:?}", children(sh).iter().map(|&p| (p, state_of(p))).collect::<Vec<_>>()));

    // SIGINT with the default action (said explicitly: see `signal_action`)
    let (mut p, dir, body) = migrated_ticker_with(&c, |cmd| signal_action(cmd, libc::SIGINT, libc::SIG_DFL));
    p.signal(libc::SIGINT);
    let t0 = std::time::Instant::now();
    while p.try_status().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the stub to die of SIGINT\n{}\n--- shim.log ---\n{}\n--- body ---\n{}",
            p.describe(),
            log_of(dir.path()),
            describe_tasks(body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = p.wait_timeout(Duration::from_secs(30));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "the stub dies of SIGINT like its body\n{}", out.describe());
    poll_until(|| children(node_pid(&c, "node2")).is_empty(), || "the body is gone".into());

    // SIGINT inherited as ignored stays ignored after the migration: the body goes on
    let (mut p, _dir, _) = migrated_ticker_with(&c, |cmd| signal_action(cmd, libc::SIGINT, libc::SIG_IGN));
    p.signal(libc::SIGINT);
    let home_log = c.home.path().join("node1.log");
    let sent = format!("pid {}: signal {} sent to the body", p.pid(), libc::SIGINT);
    poll_until(|| std::fs::read_to_string(&home_log).unwrap_or_default().contains(&sent), || format!("{sent:?} in the home shadowd's log"));
    let n = p.stdout_now().len();
    poll_until(|| p.stdout_now().len() > n + 16, || format!("ticks after an ignored SIGINT\n{}", p.describe()));
    assert!(p.try_status().is_none(), "an ignored SIGINT ended the process\n{}", p.describe());
    p.signal(libc::SIGTERM);
    let out = p.wait_timeout(Duration::from_secs(30));
    assert_eq!(out.code(), Some(42), "{}", out.describe());
}

/// Killing the home node's shadowd: the body's forwarded calls fail (EIO) and it stops
/// (nothing half-written at home); the stub says so and exits 255.
#[test]
fn home_shadowd_killed_body_stops_safely() {
    let c = cluster(2);
    let (mut p, dir, b) = migrated_ticker(&c);
    p.wait_stdout("tick 10");
    // SAFETY: killing a daemon of this test's cluster.
    unsafe { libc::kill(node_pid(&c, "node1"), libc::SIGKILL) };
    let out = p.wait_timeout(Duration::from_secs(30));
    assert_eq!(out.code(), Some(255), "{}", out.describe());
    assert!(out.stderr_str().contains("home shadowd went away"), "{}", out.describe());
    poll_until(|| state_of(b) == 'T', || format!("body {b} stopped (state {})", state_of(b)));
    let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let n = text.lines().count();
    assert!(n >= 10, "{text}");
    assert_same_bytes("out.txt: whole lines only, in order", text.as_bytes(), lines_0_to(n, "line").as_bytes());
    assert!(log_of(dir.path()).contains("stopping"), "{}", log_of(dir.path()));
}

/// Killing the node the body runs on: the stub reports the loss and exits 255.
#[test]
fn body_node_killed_stub_reports_loss() {
    let c = cluster(2);
    let (mut p, _dir, _) = migrated_ticker(&c);
    // SAFETY: killing a daemon of this test's cluster (its guests die with it).
    unsafe { libc::kill(node_pid(&c, "node2"), libc::SIGKILL) };
    let out = p.wait_timeout(Duration::from_secs(30));
    assert_eq!(out.code(), Some(255), "{}", out.describe());
    let err = out.stderr_str();
    assert!(err.contains("was lost"), "{}", out.describe());
}

/// A TCP connection opened at home keeps working after the process migrated, and a
/// socket created after the migration is created at home.
#[test]
fn tcp_connection_survives_migration() {
    tcp_survives(false);
}

/// The same with the nodes in network namespaces of their own: the connection is home's,
/// made in the home node's namespace, and the body reaches it from another.
#[test]
fn tcp_connection_survives_migration_across_network_namespaces() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    tcp_survives(true);
}

fn tcp_survives(netns: bool) {
    let c = cluster_on(2, netns);
    let host = test_host(&c);
    let listener = std::net::TcpListener::bind((host.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in BufReader::new(s).lines().map_while(Result::ok) {
                        if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c("remote_tcp");
    let mut p = Proc::spawn("remote_tcp", app(&c, dir.path(), &prog, &[&port.to_string(), &host]));

    wait_file(&dir.path().join("ready.1"));
    if netns {
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        assert_ne!(ns(&p.pid().to_string()), ns("self"), "the program runs in its home node's network namespace");
    }
    migrate(&c, p.pid(), "node2");
    body_on(&c, "node2");
    std::fs::write(dir.path().join("go.1"), b"").unwrap();
    let out = p.wait_timeout(Duration::from_secs(30));
    out.assert_code(0, "remote_tcp");
    let s = out.stdout_str();
    for want in ["echo: before\n", "echo: ping 0\n", "echo: ping 4\n", "recv timeout: -1 Resource temporarily unavailable\n", "sendmmsg: 2 5 5\n", "recvmmsg: mm a\nmm b\n", "echo: second connection\n"] {
        assert!(s.contains(want), "{want:?} missing\n{}", out.describe());
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "the first connection was never re-established");
}

/// Runs C program `name` three ways: not migrated; migrated to node2 at mos_sync(1), its
/// calls over the home shadowd's local listener; the same over TCP. `drive` steers each
/// run after go.1 (gets the process and a label for messages); each must print `want`.
fn same_output_three_ways(c: &Cluster, name: &str, want: &str, drive: impl Fn(&mut Proc, &str)) {
    let prog = compile_c(name);
    for (migrated, tcp) in [(false, false), (true, false), (true, true)] {
        let label = format!("{name} (migrated: {migrated}, tcp: {tcp})");
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = app(c, dir.path(), &prog, &[]);
        if tcp {
            cmd.env("MOS_RSYS_TCP", "1");
        }
        let mut p = Proc::spawn(name, cmd);
        wait_file(&dir.path().join("ready.1"));
        if migrated {
            migrate(c, p.pid(), "node2");
            body_on(c, "node2");
        }
        std::fs::write(dir.path().join("go.1"), b"").unwrap();
        drive(&mut p, &label);
        let out = p.wait_timeout(Duration::from_secs(30));
        out.assert_code(0, &label);
        assert_eq!(out.stdout_str(), want, "{label}\n{}\n{}", out.describe(), log_of(dir.path()));
    }
}

/// Writes `line` to a program waiting for it; a migrated one is first migrated once more
/// (back to node1) while it waits, and must go on waiting.
fn write_after_one_more_migration(c: &Cluster, p: &mut Proc, label: &str, line: &[u8]) {
    std::thread::sleep(Duration::from_millis(300));
    if label.contains("migrated: true") {
        migrate(c, p.pid(), "node1");
        body_on(c, "node1");
        std::thread::sleep(Duration::from_millis(300));
    }
    p.write_stdin(line);
}

/// A signal whose handler does not restart calls (or any handler, for poll) ends a
/// forwarded blocking call with EINTR, as at home; a handler with SA_RESTART lets the call
/// go on waiting. Handlers installed before the migration and after it both count, and a
/// signal sent to the stub reaches the body. The output matches a run that stays home.
#[test]
fn signals_interrupt_forwarded_calls_as_at_home() {
    let c = cluster(2);
    let want = "waiting usr1\nusr1 read: -1 Interrupted system call\nalarm 1\nnorestart read: -1 Interrupted system call\n\
                alarm 2\nrestart poll: -1 Interrupted system call\nalarm 3\nrestart read: 5 line\nalarms 3 usr1 1\n";
    same_output_three_ways(&c, "remote_eintr", want, |p, label| {
        p.wait_stdout("waiting usr1");
        // the read may not have begun yet when the line arrives: send again until it ends
        let t0 = Instant::now();
        while !contains(&p.stdout_now(), b"usr1 read") {
            assert!(t0.elapsed() < Duration::from_secs(30), "SIGUSR1 never ended the read: {label}\n{}", p.describe());
            p.signal(libc::SIGUSR1);
            std::thread::sleep(Duration::from_millis(500));
        }
        p.wait_stdout("alarm 3");
        // the restarted read is still waiting: its answer is this line
        write_after_one_more_migration(&c, p, label, b"line\n");
    });
}

/// An epoll set built at home that watches a home pipe and a local eventfd keeps working
/// after the migration, and sets changed or made afterwards work too (ADD/MOD/DEL with
/// their errors, the data word, EPOLLONESHOT, timeouts, a wait for ever): the output
/// matches a run that stays home.
#[test]
fn epoll_sets_watch_home_fds_after_migration() {
    let c = cluster(2);
    let want = "add stdin: 0 ok\nadd eventfd: 0 ok\nidle: 0\neventfd: 1 200/in\nadd stdout: 0 ok\n\
                add stdout again: -1 File exists\noneshot: 1 300/out\ndisarmed: 0\nmod stdout: 0 ok\nrearmed: 1 301/out\n\
                del stdout: 0 ok\ndel stdout again: -1 No such file or directory\nmod stderr: -1 No such file or directory\n\
                add timerfd: 0 ok\ntimer: 1 500/in\ndel timerfd: 0 ok\npoll timer: 1 0 1\nwaiting stdin\nstdin: 1 100/in\nread: hello\nhome-only set idle: 0\n";
    same_output_three_ways(&c, "remote_epoll", want, |p, label| {
        p.wait_stdout("waiting stdin");
        // (a migrated one is checkpointed again while it waits on its set: home part in
        // the body's table, kernel part in the image)
        write_after_one_more_migration(&c, p, label, b"hello\n");
    });
}

/// Python's selectors (epoll) set registered at home, and an asyncio loop started after
/// the migration, read the home stdin.
#[test]
fn python_event_loops_read_home_stdin_after_migration() {
    let c = cluster(2);
    let dir = tempfile::tempdir().unwrap();
    let script = workspace_root().join("tests/progs/remote_selectors.py");
    let mut p = Proc::spawn("remote_selectors.py", app(&c, dir.path(), Path::new("python3"), &[script.to_str().unwrap()]));
    wait_file(&dir.path().join("ready.1"));
    migrate(&c, p.pid(), "node2");
    body_on(&c, "node2");
    std::fs::write(dir.path().join("go.1"), b"").unwrap();
    p.wait_stdout("waiting first");
    std::thread::sleep(Duration::from_millis(200));
    p.write_stdin(b"one\n");
    p.wait_stdout("waiting async");
    std::thread::sleep(Duration::from_millis(200));
    p.write_stdin(b"two\n");
    p.wait_stdout("async got two");
    p.write_stdin(b"end\n");
    let out = p.wait_timeout(Duration::from_secs(30));
    out.assert_code(0, "remote_selectors.py");
    assert_eq!(
        out.stdout_str(),
        "selector EpollSelector\nidle []\nwaiting first\nready stdin 1 one\nwaiting async\nasync got two\nasync got end\nbye\n",
        "{}\n{}",
        out.describe(),
        log_of(dir.path())
    );
}

/// The files remote_matrix opens before its migration.
fn matrix_files(dir: &Path) {
    std::fs::write(dir.join("before.txt"), b"before\n").unwrap();
    let mut map = vec![b'.'; 8192];
    map[0] = b'M';
    map[4096] = b'N';
    map[8191] = b'E';
    std::fs::write(dir.join("map.txt"), &map).unwrap();
}

fn matrix_rows(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.starts_with("ROW ") || l.starts_with("MATRIX")).map(str::to_string).collect()
}

fn matrix_run(c: &Cluster, migrate_to: Option<&str>) -> (Vec<String>, PathBuf, tempfile::TempDir) {
    matrix_run_env(c, migrate_to, &[]).0
}

/// [`matrix_run`] with extra environment; also returns the process's pid.
fn matrix_run_env(c: &Cluster, migrate_to: Option<&str>, env: &[(&str, &str)]) -> ((Vec<String>, PathBuf, tempfile::TempDir), i32) {
    let dir = tempfile::tempdir().unwrap();
    matrix_files(dir.path());
    let prog = compile_c("remote_matrix");
    let mut cmd = app(c, dir.path(), &prog, &[]);
    cmd.envs(env.iter().copied());
    let mut p = Proc::spawn("remote_matrix", cmd);
    let pid = p.pid();
    wait_file(&dir.path().join("ready.1"));
    p.write_stdin(b"x\n");
    if let Some(node) = migrate_to {
        migrate(c, p.pid(), node);
        body_on(c, node);
    }
    std::fs::write(dir.path().join("go.1"), b"").unwrap();
    let out = p.wait_timeout(Duration::from_secs(60));
    let rows = matrix_rows(&out.stdout_str());
    assert_eq!(out.code(), Some(0), "matrix {migrate_to:?}\n{}\n{}", out.describe(), log_of(dir.path()));
    let p = dir.path().to_path_buf();
    ((rows, p, dir), pid)
}

/// The coverage matrix: every row passes after migration exactly as at home, or is
/// refused with a clear errno (a writable shared mapping of a home file).
#[test]
fn coverage_matrix_after_migration() {
    let c = cluster(2);
    let (home, _, _d1) = matrix_run(&c, None);
    let (remote, dir, _d2) = matrix_run(&c, Some("node2"));
    eprintln!("coverage matrix (migrated):\n{}", remote.join("\n"));
    let shared = |rows: &[String]| rows.iter().filter(|r| !r.starts_with("ROW mmap_shared_write")).cloned().collect::<Vec<_>>();
    assert_eq!(shared(&remote), shared(&home), "the migrated run differs from the run at home");
    assert!(home.iter().any(|r| r == "ROW mmap_shared_write ok"), "{home:?}");
    assert!(remote.iter().any(|r| r == "ROW mmap_shared_write refused ENODEV"), "{remote:?}");
    assert!(remote.iter().filter(|r| r.ends_with(" ok")).count() >= 10, "{remote:?}");
    // error answers, spliced reads and vectored reads in a row: each its own answer
    for row in ["ROW answers_follow_calls ok", "ROW readv_writev ok"] {
        assert!(remote.iter().any(|r| r == row), "{row} missing: {remote:?}");
    }
    // the files are at home
    assert_eq!(std::fs::read_to_string(dir.join("before.txt")).unwrap(), "before\nafter\n");
    assert_eq!(std::fs::read_to_string(dir.join("m_raw.txt")).unwrap(), "raw\n");
    assert_eq!(std::fs::read_to_string(dir.join("m_dup.txt")).unwrap(), "abcdef");
}

/// Calls connections of a body on the home host go to the home shadowd's local (unix)
/// listener; with MOS_RSYS_TCP=1 (and from any other host) they go over TCP. Both
/// transports give the same matrix.
#[test]
fn coverage_matrix_over_both_transports() {
    let c = cluster(2);
    let ((home, _, _d1), _) = matrix_run_env(&c, None, &[]);
    let ((local, _, _d2), local_pid) = matrix_run_env(&c, Some("node2"), &[]);
    let ((tcp, _, _d3), tcp_pid) = matrix_run_env(&c, Some("node2"), &[("MOS_RSYS_TCP", "1")]);
    let shared = |rows: &[String]| rows.iter().filter(|r| !r.starts_with("ROW mmap_shared_write")).cloned().collect::<Vec<_>>();
    assert_eq!(shared(&local), shared(&home), "over unix");
    assert_eq!(shared(&tcp), shared(&home), "over tcp");
    assert!(home.iter().any(|r| r == "ROW large_read ok"), "{home:?}");
    let log = std::fs::read_to_string(c.home.path().join("node1.log")).unwrap();
    let calls = |pid: i32, how: &str| log.lines().filter(|l| l.contains(&format!("pid {pid}: calls connection over {how}"))).count();
    assert!(calls(local_pid, "unix") > 0 && calls(local_pid, "tcp") == 0, "pid {local_pid}: expected unix calls connections only\n{log}");
    assert!(calls(tcp_pid, "tcp") > 0 && calls(tcp_pid, "unix") == 0, "pid {tcp_pid}: expected tcp calls connections only\n{log}");
}

/// Node B runs in its own mount namespace with a private /tmp: the migrated process
/// (C with fopen/fprintf and raw syscall(SYS_openat), C++ iostreams, python3) still sees home's /tmp
/// and creates its files there, never in B's /tmp.
#[test]
fn isolation_private_tmp_on_the_remote_node() {
    if !is_root() {
        eprintln!("skipped: needs root for unshare -m");
        return;
    }
    let c = cluster(1);
    // node "iso": a shadowd in its own mount namespace whose /tmp is an empty tmpfs. The
    // workspace (binaries, the node's state dir) may itself live under /tmp: it is bound
    // to a mount point outside /tmp first, inside the namespace only.
    let iso_state = tempfile::Builder::new().prefix("mos-iso-").tempdir_in(workspace_root().join("target")).unwrap();
    std::fs::copy(c.home.path().join("cluster.key"), iso_state.path().join("key")).unwrap();
    let mnt = tempfile::Builder::new().prefix("mos-iso-mnt-").tempdir_in("/var/tmp").unwrap();
    let ws = workspace_root().canonicalize().unwrap();
    let inside = |p: &Path| mnt.path().join(p.canonicalize().unwrap().strip_prefix(&ws).unwrap());
    let mut sh = Command::new("unshare");
    sh.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {ws} {mnt} && mount -t tmpfs tmpfs /tmp && exec {sd} --node iso --listen 127.0.0.1:0 --state-dir {st} --key {st}/key",
            ws = ws.display(),
            mnt = mnt.path().display(),
            sd = inside(&release_dir().join("shadowd")).display(),
            st = inside(iso_state.path()).display(),
        ))
        .env_remove("LD_PRELOAD");
    let mut iso = Proc::spawn("iso shadowd", sh);
    wait_file(&iso_state.path().join("addr"));
    let iso_addr = std::fs::read_to_string(iso_state.path().join("addr")).unwrap().trim().to_string();
    let iso_pid = iso.pid();

    let dir = tempfile::Builder::new().prefix("mos-iso-home-").tempdir_in("/tmp").unwrap();
    std::fs::write(dir.path().join("home_only.txt"), b"at home\n").unwrap();
    let d = dir.path().to_str().unwrap().to_string();

    let run = |label: &str, mut cmd: Command| -> String {
        let _ = std::fs::remove_file(dir.path().join("ready.1"));
        let _ = std::fs::remove_file(dir.path().join("go.1"));
        cmd.current_dir(dir.path())
            .env("LD_PRELOAD", shim())
            .env("MOS_HOME", c.home.path())
            .env("MOS_SYNC", dir.path())
            .env("MOS_LOG_FILE", dir.path().join("shim.log"));
        let mut p = Proc::spawn(label, cmd);
        wait_file(&dir.path().join("ready.1"));
        let out = c.mos(&["migrate", &p.pid().to_string(), &iso_addr]);
        out.assert_code(0, "mos migrate to the isolated node");
        // the body (its pid there is in the output) is a child of the isolated shadowd; the
        // previous program's body may not be reaped yet, so count nothing else
        let body: i32 = out.stdout_str().split("(pid ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok()).expect("body pid in mos migrate's output");
        assert!(children(iso_pid).contains(&body), "body {body} not under the isolated shadowd {iso_pid}\n{}", out.describe());
        std::fs::write(dir.path().join("go.1"), b"").unwrap();
        let out = p.wait_timeout(Duration::from_secs(60));
        out.assert_code(0, label);
        out.stdout_str()
    };
    let mut c_prog = Command::new(compile_c("remote_iso"));
    c_prog.arg(&d);
    let s = run("remote_iso", c_prog);
    assert!(s.contains("home_only: found"), "{s}");
    for want in ["fchmodat2: ok", "io_uring_setup: Function not implemented", "io_setup: Function not implemented", "getxattrat: Operation not supported"] {
        assert!(s.contains(want), "{want:?} missing:\n{s}");
    }
    // C++ iostreams
    let cpp = iso_state.path().join("remote_iso_cc");
    let built = Command::new("g++")
        .args(["-O1", "-o"])
        .arg(&cpp)
        .arg(workspace_root().join("tests/progs/remote_iso.cc"))
        .output()
        .expect("run g++");
    assert!(built.status.success(), "g++: {}", String::from_utf8_lossy(&built.stderr));
    let mut cc = Command::new(&cpp);
    cc.arg(&d);
    let s = run("c++ iostreams", cc);
    assert!(s.contains("home_only: found (at home)"), "{s}");
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(
            "import os, sys, time\n\
             d = sys.argv[1]; sync = os.environ['MOS_SYNC']\n\
             open(os.path.join(sync, 'ready.1'), 'w').close()\n\
             while not os.path.exists(os.path.join(sync, 'go.1')): time.sleep(0.01)\n\
             with open(os.path.join(d, 'py_open.txt'), 'w') as f: f.write('written by python\\n')\n\
             print('home_only:', 'found' if os.path.exists(os.path.join(d, 'home_only.txt')) else 'missing')\n\
             print('listing:', ' '.join(sorted(x for x in os.listdir(d) if x.endswith('.txt'))))\n",
        )
        .arg(&d);
    let s = run("python3", py);
    assert!(s.contains("home_only: found"), "{s}");
    assert!(s.contains("listing: c_fopen.txt c_raw.txt cpp_stream.txt home_only.txt py_open.txt"), "{s}");
    // at home: every file; on the isolated node: none (its /tmp is its own, empty)
    assert_eq!(std::fs::read_to_string(dir.path().join("c_fopen.txt")).unwrap(), "written by fprintf\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("c_raw.txt")).unwrap(), "written by syscall\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("c_raw.txt")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "fchmodat2 from the remote node changed the home file");
    assert_eq!(std::fs::read_to_string(dir.path().join("py_open.txt")).unwrap(), "written by python\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("cpp_stream.txt")).unwrap(), "written by ofstream\n");
    let ls = Command::new("nsenter")
        .args(["-t", &iso_pid.to_string(), "-m", "--", "ls", "-A", "/tmp"])
        .output()
        .unwrap();
    assert!(ls.status.success(), "{ls:?}");
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "", "the isolated node's /tmp stays empty");
    let start = Instant::now();
    iso.kill();
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A terminal stays at home: the matrix run under script(1), so its stdin is a pty; after
/// migration isatty, tcgetattr/tcsetattr and TIOCGWINSZ on it are answered at home.
#[test]
fn terminal_stays_at_home() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1)");
        return;
    }
    let c = cluster(2);
    let dir = tempfile::tempdir().unwrap();
    matrix_files(dir.path());
    let prog = compile_c("remote_matrix");
    let mut cmd = Command::new("script");
    cmd.args(["-qec"])
        .arg(format!("exec env LD_PRELOAD={} {}", shim().display(), prog.display()))
        .arg("/dev/null")
        .current_dir(dir.path())
        .env_remove("LD_PRELOAD")
        .env("MOS_HOME", c.home.path())
        .env("MOS_SYNC", dir.path())
        .env("MOS_LOG_FILE", dir.path().join("shim.log"));
    let mut p = Proc::spawn("script remote_matrix", cmd);
    wait_file(&dir.path().join("ready.1"));
    let me = dir.path().canonicalize().unwrap();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "remote_matrix")
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d == me)
        })
        .expect("the program under script");
    p.write_stdin(b"x\n");
    migrate(&c, pid, "node2");
    body_on(&c, "node2");
    std::fs::write(dir.path().join("go.1"), b"").unwrap();
    let out = p.wait_timeout(Duration::from_secs(60));
    let s = out.stdout_str().replace('\r', "");
    assert!(s.contains("tty: yes"), "{}", out.describe());
    assert!(s.contains("ROW tty ok"), "{}\n{}", out.describe(), log_of(dir.path()));
    assert!(s.contains("MATRIX DONE fails=0"), "{}", out.describe());
}

/// Away from home, `/proc/<pid>` and `/proc/<tid>` with the numbers the process knows
/// name the body's own entries on its node (open, fopen, opendir, stat, access,
/// readlink), `/proc/self` reads as getpid, and the task directory lists the thread.
#[test]
fn proc_paths_with_the_own_pid_work_away_from_home() {
    let c = cluster(2);
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c("procpid");
    let mut p = Proc::spawn("procpid", app(&c, dir.path(), &prog, &[]));
    wait_file(&dir.path().join("ready.1"));
    migrate(&c, p.pid(), "node2");
    body_on(&c, "node2");
    std::fs::write(dir.path().join("go.1"), b"").unwrap();
    let out = p.wait_timeout(Duration::from_secs(30));
    out.assert_code(0, "procpid away from home");
    let want = "after: stat ok, own entry ok, fopen ok, opendir ok, open task ok, access tid ok, /proc/self ok, listed ok, task listed ok, getdents ok, exe ok\n";
    assert!(out.stdout_str().contains(want), "{}\n{}", out.describe(), log_of(dir.path()));
}
