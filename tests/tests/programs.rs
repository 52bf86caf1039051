//! Real programs through checkpoint/restart: python3 with a thread pool, a C++ program
//! with iostreams and std::thread, coreutils (sort on a large input, sha256sum of a
//! large file) and a shell loop whose children make the checkpoint refuse.
//! Each is checkpointed mid-run with --exit; original + restarted output must equal an
//! uninterrupted run.

use mos_integration::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn progs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("progs")
}

/// Run `prog args` under the shim, checkpoint with --exit once `marker` is on stdout
/// (or after `delay` when there is none), restart, and compare with `reference`.
fn cycle(
    env: &Env,
    prog: &Path,
    args: &[&str],
    marker: Option<&str>,
    delay: Duration,
    reference: &[u8],
) {
    let mut app = env.spawn_app(prog, args, &[]);
    match marker {
        Some(m) => app.wait_stdout(m),
        None => std::thread::sleep(delay),
    }
    let (img, orig) = env.ckpt_exit(&mut app, "prog.img");
    let rest = env.restart(&img, &[], b"");
    rest.assert_code(0, &format!("restarted {}", prog.display()));
    assert_same_bytes(
        "stdout (original + restarted vs uninterrupted)",
        &cat(&orig.stdout, &rest.stdout),
        reference,
    );
}

fn reference_of(prog: &Path, args: &[&str]) -> Vec<u8> {
    let (r, _e) = Env::reference(prog, args, &[], b"");
    r.assert_code(0, "reference run");
    r.stdout
}

#[test]
fn python3_thread_pool() {
    let py = Path::new("/usr/bin/python3");
    let script = progs().join("pool.py").display().to_string();
    let args = [script.as_str(), "40"];
    let reference = reference_of(py, &args);
    cycle(
        &Env::new(),
        py,
        &args,
        Some("\n12 "),
        Duration::ZERO,
        &reference,
    );
}

/// node (V8's JIT and libuv's thread pool), where it is installed.
#[test]
fn node_compute_loop_with_its_thread_pool() {
    let Some(node) = ["/usr/bin/node", "/usr/bin/nodejs"].into_iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("skipped: no node on this machine");
        return;
    };
    let script = progs().join("loop.js").display().to_string();
    let args = [script.as_str(), "30"];
    let reference = reference_of(node, &args);
    cycle(&Env::new(), node, &args, Some("\n8 "), Duration::ZERO, &reference);
}

/// A JVM (OpenJDK, `java H.java`: its JIT, GC and service threads, the marker socket
/// and the shared hsperfdata mapping it keeps), where it is installed.
#[test]
fn java_compute_loop() {
    let Some(java) = ["/usr/bin/java"].into_iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("skipped: no java on this machine");
        return;
    };
    let src = progs().join("H.java").display().to_string();
    let args = [src.as_str(), "24"];
    let reference = reference_of(java, &args);
    cycle(&Env::new(), java, &args, Some("\n10 "), Duration::ZERO, &reference);
}

#[test]
fn cpp_iostreams_and_std_thread() {
    let env = Env::new();
    let exe = env.subdir("bin").join("cppthreads");
    let out = Command::new("g++")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(progs().join("cppthreads.cc"))
        .output()
        .expect("run g++");
    assert!(
        out.status.success(),
        "g++ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = ["30"];
    let reference = reference_of(&exe, &args);
    cycle(
        &env,
        &exe,
        &args,
        Some("round 5 "),
        Duration::ZERO,
        &reference,
    );
}

#[test]
fn sort_of_a_large_input() {
    let env = Env::new();
    let input = env.subdir("data").join("numbers.txt");
    let mut text = String::new();
    let mut x: u64 = 12345;
    for _ in 0..1_500_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&(x >> 20).to_string());
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let sort = Path::new("/usr/bin/sort");
    let inp = input.display().to_string();
    let args = ["-n", inp.as_str()];
    let reference = reference_of(sort, &args);
    cycle(
        &env,
        sort,
        &args,
        None,
        Duration::from_millis(150),
        &reference,
    );
}

#[test]
fn sha256sum_of_a_large_file() {
    let env = Env::new();
    let file = env.subdir("data").join("blob.bin");
    let mut data = vec![0u8; 256 << 20];
    let mut x: u64 = 7;
    for c in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&file, &data).unwrap();
    drop(data);
    let sha = Path::new("/usr/bin/sha256sum");
    let f = file.display().to_string();
    let args = [f.as_str()];
    let reference = reference_of(sha, &args);
    cycle(
        &env,
        sha,
        &args,
        None,
        Duration::from_millis(20),
        &reference,
    );
}

/// xz 5.4 maps glibc's gconv-modules.cache read-only and shared, and writes its output
/// to a file of its own: checkpointed mid-compression, restarted, its output equals an
/// uninterrupted run's (the restart used to fail: "cannot map ... Permission denied").
#[test]
fn xz_with_its_shared_read_only_mapping() {
    let xz = Path::new("/usr/bin/xz");
    if !xz.exists() {
        eprintln!("skipped: no /usr/bin/xz");
        return;
    }
    let env = Env::new();
    let file = env.subdir("data").join("in.bin");
    let mut data = vec![0u8; 8 << 20];
    let mut x: u64 = 11;
    for (i, c) in data.chunks_mut(8).enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // half compressible, so xz works a while
        let v = if i % 2 == 0 { x } else { i as u64 & 0xff };
        c.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&file, &data).unwrap();
    drop(data);
    let f = file.display().to_string();
    let args = ["-9", "-T1", "-c", f.as_str()];
    let reference = reference_of(xz, &args);
    cycle(&env, xz, &args, None, Duration::from_millis(300), &reference);
}

/// A shell loop runs its commands as children: mos ckpt refuses with the reason and
/// the loop finishes unharmed; in the rare instant without a child the image must
/// restart correctly instead.
#[test]
fn shell_loop_with_children() {
    let bash = Path::new("/bin/bash");
    let args = [
        "-c",
        "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.1; done",
    ];
    let reference = reference_of(bash, &args);
    let env = Env::new();
    let mut app = env.spawn_app(bash, &args, &[]);
    app.wait_stdout("line 2\n");
    let img = env.ckpt_dir.join("sh.img");
    let out = env.mos_ckpt_raw(app.pid(), &["--exit", "-o", &img.display().to_string()]);
    if out.code() == Some(2) {
        assert_one_line_error("mos ckpt of a shell with a child", &out, 2, Some("child"));
        assert!(!img.exists(), "no image after a refusal");
        let res = app.wait();
        res.assert_code(0, "shell after the refused checkpoint");
        assert_same_bytes("shell output", &res.stdout, &reference);
    } else {
        out.assert_code(0, "mos ckpt of the shell");
        let orig = app.wait();
        let rest = env.restart(&img, &[], b"");
        rest.assert_code(0, "restarted shell");
        assert_same_bytes("shell output", &cat(&orig.stdout, &rest.stdout), &reference);
    }
}
