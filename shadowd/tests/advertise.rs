//! A shadowd behind a wildcard address announces the one it is told (`--advertise`), and
//! refuses to start without one rather than announce 0.0.0.0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn shadowd(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    let key = dir.join("key");
    if !key.exists() {
        proto::auth::create_key_file(&key, false).unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_shadowd"))
        .args(["--node", "n1", "--listen", "0.0.0.0:0", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--key")
        .arg(&key)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_wildcard_listener_announces_the_advertised_address_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let out = shadowd(dir.path(), &[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--advertise"), "{err}");
    let mut d = shadowd(dir.path(), &["--advertise", "127.0.0.1"]);
    let read = |name: &str| {
        let f = dir.path().join("state").join(name);
        let t0 = Instant::now();
        loop {
            if let Ok(a) = std::fs::read_to_string(&f) {
                if !a.is_empty() {
                    break a;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no {name} file");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let addr = read("addr");
    let rsys = read("rsys.addr");
    // SIGTERM: the daemon cleans up after itself (its in-memory image directory)
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let _ = d.wait();
    let sa: std::net::SocketAddr = addr.trim().parse().unwrap();
    assert_eq!(sa.ip().to_string(), "127.0.0.1", "{addr}");
    assert_ne!(sa.port(), 0);
    assert!(rsys.starts_with("127.0.0.1:"), "{rsys}");
}
