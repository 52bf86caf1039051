//! The server: every accepted connection gets its own thread, proves the cluster key
//! (server handshake), sends one request and gets one answer (`Ack` or `Error`). A peer that
//! fails either step is logged with its address and dropped; nothing a peer sends can stop
//! the daemon from serving the others.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use proto::msg::OsBytes;
use proto::{auth, ClusterKey, FrameReader, FrameWriter, Hello, Msg, NoSigPipe, Role};

use crate::guests::Guests;
use crate::log;

/// How long a peer has to send its request once authenticated.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection thread shares.
pub struct ServerCtx {
    /// Our node name.
    pub node: String,
    /// Cluster key.
    pub key: ClusterKey,
    /// The guest table.
    pub guests: Arc<Guests>,
    /// Where images streamed to this node are kept.
    pub received_dir: std::path::PathBuf,
    /// Files processes homed here handed off before their bodies left.
    pub handoffs: Arc<crate::handoff::HandOffs>,
}

/// Accept connections forever.
pub fn serve(listener: TcpListener, ctx: Arc<ServerCtx>) -> Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let c = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("conn-{peer}"))
                    .spawn(move || handle_connection(&c, stream, peer));
                if let Err(e) = spawned {
                    log!(ctx.node, "dropped connection from {peer}: no thread for it: {e}");
                }
            }
            Err(e) => {
                // Out of fds and the like: back off instead of spinning.
                log!(ctx.node, "accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn handle_connection(ctx: &ServerCtx, mut stream: TcpStream, peer: SocketAddr) {
    let hello = Hello::new(ctx.node.clone(), Role::Shadowd);
    let who = match auth::server_handshake(&mut stream, &ctx.key, &hello) {
        Ok(who) => who,
        Err(e) => {
            log!(ctx.node, "dropped connection from {peer}: {e}");
            return;
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(REQUEST_TIMEOUT)) {
        log!(ctx.node, "dropped connection from {peer}: {e}");
        return;
    }
    let reader = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            log!(ctx.node, "dropped connection from {peer}: {e}");
            return;
        }
    };
    let mut r = FrameReader::new(reader);
    let mut w = FrameWriter::new(NoSigPipe::new(stream));
    let request: Msg = match r.read_msg() {
        Ok((m, _bulk)) => m,
        Err(e) => {
            log!(ctx.node, "dropped connection from {peer} ({} {}): bad request: {e}", who.role, who.node);
            return;
        }
    };
    let name = request.name();
    if let Msg::ShimRegister { pid, job } = request {
        // a remote process homed here: serve its file calls until it goes away
        let job = job.unwrap_or(proto::JobId(u64::from(pid)));
        let session = match crate::shadow::Session::new(std::path::Path::new("/")) {
            Ok(mut s) => {
                s.adopt(ctx.handoffs.take(job));
                s
            }
            Err(e) => {
                let _ = w.write_msg(&Msg::Error { msg: e }, &[]);
                return;
            }
        };
        if w.write_msg(&Msg::ShimRegistered { job }, &[]).is_err() {
            return;
        }
        log!(ctx.node, "shadowing job {job} (pid {pid} on {})", who.node);
        let _ = r.get_ref().set_read_timeout(None);
        if let Err(e) = crate::shadow::serve(&mut r, &mut w, session) {
            log!(ctx.node, "shadow session of job {job} from {peer} ended: {e}");
        }
        return;
    }
    let answer = match request {
        // an image for a job that will be restarted here (no shared disk needed)
        Msg::ImageBegin { job, size, .. } => {
            let dest = ctx.received_dir.join(format!("job{job}.mosimg"));
            match proto::stream::recv_image(&mut r, size, &dest) {
                Ok(size) => Msg::ImageReceived { job, size, path: OsBytes::from(dest.as_path()) },
                Err(e) => Msg::Error { msg: format!("shadowd {}: image of job {job}: {e}", ctx.node) },
            }
        }
        request => handle_request(ctx, request),
    };
    if let Msg::Error { msg } = &answer {
        log!(ctx.node, "{name} from {peer} ({} {}) refused: {msg}", who.role, who.node);
    }
    if let Err(e) = w.write_msg(&answer, &[]) {
        log!(ctx.node, "cannot answer {name} to {peer}: {e}");
    }
}

/// One request, one answer.
pub fn handle_request(ctx: &ServerCtx, request: Msg) -> Msg {
    let result = match request {
        Msg::PlaceJob { job, spec } => ctx.guests.place(job, spec).map(|_| ()),
        Msg::Vacate { job } => ctx.guests.vacate(job).map(|_| ()),
        Msg::Kill { job, signal } => ctx.guests.kill(job, signal),
        other => {
            return Msg::Error {
                msg: format!("shadowd {} does not handle {}", ctx.node, other.name()),
            }
        }
    };
    match result {
        Ok(()) => Msg::Ack,
        Err(e) => Msg::Error {
            msg: format!("shadowd {}: {e}", ctx.node),
        },
    }
}
