//! Damaged images are refused by `mos restart` with one stderr line and exit
//! code 2, before anything runs; `mos ckpt` errors likewise.

use mos_integration::*;
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MOSIMAGE";

/// A valid image of `counter` (4 MiB of heap pattern => plenty of page data).
fn valid_image(env: &Env) -> PathBuf {
    let prog = compile_c("counter");
    let mut app = env.spawn_app(&prog, &["1", "100", "0"], &[]);
    env.wait_ready(&mut app, 1);
    let (img, _) = env.ckpt_exit(&mut app, "good.img");
    let b = file_bytes(&img);
    assert!(
        b.len() > 4 << 20,
        "image unexpectedly small: {} bytes",
        b.len()
    );
    assert_eq!(&b[..8], MAGIC, "image magic");
    assert_eq!(
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        2,
        "format version"
    );
    assert_eq!(
        u32::from_le_bytes(b[12..16].try_into().unwrap()),
        62,
        "architecture (EM_X86_64)"
    );
    img
}

/// Writes `data` to bad.img, runs `mos restart` on it and checks the error.
fn expect_refused(env: &Env, data: Vec<u8>, keyword: &str) {
    let bad = env.ckpt_dir.join("bad.img");
    fs::write(&bad, &data).unwrap();
    env.go_all(); // if the image were (wrongly) accepted, the app would finish and print
    let out = env.restart(&bad, &[], b"");
    assert_one_line_error(
        &format!("mos restart of an image that should be refused ({keyword})"),
        &out,
        2,
        Some(keyword),
    );
    assert!(
        fs::read(&bad).unwrap() == data,
        "mos restart modified the bad image"
    );
    let out = env.restart(&bad, &["--eager"], b"");
    assert_one_line_error(
        &format!("mos restart --eager ({keyword})"),
        &out,
        2,
        Some(keyword),
    );
    assert!(
        fs::read(&bad).unwrap() == data,
        "mos restart --eager modified the bad image"
    );
}

fn with_image(f: impl FnOnce(&Env, Vec<u8>)) {
    let env = Env::new();
    let img = valid_image(&env);
    let bytes = file_bytes(&img);
    f(&env, bytes.clone());
    assert!(file_bytes(&img) == bytes, "the original image changed");
}

#[test]
fn garbage_file_is_not_a_mos_image() {
    let env = Env::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let garbage: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    expect_refused(&env, garbage, "not a mos image");
    expect_refused(&env, b"#!/bin/sh\necho hello\n".to_vec(), "not a mos image");
}

#[test]
fn missing_image_file() {
    let env = Env::new();
    let missing = env.ckpt_dir.join("does-not-exist.mosimg");
    let out = env.restart(&missing, &[], b"");
    assert_one_line_error("mos restart <missing file>", &out, 2, None);
    assert!(!missing.exists());
}

#[test]
fn truncated_image() {
    with_image(|env, b| {
        let half = b[..b.len() / 2].to_vec();
        expect_refused(env, half, "truncated");
    });
}

#[test]
fn flipped_byte_in_page_data() {
    with_image(|env, mut b| {
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        expect_refused(env, b, "checksum");
    });
}

#[test]
fn flipped_byte_in_metadata() {
    with_image(|env, mut b| {
        b[70] ^= 0xff;
        expect_refused(env, b, "checksum");
    });
}

#[test]
fn newer_format_version() {
    with_image(|env, mut b| {
        b[8..12].copy_from_slice(&99u32.to_le_bytes());
        expect_refused(env, b, "version");
    });
}

#[test]
fn wrong_architecture() {
    with_image(|env, mut b| {
        b[12..16].copy_from_slice(&183u32.to_le_bytes()); // EM_AARCH64
        expect_refused(env, b, "architecture");
    });
}

#[test]
fn ckpt_of_a_process_not_under_the_shim() {
    let env = Env::new();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30");
    let mut sleeper = Proc::spawn("sleep 30", cmd);
    // wait until it really is sleep (exec done)
    poll_until(
        || proc_comm(sleeper.pid()).as_deref() == Some("sleep"),
        || "sleep did not start".into(),
    );
    let out = env.mos_ckpt_raw(sleeper.pid(), &[]);
    assert_one_line_error("mos ckpt <pid of plain sleep>", &out, 2, None);
    let out = env.mos_ckpt_raw(sleeper.pid(), &["--exit"]);
    assert_one_line_error("mos ckpt --exit <pid of plain sleep>", &out, 2, None);
    assert!(
        sleeper.is_running(),
        "mos ckpt must not disturb a process that is not under the shim\n{}",
        sleeper.describe()
    );
    assert!(
        fs::read_dir(&env.ckpt_dir).unwrap().next().is_none(),
        "no image may be written"
    );
}

#[test]
fn ckpt_of_a_nonexistent_pid() {
    let env = Env::new();
    // the pid of an exited, reaped child (dropping the Proc reaps it)
    let pid = Proc::spawn("true", std::process::Command::new("true")).pid();
    poll_until(
        || !Path::new(&format!("/proc/{pid}")).exists(),
        || format!("pid {pid} still exists"),
    );
    let out = env.mos_ckpt_raw(pid, &[]);
    assert_one_line_error("mos ckpt <nonexistent pid>", &out, 2, None);
    let out = env.mos_ckpt_raw(0x3fff_fff0, &[]);
    assert_one_line_error("mos ckpt <pid beyond pid_max>", &out, 2, None);
}
