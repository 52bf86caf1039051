//! The body's control connection (DESIGN §2): signals for the body go out on it (or wait
//! for it), the body says on it when it leaves a node, and its end without that notice is
//! the loss of the body, told to the stub. Never carries calls.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use proto::rsys::{self as wire, Ctl, Hello};
use proto::Msg;

use super::{Session, LEAVING_GRACE};
use crate::{lock, log};

#[derive(Default)]
pub(super) struct Control {
    pub(super) conn: Option<(u64, TcpStream)>,
    pub(super) next_conn: u64,
    pub(super) node: String,
    pub(super) body_pid: u32,
    pub(super) pending: Vec<u32>,
    pub(super) leaving: Option<Instant>,
}

impl Session {
    /// Deliver `signal` to the body now, or when its control connection arrives.
    pub fn signal(&self, signal: u32) {
        let mut c = lock(&self.ctl);
        let rec = Ctl { what: wire::CTL_SIGNAL, arg: signal }.encode();
        if let Some((_, conn)) = c.conn.as_mut() {
            if (&*conn).write_all(&rec).is_ok() {
                log!(self.node, "pid {}: signal {signal} sent to the body", self.vpid);
                return;
            }
        }
        log!(self.node, "pid {}: signal {signal} kept until the body connects", self.vpid);
        c.pending.push(signal);
    }

    /// Periodic check (from the stub's thread): a body that left and never arrived is lost.
    pub fn tick(&self) {
        let (lost, node) = {
            let c = lock(&self.ctl);
            (c.conn.is_none() && c.leaving.is_some_and(|t| t.elapsed() >= LEAVING_GRACE), c.node.clone())
        };
        if lost {
            let reason = if node.is_empty() {
                format!("the body never arrived at its new node (within {} s)", LEAVING_GRACE.as_secs())
            } else {
                format!("the body left node {node} and did not arrive anywhere within {} s", LEAVING_GRACE.as_secs())
            };
            self.tell_stub(Msg::BodyLost { reason });
        }
    }
}

pub(super) fn control(s: &Arc<Session>, stream: TcpStream, hello: &Hello, peer: &str) {
    let node_name = hello.node_name();
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log!(s.node, "rsys: pid {}: control connection from {peer}: {e}", s.vpid);
            return;
        }
    };
    let id = {
        let mut c = lock(&s.ctl);
        if s.closed.load(Ordering::SeqCst) {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
        for sig in std::mem::take(&mut c.pending) {
            if (&writer).write_all(&Ctl { what: wire::CTL_SIGNAL, arg: sig }.encode()).is_err() {
                c.pending.push(sig);
            }
        }
        if let Some((_, old)) = c.conn.take() {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        c.next_conn += 1;
        let id = c.next_conn;
        c.conn = Some((id, writer));
        c.node = node_name.clone();
        c.body_pid = hello.body_pid;
        c.leaving = None;
        id
    };
    log!(s.node, "pid {}: body is on node {node_name} as pid {} ({peer})", s.vpid, hello.body_pid);
    let mut r = stream;
    let mut b = [0u8; wire::CTL_LEN];
    let why = loop {
        match r.read_exact(&mut b) {
            Ok(()) => {
                let rec = Ctl::decode(&b);
                if rec.what == wire::CTL_LEAVING {
                    lock(&s.ctl).leaving = Some(Instant::now());
                    log!(s.node, "pid {}: body leaving node {node_name}", s.vpid);
                } else {
                    log!(s.node, "pid {}: ignoring control record {} from {peer}", s.vpid, rec.what);
                }
            }
            Err(e) => break e,
        }
    };
    let lost = {
        let mut c = lock(&s.ctl);
        if c.conn.as_ref().is_some_and(|(cid, _)| *cid == id) {
            c.conn = None;
            c.leaving.is_none()
        } else {
            false // replaced by the body's next connection
        }
    };
    if lost && !s.closed.load(Ordering::SeqCst) {
        let reason = if why.kind() == io::ErrorKind::UnexpectedEof { "connection closed".to_string() } else { why.to_string() };
        s.tell_stub(Msg::BodyLost { reason: format!("the body on node {node_name} was lost: {reason}") });
    }
}
