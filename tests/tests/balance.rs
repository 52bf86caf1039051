//! Automatic load balancing on the capped test bed (DESIGN.md §9): real placer and
//! shadowds, each node in its own cgroup with a CPU quota; processes started with
//! `mos run` at their home node move by themselves. Needs the privilege to create
//! cgroups (root); without it the tests say so and check the refusal instead.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mos_integration::*;

/// A cluster of `nodes` capped at `cpu` CPUs each, reporting every 200 ms.
fn capped(nodes: u32, cpu: &str, extra: &[&str]) -> Cluster {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    let n = nodes.to_string();
    let mut args = vec!["cluster", "up", "--nodes", &n, "--interval-ms", "200", "--cpu-limit", cpu, "--min-age-ms", "600"];
    args.extend_from_slice(extra);
    c.mos(&args).assert_code(0, "mos cluster up (capped)");
    c
}

/// `mos run [opts] -- crunch SEED UNITS` at home node `home` (stdout piped).
fn crunch(c: &Cluster, home: &str, opts: &[&str], seed: u32, units: u32) -> Proc {
    let mut cmd = c.cmd("mos");
    cmd.arg("run").args(opts).arg("--").arg(compile_c("crunch")).arg(seed.to_string()).arg(units.to_string()).env("MOS_HOME_NODE", home);
    Proc::spawn(&format!("crunch {seed}"), cmd)
}

