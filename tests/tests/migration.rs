//! Stop-and-copy migration streamed as the image is written (no image file on the source;
//! the target keeps it in memory and the restart removes it): a big process arrives whole,
//! and a target that dies mid-transfer leaves the process running where it was.

use std::time::{Duration, Instant};

use mos_integration::*;

/// A cluster of `nodes` that never balances by itself, capped at `cpu` CPUs per node
/// when given (a slow test bed gives a transfer time to be interrupted).
fn cluster(nodes: u32, cpu: Option<&str>) -> Cluster {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    let n = nodes.to_string();
    let mut args = vec!["cluster", "up", "--nodes", &n, "--no-balance"];
    if let Some(cpu) = cpu {
        args.extend(["--cpu-limit", cpu]);
    }
    c.mos(&args).assert_code(0, "mos cluster up");
    c
}

/// `mos run -- bigheap MIB` at node1, once it has filled its heap.
fn bigheap(c: &Cluster, mib: u32) -> Proc {
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("bigheap")).arg(mib.to_string()).env("MOS_HOME_NODE", "node1");
    let mut p = Proc::spawn("bigheap", cmd);
    p.wait_stdout("ready");
    p
}

/// What bigheap MIB prints when it never moved.
fn unmoved(mib: u32) -> Vec<u8> {
    let mut cmd = std::process::Command::new(compile_c("bigheap"));
    cmd.arg(mib.to_string());
    run("bigheap unmoved", cmd, b"go\n").stdout
}

fn node_log(c: &Cluster, node: &str) -> String {
    std::fs::read_to_string(c.home.path().join(format!("{node}.log"))).unwrap_or_default()
}

fn daemon_pid(c: &Cluster, node: &str) -> i32 {
    let rs = c.run_state();
    rs["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).unwrap()["pid"].as_i64().unwrap() as i32
}

/// 512 MiB moved to node2 and back: the checksum over every byte equals an unmoved run's,
/// no image file is left on either node, and the received image (in memory) is gone once
/// the body runs from it.
#[test]
fn a_big_process_arrives_whole() {
    let c = cluster(2, None);
    let mib = 512;
    let mut p = bigheap(&c, mib);
    let there = c.json(&["migrate", &p.pid().to_string(), "node2", "--json"]);
    let bytes = there["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > u64::from(mib) << 20 && bytes < (u64::from(mib) + 64) << 20, "image bytes: {there}");
    assert_eq!((there["node"].as_str(), there["rounds"].as_u64()), (Some("node2"), Some(0)), "{there}");
    assert!(there["frozen_ms"].as_u64().unwrap_or(0) > 0 && there["total_ms"].as_u64() >= there["frozen_ms"].as_u64(), "{there}");
    // back compressed on the wire (lz4: off by default on one machine)
    let out = c.mos(&["migrate", &p.pid().to_string(), "node1", "--stats", "--compress", "on"]);
    out.assert_code(0, "mos migrate back to node1");
    assert!(out.stdout_str().contains("copy rounds (stop-and-copy; memory ready at the target in "), "{}", out.describe());
    p.write_stdin(b"go\n");
    let out = p.wait();
    out.assert_code(0, "bigheap after two migrations");
    assert_same_bytes("bigheap's checksum after two migrations", &out.stdout, &unmoved(mib));
    let log = node_log(&c, "node1") + &node_log(&c, "node2");
    assert!(log.contains("migration image of "), "{log}");
    // there over two connections at once (lanes), back in one lz4 stream
    assert_eq!(log.matches("received in ").count(), 2, "{log}");
    assert_eq!(log.matches(" over 2 lanes").count(), 1, "{log}");
    assert_eq!(log.matches("lz4 on the wire").count(), 1, "{log}");
    for node in ["node1", "node2"] {
        let shm = std::path::PathBuf::from(format!("/dev/shm/mos-{node}-{}", daemon_pid(&c, node)));
        let left: Vec<_> = std::fs::read_dir(&shm).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "images left in {}: {left:?}", shm.display());
        let ckpt = c.home.path().join("nodes").join(node).join("ckpt");
        let files: Vec<_> = std::fs::read_dir(&ckpt).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(files.is_empty(), "image files on the source {node}: {files:?}");
    }
}

/// With `MOS_MIGRATION_FROM_PARENT=0` the image writer child sends the pages itself (as
/// it does when the frozen process cannot be handed them: dump/xfer.rs); that path too
/// brings a big process whole.
#[test]
fn the_writer_child_still_sends_an_image_when_told_to() {
    let c = cluster(2, None);
    let mib = 128;
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("bigheap")).arg(mib.to_string()).env("MOS_HOME_NODE", "node1").env("MOS_MIGRATION_FROM_PARENT", "0");
    let mut p = Proc::spawn("bigheap", cmd);
    p.wait_stdout("ready");
    let there = c.json(&["migrate", &p.pid().to_string(), "node2", "--json"]);
    assert_eq!(there["node"].as_str(), Some("node2"), "{there}");
    p.write_stdin(b"go\n");
    let out = p.wait();
    out.assert_code(0, "bigheap after the migration");
    assert_same_bytes("bigheap's checksum after the migration", &out.stdout, &unmoved(mib));
    assert_eq!(node_log(&c, "node2").matches(" over 2 lanes").count(), 1, "{}", node_log(&c, "node2"));
}

