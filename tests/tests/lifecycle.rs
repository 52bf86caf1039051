//! Lifecycle: exit status, restart after the original exited, from another
//! cwd, twice from one image, chains of checkpoints, ckpt without --exit,
//! --no-verify.

use mos_integration::*;
use std::fs;
use std::path::Path;

#[test]
fn exit_status_propagates_through_restart() {
    let prog = compile_c("counter");
    let args = ["1", "50", "7"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    reference.assert_code(7, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &args, &[], &[], b"");
    rest.assert_code(7, "mos restart must exit with the app's status");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
}

#[test]
fn restart_after_original_exited() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &[]);
    let pid = app.pid();
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "c.img"); // asserts exit status 0
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "original process {pid} still exists"
    );
    env.go(1);
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
}

#[test]
fn restart_from_a_different_cwd() {
    let prog = compile_c("counter");
    let args = ["2", "200", "0", "counter.log"];
    let (reference, r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &[]);
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "c.img");
    env.go(1);
    env.go(2);
    let elsewhere = env.subdir("elsewhere");
    let mut cmd = env.restart_cmd(&img, &[]);
    cmd.current_dir(&elsewhere);
    let rest = run("mos restart from elsewhere", cmd, b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
    assert_same_bytes(
        "counter.log (reopened by its saved path, not relative to the restart cwd)",
        &file_bytes(&env.work.join("counter.log")),
        &file_bytes(&r.work.join("counter.log")),
    );
    assert!(
        fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing may be created in the restart cwd"
    );
}

#[test]
fn restart_twice_from_the_same_image() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let (orig, rest1, img) = ckpt_restart_cycle(&env, &prog, &args, &[], &[], b"");
    rest1.assert_code(0, "first restart");
    let bytes = file_bytes(&img);
    let rest2 = env.restart(&img, &[], b"");
    rest2.assert_code(0, "second restart");
    assert_same_bytes(
        "second restart vs first restart",
        &rest2.stdout,
        &rest1.stdout,
    );
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest1.stdout),
        &reference.stdout,
    );
    assert!(file_bytes(&img) == bytes, "restart modified the image file");
}

#[test]
fn chain_of_three_checkpoints_and_restarts() {
    let prog = compile_c("counter");
    let args = ["3", "300", "3", "counter.log"];
    let (reference, r) = Env::reference(&prog, &args, &[], b"");
    reference.assert_code(3, "reference run");

    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &[]);
    env.wait_ready(&mut app, 1);
    let (mut img, orig) = env.ckpt_exit(&mut app, "gen1.img");
    let mut stdout = orig.stdout;
    for gen in 2..=3u32 {
        env.go(gen - 1);
        let mut rp = env.spawn_restart(&img, &[]);
        env.wait_ready(&mut rp, gen);
        let (next, out) = env.ckpt_exit(&mut rp, &format!("gen{gen}.img"));
        stdout.extend_from_slice(&out.stdout);
        img = next;
    }
    env.go(3);
    let last = env.restart(&img, &[], b"");
    last.assert_code(3, "third restart");
    stdout.extend_from_slice(&last.stdout);
    assert_same_bytes("stdout over 3 generations", &stdout, &reference.stdout);
    assert_same_bytes(
        "counter.log over 3 generations",
        &file_bytes(&env.work.join("counter.log")),
        &file_bytes(&r.work.join("counter.log")),
    );
}

#[test]
fn ckpt_without_exit_leaves_app_running() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let envs = [("COUNTER_FLUSH", "1")];
    let (reference, _r) = Env::reference(&prog, &args, &envs, b"");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &envs);
    env.wait_ready(&mut app, 1);
    let img = env.ckpt_to(app.pid(), "c.img", &[]);
    assert!(
        app.is_running(),
        "app must keep running after mos ckpt without --exit\n{}",
        app.describe()
    );
    env.go(1);
    let out = app.wait();
    out.assert_code(0, "original app");
    assert_same_bytes("original app output", &out.stdout, &reference.stdout);
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "restarted output",
        &rest.stdout,
        after_marker(&reference.stdout, "sync 1\n"),
    );
}

