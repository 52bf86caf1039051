//! Multithreaded programs through checkpoint/restart: threads in every kind of state,
//! virtual tids, mutex owners, threads coming and going, kernel objects shared by
//! threads. Output is compared with an uninterrupted run.

use mos_integration::*;
use std::time::Duration;

fn thread_cycle(prog: &std::path::Path, reference: &RunOutput, opts: &[&str]) {
    let env = Env::new();
    let mut app = env.spawn_app(prog, NOARGS, &[]);
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "threads.img");
    env.go(1);
    let rest = env.restart(&img, opts, b"");
    rest.assert_code(0, "restarted threads program");
    assert_same_bytes(
        "stdout (original + restarted vs uninterrupted)",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
    assert!(
        !contains(&rest.stdout, b"CHECK FAILED"),
        "{}",
        rest.describe()
    );
}

/// 8 threads (mutex/condvar/barrier work, one in read() on a pipe, one in nanosleep,
/// one in a futex wait, one holding a recursive mutex), main holding an
/// error-checking mutex; tids, pthread_kill/tgkill and pthread_join after restart.
#[test]
fn eight_threads_in_every_state() {
    let prog = compile_c("threads");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    thread_cycle(&prog, &reference, &[]);
}

/// The same, 20 times in a row (eager and lazy alternately): a checkpointer that
/// fails one time in twenty is broken.
#[test]
fn eight_threads_twenty_times() {
    let prog = compile_c("threads");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    for i in 0..20 {
        thread_cycle(
            &prog,
            &reference,
            if i % 2 == 0 { &[] } else { &["--eager"] },
        );
    }
}

/// Checkpoints at random moments while threads are being created and are exiting,
/// several in quick succession, then one with --exit; the restarted process finishes
/// with the same output as an uninterrupted run.
#[test]
fn checkpoints_while_threads_come_and_go() {
    let prog = compile_c("churn");
    let args = ["6000"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &[("STDBUF", "")]);
    let mut seed = std::process::id() as u64;
    for _ in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(5 + (seed >> 33) % 40));
        env.mos_ckpt_raw(
            app.pid(),
            &["-o", &env.ckpt_dir.join("quick.img").display().to_string()],
        )
        .assert_code(0, "checkpoint during thread churn");
    }
    let (img, orig) = env.ckpt_exit(&mut app, "churn.img");
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "restarted churn");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
    // the quick images are complete images too
    let quick = env.restart(&env.ckpt_dir.join("quick.img"), &[], b"");
    quick.assert_code(0, "restart of a mid-churn image");
    assert!(
        contains(&quick.stdout, b"done total 60000\n"),
        "{}",
        quick.describe()
    );
}

/// Pipes (buffered bytes, a reader blocked on one), eventfd, epoll, timerfd, signalfd,
/// a periodic POSIX timer and anonymous MAP_SHARED memory.
#[test]
fn kernel_objects_of_a_process() {
    let prog = compile_c("kernobj");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    for opts in [&[][..], &["--eager"][..]] {
        let env = Env::new();
        let mut app = env.spawn_app(&prog, NOARGS, &[]);
        env.wait_ready(&mut app, 1);
        let (img, orig) = env.ckpt_exit(&mut app, "kernobj.img");
        env.go(1);
        let rest = env.restart(&img, opts, b"");
        rest.assert_code(0, "restarted kernobj");
        assert_same_bytes(
            "stdout",
            &cat(&orig.stdout, &rest.stdout),
            &reference.stdout,
        );
    }
}

/// Checkpoint requests arriving at the same time (two `mos ckpt` and a `kill -USR2`) are
/// served one after the other; every image restarts.
#[test]
fn simultaneous_checkpoint_requests() {
    let prog = compile_c("churn");
    let args = ["8000"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let mut app = env.spawn_app(&prog, &args, &[]);
    std::thread::sleep(Duration::from_millis(30));
    let pid = app.pid();
    let imgs: Vec<_> = (0..2)
        .map(|i| env.ckpt_dir.join(format!("same{i}.img")))
        .collect();
    let handles: Vec<_> = imgs
        .iter()
        .map(|img| {
            let cmd = env.mos_cmd(&[
                "ckpt".to_string(),
                pid.to_string(),
                "-o".into(),
                img.display().to_string(),
            ]);
            std::thread::spawn(move || run("concurrent mos ckpt", cmd, b""))
        })
        .collect();
    app.signal(libc::SIGUSR2);
    for h in handles {
        h.join().unwrap().assert_code(0, "concurrent mos ckpt");
    }
    let out = app.wait();
    out.assert_code(0, "app after concurrent checkpoints");
    for img in &imgs {
        let rest = env.restart(img, &[], b"");
        rest.assert_code(0, "restart of a concurrently taken image");
        assert!(
            reference.stdout.ends_with(&rest.stdout),
            "restarted output is a suffix of the reference\n{}",
            rest.describe()
        );
    }
}

/// Each thread's alternate signal stack is set again at restart, and a SA_ONSTACK
/// handler runs on it.
#[test]
fn alternate_signal_stacks_survive_a_restart() {
    let prog = compile_c("altstack");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of altstack");
    assert_restart_output(&orig, &rest, &reference, &["main: altstack kept, handler on it yes\n", "thread: altstack kept, handler on it yes\n"]);
}

/// Threads created and cancelled (deferred and asynchronous) before and after a
/// restart, and threads running at the checkpoint cancelled after it: nothing hangs,
/// every one ends cancelled (pthread_cancel signals the tid glibc keeps for the thread).
#[test]
fn threads_are_cancelled_across_a_restart() {
    let prog = compile_c("cancel");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of cancel");
    assert_restart_output(&orig, &rest, &reference, &["threads of the checkpoint: cancelled, cancelled\n", "after: 20 of 20 cancelled\n"]);
}

/// CPU-time clocks: ids that name the process or a thread (clock_getcpuclockid,
/// pthread_getcpuclockid) read after a restart, and the process's and threads' CPU
/// time does not go back.
#[test]
fn cpu_clocks_read_and_stay_monotonic_across_a_restart() {
    let prog = compile_c("cpuclock");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of cpuclock");
    assert_restart_output(
        &orig,
        &rest,
        &reference,
        &["after: ids read ok, id again ok\n", "process clock monotonic: yes yes yes\n", "thread clocks monotonic: yes yes\n", "worker's own clock monotonic: yes\n"],
    );
}

/// SIGEV_THREAD POSIX timers (glibc's helper thread blocks every signal): the
/// checkpoint stops every thread, the timer fires again after the restart, a new one
/// armed after it fires, and both are deleted.
#[test]
fn sigev_thread_timers_do_not_block_a_checkpoint() {
    let prog = compile_c("sigevthread");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of sigevthread");
    assert_restart_output(&orig, &rest, &reference, &["after: fires again yes\n", "one-shot: armed fired\n", "gettime: ok\n", "deleted: ok\n"]);
}

/// A Go-like runtime (16 threads with alternate signal stacks, SIGURG preemption by a
/// monitor thread) restarts and goes on: every worker is preempted again on its own
/// signal stack, and the results equal an uninterrupted run's.
#[test]
fn a_go_like_runtime_with_sigurg_preemption_restarts() {
    let prog = compile_c("goruntime");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart of goruntime");
    assert_restart_output(&orig, &rest, &reference, &["every worker preempted after the sync point: yes\n", "handlers on their thread's altstack: yes\n"]);
}
