//! The `placer` binary: help, errors, and `--dump` while another process holds the queue
//! open for writing.

use std::path::Path;
use std::process::{Command, Output};

use placer::db::{Db, StateChange};
use placer::id::JobId;
use placer::jobfile::JobTemplate;

fn placer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_placer"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run placer")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_describes_the_options() {
    let out = placer(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for opt in ["--state-dir", "--dump", "--json", "--history"] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
}

#[test]
fn errors_are_one_actionable_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = placer(&["--state-dir", dir.path().to_str().unwrap(), "--dump"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("does not exist") && err.contains("--state-dir"),
        "{err}"
    );
    let out = placer(&["--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--dump"));
}

#[test]
fn dump_reads_while_the_writer_keeps_the_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_in(dir.path()).unwrap();
    let t = JobTemplate::parse(
        "executable = \"/bin/sim\"\narguments = \"--seed $(Process)\"\nqueue = 3",
        "job.toml",
        Path::new("/"),
    )
    .unwrap();
    db.submit("ana", &t).unwrap();
    db.set_state(
        JobId::new(1, 1),
        StateChange::Start {
            node: "node3".into(),
        },
    )
    .unwrap();
    db.set_state(
        JobId::new(1, 2),
        StateChange::Start {
            node: "node4".into(),
        },
    )
    .unwrap();
    db.set_state(JobId::new(1, 2), StateChange::Complete { exit_status: 0 })
        .unwrap();
    let state_dir = dir.path().to_str().unwrap();

    let out = placer(&["--state-dir", state_dir, "--dump"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("/bin/sim --seed 0"), "{table}");
    assert!(table.contains("node3"), "{table}");
    assert!(
        table.contains("2 jobs; 1 idle, 1 running, 0 held; next cluster 2"),
        "{table}"
    );

    // The writer keeps working while readers come and go.
    db.submit("bob", &t).unwrap();
    let out = placer(&["--state-dir", state_dir, "--dump", "--json", "--history"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 5);
    assert_eq!(v["history"].as_array().unwrap().len(), 1);
    assert_eq!(v["history"][0]["state"], "Completed");
    assert_eq!(v["next_cluster"], 3);
}
