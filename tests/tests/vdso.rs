//! Clocks (vDSO) after restart, with ASLR on: the vDSO of the restarted
//! process generally lives at another address than in the image.

use mos_integration::*;

#[test]
fn clocks_work_and_move_forward_after_restart() {
    let aslr = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space").unwrap_or_default();
    if aslr.trim() == "0" {
        eprintln!("warning: ASLR is disabled system-wide; the vDSO will not move between runs");
    }
    let prog = compile_c("clocks");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");

    let env = Env::new();
    let (orig, rest, img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], &[], b"");
    rest.assert_code(0, "mos restart");
    assert_restart_output(
        &orig,
        &rest,
        &reference,
        &[
            "monotonic works 1 forward 1\n",
            "realtime works 1 forward 1\n",
            "gettimeofday works 1 forward 1\n",
            "time() forward 1\n",
            "cputime works 1 coarse works 1\n",
        ],
    );

    // two more restarts from the same image: new random vDSO placements each time
    for i in 0..2 {
        let again = env.restart(&img, &[], b"");
        again.assert_code(0, &format!("restart #{}", i + 2));
        assert_same_bytes("repeated restart stdout", &again.stdout, &rest.stdout);
    }
}
