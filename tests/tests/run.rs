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
