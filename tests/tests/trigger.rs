//! kill -USR2 writes $MOS_CKPT_DIR/<comm>.<pid>.mosimg (else in the app's
//! start cwd) while the app keeps running; `mos ckpt` without -o uses the
//! same default path.

use mos_integration::*;
use std::fs;

const ARGS: [&str; 3] = ["2", "200", "0"];
const ENVS: [(&str, &str); 1] = [("COUNTER_FLUSH", "1")];

fn finish_and_restart(env: &Env, mut app: Proc, img: &std::path::Path) {
    assert!(
        app.is_running(),
        "app must keep running after the checkpoint\n{}",
        app.describe()
    );
    let prog = compile_c("counter");
    let (reference, _r) = Env::reference(&prog, &ARGS, &ENVS, b"");
    env.go(1);
    env.go(2);
    let out = app.wait();
    out.assert_code(0, "original app");
    assert_same_bytes("original app output", &out.stdout, &reference.stdout);
    let rest = env.restart(img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "restarted output",
        &rest.stdout,
        after_marker(&reference.stdout, "sync 1\n"),
    );
}

#[test]
fn kill_usr2_writes_default_image_and_app_keeps_running() {
    let prog = compile_c("counter");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &ARGS, &ENVS);
    env.wait_ready(&mut app, 1);
    assert_eq!(proc_comm(app.pid()).as_deref(), Some("counter"));
    app.signal(libc::SIGUSR2);
    let img = default_image_path(&env.ckpt_dir, "counter", app.pid());
    wait_image(&mut app, &img, "kill -USR2");
    let names: Vec<_> = fs::read_dir(&env.ckpt_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "exactly the image (no temp files left) in MOS_CKPT_DIR: {names:?}"
    );
    finish_and_restart(&env, app, &img);
}

#[test]
fn kill_usr2_without_ckpt_dir_writes_into_start_cwd() {
    let prog = compile_c("counter");
    let env = Env::new();
    let mut cmd = env.app_cmd(&prog, &ARGS, &ENVS);
    cmd.env_remove("MOS_CKPT_DIR");
    let mut app = Proc::spawn("app without MOS_CKPT_DIR", cmd);
    env.wait_ready(&mut app, 1);
    app.signal(libc::SIGUSR2);
    let img = default_image_path(&env.work, "counter", app.pid());
    wait_image(&mut app, &img, "kill -USR2 without MOS_CKPT_DIR");
    finish_and_restart(&env, app, &img);
}

#[test]
fn mos_ckpt_without_o_prints_default_path() {
    let prog = compile_c("counter");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &ARGS, &ENVS);
    env.wait_ready(&mut app, 1);
    let out = env.mos_ckpt_raw(app.pid(), &[]);
    out.assert_code(0, "mos ckpt <pid>");
    let img = default_image_path(&env.ckpt_dir, "counter", app.pid());
    assert_eq!(
        out.stdout_str(),
        format!("{}\n", img.display()),
        "mos ckpt stdout\n{}",
        out.describe()
    );
    assert!(img.is_file(), "image missing when mos ckpt returned");
    finish_and_restart(&env, app, &img);
}