/// A body that already moved (restarted lazily, its memory mapped from the image file)
/// moves live again: its copy rounds carry its memory while it runs (they used to skip
/// it, leaving everything to the freeze), and it arrives whole.
#[test]
fn a_moved_body_moves_live_again_with_its_memory_in_the_rounds() {
    let c = cluster(2, None);
    let mib = 256;
    let mut p = bigheap(&c, mib);
    let pid = p.pid().to_string();
    c.json(&["migrate", &pid, "node2", "--json"]);
    let again = c.json(&["migrate", &pid, "node1", "--live", "--json"]);
    let first = again["round_bytes"][0].as_u64().unwrap_or(0);
    assert!(first >= u64::from(mib - 16) << 20, "round 0 carried {first} bytes of a {mib} MiB heap: {again}");
    p.write_stdin(b"go\n");
    let out = p.wait();
    out.assert_code(0, "bigheap after a stop-and-copy and a live move");
    assert_same_bytes("bigheap's checksum after the two moves", &out.stdout, &unmoved(mib));
}

/// The target's shadowd is killed while the image streams to it (a test bed capped at 5 %
/// CPU per node makes the transfer take seconds): `mos migrate` fails saying the process
/// keeps running, and it does, at home, with all its memory: its checksum equals an
/// unmoved run's.
#[test]
fn a_target_dying_mid_transfer_leaves_the_process_running() {
    target_dies_mid_transfer(false);
}

/// The same during a live migration's copy rounds: the process, which ran all along,
/// runs on at home with all its memory, no longer tracked.
#[test]
fn a_target_dying_mid_live_transfer_leaves_the_process_running() {
    target_dies_mid_transfer(true);
}

fn target_dies_mid_transfer(live: bool) {
    if !is_root() {
        eprintln!("skipped: the capped test bed needs root (cgroups)");
        return;
    }
    let c = cluster(2, Some("0.05"));
    let mib = 256;
    let mut p = bigheap(&c, mib);
    let target = daemon_pid(&c, "node2");
    let mut cmd = c.cmd("mos");
    cmd.args(["migrate", &p.pid().to_string(), "node2"]);
    if live {
        cmd.arg("--live");
    }
    let mut mig = Proc::spawn("mos migrate", cmd);
    let line = format!("pid {}: streaming its image to ", p.pid());
    poll_until(|| node_log(&c, "node1").contains(&line) || !mig.is_running(), || format!("the stream to start\n{}", node_log(&c, "node1")));
    assert!(mig.is_running(), "the migration ended before the target could be killed: {}", mig.describe());
    let begun = Instant::now();
    // SAFETY: killing a daemon this test started.
    unsafe { libc::kill(target, libc::SIGKILL) };
    let out = mig.wait_timeout(Duration::from_secs(90));
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(out.stderr_str().contains("keeps running"), "{}", out.describe());
    eprintln!("migration failed {:?} after the kill: {}", begun.elapsed(), out.stderr_str().trim());
    assert!(!node_log(&c, "node1").contains(&format!("pid {}: migrated to", p.pid())), "{}", node_log(&c, "node1"));
    p.write_stdin(b"go\n");
    let done = p.wait();
    done.assert_code(0, "bigheap after the failed migration");
    assert_same_bytes("bigheap's checksum after the failed migration", &done.stdout, &unmoved(mib));
}

/// `mos run -- dirtier MIB PER` at node1 (it writes PER pages a millisecond), once ready.
fn dirtier(c: &Cluster, mib: u32, per: u32) -> Proc {
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("dirtier")).args([mib.to_string(), per.to_string()]).env("MOS_HOME_NODE", "node1");
    let mut p = Proc::spawn("dirtier", cmd);
    p.wait_stdout("ready");
    p
}

