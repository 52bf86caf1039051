//! `mos top` on a real terminal (tmux): it draws the nodes and the processes, shows a
//! process moving to another node as it happens, and quits on `q`.

use mos_integration::*;
use std::process::Command;

fn tmux(args: &[&str]) -> RunOutput {
    let mut c = Command::new("tmux");
    c.args(args);
    run("tmux", c, b"")
}

/// Kill the test's tmux session however the test ends.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
    }
}

#[test]
fn top_shows_nodes_processes_and_moves_live_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is missing: `make test` installs it (apt-get install tmux)");
    }
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    c.mos(&["cluster", "up", "--nodes", "2", "--interval-ms", "200", "--no-balance"]).assert_code(0, "mos cluster up");
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("crunch")).args(["3", "100000"]).env("MOS_HOME_NODE", "node1");
    let mut p = Proc::spawn("crunch", cmd);
    let name = format!("mostop{}", std::process::id());
    let _s = Session(name.clone());
    let top = format!("MOS_HOME={} {} top --interval-ms 200", c.home.path().display(), release_dir().join("mos").display());
    tmux(&["new-session", "-d", "-s", &name, "-x", "120", "-y", "32", &top]).assert_code(0, "tmux new-session");
    let screen = || tmux(&["capture-pane", "-p", "-t", &name]).stdout_str();
    let row_of = |s: &str| s.lines().find(|l| l.contains(&p.pid().to_string()) && l.contains("crunch")).map(str::to_string);
    poll_until(|| {
        let s = screen();
        s.contains("node1") && s.contains("node2") && s.contains("load ") && s.contains("mem ") && row_of(&s).is_some_and(|r| r.matches("node1").count() == 2)
    }, || format!("the nodes and the process at home on the screen:\n{}", screen()));
    c.mos(&["migrate", &p.pid().to_string(), "node2"]).assert_code(0, "mos migrate");
    poll_until(|| {
        let s = screen();
        row_of(&s).is_some_and(|r| r.contains("node2")) && s.contains("moved node1 -> node2")
    }, || format!("the move on the screen:\n{}", screen()));
    tmux(&["send-keys", "-t", &name, "q"]);
    poll_until(|| tmux(&["has-session", "-t", &name]).code() != Some(0), || format!("top still running after q:\n{}", screen()));
    p.kill();
}
