//! Checkpoints of guests: periodic ones, the one that vacates a job (checkpoint, then
//! exit), and publishing an image (streamed to the job's home, or its path reported). One
//! `mos ckpt` of a guest at a time; a failed checkpoint leaves the job running.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::msg::OsBytes;
use proto::{JobId, Msg};

use super::{Guest, GuestError, Guests, Vacate};
use crate::{lock, log};

/// How long a `mos ckpt` may take before it is abandoned.
const CKPT_TIMEOUT: Duration = Duration::from_secs(120);

impl Guests {
    /// Checkpoint every `every` until the guest exits or is vacated.
    pub(super) fn periodic_checkpoints(&self, g: Arc<Guest>, every: Duration) {
        loop {
            let deadline = Instant::now() + every;
            {
                let mut life = lock(&g.life);
                loop {
                    // A vacate under way may still fail (and the job go on): keep waiting.
                    if life.exited || life.vacate == Vacate::Done {
                        return;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    life = g
                        .changed
                        .wait_timeout(life, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let _one_at_a_time = lock(&g.ckpt);
            {
                let life = lock(&g.life);
                if life.exited || life.vacate == Vacate::Done {
                    return;
                }
                if life.vacate == Vacate::InProgress {
                    continue;
                }
            }
            match self.checkpoint(&g, false) {
                Ok(bytes) => self.publish(&g, bytes),
                Err(e) => log!(self.cfg.node, "periodic checkpoint: {e}"),
            }
        }
    }

    /// Run `mos ckpt` on the guest; the image's size on success.
    fn checkpoint(&self, g: &Guest, exit: bool) -> Result<u64, GuestError> {
        let fail = |msg: String| GuestError::Checkpoint {
            job: g.job,
            pid: g.pid,
            msg,
        };
        let mos = self.cfg.mos.clone();
        let mut cmd = Command::new(&mos);
        cmd.arg("ckpt").arg(g.pid.to_string());
        if exit {
            cmd.arg("--exit");
        }
        cmd.arg("-o")
            .arg(&g.image)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = run_with_timeout(cmd, CKPT_TIMEOUT)
            .map_err(|e| fail(format!("cannot run {}: {e}", mos.display())))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let text = text.trim();
            return Err(fail(if text.is_empty() {
                format!("mos ckpt failed ({})", out.status)
            } else {
                text.to_string()
            }));
        }
        let meta = fs::metadata(&g.image)
            .map_err(|e| fail(format!("mos ckpt succeeded but {}: {e}", g.image.display())))?;
        Ok(meta.len())
    }

    /// Checkpoint the job and stop it. Returns once the image is complete; the job's
    /// `Vacated` status follows when it has exited. On failure the job keeps running.
    pub fn vacate(&self, job: JobId) -> Result<PathBuf, GuestError> {
        let g = lock(&self.table)
            .get(&job)
            .cloned()
            .ok_or(GuestError::UnknownJob(job))?;
        {
            let mut life = lock(&g.life);
            if life.exited {
                return Err(GuestError::Busy {
                    job,
                    reason: "it is exiting",
                });
            }
            if life.vacate != Vacate::None {
                return Err(GuestError::Busy {
                    job,
                    reason: "a vacate is already under way",
                });
            }
            life.vacate = Vacate::InProgress;
            g.changed.notify_all();
        }
        let result = {
            let _one_at_a_time = lock(&g.ckpt);
            self.checkpoint(&g, true)
        };
        let mut life = lock(&g.life);
        let out = match result {
            Ok(bytes) => {
                // Before the watcher may report Vacated: the image is home first.
                self.publish(&g, bytes);
                life.vacate = Vacate::Done;
                log!(self.cfg.node, "job {job}: vacated to {} ({bytes} bytes)", g.image.display());
                Ok(g.image.clone())
            }
            Err(e) => {
                life.vacate = Vacate::None;
                Err(e)
            }
        };
        g.changed.notify_all();
        out
    }

    /// A complete image: stream it to the job's home (which records it), or report its
    /// local path. A failed stream is logged; the home keeps its previous image.
    fn publish(&self, g: &Guest, bytes: u64) {
        let Some(addr) = &g.home_addr else {
            self.report(checkpointed(g, bytes));
            return;
        };
        match self.stream_home(g, addr) {
            Ok(n) => log!(self.cfg.node, "job {}: image ({n} bytes) streamed home to {addr}", g.job),
            Err(e) => log!(self.cfg.node, "job {}: cannot stream the image home to {addr}: {e}", g.job),
        }
    }

    fn stream_home(&self, g: &Guest, addr: &str) -> Result<u64, String> {
        let key = self.cfg.key.as_ref().ok_or("no cluster key")?;
        let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("bad address: {e}"))?;
        let c = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let mut s = proto::NoSigPipe::new(c);
        let hello = proto::Hello::new(self.cfg.node.clone(), proto::Role::Shadowd);
        proto::auth::client_handshake(&mut s, key, &hello).map_err(|e| e.to_string())?;
        let c = s.into_inner();
        let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
        let mut w = proto::FrameWriter::new(proto::NoSigPipe::new(c.try_clone().map_err(|e| e.to_string())?));
        let n = proto::stream::send_image(&mut w, g.job, &g.home, &g.image).map_err(|e| e.to_string())?;
        match proto::FrameReader::new(c).read_msg::<Msg>() {
            Ok((Msg::ImageReceived { size, .. }, _)) if size == n => Ok(n),
            Ok((Msg::Error { msg }, _)) => Err(msg),
            Ok((m, _)) => Err(format!("unexpected answer {}", m.name())),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn checkpointed(g: &Guest, bytes: u64) -> Msg {
    Msg::Checkpointed {
        job: g.job,
        path: OsBytes::from(g.image.as_path()),
        bytes,
    }
}

/// Output of a finished helper command.
struct HelperOutput {
    status: ExitStatus,
    stderr: Vec<u8>,
}

/// Run `cmd` (stderr piped, and short), killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> io::Result<HelperOutput> {
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr).ok();
    }
    Ok(HelperOutput { status, stderr })
}