/// Stop a dirtier and check its last line against a run that never moved and did the
/// same number of steps.
fn dirtier_matches_unmoved(mut p: Proc, mib: u32, per: u32, what: &str) {
    std::thread::sleep(Duration::from_millis(200));
    p.write_stdin(b"go\n");
    let out = p.wait();
    out.assert_code(0, what);
    let line = out.stdout_str().lines().last().unwrap_or_default().to_string();
    let steps = line.split_whitespace().nth(1).unwrap_or("0").to_string();
    assert!(line.starts_with("steps ") && steps != "0", "{what}: {}", out.describe());
    let mut cmd = std::process::Command::new(compile_c("dirtier"));
    cmd.args([mib.to_string(), per.to_string(), "--replay".into(), steps]);
    let want = run("dirtier replayed", cmd, b"").stdout;
    assert_same_bytes(what, format!("{line}\n").as_bytes(), &want);
}

/// Live migration: a process that keeps writing its memory is copied in rounds while it
/// runs, then frozen for the rest; it goes there and back, its memory equals a run that
/// never moved (the same steps replayed), and --json reports the rounds.
#[test]
fn a_live_migrated_process_equals_an_unmoved_run() {
    let c = cluster(2, None);
    let (mib, per) = (256, 64);
    let p = dirtier(&c, mib, per);
    let pid = p.pid().to_string();
    let there = c.json(&["migrate", &pid, "node2", "--live", "--json"]);
    assert_eq!(there["node"].as_str(), Some("node2"), "{there}");
    let rounds = there["rounds"].as_u64().unwrap_or(0);
    let per_round = there["round_bytes"].as_array().map(|a| a.len() as u64);
    assert!(rounds >= 1 && per_round == Some(rounds), "{there}");
    // round 0 carried the heap, while the process ran
    assert!(there["round_bytes"][0].as_u64().unwrap_or(0) >= u64::from(mib) << 20, "{there}");
    assert!(there["frozen_ms"].as_u64() < there["total_ms"].as_u64(), "{there}");
    // back with its rounds compressed on the wire (lz4, as between hosts)
    let out = c.mos(&["migrate", &pid, "node1", "--live", "--stats", "--compress", "on"]);
    out.assert_code(0, "mos migrate --live --compress on back to node1");
    assert!(out.stdout_str().contains("copy rounds while it ran (MiB per round: "), "{}", out.describe());
    let log = node_log(&c, "node1") + &node_log(&c, "node2");
    assert!(log.contains("live migration stream of "), "{log}");
    assert_eq!(log.matches("(live: copy rounds while it runs); lz4 on the wire").count(), 1, "{log}");
    dirtier_matches_unmoved(p, mib, per, "dirtier after two live migrations");
    for node in ["node1", "node2"] {
        let shm = std::path::PathBuf::from(format!("/dev/shm/mos-{node}-{}", daemon_pid(&c, node)));
        let left: Vec<_> = std::fs::read_dir(&shm).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "images left in {}: {left:?}", shm.display());
    }
}

/// A process that writes faster than the rounds can carry: the rounds stop (bounded, the
/// rest goes frozen) and the process still arrives whole.
#[test]
fn live_migration_of_a_fast_writer_stops_its_rounds_and_arrives_whole() {
    let c = cluster(2, None);
    let (mib, per) = (128, 8192);
    let p = dirtier(&c, mib, per);
    let there = c.json(&["migrate", &p.pid().to_string(), "node2", "--live", "--json"]);
    let rounds = there["rounds"].as_u64().unwrap_or(0);
    assert!((1..=9).contains(&rounds), "{there}");
    dirtier_matches_unmoved(p, mib, per, "fast dirtier after a live migration");
}

