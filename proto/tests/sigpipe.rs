//! A write to a socket whose peer has gone must not kill a process that leaves SIGPIPE at
//! its default, as an application hosting the shim may. Each case runs in a child process
//! (this test binary re-run on one test, with SIGPIPE reset to the default), because the
//! harness itself ignores SIGPIPE like every Rust program.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use proto::{FrameError, FrameWriter, Msg, NoSigPipe};

const CHILD_ENV: &str = "MOS_PROTO_SIGPIPE_CHILD";

/// Run `child_writes_to_a_dead_peer` in a child process in `mode`.
fn run_child(mode: &str) -> std::process::ExitStatus {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args([
            "child_writes_to_a_dead_peer",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::null()) // the child harness's summary would read as ours
        .status()
        .expect("spawn child")
}

#[test]
fn plain_tcp_stream_frame_writes_can_raise_sigpipe() {
    // The hazard NoSigPipe exists for: if this stops failing, std changed, not us.
    let status = run_child("plain");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
}

#[test]
fn no_sigpipe_turns_a_dead_peer_into_an_error() {
    let status = run_child("wrapped");
    assert!(status.success(), "{status:?}");
}

/// The child's body; does nothing unless run by the tests above.
#[test]
fn child_writes_to_a_dead_peer() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // SAFETY: signal(2) with SIG_DFL installs no handler code; this process is a child made
    // for this one test (--test-threads=1), so no other thread depends on the disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    drop(listener.accept().unwrap());
    let payload = vec![0u8; 4096];
    let m = Msg::ImageChunk {
        len: payload.len() as u32,
    };
    // The first write after the peer's close draws a reset; a later one meets EPIPE.
    let result = if mode == "plain" {
        let mut w = FrameWriter::new(client);
        (0..100).find_map(|_| {
            thread::sleep(Duration::from_millis(10));
            w.write_msg(&m, &payload).err()
        })
    } else {
        let mut w = FrameWriter::new(NoSigPipe::new(client));
        (0..100).find_map(|_| {
            thread::sleep(Duration::from_millis(10));
            w.write_msg(&m, &payload).err()
        })
    };
    match result {
        Some(FrameError::Io(e)) => {
            assert!(
                matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                "{e}"
            )
        }
        other => panic!("expected a broken pipe error, got {other:?}"),
    }
}
