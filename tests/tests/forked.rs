//! A forked process on its own (issue 21, item 0): a program that daemonizes (fork, the
//! parent exits, the child calls setsid) leaves a child with no children of its own,
//! which checkpoints and restarts like any single process.

use mos_integration::*;
use std::time::{Duration, Instant};

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_daemonized_child_checkpoints_and_restarts() {
    let prog = compile_c("daemon");
    // the uninterrupted run
    let (_r, renv) = Env::reference(&prog, &["/dev/null"], &[], b"");
    let rout = renv.subdir("out").join("log");
    let mut c = renv.plain_cmd(&prog, &[rout.display().to_string()], &[]);
    c.status().expect("reference run");
    wait_for("the reference daemon's last line", || std::fs::read_to_string(&rout).is_ok_and(|t| t.contains("done")));
    let reference = std::fs::read(&rout).unwrap();
    // under the shim: checkpoint the child at sync point 1, restart it
    let env = Env::new();
    let out = env.subdir("out").join("log");
    let mut launcher = env.spawn_app(&prog, &[out.display().to_string()], &[]);
    launcher.wait().assert_code(0, "the launcher");
    wait_for("the daemon at sync point 1", || env.ready_path(1).exists());
    let pid: i32 = std::fs::read_to_string(env.sync.join("pid")).unwrap().trim().parse().unwrap();
    let img = env.ckpt_dir.join("daemon.img");
    let ck = run("mos ckpt of the daemon", env.mos_cmd(&["ckpt", &pid.to_string(), "--exit", "-o", &img.display().to_string()]), b"");
    ck.assert_code(0, "mos ckpt of a forked child");
    wait_for("the daemon to be gone", || !std::path::Path::new(&format!("/proc/{pid}")).exists());
    env.go(1);
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart of the daemon");
    wait_for("the restarted daemon's last line", || std::fs::read_to_string(&out).is_ok_and(|t| t.contains("done")));
    assert_same_bytes("the daemon's log (checkpointed and restarted vs uninterrupted)", &std::fs::read(&out).unwrap(), &reference);
}
