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
    let out = c.mos(&["migrate", &p.pid().to_string(), "node1", "--stats"]);
    out.assert_code(0, "mos migrate back to node1");
    assert!(out.stdout_str().contains("copy rounds (stop-and-copy), frozen "), "{}", out.describe());
    p.write_stdin(b"go\n");
    let out = p.wait();
    out.assert_code(0, "bigheap after two migrations");
    assert_same_bytes("bigheap's checksum after two migrations", &out.stdout, &unmoved(mib));
    let log = node_log(&c, "node1") + &node_log(&c, "node2");
    assert!(log.contains("migration image of "), "{log}");
    for node in ["node1", "node2"] {
        let shm = std::path::PathBuf::from(format!("/dev/shm/mos-{node}-{}", daemon_pid(&c, node)));
        let left: Vec<_> = std::fs::read_dir(&shm).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "images left in {}: {left:?}", shm.display());
        let ckpt = c.home.path().join("nodes").join(node).join("ckpt");
        let files: Vec<_> = std::fs::read_dir(&ckpt).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(files.is_empty(), "image files on the source {node}: {files:?}");
    }
}

/// The target's shadowd is killed while the image streams to it (a test bed capped at 5 %
/// CPU per node makes the transfer take seconds): `mos migrate` fails saying the process
/// keeps running, and it does, at home, with all its memory: its checksum equals an
/// unmoved run's.
#[test]
fn a_target_dying_mid_transfer_leaves_the_process_running() {
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
