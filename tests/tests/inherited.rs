//! Descriptors a program inherits from its parent and mos cannot reopen (a make
//! jobserver's pipe, a CI runner's socket): recorded as inherited at checkpoint and rebound
//! at restart like a std stream, to the restarting command's descriptor of that number or
//! else to a placeholder of the same access mode; the shim's log says which. `mos ckpt
//! --strict` keeps refusing them.

use mos_integration::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A pipe (read end, write end), both close-on-exec in this process.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills the two ints.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and ours.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// The child gets `from` as its descriptor `at` (open across exec), as a parent that leaves
/// a descriptor open does.
fn give_fd(cmd: &mut Command, from: &OwnedFd, at: i32) {
    let raw = from.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; nothing else runs in the forked child.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto its own number does nothing, close-on-exec included: clear the flag
            let r = if raw == at { libc::fcntl(at, libc::F_SETFD, 0) } else { libc::dup2(raw, at) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn an_inherited_pipe_is_rebound_at_restart() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    let env = Env::new();
    let (_r_end, w_end) = pipe();
    let log = env.work.join("shim.log");
    let mut cmd = env.app_cmd(&prog, &args, &[("MOS_LOG_FILE", log.to_str().unwrap())]);
    give_fd(&mut cmd, &w_end, 7);
    let mut app = Proc::spawn("counter with an inherited pipe as fd 7", cmd);
    env.wait_ready(&mut app, 1);
    // --strict refuses it (or an inherited pipe below it: the test runner's own parent
    // may have left some, which the program inherits too); the program runs on
    let strict = env.mos_ckpt_raw(app.pid(), &["--strict"]);
    assert_ne!(strict.code(), Some(0), "{}", strict.describe());
    assert!(strict.stderr_str().contains(" is a pipe to another process"), "{}", strict.describe());
    // by default it is recorded as inherited
    let (img, orig) = env.ckpt_exit(&mut app, "c.img");
    let inspect = run("mos image inspect", env.mos_cmd(&["image", "inspect", "--json", img.to_str().unwrap()]), b"");
    inspect.assert_code(0, "mos image inspect");
    let meta: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let fd7 = meta["fds"].as_array().unwrap().iter().find(|f| f["fd"] == 7).cloned().unwrap_or_default();
    assert_eq!(fd7["kind"], "Inherit", "{meta:#}");
    env.go(1);
    // restarted by a command without fd 7: a placeholder stands in, and the log says so
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "mos restart without fd 7");
    assert_same_bytes("stdout", &cat(&orig.stdout, &rest.stdout), &reference.stdout);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("restart: fd 7 was inherited (pipe:[") && text.contains("it is now /dev/null"), "{text}");
    assert!(!rest.stderr_str().contains("fd 7"), "nothing about it on the program's stderr: {}", rest.describe());
}

#[test]
fn an_inherited_fd_takes_the_restarting_commands_own() {
    let prog = compile_c("counter");
    let args = ["1", "300", "0"];
    let env = Env::new();
    let (_r1, w1) = pipe();
    let log = env.work.join("shim.log");
    let mut cmd = env.app_cmd(&prog, &args, &[("MOS_LOG_FILE", log.to_str().unwrap())]);
    give_fd(&mut cmd, &w1, 9);
    let mut app = Proc::spawn("counter with fd 9", cmd);
    env.wait_ready(&mut app, 1);
    let (img, _orig) = env.ckpt_exit(&mut app, "c.img");
    env.go(1);
    // the restarting command has its own fd 9 (another pipe): the program gets that one
    let (_r2, w2) = pipe();
    let mut rc = env.restart_cmd(&img, &[]);
    give_fd(&mut rc, &w2, 9);
    let rest = run("mos restart with its own fd 9", rc, b"");
    rest.assert_code(0, "mos restart with fd 9");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains("restart: fd 9 was inherited")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("it is now pipe:["), "{line}");
}
