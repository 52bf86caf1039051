//! The batch-system recipes' wrapper scripts (docs/htcondor.md, docs/slurm.md), run the
//! way HTCondor and Slurm run them: the HTCondor one exits with the checkpoint exit code
//! and is started again until the program ends; the Slurm one is signalled SIGUSR2, exits,
//! and is started again. The output, pieced together, is an uninterrupted run's.

use mos_integration::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn wrapper(name: &str, dir: &std::path::Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(workspace_root().join("scripts").join(name)).current_dir(dir).env("MOS", release_dir().join("mos")).env_remove("LD_PRELOAD");
    c
}

fn reference(prog: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let mut c = Command::new(prog);
    c.args(args).env_remove("LD_PRELOAD");
    let r = run("uninterrupted run", c, b"");
    r.assert_code(0, "uninterrupted run");
    r.stdout
}

#[test]
fn the_htcondor_wrapper_checkpoints_itself_and_continues_until_done() {
    let prog = compile_c("crunch");
    let args = ["7", "300"];
    let want = reference(&prog, &args);
    let dir = tempfile::tempdir().unwrap();
    let img: PathBuf = dir.path().join("mos.ckpt");
    let mut got = Vec::new();
    let mut checkpoints = 0;
    loop {
        let mut c = wrapper("mos-condor-job", dir.path());
        c.arg(&prog).args(args).env("MOS_CKPT_EVERY", "1");
        let r = run("mos-condor-job", c, b"");
        got.extend_from_slice(&r.stdout);
        if r.code() == Some(85) {
            // HTCondor keeps the image (transfer_checkpoint_files) and runs the job again
            assert!(img.exists(), "exit 85 without an image\n{}", r.describe());
            checkpoints += 1;
            assert!(checkpoints < 60, "never finished");
            continue;
        }
        r.assert_code(0, "mos-condor-job, the last run");
        break;
    }
    assert!(checkpoints >= 1, "the job never checkpointed itself");
    assert_same_bytes("the job's output over its runs", &got, &want);
    assert!(!img.exists(), "the image outlived the job");
}

#[test]
fn the_slurm_wrapper_checkpoints_on_usr2_and_continues_when_run_again() {
    let prog = compile_c("crunch");
    let args = ["9", "200"];
    let want = reference(&prog, &args);
    let dir = tempfile::tempdir().unwrap();
    let img: PathBuf = dir.path().join("job.ckpt");
    let mut c = wrapper("mos-slurm-job", dir.path());
    c.arg(&prog).args(args).env("MOS_IMAGE", &img).env_remove("SLURM_JOB_ID");
    let mut p = Proc::spawn("mos-slurm-job", c);
    p.wait_stdout("crunch 9: 40/200");
    // what `#SBATCH --signal=B:USR2@60` does before the time limit
    // SAFETY: signalling the wrapper this test started.
    unsafe { libc::kill(p.pid(), libc::SIGUSR2) };
    let first = p.wait_timeout(Duration::from_secs(60));
    first.assert_code(0, "mos-slurm-job after SIGUSR2");
    assert!(img.exists(), "no image after SIGUSR2\n{}", first.describe());
    assert!(first.stderr_str().contains("checkpointed into"), "{}", first.describe());
    assert!(!first.stdout_str().contains("done"), "the program ended before the signal: make it longer\n{}", first.describe());
    // requeued: the same script again
    let mut again = wrapper("mos-slurm-job", dir.path());
    again.arg(&prog).args(args).env("MOS_IMAGE", &img).env_remove("SLURM_JOB_ID");
    let second = run("mos-slurm-job, requeued", again, b"");
    second.assert_code(0, "mos-slurm-job, requeued");
    let mut got = first.stdout.clone();
    got.extend_from_slice(&second.stdout);
    assert_same_bytes("the job's output over its two runs", &got, &want);
    assert!(!img.exists(), "the image outlived the job");
}
