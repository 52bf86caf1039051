//! Kernel-side process state across a checkpoint: regular-file fds (numbers,
//! O_APPEND / plain flags, offsets), cwd, umask, rlimits, signal handlers and
//! SIG_IGN, blocked mask, itimers.

use mos_integration::*;
use std::fs;

const INPUT_TXT: &str = "0123456789abcdefghijklmnopqrstuvwxyz\n";
const FILES: &[&str] = &[
    "log.txt",
    "data.bin",
    "out.txt",
    "input.txt",
    "sub/created-after.txt",
];

/// At sync point 2 the test sends SIGUSR1 (handled) and SIGHUP (blocked).
fn signal_stage(env: &Env, p: &mut Proc) {
    env.wait_ready(p, 2);
    p.signal(libc::SIGUSR1);
    p.signal(libc::SIGHUP);
    env.go(2);
}

#[test]
fn files_cwd_umask_rlimits_signals_itimers_survive_restart() {
    let prog = compile_c("files");

    // uninterrupted reference, without the shim
    let r = Env::new();
    fs::write(r.work.join("input.txt"), INPUT_TXT).unwrap();
    r.go(1);
    let mut p = Proc::spawn("reference", r.plain_cmd(&prog, NOARGS, &[]));
    signal_stage(&r, &mut p);
    let reference = p.wait();
    reference.assert_code(0, "reference run");

    // checkpointed run
    let env = Env::new();
    fs::write(env.work.join("input.txt"), INPUT_TXT).unwrap();
    let mut app = env.spawn_app(&prog, NOARGS, &[]);
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "files.img");
    env.go(1);
    let mut rp = env.spawn_restart(&img, &[]);
    signal_stage(&env, &mut rp);
    let rest = rp.wait();
    rest.assert_code(0, "mos restart");

    assert_restart_output(
        &orig,
        &rest,
        &reference,
        &[
            "fd 7 flags wronly|append\n",
            "fd 42 flags rdwr\n",
            "fd 5 flags wronly\n",
            "fd 9 flags rdonly\n",
            "data offset 500\n",
            "out offset 11\n",
            "in offset 10\n",
            "data offset after write 503\n",
            "read after: abcdefghij\n",
            "lowest free fd 3\n",
            "cwd same 1 ends with /sub 1\n",
            "new file mode 640\n",
            "umask 027\n",
            "nofile soft 200 hard unchanged 1\n",
            "core soft ok 1 hard unchanged 1\n",
            "usr1 handler installed 1 restart flag 1\n",
            "sigpipe ignored 1\n",
            "sighup blocked 1 usr1 blocked 0\n",
            "itimer armed 1 interval 3600\n",
            "usr1 handler ran 1\n",
            "sighup pending 1\n",
        ],
    );

    for f in FILES {
        let want = fs::read(r.work.join(f)).unwrap_or_else(|e| panic!("reference {f}: {e}"));
        let got = fs::read(env.work.join(f))
            .unwrap_or_else(|e| panic!("checkpointed run did not produce {f}: {e}"));
        assert_same_bytes(&format!("content of {f}"), &got, &want);
    }
    assert_eq!(
        fs::read_to_string(env.work.join("log.txt")).unwrap(),
        "log before\nlog after\n"
    );
    assert_eq!(
        fs::read_to_string(env.work.join("out.txt")).unwrap(),
        "out part 1\nout part 2\n"
    );
}

/// What a JVM keeps: one end of a socketpair whose other end is closed (restored as
/// such: end-of-file, EPIPE, O_NONBLOCK kept) and a shared writable file mapping
/// (remapped from the file: writes through it reach the file and back).
#[test]
fn a_lone_socket_and_a_shared_writable_file_mapping_come_back() {
    let prog = compile_c("lonesock");
    let env = Env::new();
    let refd = env.subdir("ref");
    let rfile = refd.join("perf").display().to_string();
    let (reference, _r) = Env::reference(&prog, &[rfile.as_str()], &[], b"");
    reference.assert_code(0, "reference run");
    let file = env.subdir("data").join("perf").display().to_string();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &[file.as_str()], &[], &[], b"");
    rest.assert_code(0, "mos restart of lonesock");
    assert_restart_output(&orig, &rest, &reference, &["socket: eof yes, epipe yes, nonblock yes\n", "mapping: kept yes, writes reach the file yes, file shows through yes\n"]);
}

/// An fd on a directory deleted while open, and a deleted current directory, come
/// back as empty deleted directories (the restart used to fail reopening the first, and
/// the checkpoint refused the second).
#[test]
fn deleted_directories_come_back_deleted() {
    let prog = compile_c("deldir");
    let env = Env::new();
    let rdir = env.subdir("ref").join("d").display().to_string();
    let (reference, _r) = Env::reference(&prog, &[rdir.as_str()], &[], b"");
    reference.assert_code(0, "reference run");
    let dir = env.subdir("run").join("d").display().to_string();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &[dir.as_str()], &[], &[], b"");
    rest.assert_code(0, "mos restart of deldir");
    assert_restart_output(&orig, &rest, &reference, &["after: fd: deleted dir yes, create refused yes; cwd: deleted dir yes, create refused yes\n"]);
    let left: Vec<_> = std::fs::read_dir(env.subdir("run").join("d")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "stand-ins left behind: {left:?}");
}

/// A named FIFO the process opened (two readers, a writer and its dup) comes back with
/// its buffered bytes, separate opens separate and the dup shared.
#[test]
fn named_fifos_come_back() {
    let prog = compile_c("fifo");
    let env = Env::new();
    let rpath = env.subdir("ref").join("f").display().to_string();
    let (reference, _r) = Env::reference(&prog, &[rpath.as_str()], &[], b"");
    reference.assert_code(0, "reference run");
    let path = env.subdir("run").join("f").display().to_string();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &[path.as_str()], &[], &[], b"");
    rest.assert_code(0, "mos restart of fifo");
    assert_restart_output(&orig, &rest, &reference, &["after: bytes kept yes, more through the dup yes, empty yes, separate opens yes, dup shares yes\n"]);
}

/// A pty pair the process opened itself comes back as a new pair with its termios and
/// window size, carrying bytes both ways (it was restored as the stale /dev/pts/N).
#[test]
fn a_pty_pair_of_the_process_comes_back() {
    let prog = compile_c("pty");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of pty");
    assert_restart_output(&orig, &rest, &reference, &["after: master to slave ok, slave to master ok, no echo kept, window kept, isatty yes\n"]);
}
