//! `mos run -- PROG ARGS` runs PROG under the shim, same pid: checkpoint and restart work
//! as with LD_PRELOAD set by hand; a program that does not exist is one clear error.

use mos_integration::*;

#[test]
fn mos_run_makes_a_program_checkpointable() {
    let prog = compile_c("counter");
    let args = ["2", "50", "0"];
    let (reference, _r) = Env::reference(&prog, &args, &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let mut argv = vec![
        "run".to_string(),
        "--".to_string(),
        prog.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut app = Proc::spawn("mos run", env.mos_cmd(&argv));
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, "run.img");
    env.go_all();
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, "restart of a program started by mos run");
    assert_same_bytes(
        "stdout",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
}

#[test]
fn mos_run_of_a_missing_program() {
    let env = Env::new();
    let out = run(
        "mos run missing",
        env.mos_cmd(&["run", "--", "/nonexistent/prog"]),
        b"",
    );
    assert_one_line_error(
        "mos run of a missing program",
        &out,
        2,
        Some("/nonexistent/prog"),
    );
}

/// A statically linked program cannot have the shim preloaded: `mos run` says so on
/// stderr, clearly, and runs it anyway (its output untouched); a dynamic one gets no
/// such word.
#[test]
fn mos_run_of_a_static_binary_says_it_is_not_checkpointable() {
    let env = Env::new();
    let dir = env.subdir("static");
    let src = dir.join("hello.c");
    std::fs::write(&src, "#include <stdio.h>\nint main(void){puts(\"hello\");return 3;}\n").unwrap();
    let exe = dir.join("hello");
    let cc = std::process::Command::new("cc").args(["-static", "-O1", "-o"]).arg(&exe).arg(&src).output().expect("cc");
    assert!(cc.status.success(), "cc -static: {}", String::from_utf8_lossy(&cc.stderr));
    let out = run("mos run of a static binary", env.mos_cmd(&["run", "--", &exe.display().to_string()]), b"");
    out.assert_code(3, "the static program's own status");
    assert_eq!(out.stdout_str(), "hello\n", "{}", out.describe());
    assert!(out.stderr_str().contains("statically linked") && out.stderr_str().contains("WITHOUT checkpointing"), "{}", out.describe());
    let dynamic = compile_c("quick");
    let out = run("mos run of a dynamic binary", env.mos_cmd(&["run", "--", &dynamic.display().to_string()]), b"");
    assert!(!out.stderr_str().contains("statically linked"), "{}", out.describe());
}
