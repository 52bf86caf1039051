//! A real server thread on 127.0.0.1 meets one bad peer after another; each is rejected with
//! the typed error that names its fault, and the server goes on to serve a good client.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use proto::auth::{self, AuthError};
use proto::frame::{encode_frame, FramePart, Limits};
use proto::msg::NONCE_LEN;
use proto::{ClusterKey, FrameError, FrameReader, Hello, Msg, Role, Version};
use support::{connect, random_key, EchoServer, Mode};

const TIMEOUT: Duration = Duration::from_millis(400);

fn raw(server: &EchoServer) -> TcpStream {
    TcpStream::connect(server.addr).expect("connect")
}

/// Send bytes, then close our side.
fn send_and_close(server: &EchoServer, bytes: &[u8]) {
    let mut s = raw(server);
    s.write_all(bytes).expect("write");
    let _ = s.shutdown(Shutdown::Write);
    // Keep the socket until the server has judged it, so it sees our bytes then EOF.
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

fn frame(m: &Msg) -> Vec<u8> {
    encode_frame(m, &[], &Limits::default()).expect("encode")
}

fn good_client_is_served(server: &EchoServer, key: &ClusterKey, name: &str) {
    let mut c = connect(server.addr, key, name).expect("good client handshake");
    assert_eq!(c.peer.node, "server-node");
    assert_eq!(c.peer.role, Role::Shadowd);
    let peer = server
        .next_result()
        .expect("server accepted the good client");
    assert_eq!(peer.node, name);
    c.echo_round_trip(b"pages and pages");
    c.echo_round_trip(&vec![0xa5; 300_000]);
}

#[test]
fn server_keeps_serving_after_each_kind_of_bad_peer() {
    let key = random_key();
    let server = EchoServer::start(key.clone(), TIMEOUT, Mode::Sequential);

    // Garbage: an HTTP request. Its first 4 bytes read as a ~540 MB header length.
    send_and_close(&server, b"GET / HTTP/1.1\r\nHost: mos\r\n\r\n");
    match server.next_result() {
        Err(AuthError::Frame {
            source: FrameError::HeaderTooLarge { len, max: 4096 },
            ..
        }) => {
            assert_eq!(len, u64::from(u32::from_le_bytes(*b"GET ")));
        }
        other => panic!("garbage: {other:?}"),
    }
    good_client_is_served(&server, &key, "after-garbage");

    // Garbage behind a plausible length: reaches the decoder, which refuses it.
    let mut g = 6u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0xff; 6]);
    send_and_close(&server, &g);
    match server.next_result() {
        Err(AuthError::Frame {
            source: FrameError::Decode(_),
            waiting_for: "Hello",
        }) => {}
        other => panic!("undecodable header: {other:?}"),
    }

    // Oversize length prefix.
    send_and_close(&server, &u32::MAX.to_le_bytes());
    match server.next_result() {
        Err(AuthError::Frame {
            source: FrameError::HeaderTooLarge {
                len: 0xffff_ffff, ..
            },
            ..
        }) => {}
        other => panic!("oversize length: {other:?}"),
    }

    // Truncated frame: a Hello cut short, then EOF.
    let hello = frame(&Msg::Hello(Hello::new("trunc", Role::Cli)));
    send_and_close(&server, &hello[..hello.len() - 3]);
    match server.next_result() {
        Err(AuthError::Frame {
            source: FrameError::Truncated {
                part: FramePart::Header,
            },
            ..
        }) => {}
        other => panic!("truncated frame: {other:?}"),
    }

    // Truncated frame and then silence: the deadline ends it.
    {
        let mut s = raw(&server);
        s.write_all(&hello[..5]).expect("write");
        let start = Instant::now();
        match server.next_result() {
            Err(AuthError::Timeout {
                waiting_for: "Hello",
            }) => {}
            other => panic!("truncated and silent: {other:?}"),
        }
        assert!(start.elapsed() < TIMEOUT * 5, "took {:?}", start.elapsed());
    }

    // Nothing at all: connect and stay silent.
    {
        let _s = raw(&server);
        let start = Instant::now();
        match server.next_result() {
            Err(AuthError::Timeout {
                waiting_for: "Hello",
            }) => {}
            other => panic!("silent peer: {other:?}"),
        }
        let took = start.elapsed();
        assert!(
            took >= TIMEOUT / 2 && took < TIMEOUT * 5,
            "silent peer took {took:?}"
        );
    }

    // Connect and close at once.
    drop(raw(&server));
    match server.next_result() {
        Err(AuthError::Closed {
            waiting_for: "Hello",
        }) => {}
        other => panic!("immediate close: {other:?}"),
    }

    // A peer that dribbles a valid Hello one byte at a time: each byte arrives well within
    // the timeout, but the whole handshake would not, and the deadline is for the whole.
    {
        let mut s = raw(&server);
        let bytes = hello.clone();
        let dribbler = thread::spawn(move || {
            for b in bytes {
                if s.write_all(&[b]).is_err() {
                    return;
                }
                thread::sleep(TIMEOUT / 4);
            }
        });
        match server.next_result() {
            Err(AuthError::Timeout {
                waiting_for: "Hello",
            }) => {}
            other => panic!("dribbling peer: {other:?}"),
        }
        dribbler.join().expect("dribbler thread");
    }

    // A valid message out of turn.
    send_and_close(&server, &frame(&Msg::AuthOk));
    match server.next_result() {
        Err(AuthError::Unexpected {
            expected: "Hello",
            got: "AuthOk",
        }) => {}
        other => panic!("out of turn: {other:?}"),
    }

    // Wrong key: both sides fail, each with its own typed error.
    {
        let other_key = random_key();
        let mut s = raw(&server);
        let r = auth::client_handshake_timeout(
            &mut s,
            &other_key,
            &Hello::new("intruder", Role::Cli),
            TIMEOUT * 5,
        );
        assert!(
            matches!(r, Err(AuthError::BadProof)),
            "wrong-key client: {r:?}"
        );
        match server.next_result() {
            Err(AuthError::Rejected { msg }) => {
                assert!(msg.contains("authentication failed"), "{msg}")
            }
            other => panic!("wrong-key client, server side: {other:?}"),
        }
    }

    // Another major version: refused on both sides with both versions named.
    {
        let mut s = raw(&server);
        let future = Hello {
            version: Version { major: proto::PROTO_VERSION.major + 1, minor: 0 },
            node: "future".into(),
            role: Role::Cli,
        };
        let r = auth::client_handshake_timeout(&mut s, &key, &future, TIMEOUT * 5);
        match r {
            Err(AuthError::VersionMismatch { ours, theirs }) => {
                assert_eq!((ours, theirs), (future.version, proto::PROTO_VERSION));
            }
            other => panic!("version mismatch, client side: {other:?}"),
        }
        match server.next_result() {
            Err(e @ AuthError::VersionMismatch { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&proto::PROTO_VERSION.to_string()) && text.contains(&future.version.to_string()), "{text}");
            }
            other => panic!("version mismatch, server side: {other:?}"),
        }
    }

    // Reflection: a peer without the key sends the server's own proof back as its answer.
    {
        let mut s = raw(&server);
        let nc = [7u8; NONCE_LEN];
        let mut out = frame(&Msg::Hello(Hello::new("mirror", Role::Cli)));
        out.extend_from_slice(&frame(&Msg::AuthChallenge { nonce: nc }));
        s.write_all(&out).expect("write");
        let mut r = FrameReader::with_limits(s.try_clone().expect("clone"), Limits::HANDSHAKE);
        let mut server_mac = None;
        for _ in 0..3 {
            let (m, _): (Msg, Vec<u8>) = r.read_msg().expect("server's handshake messages");
            if let Msg::AuthResponse { mac } = m {
                server_mac = Some(mac);
            }
        }
        let mac = server_mac.expect("server sent its proof");
        s.write_all(&frame(&Msg::AuthResponse { mac }))
            .expect("write");
        match server.next_result() {
            Err(AuthError::BadProof) => {}
            other => panic!("reflected proof: {other:?}"),
        }
        let reply: Result<(Msg, Vec<u8>), _> = r.read_msg();
        assert!(
            matches!(reply, Ok((Msg::Error { .. }, _))),
            "server told the mirror why: {reply:?}"
        );
    }

    good_client_is_served(&server, &key, "after-all");
}

#[test]
fn a_silent_peer_does_not_delay_others_on_a_threaded_server() {
    let key = random_key();
    let timeout = Duration::from_millis(1500);
    let server = EchoServer::start(key.clone(), timeout, Mode::ThreadPerConnection);
    let silent = raw(&server);
    thread::sleep(Duration::from_millis(50)); // let the server take it first
    let start = Instant::now();
    let mut c = connect(server.addr, &key, "busy").expect("good client");
    c.echo_round_trip(b"no waiting");
    assert!(
        start.elapsed() < timeout / 2,
        "good client waited {:?}",
        start.elapsed()
    );
    // The server reports the good client first, then the silent one's timeout.
    assert_eq!(
        server.next_result().expect("good client accepted").node,
        "busy"
    );
    match server.next_result() {
        Err(AuthError::Timeout {
            waiting_for: "Hello",
        }) => {}
        other => panic!("silent peer: {other:?}"),
    }
    drop(silent);
}
