//! A process under the shim is a candidate for load balancing at the node where it
//! starts: its manager registers it with that node's shadowd (`Msg::RegisterProcess`
//! over the shadowd's `shadow.sock`), which then reports its CPU use, memory and age to
//! the balancer (DESIGN §9). The node's socket is `MOS_SHADOW_SOCK`; `mos run` sets it
//! (with `MOS_NO_MIGRATE=1` for `--no-migrate`), so everything its program execs
//! registers too. Without it, or without a shadowd there, nothing changes: the process
//! runs as it would, at home.

use proto::Msg;

/// How long the shadowd may take to answer (the manager waits; the program does not).
const ANSWER_MS: i32 = 2000;

/// Set in a forked child: it is checkpointable, but not (yet) a balancing candidate of
/// its own (issue 21: a tree's members moving one by one).
static FORKED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// This process is a forked child (see [`FORKED`]).
pub fn forked_child() {
    FORKED.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Register this process with the node's shadowd, if one is named. Manager thread, once,
/// at start-up (a body restarted elsewhere is its home's, and never registers there).
pub fn with_node() {
    if FORKED.load(core::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Some(sock) = std::env::var(crate::config::SHADOW_SOCK).ok().filter(|s| !s.is_empty()) else { return };
    if crate::remote::went_away() {
        return; // a batch job placed away from home: its home knows where it is
    }
    let no_migrate = crate::config::flag(crate::config::NO_MIGRATE);
    let pid = crate::identity::real_pid() as u32;
    match ask(&sock, &Msg::RegisterProcess { pid, no_migrate }) {
        Ok(()) => {}
        Err(e) => crate::log::log(&format!("not registered for load balancing: {e}")),
    }
}

fn ask(sock: &str, m: &Msg) -> Result<(), String> {
    let s = crate::migrate::connect_local(sock, "the node's shadowd")?;
    let r = crate::migrate::send_msg(s, m).and_then(|()| crate::migrate::recv_msg(s, ANSWER_MS));
    // SAFETY: closing our own socket.
    unsafe { libc::close(s) };
    match r? {
        Some(Msg::Ack) => Ok(()),
        Some(Msg::Error { msg }) => Err(format!("the node's shadowd refused: {msg}")),
        Some(other) => Err(format!("unexpected answer {}", other.name())),
        None => Err("the node's shadowd closed the connection".into()),
    }
}