/// The same work without the shim, uncapped: what every moved run must print.
fn uninterrupted(seed: u32, units: u32) -> Vec<u8> {
    let out = std::process::Command::new(compile_c("crunch")).arg(seed.to_string()).arg(units.to_string()).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn ps(c: &Cluster) -> Vec<serde_json::Value> {
    c.json(&["ps", "--json"]).as_array().cloned().unwrap_or_default()
}

fn events(c: &Cluster) -> Vec<String> {
    let v = c.json(&["ps", "--json", "--events"]);
    v["events"].as_array().cloned().unwrap_or_default().iter().filter_map(|e| e.as_str().map(str::to_string)).collect()
}

/// Skip (with a line saying why) where cgroups cannot be made.
fn privileged() -> bool {
    if !is_root() {
        eprintln!("skipped: the capped test bed needs root (cgroups)");
        return false;
    }
    true
}

/// 8 CPU-bound processes started at node1 of 4 capped nodes: nobody types migrate, yet
/// their bodies run on at least 3 nodes, every output equals an uninterrupted run's, every
/// exit status is 0, and every automatic move is an event naming its reason; no process
/// is bounced around (at most a few moves beyond the 6 that balance 8 over 4).
#[test]
fn processes_spread_over_capped_nodes_by_themselves() {
    if !privileged() {
        return;
    }
    spread(&[], " migrate node1:");
}

/// The same in gossip mode: no placer decides, every shadowd does from the vectors it
/// hears; targets admit moves by their own load.
#[test]
fn processes_spread_by_gossip() {
    if !privileged() {
        return;
    }
    spread(&["--mode", "gossip"], "gossip: migrate node1:");
}

/// The same with every node in a network namespace of its own (`--netns`), in gossip
/// mode (load vectors over UDP between the namespaces; moves over the bridge).
#[test]
fn processes_spread_by_gossip_across_network_namespaces() {
    if !privileged() {
        return;
    }
    spread(&["--mode", "gossip", "--netns"], "gossip: migrate node1:");
}

fn spread(mode: &[&str], move_line: &str) {
    let c = capped(4, "0.4", mode);
    let units = 120;
    let mut procs: Vec<Proc> = (1..=8).map(|i| crunch(&c, "node1", &[], i, units)).collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while procs.iter_mut().any(|p| p.is_running()) {
        assert!(Instant::now() < deadline, "still running after 120 s; seen on {seen:?}\n{}", std::fs::read_to_string(c.home.path().join("placer.log")).unwrap_or_default());
        for r in ps(&c) {
            seen.insert(r["node"].as_str().unwrap_or("").to_string());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    for (i, p) in procs.iter_mut().enumerate() {
        let out = p.wait();
        out.assert_code(0, &format!("crunch {}", i + 1));
        assert_same_bytes(&format!("crunch {} output", i + 1), &out.stdout, &uninterrupted(i as u32 + 1, units));
    }
    assert!(seen.len() >= 3, "bodies seen on {seen:?} only");
    let ev = events(&c);
    let moves: Vec<&String> = ev.iter().filter(|e| e.contains(move_line)).collect();
    assert!(moves.len() >= 3 && moves.len() <= 10, "{} moves: {ev:#?}", moves.len());
    assert!(moves.iter().all(|e| e.contains(": load: ") && e.contains("gain ")), "every move names its reason: {ev:#?}");
    assert!(!ev.iter().any(|e| e.contains("failed")), "{ev:#?}");
}

/// Two nodes equally loaded from the start (one process homed at each): no migration in
/// 10 intervals and more, in central and in gossip mode.
#[test]
fn equally_loaded_nodes_do_not_ping_pong() {
    if !privileged() {
        return;
    }
    for mode in ["central", "gossip"] {
        let c = capped(2, "0.5", &["--mode", mode]);
        let mut a = crunch(&c, "node1", &[], 1, 2000);
        let mut b = crunch(&c, "node2", &[], 2, 2000);
        poll_until(|| ps(&c).len() == 2, || format!("{:#?}", ps(&c)));
        std::thread::sleep(Duration::from_millis(10 * 200 + 800));
        let ev = events(&c);
        assert!(ev.is_empty(), "{mode}: migrations between equally loaded nodes: {ev:#?}");
        for r in ps(&c) {
            assert_eq!(r["node"], r["home"], "{mode}: {r}");
        }
        let log = std::fs::read_to_string(c.home.path().join("node1.log")).unwrap_or_default() + &std::fs::read_to_string(c.home.path().join("node2.log")).unwrap_or_default();
        assert!(!log.contains("gossip: migrate"), "{mode}: {log}");
        a.kill();
        b.kill();
    }
}

/// `mos run --no-migrate` stays at home (its reason shown by mos ps) while the others
/// move; with --no-balance nothing moves at all.
#[test]
fn no_migrate_stays_home_and_no_balance_moves_nothing() {
    if !privileged() {
        return;
    }
    let c = capped(2, "0.5", &[]);
    let mut stay = crunch(&c, "node1", &["--no-migrate"], 1, 2000);
    let mut others: Vec<Proc> = (2..=3).map(|i| crunch(&c, "node1", &[], i, 2000)).collect();
    poll_until(|| ps(&c).iter().any(|r| r["node"] == "node2"), || format!("nothing moved: {:#?}\n{:#?}", ps(&c), events(&c)));
    std::thread::sleep(Duration::from_millis(1500));
    let rows = ps(&c);
    let me = rows.iter().find(|r| r["pid"] == stay.pid()).unwrap_or_else(|| panic!("no row of pid {}: {rows:#?}", stay.pid()));
    assert_eq!((me["node"].as_str(), me["migratable"].as_bool()), (Some("node1"), Some(false)), "{me}");
    assert!(me["why_not"].as_str().unwrap().contains("--no-migrate"), "{me}");
    assert!(me["migrations"].as_array().unwrap().is_empty(), "{me}");
    stay.kill();
    others.iter_mut().for_each(Proc::kill);
    drop(c);

    let c = capped(2, "0.5", &["--no-balance"]);
    let mut ps_ = (1..=3).map(|i| crunch(&c, "node1", &[], i, 2000)).collect::<Vec<_>>();
    poll_until(|| ps(&c).len() == 3, || format!("{:#?}", ps(&c)));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(ps(&c).iter().all(|r| r["node"] == "node1"), "{:#?}", ps(&c));
    assert!(events(&c).is_empty(), "{:#?}", events(&c));
    ps_.iter_mut().for_each(Proc::kill);
}

/// Bad test-bed options are refused with one line naming the option; nothing starts.
#[test]
fn bad_test_bed_options_are_refused() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    for (args, word) in [
        (&["--cpu-limit", "0"][..], "--cpu-limit"),
        (&["--mem-limit", "12Q"][..], "--mem-limit"),
        (&["--speeds", "1,2"][..], "--speeds"),
        (&["--speeds", "1,0,1"][..], "--speeds"),
    ] {
        let mut a = vec!["cluster", "up", "--nodes", "3"];
        a.extend_from_slice(args);
        let out = c.mos(&a);
        assert_one_line_error(&format!("mos {a:?}"), &out, 2, Some(word));
        assert!(!c.home.path().join("cluster.json").exists());
    }
}

/// Garbage, a datagram signed with another key, and a replayed genuine one, sent to a
/// gossiping node's UDP port: each dropped and logged, and balancing goes on.
#[test]
fn bad_gossip_datagrams_are_dropped_and_balancing_goes_on() {
    if !privileged() {
        return;
    }
    let c = capped(2, "0.5", &["--mode", "gossip"]);
    let state = |n: &str| c.home.path().join("nodes").join(n);
    let target = std::fs::read_to_string(state("node1").join("gossip.addr")).unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"not a gossip datagram", target.trim()).unwrap();
    sock.send_to(&[0u8; 1400], target.trim()).unwrap();
    let other = proto::ClusterKey::from_bytes([9; 32]);
    let v = proto::gossip::LoadVector { node: "intruder".into(), addr: "127.0.0.1:1".into(), gossip: "127.0.0.1:2".into(), run_queue: 0, cpus: 64, speed: 1000, free_mib: 1 << 20, total_mib: 1 << 20, age_ms: 0 };
    let forged = proto::gossip::encode(&other, &proto::gossip::Packet { seq: u64::MAX, vectors: vec![v] }).unwrap();
    sock.send_to(&forged, target.trim()).unwrap();
    let log = || std::fs::read_to_string(c.home.path().join("node1.log")).unwrap_or_default();
    poll_until(|| log().contains("gossip: dropped a datagram") && log().contains("bad MAC"), log);
    // the node still balances: two processes at node1, one goes to node2
    let mut ps_: Vec<Proc> = (1..=2).map(|i| crunch(&c, "node1", &[], i, 2000)).collect();
    poll_until(|| ps(&c).iter().any(|r| r["node"] == "node2"), || format!("{:#?}\n{}", ps(&c), log()));
    assert!(!log().contains("intruder"), "{}", log());
    ps_.iter_mut().for_each(Proc::kill);
}

/// Memory ushering: 3 nodes limited to 1 GiB each, 3 processes growing to 600 MiB each at
/// node1. Its memory runs short, processes are ushered to the nodes with most free memory
/// (each move an event naming the deficit); no process is OOM-killed, and each prints what
/// an uninterrupted run prints.
#[test]
fn memory_ushering_keeps_growing_processes_alive() {
    if !privileged() {
        return;
    }
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    // load balancing may not move them (they are young for ever): only memory can, as
    // ushering ignores age (else they may leave node1 for load before memory runs short,
    // as happened in a clean-clone run)
    c.mos(&["cluster", "up", "--nodes", "3", "--interval-ms", "200", "--mem-limit", "1G", "--min-age-ms", "3600000"]).assert_code(0, "mos cluster up --mem-limit 1G");
    let grow = |seed: u32, step_ms: &str| {
        let mut cmd = c.cmd("mos");
        cmd.args(["run", "--"]).arg(compile_c("grow")).args([&seed.to_string(), "600", step_ms]).env("MOS_HOME_NODE", "node1");
        cmd
    };
    let mut ps_: Vec<Proc> = (1..=3).map(|i| Proc::spawn(&format!("grow {i}"), grow(i, "40"))).collect();
    for (i, p) in ps_.iter_mut().enumerate() {
        let out = p.wait_timeout(Duration::from_secs(180));
        out.assert_code(0, &format!("grow {} (an OOM kill would end it with SIGKILL)", i + 1));
        let want = std::process::Command::new(compile_c("grow")).args([&(i + 1).to_string(), "600", "0"]).output().unwrap();
        assert_same_bytes(&format!("grow {} output", i + 1), &out.stdout, &want.stdout);
    }
    let ev = events(&c);
    assert!(ev.iter().any(|e| e.contains("memory ushering: node1 short by")), "{ev:#?}");
    assert!(!ev.iter().any(|e| e.contains("failed")), "{ev:#?}");
}

/// A node killed in the middle of a balancing move (its shadowd SIGKILLed as soon as the
/// move to it is ordered, while a 300 MiB image streams to it): the process is not lost.
/// It runs on where it was (it leaves only once it runs on the target), and every process
/// still prints what an uninterrupted run prints and exits 0.
#[test]
fn a_node_killed_mid_balance_loses_nothing() {
    if !privileged() {
        return;
    }
    let c = capped(3, "0.5", &[]);
    let units = 250;
    let mut procs: Vec<Proc> = (1..=3)
        .map(|i| {
            let mut cmd = c.cmd("mos");
            cmd.args(["run", "--"]).arg(compile_c("crunch")).args([&i.to_string(), &units.to_string(), "300"]).env("MOS_HOME_NODE", "node1");
            Proc::spawn(&format!("crunch {i}"), cmd)
        })
        .collect();
    // the first move ordered: kill its target
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        assert!(Instant::now() < deadline, "no move ordered: {:#?}", events(&c));
        if let Some(e) = events(&c).iter().find(|e| e.contains(" migrate node1:")) {
            break e.split(" to ").nth(1).and_then(|t| t.split(':').next()).unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rs = c.run_state();
    let pid = rs["nodes"].as_array().unwrap().iter().find(|n| n["name"] == victim.as_str()).unwrap()["pid"].as_i64().unwrap() as i32;
    // SAFETY: killing a daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for (i, p) in procs.iter_mut().enumerate() {
        let out = p.wait_timeout(Duration::from_secs(180));
        out.assert_code(0, &format!("crunch {} (its node {victim} was killed mid-balance)", i + 1));
        let want = std::process::Command::new(compile_c("crunch")).args([&(i + 1).to_string(), &units.to_string(), "300"]).output().unwrap();
        assert_same_bytes(&format!("crunch {} output", i + 1), &out.stdout, &want.stdout);
    }
    let log = std::fs::read_to_string(c.home.path().join("node1.log")).unwrap_or_default();
    eprintln!("killed {victim}; events: {:#?}", events(&c));
    assert!(!log.contains("was lost"), "{log}");
}

/// Remote initiation: `mos run --node node3` starts the body on node3 at once (its home,
/// pid and files stay at node1); an unknown node is refused before anything runs.
#[test]
fn run_on_a_named_node() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    c.mos(&["cluster", "up", "--nodes", "3", "--interval-ms", "200", "--no-balance"]).assert_code(0, "mos cluster up");
    let mut p = crunch(&c, "node1", &["--node", "node3"], 5, 150);
    poll_until(|| ps(&c).iter().any(|r| r["node"] == "node3" && r["home"] == "node1" && r["pid"] == p.pid()), || format!("{:#?}", ps(&c)));
    let out = p.wait();
    out.assert_code(0, "crunch on node3");
    assert_same_bytes("crunch output", &out.stdout, &uninterrupted(5, 150));
    let out = c.mos(&["run", "--node", "node9", "--", "/bin/echo", "hi"]);
    assert_one_line_error("mos run --node node9", &out, 2, Some("node9"));
}

