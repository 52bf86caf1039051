//! Signals: the app's own SIGUSR2 handler coexists with the checkpoint
//! trigger; MOS_CKPT_SIGNAL moves the trigger.

use mos_integration::*;

/// External kill -USR2 checkpoints (the app's handler does not see it);
/// SIGUSR2 the app sends itself (raise, kill(getpid())) reaches its handler,
/// before and after the restart.
#[test]
fn app_own_sigusr2_handler() {
    let prog = compile_c("ownusr2");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    assert_eq!(
        reference.stdout_str(),
        "handler visible 1\nhits after self-signals 2\nsync 1\nhits after sync 2\nhits at end 4\n"
    );

    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &[]);
    env.wait_ready(&mut app, 1);
    app.signal(libc::SIGUSR2);
    let img = default_image_path(&env.ckpt_dir, "ownusr2", app.pid());
    wait_image(
        &mut app,
        &img,
        "external kill -USR2 to an app with its own SIGUSR2 handler",
    );
    assert!(
        app.is_running(),
        "app must keep running\n{}",
        app.describe()
    );
    env.go(1);
    let out = app.wait();
    out.assert_code(0, "original app");
    assert_same_bytes(
        "original app (its handler must not count the external SIGUSR2)",
        &out.stdout,
        &reference.stdout,
    );

    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "restarted app",
        &rest.stdout,
        after_marker(&reference.stdout, "sync 1\n"),
    );
}

fn moved_trigger(spec: &str, signo: i32) {
    let prog = compile_c("counter");
    let args = ["2", "200", "0"];
    let envs = [("COUNTER_FLUSH", "1"), ("MOS_CKPT_SIGNAL", spec)];
    let (reference, _r) = Env::reference(&prog, &args, &[("COUNTER_FLUSH", "1")], b"");

    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &envs);
    env.wait_ready(&mut app, 1);
    app.signal(signo);
    let img = default_image_path(&env.ckpt_dir, "counter", app.pid());
    wait_image(
        &mut app,
        &img,
        &format!("checkpoint via MOS_CKPT_SIGNAL={spec}"),
    );
    assert!(
        app.is_running(),
        "app must keep running\n{}",
        app.describe()
    );
    env.go(1);
    env.go(2);
    let out = app.wait();
    out.assert_code(0, "original app");
    assert_same_bytes("original app", &out.stdout, &reference.stdout);

    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "restarted app",
        &rest.stdout,
        after_marker(&reference.stdout, "sync 1\n"),
    );
}

#[test]
fn ckpt_signal_env_usr1() {
    moved_trigger("USR1", libc::SIGUSR1);
}

#[test]
fn ckpt_signal_env_rtmin_plus_3() {
    moved_trigger("SIGRTMIN+3", libc::SIGRTMIN() + 3);
}

#[test]
fn ckpt_signal_env_number() {
    moved_trigger(&libc::SIGWINCH.to_string(), libc::SIGWINCH);
}

/// The application's own handler for the signal number the shim freezes threads with
/// (SIGRTMAX-2) gets every instance the application sends, before and after a restart,
/// and checkpoints still work.
#[test]
fn app_use_of_the_freeze_signal_number() {
    let prog = compile_c("ownrt");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    assert_eq!(reference.stdout_str(), "before 1\nafter 3\n");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &[]);
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "ownrt.img");
    env.go(1);
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "restarted ownrt");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
}