#[test]
fn restart_no_verify_on_good_image() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &args, &[], &["--no-verify"], b"");
    rest.assert_code(0, "mos restart --no-verify");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
}

/// `mos ckpt --exit --exit-code 85` (HTCondor's checkpoint_exit_code): the process exits
/// with 85 once its image is safe, and restarts from it as usual.
#[test]
fn ckpt_exit_code_sets_the_status() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &[]);
    env.wait_ready(&mut app, 1);
    let img = env.ckpt_dir.join("c85.img");
    let out = env.mos_ckpt_raw(app.pid(), &["--exit", "--exit-code", "85", "-o", img.to_str().unwrap()]);
    out.assert_code(0, "mos ckpt --exit --exit-code 85");
    let orig = app.wait();
    orig.assert_code(85, "the checkpointed process's status");
    env.go(1);
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes("stdout", &cat(&orig.stdout, &rest.stdout), &reference.stdout);
    let bad = env.mos_ckpt_raw(1, &["--exit-code", "85"]);
    assert_eq!(bad.code(), Some(2), "--exit-code needs --exit: {}", bad.describe());
}

/// A file deleted while open is saved in the image and recreated unlinked at restart: the
/// same contents, offsets (shared by a dup), flags (O_APPEND) and "(deleted)" name; over
/// the size limit (MOS_DELETED_MAX) `mos ckpt` refuses naming the limit, and the program
/// runs on.
#[test]
fn deleted_open_files_come_back() {
    let prog = compile_c("deleted");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes("stdout", &cat(&orig.stdout, &rest.stdout), &reference.stdout);
    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &[("MOS_DELETED_MAX", "10")]);
    env.wait_ready(&mut app, 1);
    let out = env.mos_ckpt_raw(app.pid(), &[]);
    assert_one_line_error("mos ckpt of a deleted file over the limit", &out, 2, Some("MOS_DELETED_MAX"));
    env.go(1);
    app.wait().assert_code(0, "the program after the refusal");
}

/// prctl attributes (child subreaper, THP disable, no_new_privs, dumpable),
/// oom_score_adj and /proc/self/exe are the program's after a restart, not the
/// restorer's.
#[test]
fn process_attributes_and_exe_survive_a_restart() {
    let prog = compile_c("procattrs");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of procattrs");
    let before = orig.stdout_str();
    let before = before.lines().find(|l| l.starts_with("before: ")).unwrap_or_default().trim_start_matches("before: ").to_string();
    assert!(before.contains("subreaper 1 thp_disable 1 no_new_privs 1") && before.ends_with("exe procattrs"), "{}", orig.describe());
    let after = rest.stdout_str();
    let after = after.lines().find(|l| l.starts_with("after: ")).unwrap_or_default().trim_start_matches("after: ").to_string();
    // /proc/self/exe is set back with PR_SET_MM_EXE_FILE where CAP_SYS_RESOURCE allows
    // (some sandboxes withhold it even from root); else the shim answers for the link
    // (readlink, stat, open): the same either way
    assert!(before.contains(" elf 1 "), "{}", orig.describe());
    assert_eq!(after, before, "{}", rest.describe());
}

/// A memfd comes back as a memfd with its name, contents and offset, and a dup of it
/// still shares that offset.
#[test]
fn memfds_come_back() {
    let prog = compile_c("memfd");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of memfd");
    assert_restart_output(&orig, &rest, &reference, &["memfd /memfd:mos-test-memfd (deleted) size 8192 read 'wxyzabcde' shared offset 109\n"]);
}

/// An inotify instance comes back with its watches on the same paths and the same watch
/// descriptors (one removed before the checkpoint leaves a gap), and reports new events.
#[test]
fn inotify_watches_come_back() {
    let prog = compile_c("inotify");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of inotify");
    assert_restart_output(&orig, &rest, &reference, &["event wd 3 mask 0x2 name ''\n", "event wd 1 mask 0x100 name 'new'\n", "event wd 1 mask 0x200 name 'new'\n"]);
}