/// Batch jobs are balanced pre-emptively too, by checkpoint and restart: 3 CPU-bound jobs
/// submitted while node2's and node3's shadowds are stopped are all placed on node1; once
/// those nodes report again, the placer moves jobs to them by itself (nobody typed
/// migrate). Every output equals an uninterrupted run's, every job completes with 0.
#[test]
fn batch_jobs_are_balanced_preemptively() {
    if !privileged() {
        return;
    }
    let c = capped(3, "0.5", &[]);
    let rs = c.run_state();
    let daemon = |name: &str| rs["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()["pid"].as_i64().unwrap() as i32;
    let peers = [daemon("node2"), daemon("node3")];
    for &p in &peers {
        // SAFETY: pausing daemons this test started (continued below).
        unsafe { libc::kill(p, libc::SIGSTOP) };
    }
    struct Cont([i32; 2]);
    impl Drop for Cont {
        fn drop(&mut self) {
            for &p in &self.0 {
                // SAFETY: continuing the daemons stopped above, even when the test fails.
                unsafe { libc::kill(p, libc::SIGCONT) };
            }
        }
    }
    let cont = Cont(peers);
    let up = |c: &Cluster| -> Vec<String> {
        c.json(&["status", "--json"]).as_array().unwrap().iter().filter(|n| n["state"] == "up").map(|n| n["node"].as_str().unwrap().to_string()).collect()
    };
    poll_until(|| up(&c) == ["node1"], || format!("only node1 up: {:?}", up(&c)));
    let work = c.home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(compile_c("crunch"), work.join("crunch")).unwrap();
    let (jobs, units) = (3u32, 300u32);
    std::fs::write(
        work.join("job.toml"),
        format!("executable = \"crunch\"\narguments = \"$(Process) {units}\"\noutput = \"out.$(Process).txt\"\nerror = \"err.$(Process).txt\"\nlog = \"jobs.log\"\nqueue = {jobs}\n"),
    )
    .unwrap();
    let mut sub = c.cmd("mossubmit");
    sub.arg("job.toml").current_dir(&work);
    run("mossubmit", sub, b"").assert_code(0, "mossubmit");
    let q = |c: &Cluster| c.json(&["q", "--json"]).as_array().cloned().unwrap_or_default();
    poll_until(
        || {
            let q = q(&c);
            q.len() == jobs as usize && q.iter().all(|r| r["state"] == "R" && r["node"] == "node1")
        },
        || format!("all {jobs} jobs running on node1: {:#?}", q(&c)),
    );
    drop(cont);
    // they spread by themselves, and finish
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = q(&c);
        for r in rows.iter().filter(|r| r["state"] == "R") {
            seen.insert(r["node"].as_str().unwrap_or("").to_string());
        }
        if rows.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs still running after 120 s: {rows:#?}\nevents: {:#?}", events(&c));
        std::thread::sleep(Duration::from_millis(50));
    }
    let ev = events(&c);
    assert!(ev.iter().any(|e| e.contains("migrate job ") && e.contains(" from node1 to ")), "no automatic move of a job: {ev:#?}");
    assert!(seen.len() >= 2, "jobs ran only on {seen:?}: {ev:#?}");
    for p in 0..jobs {
        let want = std::process::Command::new(work.join("crunch")).args([p.to_string(), units.to_string()]).output().unwrap().stdout;
        let got = std::fs::read(work.join(format!("out.{p}.txt"))).unwrap_or_default();
        assert_same_bytes(&format!("output of job {p} (moved while it ran)"), &got, &want);
    }
    let hist = c.json(&["history", "--json"]);
    let done: Vec<_> = hist.as_array().cloned().unwrap_or_default();
    assert!(done.len() == jobs as usize && done.iter().all(|r| r["state"] == "C" && r["exit"] == 0), "every job completed with 0: {hist:#}");
    eprintln!("events: {ev:#?}\nhistory: {hist:#}");
}

/// The children a script starts move by themselves: `mos run -- sh -c '4 crunches in the
/// background; wait'` at node1 of 4 capped nodes. Each crunch is its own program under the
/// shim and registers itself with node1's shadowd (MOS_SHADOW_SOCK, which `mos run` passes
/// down); the shell has children and stays, saying why. Every output equals an
/// uninterrupted run's, and the shell's `wait` sees every exit status through the stubs.
#[test]
fn a_scripts_children_are_balanced() {
    if !privileged() {
        return;
    }
    let c = capped(4, "0.4", &[]);
    let out = c.home.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (n, units) = (4u32, 150u32);
    let script = format!(
        "for i in $(seq {n}); do \"$0\" $i {units} > out.$i & p=\"$p $!\"; done; s=0; for j in $p; do wait $j || s=$?; done; echo statuses $s; exit $s"
    );
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--", "sh", "-c", &script]).arg(compile_c("crunch")).current_dir(&out).env("MOS_HOME_NODE", "node1");
    let mut sh = Proc::spawn("sh with 4 crunches", cmd);
    let mut seen = BTreeSet::new();
    let mut shell_row = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sh.is_running() {
        assert!(Instant::now() < deadline, "still running after 120 s; seen on {seen:?}\n{:#?}", events(&c));
        for r in ps(&c) {
            seen.insert(r["node"].as_str().unwrap_or("").to_string());
            if r["pid"] == sh.pid() {
                shell_row = Some(r);
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let res = sh.wait();
    res.assert_code(0, "the script");
    assert_eq!(String::from_utf8_lossy(&res.stdout).trim(), "statuses 0");
    for i in 1..=n {
        let got = std::fs::read(out.join(format!("out.{i}"))).unwrap_or_default();
        assert_same_bytes(&format!("output of crunch {i} (started by the script)"), &got, &uninterrupted(i, units));
    }
    assert!(seen.len() >= 3, "bodies seen on {seen:?} only: {:#?}", events(&c));
    let ev = events(&c);
    assert!(ev.iter().filter(|e| e.contains(" migrate node1:")).count() >= 2, "{ev:#?}");
    let shell = shell_row.unwrap_or_else(|| panic!("the shell (pid {}) was never a row of mos ps", sh.pid()));
    assert_eq!((shell["node"].as_str(), shell["migratable"].as_bool()), (Some("node1"), Some(false)), "{shell}");
    assert!(shell["why_not"].as_str().unwrap_or("").contains("child"), "{shell}");
}

/// Automatic migrations of processes above `MOS_LIVE_MIN_MIB` go live (pre-copy): with
/// the threshold at 1 MiB every balanced crunch moves by copy rounds while it runs, and
/// each output equals an uninterrupted run's.
#[test]
fn automatic_migrations_of_big_processes_go_live() {
    if !privileged() {
        return;
    }
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    let mut up = c.cmd("mos");
    up.args(["cluster", "up", "--nodes", "3", "--interval-ms", "200", "--cpu-limit", "0.4", "--min-age-ms", "600"]).env("MOS_LIVE_MIN_MIB", "1");
    run("mos cluster up (live threshold 1 MiB)", up, b"").assert_code(0, "mos cluster up");
    let units = 100;
    let mut procs: Vec<Proc> = (1..=4).map(|i| crunch(&c, "node1", &[], i, units)).collect();
    for (i, p) in procs.iter_mut().enumerate() {
        let out = p.wait_timeout(Duration::from_secs(120));
        out.assert_code(0, &format!("crunch {}", i + 1));
        assert_same_bytes(&format!("crunch {} output", i + 1), &out.stdout, &uninterrupted(i as u32 + 1, units));
    }
    let logs: String = ["node1", "node2", "node3"].iter().map(|n| std::fs::read_to_string(c.home.path().join(format!("{n}.log"))).unwrap_or_default()).collect();
    let live = logs.lines().filter(|l| l.contains("migrated to ") && l.contains("live: copy rounds")).count();
    assert!(live >= 1, "no automatic live migration:\n{logs}\n{:#?}", events(&c));
    assert!(!logs.lines().any(|l| l.contains("migrated to ") && l.contains("(frozen throughout)")), "a stop-and-copy move:\n{logs}");
}
