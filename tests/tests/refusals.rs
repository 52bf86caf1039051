//! What cannot be restored yet is refused by `mos ckpt` with the reason, and the
//! application keeps running unharmed.

use mos_integration::*;

fn refused(kind: &str, keyword: &str, after: &str) {
    let prog = compile_c("refuse");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &[kind], &[]);
    env.wait_ready(&mut app, 1);
    let out = env.mos_ckpt_raw(
        app.pid(),
        &[
            "--exit",
            "-o",
            &env.ckpt_dir.join("no.img").display().to_string(),
        ],
    );
    assert_one_line_error(
        &format!("mos ckpt of a process holding a {kind}"),
        &out,
        2,
        Some(keyword),
    );
    assert!(
        !env.ckpt_dir.join("no.img").exists(),
        "no image may be written"
    );
    assert!(
        app.is_running(),
        "the app must keep running after a refused checkpoint"
    );
    env.go(1);
    let res = app.wait();
    res.assert_code(0, "app after a refused checkpoint");
    assert!(
        contains(&res.stdout, after.as_bytes()),
        "{}",
        res.describe()
    );
}

#[test]
fn child_processes_are_refused() {
    refused("child", "child", "child reaped 1\n");
}

#[test]
fn sockets_are_refused() {
    refused("socket", "socket", "socket works 1\n");
}

#[test]
fn io_uring_is_refused() {
    refused("io_uring", "io_uring", "still here\n");
}

#[test]
fn sysv_shared_memory_is_refused() {
    refused("sysv", "SysV", "sysv shm intact 1\n");
}

/// An application that closes every descriptor above 2 keeps running normally and stays
/// checkpointable: the manager thread keeps its own fd table (its control socket is not
/// the application's to close) and does not spin.
#[test]
fn closing_the_shims_fds_is_harmless() {
    let prog = compile_c("closefds");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &[]);
    env.wait_ready(&mut app, 1);
    let out = env.mos_ckpt_raw(app.pid(), &[]);
    out.assert_code(0, "mos ckpt after the app closed every fd above 2");
    env.go(1);
    let res = app.wait();
    res.assert_code(0, "app that closed its fds");
    let ms: u64 = String::from_utf8_lossy(&res.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        ms < 200,
        "the process burnt {ms} ms of CPU while napping 300 ms (a spinning manager?)\n{}",
        res.describe()
    );
}
