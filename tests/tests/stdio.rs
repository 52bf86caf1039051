//! Buffered stdio across a checkpoint: unflushed stdout/stderr buffers live in
//! the image and are flushed by the restarted process, so original + restarted
//! output equals an uninterrupted run byte for byte.

use mos_integration::*;

const INPUT: &[u8] = b"hello from the restarting shell\n";

#[test]
fn buffered_stdout_and_stderr_continue_seamlessly() {
    let prog = compile_c("stdio");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], INPUT);
    reference.assert_code(0, "reference run");

    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &[]);
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "stdio.img");

    // What the program had printf'ed before the sync point; a part of it must
    // still have been in the stdio buffers (not flushed by the checkpoint).
    let pre_out = &reference.stdout
        [..reference.stdout.len() - after_marker(&reference.stdout, "partial stdout line, ").len()];
    let pre_err = &reference.stderr
        [..reference.stderr.len() - after_marker(&reference.stderr, "partial stderr line, ").len()];
    assert!(
        reference.stdout.starts_with(&orig.stdout) && orig.stdout.len() < pre_out.len(),
        "original stdout must be a strict prefix of what was printed before the checkpoint \
         (the rest is in the stdio buffer inside the image): got {} bytes, printed {}\n{}",
        orig.stdout.len(),
        pre_out.len(),
        orig.describe()
    );
    assert!(
        reference.stderr.starts_with(&orig.stderr) && orig.stderr.len() < pre_err.len(),
        "original stderr must be a strict prefix of what was printed before the checkpoint: got {} bytes, printed {}\n{}",
        orig.stderr.len(),
        pre_err.len(),
        orig.describe()
    );

    env.go(1);
    let rest = env.restart(&img, &[], INPUT);
    rest.assert_code(0, "mos restart");
    assert_same_bytes(
        "stdout (original + restarted vs uninterrupted)",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
    assert_same_bytes(
        "stderr (original + restarted vs uninterrupted)",
        &cat(&orig.stderr, &rest.stderr),
        &reference.stderr,
    );
    // stdin was rebound to the restarting command's stdin, fds 0-2 are its pipes
    assert!(
        contains(&rest.stdout, INPUT),
        "restarted app did not read the new stdin\n{}",
        rest.describe()
    );
    assert!(
        contains(&rest.stdout, b"fds: fifo fifo fifo\n"),
        "{}",
        rest.describe()
    );
}

#[test]
fn shim_alone_changes_nothing() {
    let prog = compile_c("stdio");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], INPUT);
    reference.assert_code(0, "reference run");

    let env = Env::new();
    env.go_all();
    let out = run(
        "app under shim, no checkpoint",
        env.app_cmd(&prog, NOARGS, &[]),
        INPUT,
    );
    out.assert_code(0, "app under shim");
    assert_same_bytes(
        "stdout with shim vs without",
        &out.stdout,
        &reference.stdout,
    );
    assert_same_bytes(
        "stderr with shim vs without",
        &out.stderr,
        &reference.stderr,
    );
    let leftovers: Vec<_> = std::fs::read_dir(&env.ckpt_dir).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no image may be written without a trigger: {leftovers:?}"
    );
}

/// stdout redirected to a regular file at checkpoint time is reopened by path
/// (same fd, flags, offset) instead of being rebound to the restarting
/// command's stdout; the file ends up equal to an uninterrupted run's.
#[test]
fn stdout_redirected_to_a_file_is_reopened() {
    let prog = compile_c("counter");
    let args = ["2", "300", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    reference.assert_code(0, "reference run");

    let env = Env::new();
    let path = env.work.join("stdout.txt");
    let file = std::fs::File::create(&path).unwrap();
    let mut app = Proc::spawn_stdout(
        "app > stdout.txt",
        env.app_cmd(&prog, &args, &[]),
        file.into(),
    );
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "counter.img");
    assert!(orig.stderr.is_empty(), "{}", orig.describe());
    let part1 = file_bytes(&path);
    assert!(
        reference.stdout.starts_with(&part1) && part1.len() < reference.stdout.len(),
        "file after checkpoint must hold a prefix of the output ({} bytes)",
        part1.len()
    );
    env.go(1);
    env.go(2);
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart");
    assert!(
        rest.stdout.is_empty(),
        "the restarted app must keep writing to stdout.txt, not to the restarting command's stdout\n{}",
        rest.describe()
    );
    assert_same_bytes("stdout.txt", &file_bytes(&path), &reference.stdout);
}

/// A terminal fd beyond the std streams (/dev/tty opened high) is rebound at restart to
/// the restarting command's terminal: the restart runs under another pty (script(1)),
/// and what the program writes there after the restart shows on that one.
#[test]
fn a_terminal_fd_follows_the_restarting_terminal() {
    let prog = compile_c("ttyfd");
    let env = Env::new();
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &prog.display().to_string(), "/dev/null"]).env("LD_PRELOAD", shim()).env("MOS_SYNC", &env.sync);
    let mut first = Proc::spawn("ttyfd under script", cmd);
    env.wait_ready(&mut first, 1);
    let pid: i32 = std::fs::read_to_string(env.sync.join("pid")).unwrap().trim().parse().unwrap();
    let img = env.ckpt_dir.join("ttyfd.img");
    let ck = run("mos ckpt", env.mos_cmd(&["ckpt", &pid.to_string(), "--exit", "-o", &img.display().to_string()]), b"");
    ck.assert_code(0, "mos ckpt of ttyfd");
    let before = first.wait();
    assert!(contains(&before.stdout, b"tty before"), "{}", before.describe());
    env.go(1);
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} restart {}", mos_bin().display(), img.display()), "/dev/null"]);
    let rest = run("mos restart under another terminal", cmd, b"");
    let text = String::from_utf8_lossy(&rest.stdout).into_owned();
    assert!(text.contains("tty after") && text.contains("after: write to the terminal ok, isatty yes"), "{}", rest.describe());
}
