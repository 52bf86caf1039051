//! getpid() is virtualized: the restarted app sees the pid it had before.

use mos_integration::*;

fn parse_after(out: &[u8], key: &str) -> i32 {
    let s = String::from_utf8_lossy(out);
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().parse::<i32>().expect("pid number"))
        })
        .unwrap_or_else(|| panic!("no line starting with {key:?} in:\n{s}"))
}

#[test]
fn getpid_is_the_same_after_restart() {
    let prog = compile_c("pid");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &[]);
    app.wait_stdout("pid before ");
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "pid.img");
    let before = parse_after(&orig.stdout, "pid before ");
    assert_eq!(
        before,
        app.pid(),
        "under the shim getpid() must equal the real pid before any restart"
    );

    env.go(1);
    let mut rp = env.spawn_restart(&img, &[]);
    let real = rp.pid();
    let rest = rp.wait();
    rest.assert_code(0, "mos restart");
    assert_eq!(
        parse_after(&rest.stdout, "pid after "),
        before,
        "getpid() after restart\n{}",
        rest.describe()
    );
    assert_eq!(
        parse_after(&rest.stdout, "pid end "),
        before,
        "getpid() later after restart\n{}",
        rest.describe()
    );
    assert!(contains(&rest.stdout, b"same 1\n"), "{}", rest.describe());
    assert_ne!(real, 0);
}

/// The default image name of a restarted app uses its comm and virtual pid,
/// and kill -USR2 to the real pid of `mos restart` checkpoints it.
#[test]
fn recheckpoint_after_restart_uses_virtual_pid_in_default_name() {
    let prog = compile_c("pid");
    let envs = [("PID_SECOND_SYNC", "1")];
    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &envs);
    let vpid = app.pid();
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "first.img");
    env.go(1);

    let mut rp = env.spawn_restart(&img, &[]);
    env.wait_ready(&mut rp, 2);
    assert_ne!(rp.pid(), vpid, "test assumption: new real pid");
    rp.signal(libc::SIGUSR2);
    let second = default_image_path(&env.ckpt_dir, "pid", vpid);
    wait_image(
        &mut rp,
        &second,
        "kill -USR2 <real pid of the restarted app> (default name uses comm + virtual pid)",
    );
    assert!(
        rp.is_running(),
        "restarted app must keep running after kill -USR2\n{}",
        rp.describe()
    );
    env.go(2);
    let rest = rp.wait();
    rest.assert_code(0, "first restart");
    assert!(
        contains(&rest.stdout, format!("pid end {vpid}\n").as_bytes()),
        "{}",
        rest.describe()
    );

    // second generation from the default-named image
    let rest2 = env.restart(&second, &[], b"");
    rest2.assert_code(0, "restart of the second image");
    assert_eq!(
        rest2.stdout_str(),
        format!("pid end {vpid}\n"),
        "{}",
        rest2.describe()
    );
    let _ = orig;
}

/// The restarted process looks like the app again (/proc/<pid>/comm, used by
/// ps/top and for default image names).
#[test]
fn restarted_app_keeps_its_comm() {
    let prog = compile_c("pid");
    let envs = [("PID_SECOND_SYNC", "1")];
    let env = Env::new();
    let mut app = env.spawn_app(&prog, NOARGS, &envs);
    env.wait_ready(&mut app, 1);
    let (img, _) = env.ckpt_exit(&mut app, "first.img");
    env.go(1);
    let mut rp = env.spawn_restart(&img, &[]);
    env.wait_ready(&mut rp, 2);
    assert_eq!(
        proc_comm(rp.pid()).as_deref(),
        Some("pid"),
        "/proc/<pid>/comm of the restarted app must be the app's comm again"
    );
    env.go(2);
    rp.wait().assert_code(0, "restart");
}

/// `/proc/<pid>` and `/proc/<tid>` with the numbers the process knows work after a
/// restart in open, fopen, opendir, stat, access and readlink (`/proc/self` reads as
/// getpid), and listings of /proc and of the task directory show them, as before.
#[test]
fn proc_paths_with_the_own_pid_work_after_a_restart() {
    let prog = compile_c("procpid");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of procpid");
    assert_restart_output(&orig, &rest, &reference, &["after: stat ok, own entry ok, fopen ok, opendir ok, open task ok, access tid ok, /proc/self ok, listed ok, task listed ok, getdents ok, exe ok\n"]);
}

/// Calls that name a process or thread by id (sched_*, prlimit, pidfd_open,
/// process_vm_readv, kcmp, get_robust_list, getpriority; libc's and syscall(2)) work
/// with the process's own pid and a thread's tid after a restart.
#[test]
fn calls_naming_the_own_pid_and_tids_work_after_a_restart() {
    let prog = compile_c("sysids");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of sysids");
    assert_restart_output(
        &orig,
        &rest,
        &reference,
        &["after: affinity ok ok, sched ok, prlimit ok, pidfd ok, process_vm_readv ok, kcmp ok, robust list ok, priority ok\n"],
    );
}

/// A pidfd of the process itself comes back naming the restarted process, and a
/// membarrier registration is made again (expedited barriers do not fail with EPERM).
#[test]
fn a_pidfd_of_itself_and_membarrier_registration_survive_a_restart() {
    let prog = compile_c("pidfdmb");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of pidfdmb");
    assert_restart_output(&orig, &rest, &reference, &["after: pidfd signals ok, running ok, barrier ok\n"]);
}
