//! A cluster started from its description (`cluster.toml`): `mos node start` runs this
//! host's daemons as the file says (`shadowd --config`, `placer --config`), the `mos`
//! commands find the placer and the nodes through it, `mos node stop` ends them.

use mos_integration::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `mos node stop` when the test ends, passed or not.
struct Stop<'a>(&'a Cluster);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.mos(&["node", "stop"]);
    }
}

#[test]
fn a_cluster_runs_from_its_description() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    let h = c.home.path();
    let (pp, pa, pb) = (free_port(), free_port(), free_port());
    let desc = format!(
        "key = \"cluster.key\"\ninterval_ms = 200\n\n[placer]\naddr = \"127.0.0.1:{pp}\"\nstate_dir = \"{}\"\n\n[[node]]\nname = \"a\"\naddr = \"127.0.0.1:{pa}\"\nstate_dir = \"{}\"\n\n[[node]]\nname = \"b\"\naddr = \"127.0.0.1:{pb}\"\nspeed = 2.0\nstate_dir = \"{}\"\n",
        h.join("p").display(),
        h.join("a").display(),
        h.join("b").display()
    );
    std::fs::write(h.join("cluster.toml"), desc).unwrap();
    let up = c.mos(&["node", "start"]);
    let _stop = Stop(&c);
    up.assert_code(0, "mos node start");
    for want in ["placer  pid".to_string(), format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}")] {
        assert!(up.stdout_str().contains(&want), "{want}: {}", up.describe());
    }
    // the nodes report to the placer the file names, with the file's speeds
    poll_until(
        || {
            let st = c.json(&["status", "--json"]);
            let nodes = st.as_array().cloned().unwrap_or_default();
            nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "up") && nodes.iter().any(|n| n["node"] == "b" && n["addr"] == format!("127.0.0.1:{pb}").as_str())
        },
        || format!("both nodes up: {}", c.mos(&["status"]).stdout_str()),
    );
    // a job runs there
    let work = h.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("job.toml"), "executable = \"/bin/echo\"\narguments = \"from the description\"\noutput = \"out.txt\"\n").unwrap();
    let mut sub = c.cmd("mossubmit");
    sub.arg("job.toml").current_dir(&work);
    run("mossubmit", sub, b"").assert_code(0, "mossubmit");
    poll_until(|| std::fs::read_to_string(work.join("out.txt")).is_ok_and(|t| t == "from the description\n"), || format!("the job's output: {}", c.mos(&["q"]).stdout_str()));
    let again = c.mos(&["node", "start"]);
    assert_ne!(again.code(), Some(0), "a second start while the first runs: {}", again.describe());
    let pids: Vec<i64> = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(h.join("node.json")).unwrap()).unwrap()["daemons"].as_array().unwrap().iter().map(|d| d[1].as_i64().unwrap()).collect();
    assert_eq!(pids.len(), 3);
    // node b dies: the description says it should be there, so status lists it down
    let b = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(h.join("node.json")).unwrap()).unwrap()["daemons"].as_array().unwrap().iter().find(|d| d[0] == "b").unwrap()[1].as_i64().unwrap();
    // SAFETY: killing a daemon this test started (a node dying).
    unsafe { libc::kill(b as i32, libc::SIGKILL) };
    poll_until(
        || c.json(&["status", "--json"]).as_array().is_some_and(|a| a.iter().any(|n| n["node"] == "b" && n["state"] == "down")),
        || format!("node b listed down: {}", c.mos(&["status"]).stdout_str()),
    );
    c.mos(&["node", "stop"]).assert_code(0, "mos node stop");
    // SAFETY: signal 0 only asks whether the pid exists.
    assert!(pids.iter().all(|&p| unsafe { libc::kill(p as i32, 0) } != 0), "daemons left running: {pids:?}");
}

#[test]
fn a_bad_description_is_one_clear_error() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    std::fs::write(c.home.path().join("cluster.toml"), "key = \"cluster.key\"\n[placer]\naddr = \"127.0.0.1:1\"\n[[node]]\nname = \"a\"\naddr = \"0.0.0.0:7010\"\n").unwrap();
    let out = c.mos(&["node", "start"]);
    assert_one_line_error("mos node start", &out, 2, Some("cluster.toml"));
    assert!(out.stderr_str().contains("can reach"), "{}", out.describe());
    // the daemons say the same of a node the file does not have
    let mut d = std::process::Command::new(release_dir().join("shadowd"));
    d.args(["--node", "zz", "--config"]).arg(c.home.path().join("cluster.toml"));
    let out = run("shadowd --config", d, b"");
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr_str().contains("cluster.toml"), "{}", out.describe());
}

/// The daemons log through `tracing`: every line has its date and time, level and fields
/// (`node`, and `pid` or `job` where a line is about one); `MOS_LOG=debug` adds detail
/// (each load report); `mos cluster up` says where the logs are.
#[test]
fn daemon_logs_have_times_levels_and_fields() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    let mut up = c.cmd("mos");
    up.args(["cluster", "up", "--nodes", "1", "--no-balance", "--interval-ms", "100"]).env("MOS_LOG", "debug");
    let out = run("mos cluster up", up, b"");
    out.assert_code(0, "mos cluster up");
    let logs = c.home.path().display().to_string();
    assert!(out.stdout_str().contains(&format!("logs: {logs}/{{placer,node1}}.log")), "{}", out.describe());
    let mut r = c.cmd("mos");
    r.args(["run", "--", "/bin/true"]);
    run("mos run true", r, b"").assert_code(0, "mos run -- true");
    let node1 = std::path::Path::new(&logs).join("node1.log");
    let placer = std::path::Path::new(&logs).join("placer.log");
    poll_until(
        || std::fs::read_to_string(&node1).is_ok_and(|t| t.contains(" registered") && t.contains("load report sent")) && std::fs::read_to_string(&placer).is_ok_and(|t| t.contains("load report")),
        || format!("the logs:\n{}\n{}", std::fs::read_to_string(&node1).unwrap_or_default(), std::fs::read_to_string(&placer).unwrap_or_default()),
    );
    let text = std::fs::read_to_string(&node1).unwrap();
    let reg = text.lines().find(|l| l.contains(" registered")).unwrap();
    // 2026-12-08T04:34:52.481049Z  INFO shadowd: pid 18925 registered node="node1" pid=18925
    let (stamp, rest) = reg.split_once(' ').unwrap();
    assert!(stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'), "{reg}");
    assert!(rest.trim_start().starts_with("INFO shadowd: pid "), "{reg}");
    assert!(reg.contains("node=\"node1\"") || reg.contains("node=node1"), "{reg}");
    assert!(reg.split_whitespace().any(|w| w.starts_with("pid=")), "{reg}");
    assert!(text.lines().any(|l| l.contains(" DEBUG shadowd: load report sent")), "{text}");
    let ptext = std::fs::read_to_string(&placer).unwrap();
    assert!(ptext.lines().any(|l| l.contains(" INFO placer: node node1 is up")), "{ptext}");
    assert!(ptext.lines().any(|l| l.contains(" DEBUG placer: load report") && l.contains("run_queue=")), "{ptext}");
    c.mos(&["cluster", "down"]).assert_code(0, "mos cluster down");
}
