//! The whole cycle (run under the shim, mos ckpt, mos restart) without
//! privileges: as uid/gid 65534 via setpriv when the tests run as root,
//! otherwise simply as the current (unprivileged) user.

use mos_integration::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

fn uid_of(pid: i32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    // real, effective, saved, fs: all must be the same
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        ids.iter().all(|&i| i == ids[0]),
        "mixed uids for {pid}: {line}"
    );
    ids[0]
}

#[test]
fn full_cycle_as_unprivileged_user() {
    let prog = compile_c("counter");
    let args = ["2", "300", "0", "counter.log"];
    let (reference, r) = Env::reference(&prog, &args, &[], b"");
    reference.assert_code(0, "reference run");

    let env = Env::new_unprivileged();
    let want_uid = if env.unprivileged {
        65534
    } else {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    };

    let mut app = env.spawn_app(&prog, &args, &[]);
    env.wait_ready(&mut app, 1);
    assert_eq!(
        uid_of(app.pid()),
        want_uid,
        "app must run as uid {want_uid}"
    );
    let (img, orig) = env.ckpt_exit(&mut app, "counter.img");
    assert_eq!(fs::metadata(&img).unwrap().uid(), want_uid, "image owner");

    env.go(1);
    let mut rp = env.spawn_restart(&img, &[]);
    env.wait_ready(&mut rp, 2);
    assert_eq!(
        uid_of(rp.pid()),
        want_uid,
        "restarted app must run as uid {want_uid}"
    );
    env.go(2);
    let rest = rp.wait();
    rest.assert_code(0, "mos restart (unprivileged)");
    assert_same_bytes(
        "stdout (original + restarted vs uninterrupted)",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
    assert_same_bytes(
        "counter.log",
        &file_bytes(&env.work.join("counter.log")),
        &file_bytes(&r.work.join("counter.log")),
    );
}

/// Thread cancellation across a restart without the privilege to choose tids (threads
/// come back with new tids): a thread running at the checkpoint is cancelled after it
/// (the shim's pthread_cancel hands glibc the thread's new tid for the call).
#[test]
fn threads_are_cancelled_after_an_unprivileged_restart() {
    let prog = compile_c("cancel");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new_unprivileged();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of cancel (unprivileged)");
    assert_restart_output(&orig, &rest, &reference, &["threads of the checkpoint: cancelled, cancelled\n", "after: 20 of 20 cancelled\n"]);
}
