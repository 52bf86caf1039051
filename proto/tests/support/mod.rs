//! A real authenticated echo server on 127.0.0.1, and the client side of it, for the
//! integration tests. The server reports every handshake's outcome on a channel.

#![allow(dead_code)] // each test file uses a different part of it

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use proto::auth::{self, AuthError, ClusterKey, PeerInfo};
use proto::{FrameError, FrameReader, FrameWriter, Hello, Msg, Role};

/// How long a test waits for the server's report before declaring it lost.
pub const REPORT_WAIT: Duration = Duration::from_secs(10);

/// How connections are handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One at a time, on the accepting thread: a slow peer delays the next one.
    Sequential,
    /// One thread per connection.
    ThreadPerConnection,
}

pub struct EchoServer {
    pub addr: SocketAddr,
    pub results: Receiver<Result<PeerInfo, AuthError>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(key: ClusterKey, handshake_timeout: Duration, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, results) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let key = Arc::new(key);
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                // An accept error concerns that one connection only: keep accepting.
                let Ok(stream) = conn else { continue };
                let (key, tx) = (key.clone(), tx.clone());
                match mode {
                    Mode::Sequential => serve(stream, &key, handshake_timeout, &tx),
                    Mode::ThreadPerConnection => {
                        thread::spawn(move || serve(stream, &key, handshake_timeout, &tx));
                    }
                }
            }
        });
        EchoServer {
            addr,
            results,
            stop,
            thread: Some(thread),
        }
    }

    /// The next handshake outcome the server reported.
    pub fn next_result(&self) -> Result<PeerInfo, AuthError> {
        self.results
            .recv_timeout(REPORT_WAIT)
            .expect("server reported no handshake result in time")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    key: &ClusterKey,
    timeout: Duration,
    tx: &Sender<Result<PeerInfo, AuthError>>,
) {
    let hello = Hello::new("server-node", Role::Shadowd);
    let result = auth::server_handshake_timeout(&mut stream, key, &hello, timeout);
    let ok = result.is_ok();
    let _ = tx.send(result);
    if !ok {
        return; // dropped: the connection closes
    }
    // Authenticated: echo every frame back until the peer leaves. The timeout only keeps a
    // forgotten test client from pinning the thread.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(w) = stream.try_clone() else { return };
    let mut r = FrameReader::new(stream);
    let mut w = FrameWriter::new(w);
    loop {
        let (m, bulk): (Msg, Vec<u8>) = match r.read_msg() {
            Ok(x) => x,
            Err(FrameError::Closed) | Err(_) => return,
        };
        if w.write_msg(&m, &bulk).is_err() {
            return;
        }
    }
}

/// A client that holds the key: handshake, then a reader and a writer on the connection.
pub struct Client {
    pub peer: PeerInfo,
    pub r: FrameReader<TcpStream>,
    pub w: FrameWriter<TcpStream>,
}

pub fn connect(addr: SocketAddr, key: &ClusterKey, name: &str) -> Result<Client, AuthError> {
    let mut s = TcpStream::connect(addr).map_err(AuthError::Io)?;
    let peer = auth::client_handshake_timeout(
        &mut s,
        key,
        &Hello::new(name, Role::Cli),
        Duration::from_secs(5),
    )?;
    let w = s.try_clone().map_err(AuthError::Io)?;
    Ok(Client {
        peer,
        r: FrameReader::new(s),
        w: FrameWriter::new(w),
    })
}

impl Client {
    /// Send a bulk-carrying message and check that the same comes back.
    pub fn echo_round_trip(&mut self, payload: &[u8]) {
        let m = Msg::ImageChunk {
            len: payload.len() as u32,
        };
        self.w.write_msg(&m, payload).expect("write echo");
        let (got, bulk): (Msg, Vec<u8>) = self.r.read_msg().expect("read echo");
        assert_eq!(got, m);
        assert!(bulk == payload, "echoed bulk differs");
        self.w.write_msg(&Msg::Ack, &[]).expect("write ack");
        let (got, bulk): (Msg, Vec<u8>) = self.r.read_msg().expect("read ack");
        assert_eq!(got, Msg::Ack);
        assert!(bulk.is_empty());
    }
}

pub fn random_key() -> ClusterKey {
    ClusterKey::generate().expect("random key")
}