/// Post-copy: the body runs on the target as soon as the image without its memory is
/// there, and faults its pages from the source while the rest streams; a process writing
/// its memory all along goes there and back that way and equals a run that never moved.
#[test]
fn a_post_copied_process_equals_an_unmoved_run() {
    let c = cluster(2, None);
    let (mib, per) = (256, 64);
    let p = dirtier(&c, mib, per);
    let pid = p.pid().to_string();
    let there = c.json(&["migrate", &pid, "node2", "--lazy", "--json"]);
    assert_eq!(there["node"].as_str(), Some("node2"), "{there}");
    let resumed = there["resumed_ms"].as_u64().unwrap_or(0);
    // it runs there before every page has arrived
    assert!(resumed > 0 && resumed <= there["source_ms"].as_u64().unwrap_or(0), "{there}");
    assert!(there["bytes"].as_u64().unwrap_or(0) > u64::from(mib) << 20, "{there}");
    let out = c.mos(&["migrate", &pid, "node1", "--lazy", "--stats"]);
    out.assert_code(0, "mos migrate --lazy back to node1");
    assert!(out.stdout_str().contains("(post-copy: image there at "), "{}", out.describe());
    let log = node_log(&c, "node1") + &node_log(&c, "node2");
    assert!(log.contains("post-copy stream of ") && log.contains("--lazy-pages"), "{log}");
    dirtier_matches_unmoved(p, mib, per, "dirtier after two post-copy migrations");
    for node in ["node1", "node2"] {
        let shm = std::path::PathBuf::from(format!("/dev/shm/mos-{node}-{}", daemon_pid(&c, node)));
        let left: Vec<_> = std::fs::read_dir(&shm).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "files left in {}: {left:?}", shm.display());
    }
}

/// A real threaded program (python3, four threads each writing and hashing its own
/// buffers) moved live to one node and by post-copy to another, and the other way round:
/// its output equals a run that never moved.
#[test]
fn threaded_python_moves_live_and_post_copy() {
    const PROG: &str = r#"
import threading, time, hashlib
data = [bytearray(b'x' * (1 << 20)) for _ in range(64)]
res = {}
def work(k):
    h = hashlib.sha256()
    for i in range(300):
        data[k * 16 + (i * 7) % 16][i % 4096] = (k + i) % 256
        h.update(bytes(data[k * 16 + i % 16][:4096]))
        time.sleep(0.005)
    res[k] = h.hexdigest()
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
print("ready", flush=True)
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(res.items()), flush=True)
"#;
    let mut plain = std::process::Command::new("python3");
    plain.args(["-c", PROG]);
    let want = run("python3 unmoved", plain, b"").stdout;
    for (first, second) in [("--live", "--lazy"), ("--lazy", "--live")] {
        let c = cluster(3, None);
        let mut cmd = c.cmd("mos");
        cmd.args(["run", "--", "python3", "-c", PROG]).env("MOS_HOME_NODE", "node1");
        let mut p = Proc::spawn("python3 threads", cmd);
        p.wait_stdout("ready");
        let pid = p.pid().to_string();
        c.mos(&["migrate", &pid, "node2", first]).assert_code(0, &format!("mos migrate {first}"));
        c.mos(&["migrate", &pid, "node3", second]).assert_code(0, &format!("mos migrate {second}"));
        let out = p.wait();
        out.assert_code(0, "python3 after two moves");
        assert_same_bytes(&format!("python3 threads moved {first} then {second}"), &out.stdout, &want);
    }
}

/// A move that takes more than a second shows its progress on a terminal (bytes, rate),
/// and nothing of it when not on one.
#[test]
fn progress_shows_on_a_terminal_only() {
    if !is_root() {
        eprintln!("skipped: the capped test bed needs root (cgroups)");
        return;
    }
    let c = cluster(3, Some("0.1"));
    let mut p = bigheap(&c, 256);
    let pid = p.pid().to_string();
    // a terminal: script(1) gives mos one. A live move shows its copy round too (first,
    // while the rounds have the whole heap to carry and take more than a second)
    let mos = release_dir().join("mos");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} migrate {pid} node2 --live", mos.display()), "/dev/null"]).env("MOS_HOME", c.home.path()).env("MOS_HOME_NODE", "node1");
    let out = run("mos migrate --live on a terminal", cmd, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.code() == Some(0) && text.contains("migrating: ") && text.contains(", copy round "), "{text}");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} migrate {pid} node1", mos.display()), "/dev/null"]).env("MOS_HOME", c.home.path()).env("MOS_HOME_NODE", "node1");
    let out = run("mos migrate on a terminal", cmd, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.code() == Some(0) && text.contains("migrating: ") && text.contains(" sent, "), "{text}");
    assert!(!text.contains("copy round"), "stop-and-copy has no rounds: {text}");
    let plain = c.mos(&["migrate", &pid, "node3"]);
    plain.assert_code(0, "mos migrate not on a terminal");
    assert!(!plain.stdout_str().contains("migrating") && !plain.stderr_str().contains("migrating"), "{}", plain.describe());
    p.write_stdin(b"go\n");
    let done = p.wait();
    done.assert_code(0, "bigheap after three moves");
    assert_same_bytes("bigheap after three moves", &done.stdout, &unmoved(256));
}
