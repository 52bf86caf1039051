//! The handshake over real sockets: what each side learns, what it leaves behind on the
//! stream, and how the client side deals with bad servers.

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use proto::auth::{self, AuthError};
use proto::frame::{encode_frame, Limits};
use proto::{FrameReader, FrameWriter, Hello, Msg, Role, PROTO_VERSION};
use support::random_key;

const SHORT: Duration = Duration::from_millis(400);

#[test]
fn good_key_passes_and_each_side_learns_the_other() {
    let key = random_key();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_key = key.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
        let peer =
            auth::server_handshake(&mut s, &server_key, &Hello::new("placer-1", Role::Placer))
                .unwrap();
        // The stream's own timeout is back, and the client's first frame after the
        // handshake was not swallowed by it.
        assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(s.write_timeout().unwrap(), None);
        let (m, bulk): (Msg, Vec<u8>) = FrameReader::new(&mut s).read_msg().unwrap();
        (peer, m, bulk)
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let peer = auth::client_handshake(&mut c, &key, &Hello::new("node-a", Role::Shadowd)).unwrap();
    assert_eq!(
        peer,
        auth::PeerInfo {
            node: "placer-1".into(),
            role: Role::Placer,
            version: PROTO_VERSION
        }
    );
    assert_eq!(c.read_timeout().unwrap(), None);
    FrameWriter::new(&mut c)
        .write_msg(&Msg::ImageChunk { len: 3 }, b"abc")
        .unwrap();
    let (server_saw, m, bulk) = server.join().unwrap();
    assert_eq!(
        server_saw,
        auth::PeerInfo {
            node: "node-a".into(),
            role: Role::Shadowd,
            version: PROTO_VERSION
        }
    );
    assert_eq!((m, &bulk[..]), (Msg::ImageChunk { len: 3 }, &b"abc"[..]));
}

#[test]
fn handshake_works_over_unix_sockets() {
    let key = random_key();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let k2 = key.clone();
    let server = thread::spawn(move || {
        auth::server_handshake(&mut b, &k2, &Hello::new("home", Role::Shadowd))
    });
    let peer = auth::client_handshake(&mut a, &key, &Hello::new("home", Role::Shim)).unwrap();
    assert_eq!(peer.role, Role::Shadowd);
    assert_eq!(server.join().unwrap().unwrap().role, Role::Shim);
}

#[test]
fn wrong_key_fails_on_both_sides() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        auth::server_handshake(&mut b, &random_key(), &Hello::new("s", Role::Shadowd))
    });
    let client = auth::client_handshake(&mut a, &random_key(), &Hello::new("c", Role::Cli));
    assert!(
        matches!(client, Err(AuthError::BadProof)),
        "client: {client:?}"
    );
    let server = server.join().unwrap();
    assert!(
        matches!(server, Err(AuthError::Rejected { .. })),
        "server: {server:?}"
    );
}

#[test]
fn client_gives_up_on_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_held, _) = listener.accept().unwrap(); // accepted, never answered
    let start = Instant::now();
    let r =
        auth::client_handshake_timeout(&mut c, &random_key(), &Hello::new("c", Role::Cli), SHORT);
    assert!(
        matches!(
            r,
            Err(AuthError::Timeout {
                waiting_for: "Hello"
            })
        ),
        "{r:?}"
    );
    assert!(start.elapsed() < SHORT * 5, "took {:?}", start.elapsed());
}

#[test]
fn client_reports_a_server_that_hangs_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || drop(listener.accept().unwrap()));
    let mut c = TcpStream::connect(addr).unwrap();
    t.join().unwrap();
    let r = auth::client_handshake_timeout(
        &mut c,
        &random_key(),
        &Hello::new("c", Role::Cli),
        SHORT * 5,
    );
    // Depending on timing the hang-up shows as EOF or as a reset of our write.
    assert!(
        matches!(r, Err(AuthError::Closed { .. }) | Err(AuthError::Io(_))),
        "{r:?}"
    );
}

#[test]
fn client_refuses_a_server_that_speaks_out_of_turn() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let bytes = encode_frame(&Msg::AuthOk, &[], &Limits::default()).unwrap();
        b.write_all(&bytes).unwrap();
        b // keep it open until the client has judged
    });
    let r = auth::client_handshake_timeout(
        &mut a,
        &random_key(),
        &Hello::new("c", Role::Cli),
        SHORT * 5,
    );
    assert!(
        matches!(
            r,
            Err(AuthError::Unexpected {
                expected: "Hello",
                got: "AuthOk"
            })
        ),
        "{r:?}"
    );
    drop(t.join().unwrap());
}

#[test]
fn a_server_error_message_reaches_the_client() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let bytes = encode_frame(
            &Msg::Error {
                msg: "node is draining".into(),
            },
            &[],
            &Limits::default(),
        )
        .unwrap();
        b.write_all(&bytes).unwrap();
        b
    });
    let r = auth::client_handshake_timeout(
        &mut a,
        &random_key(),
        &Hello::new("c", Role::Cli),
        SHORT * 5,
    );
    match r {
        Err(AuthError::Rejected { msg }) => assert_eq!(msg, "node is draining"),
        other => panic!("{other:?}"),
    }
    drop(t.join().unwrap());
}

#[test]
fn many_sequential_handshakes_use_fresh_nonces() {
    // Two sessions between the same parties must not carry the same challenge.
    let key = random_key();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let (mut a, b) = UnixStream::pair().unwrap();
        let k2 = key.clone();
        let spy = thread::spawn(move || {
            // A raw server half: read the client's Hello and challenge only.
            let mut r = FrameReader::with_limits(b, Limits::HANDSHAKE);
            let _hello: (Msg, Vec<u8>) = r.read_msg().unwrap();
            match r.read_msg::<Msg>().unwrap().0 {
                Msg::AuthChallenge { nonce } => nonce,
                other => panic!("{other:?}"),
            }
        });
        let _ = auth::client_handshake_timeout(
            &mut a,
            &k2,
            &Hello::new("c", Role::Cli),
            Duration::from_millis(100),
        );
        assert!(seen.insert(spy.join().unwrap()), "nonce repeated");
    }
}

#[test]
fn an_unbounded_timeout_means_no_deadline() {
    let key = random_key();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let k2 = key.clone();
    let server = thread::spawn(move || {
        auth::server_handshake_timeout(&mut b, &k2, &Hello::new("s", Role::Placer), Duration::MAX)
    });
    let r =
        auth::client_handshake_timeout(&mut a, &key, &Hello::new("c", Role::Cli), Duration::MAX);
    assert_eq!(r.unwrap().node, "s");
    assert_eq!(server.join().unwrap().unwrap().node, "c");
}
