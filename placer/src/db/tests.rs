use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::jobfile::JobTemplate;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicU64::new(1_000)),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(DB_FILE_NAME)
    }

    fn open(&self) -> Db {
        let c = self.clock.clone();
        Db::open(&self.path())
            .unwrap()
            .with_clock(move || c.load(Ordering::SeqCst))
    }

    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }
}

fn template(text: &str) -> JobTemplate {
    JobTemplate::parse(text, "job.toml", Path::new("/home/u")).unwrap()
}

fn submit(db: &Db, queue: u32) -> u64 {
    db.submit(
        "ana",
        &template(&format!(
            "executable = \"sim\"\noutput = \"out.$(Cluster).$(Process)\"\nqueue = {queue}"
        )),
    )
    .unwrap()
}

fn start(db: &Db, id: JobId, node: &str) {
    db.set_state(id, StateChange::Start { node: node.into() })
        .unwrap();
}

fn kinds(db: &Db, id: JobId) -> Vec<EventKind> {
    db.events(id).unwrap().into_iter().map(|e| e.kind).collect()
}

#[test]
fn submit_numbers_clusters_from_one_and_expands_with_the_real_id() {
    let f = Fixture::new();
    let db = f.open();
    assert_eq!(db.next_cluster_id().unwrap(), 1);
    assert_eq!(submit(&db, 3), 1);
    assert_eq!(submit(&db, 1), 2);
    let jobs = db.list().unwrap();
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    assert_eq!(ids, ["1.0", "1.1", "1.2", "2.0"]);
    assert!(jobs
        .iter()
        .all(|j| j.state == JobState::Idle && j.owner == "ana" && j.submitted_ms == 1_000));
    assert_eq!(jobs[2].spec.output, Some(PathBuf::from("/home/u/out.1.2")));
    assert_eq!(jobs[3].spec.output, Some(PathBuf::from("/home/u/out.2.0")));
    let c = db.cluster(1).unwrap().unwrap();
    assert_eq!(
        (c.owner.as_str(), c.procs, c.submitted_ms),
        ("ana", 3, 1_000)
    );
    assert_eq!(db.cluster(9).unwrap(), None);
    assert_eq!(
        kinds(&db, JobId::new(1, 1)),
        [EventKind::Submitted {
            owner: "ana".into()
        }]
    );
}

#[test]
fn get_finds_active_and_finished_jobs() {
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 2);
    let id = JobId::new(1, 1);
    assert_eq!(db.get(id).unwrap().unwrap().state, JobState::Idle);
    start(&db, id, "n1");
    db.set_state(id, StateChange::Complete { exit_status: 0 })
        .unwrap();
    assert_eq!(db.get(id).unwrap().unwrap().state, JobState::Completed);
    assert_eq!(db.get(JobId::new(7, 0)).unwrap(), None);
}

#[test]
fn lifecycle_accounts_run_time_nodes_and_events() {
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 1);
    let id = JobId::new(1, 0);
    start(&db, id, "n1");
    f.advance(500);
    assert_eq!(
        db.set_state(id, StateChange::Move { node: "n2".into() })
            .unwrap(),
        JobState::Running
    );
    f.advance(500);
    let r = db.get(id).unwrap().unwrap();
    assert_eq!(
        (r.state, r.node.as_deref(), r.run_time_at(2_000)),
        (JobState::Running, Some("n2"), 1_000)
    );
    let st = db
        .set_state(
            id,
            StateChange::Requeue {
                reason: "vacated for its owner".into(),
                restart: false,
            },
        )
        .unwrap();
    assert_eq!(st, JobState::Idle);
    let r = db.get(id).unwrap().unwrap();
    assert_eq!(
        (r.run_time_ms, r.running_since_ms, r.restarts),
        (1_000, None, 0)
    );
    f.advance(100);
    start(&db, id, "n3");
    f.advance(250);
    assert_eq!(
        db.set_state(id, StateChange::Complete { exit_status: 3 })
            .unwrap(),
        JobState::Completed
    );

    assert!(db.list().unwrap().is_empty());
    let h = db.history().unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].exit_status, h[0].run_time_ms, h[0].state_since_ms),
        (Some(3), 1_250, 2_350)
    );
    assert_eq!(
        kinds(&db, id),
        [
            EventKind::Submitted {
                owner: "ana".into()
            },
            EventKind::Started { node: "n1".into() },
            EventKind::Migrated {
                from: "n1".into(),
                to: "n2".into()
            },
            EventKind::Requeued {
                reason: "vacated for its owner".into(),
                restart: false
            },
            EventKind::Started { node: "n3".into() },
            EventKind::Completed { exit_status: 3 },
        ]
    );
    let times: Vec<u64> = db.events(id).unwrap().iter().map(|e| e.time_ms).collect();
    assert_eq!(times, [1_000, 1_000, 1_500, 2_000, 2_100, 2_350]);
}

#[test]
fn invalid_transitions_are_refused_and_change_nothing() {
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 1);
    let id = JobId::new(1, 0);
    let before = db.get(id).unwrap();
    let e = db
        .set_state(id, StateChange::Complete { exit_status: 0 })
        .unwrap_err();
    assert!(
        matches!(
            e,
            DbError::InvalidTransition {
                from: JobState::Idle,
                action: "complete",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "job 1.0 is Idle: cannot complete it (only when Running)"
    );
    assert!(matches!(
        db.release(id).unwrap_err(),
        DbError::InvalidTransition { .. }
    ));
    assert!(matches!(
        db.set_state(id, StateChange::Move { node: "x".into() })
            .unwrap_err(),
        DbError::InvalidTransition { .. }
    ));
    start(&db, id, "n1");
    assert!(matches!(
        db.set_state(id, StateChange::Start { node: "n2".into() })
            .unwrap_err(),
        DbError::InvalidTransition {
            from: JobState::Running,
            ..
        }
    ));
    db.remove(id, "user asked").unwrap();
    let e = db.remove(id, "again").unwrap_err();
    assert!(
        matches!(
            e,
            DbError::InvalidTransition {
                from: JobState::Removed,
                ..
            }
        ),
        "{e}"
    );
    let e = db
        .record_checkpoint(id, Path::new("/ck"), true)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DbError::InvalidTransition {
                from: JobState::Removed,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(db.history().unwrap().len(), 1);
    assert_ne!(db.get(id).unwrap(), before);
    let e = db.hold(JobId::new(5, 5), "x").unwrap_err();
    assert!(matches!(e, DbError::NoSuchJob(_)));
    assert_eq!(e.to_string(), "no job 5.5 in the queue or its history");
}

#[test]
fn hold_release_remove() {
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 2);
    let (a, b) = (JobId::new(1, 0), JobId::new(1, 1));
    start(&db, a, "n1");
    f.advance(300);
    db.hold(a, "owner wants it paused").unwrap();
    let r = db.get(a).unwrap().unwrap();
    assert_eq!(
        (r.state, r.run_time_ms, r.running_since_ms),
        (JobState::Held, 300, None)
    );
    assert_eq!(r.reason.as_deref(), Some("owner wants it paused"));
    db.release(a).unwrap();
    let r = db.get(a).unwrap().unwrap();
    assert_eq!((r.state, r.reason), (JobState::Idle, None));
    db.hold(b, "bad input").unwrap();
    db.remove(b, "rm by ana").unwrap();
    let h = db.history().unwrap();
    assert_eq!(
        (h[0].id, h[0].state, h[0].reason.as_deref()),
        (b, JobState::Removed, Some("rm by ana"))
    );
    assert_eq!(db.list().unwrap().len(), 1);
}

#[test]
fn failed_runs_count_against_max_retries_then_hold() {
    let f = Fixture::new();
    let db = f.open();
    db.submit("ana", &template("executable = \"x\"\nmax_retries = 1"))
        .unwrap();
    let id = JobId::new(1, 0);
    let lost = || StateChange::Requeue {
        reason: "node n1 stopped reporting".into(),
        restart: true,
    };
    start(&db, id, "n1");
    assert_eq!(db.set_state(id, lost()).unwrap(), JobState::Idle);
    start(&db, id, "n1");
    assert_eq!(db.set_state(id, lost()).unwrap(), JobState::Held);
    let r = db.get(id).unwrap().unwrap();
    assert_eq!(r.restarts, 2);
    assert!(
        r.reason.as_deref().unwrap().contains("max_retries = 1"),
        "{:?}",
        r.reason
    );
    assert!(matches!(
        kinds(&db, id).last(),
        Some(EventKind::Held { .. })
    ));
}

#[test]
fn only_complete_checkpoints_become_the_restart_point() {
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 1);
    let id = JobId::new(1, 0);
    start(&db, id, "n1");
    assert_eq!(
        db.record_checkpoint(id, Path::new("/ck/1"), true).unwrap(),
        CheckpointOutcome::Recorded { previous: None }
    );
    assert_eq!(
        db.record_checkpoint(id, Path::new("/ck/2"), false).unwrap(),
        CheckpointOutcome::Ignored
    );
    let r = db.get(id).unwrap().unwrap();
    assert_eq!(
        (r.last_checkpoint.as_deref(), r.checkpoints),
        (Some(Path::new("/ck/1")), 1)
    );
    assert_eq!(
        db.record_checkpoint(id, Path::new("/ck/3"), true).unwrap(),
        CheckpointOutcome::Recorded {
            previous: Some("/ck/1".into())
        }
    );
    let r = db.get(id).unwrap().unwrap();
    assert_eq!(
        (r.last_checkpoint.as_deref(), r.checkpoints),
        (Some(Path::new("/ck/3")), 2)
    );
    let ev = kinds(&db, id);
    assert_eq!(
        ev[ev.len() - 2],
        EventKind::CheckpointIgnored {
            path: "/ck/2".into()
        }
    );
}

#[test]
fn a_mutation_that_cannot_be_stored_changes_nothing() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 1);
    let id = JobId::new(1, 0);
    db.record_checkpoint(id, Path::new("/ck/good"), true)
        .unwrap();
    let before = (db.get(id).unwrap(), db.events(id).unwrap());
    let not_utf8 = Path::new(std::ffi::OsStr::from_bytes(b"/ck/\xff"));
    let e = db.record_checkpoint(id, not_utf8, true).unwrap_err();
    assert!(matches!(e, DbError::Encode { .. }), "{e}");
    assert_eq!((db.get(id).unwrap(), db.events(id).unwrap()), before);
}

#[test]
fn a_rejected_submission_queues_nothing_and_keeps_the_cluster_id() {
    let f = Fixture::new();
    let db = f.open();
    let t = template("executable = \"x\"\nqueue = 2");
    let e = db.submit_with("ana", |c| t.expand(c + 1)).unwrap_err();
    assert!(
        matches!(e, DbError::BadSubmission { cluster: 1, .. }),
        "{e}"
    );
    let e = db
        .submit_with("ana", |c| {
            let mut v = t.expand(c);
            v[1].process = 0;
            v
        })
        .unwrap_err();
    assert!(matches!(e, DbError::BadSubmission { .. }), "{e}");
    assert!(matches!(
        db.submit_with("ana", |_| Vec::new()).unwrap_err(),
        DbError::EmptySubmission
    ));
    assert!(db.list().unwrap().is_empty());
    assert_eq!(db.next_cluster_id().unwrap(), 1);
    assert_eq!(db.cluster(1).unwrap(), None);
    assert!(db.events(JobId::new(1, 0)).unwrap().is_empty());
}

#[test]
fn reopening_after_a_restart_loses_nothing() {
    let f = Fixture::new();
    let (jobs, history, events, next) = {
        let db = f.open();
        submit(&db, 3);
        submit(&db, 2);
        start(&db, JobId::new(1, 0), "n1");
        db.record_checkpoint(JobId::new(1, 0), Path::new("/ck/a"), true)
            .unwrap();
        start(&db, JobId::new(1, 1), "n2");
        db.set_state(JobId::new(1, 1), StateChange::Complete { exit_status: 0 })
            .unwrap();
        db.hold(JobId::new(2, 1), "x").unwrap();
        db.remove(JobId::new(1, 2), "y").unwrap();
        let snapshot = (
            db.list().unwrap(),
            db.history().unwrap(),
            db.events(JobId::new(1, 0)).unwrap(),
            db.next_cluster_id().unwrap(),
        );
        drop(db); // the placer stops
        snapshot
    };
    let db = f.open();
    assert_eq!(db.list().unwrap(), jobs);
    assert_eq!(db.history().unwrap(), history);
    assert_eq!(db.events(JobId::new(1, 0)).unwrap(), events);
    assert_eq!(db.next_cluster_id().unwrap(), next);
    assert_eq!(submit(&db, 1), 3, "cluster ids continue");
    // Event sequence numbers continue too: no event is overwritten.
    let seqs: Vec<u64> = db
        .events(JobId::new(3, 0))
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(seqs[0] > events.last().unwrap().seq);
}

#[test]
fn readers_see_whole_transactions_while_a_writer_works() {
    let f = Fixture::new();
    let db = f.open();
    const CLUSTERS: u64 = 40;
    const PER: u32 = 5;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for _ in 0..CLUSTERS {
                submit(&db, PER);
            }
        });
        let mut reads = 0;
        let mut last = 0;
        while !writer.is_finished() || reads == 0 {
            let jobs = db.list().unwrap();
            assert_eq!(
                jobs.len() % PER as usize,
                0,
                "a reader saw half a submission"
            );
            assert!(jobs.len() >= last, "a reader went back in time");
            last = jobs.len();
            reads += 1;
        }
        writer.join().unwrap();
    });
    assert_eq!(
        db.list().unwrap().len(),
        (CLUSTERS * u64::from(PER)) as usize
    );
}

#[test]
fn a_read_snapshot_is_stable_under_later_writes() {
    let f = Fixture::new();
    let db = f.open();
    submit(&db, 1);
    let Handle::Write(raw) = &db.handle else {
        unreachable!()
    };
    let snapshot = raw.begin_read().unwrap();
    submit(&db, 1);
    let t = snapshot.open_table(JOBS).unwrap();
    assert_eq!(
        redb::ReadableTableMetadata::len(&t).unwrap(),
        1,
        "old snapshot"
    );
    assert_eq!(db.list().unwrap().len(), 2, "new reads see the commit");
}

#[test]
fn read_only_handle_reads_and_refuses_changes() {
    let f = Fixture::new();
    {
        let db = f.open();
        submit(&db, 2);
    }
    let ro = Db::open_read_only(&f.path()).unwrap();
    assert_eq!(ro.list().unwrap().len(), 2);
    let e = ro.hold(JobId::new(1, 0), "x").unwrap_err();
    assert!(matches!(e, DbError::ReadOnly { .. }), "{e}");
    let e = ro
        .submit("ana", &template("executable = \"x\""))
        .unwrap_err();
    assert!(matches!(e, DbError::ReadOnly { .. }));
    let e = Db::open_read_only(&f.dir.path().join("nope.redb")).unwrap_err();
    assert!(matches!(e, DbError::Missing { .. }));
    assert!(e.to_string().contains("--state-dir"), "{e}");
}

#[test]
fn open_in_creates_the_state_dir() {
    let f = Fixture::new();
    let dir = f.dir.path().join("a/b");
    let db = Db::open_in(&dir).unwrap();
    assert_eq!(db.path(), dir.join(DB_FILE_NAME));
    assert!(db.path().exists());
}

#[test]
fn a_file_with_another_schema_is_refused() {
    let f = Fixture::new();
    {
        let db = redb::Database::create(f.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA, 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Db::open(&f.path()).unwrap_err();
    assert!(matches!(e, DbError::Schema { found: 99, .. }), "{e}");
    let e = Db::open_read_only(&f.path()).unwrap_err();
    assert!(matches!(e, DbError::Schema { found: 99, .. }), "{e}");
}

#[test]
fn an_unreadable_record_is_reported_with_its_job() {
    let f = Fixture::new();
    {
        let db = f.open();
        submit(&db, 1);
        let Handle::Write(raw) = &db.handle else {
            unreachable!()
        };
        let txn = raw.begin_write().unwrap();
        txn.open_table(JOBS)
            .unwrap()
            .insert((1, 0), [RECORD_VERSION + 1, 0, 0].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let db = f.open();
    let e = db.list().unwrap_err();
    assert!(
        matches!(
            e,
            DbError::Corrupt {
                source: DecodeError::Version(2),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("job 1.0"), "{e}");
}

#[test]
fn records_refuse_unknown_versions_and_garbage() {
    let bytes = records::encode(&ClusterRecord {
        cluster: 1,
        owner: "a".into(),
        submitted_ms: 2,
        procs: 3,
    })
    .unwrap();
    assert_eq!(bytes[0], RECORD_VERSION);
    let back: ClusterRecord = records::decode(&bytes).unwrap();
    assert_eq!(back.procs, 3);
    assert_eq!(
        records::decode::<ClusterRecord>(&[]),
        Err(DecodeError::Empty)
    );
    assert_eq!(
        records::decode::<ClusterRecord>(&[7, 1]),
        Err(DecodeError::Version(7))
    );
    assert!(matches!(
        records::decode::<ClusterRecord>(&[RECORD_VERSION, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn state_codes_and_event_text() {
    let codes: String = [
        JobState::Idle,
        JobState::Running,
        JobState::Held,
        JobState::Completed,
        JobState::Removed,
    ]
    .iter()
    .map(|s| s.code())
    .collect();
    assert_eq!(codes, "IRHCX");
    assert_eq!(
        EventKind::Requeued {
            reason: "node lost".into(),
            restart: true
        }
        .to_string(),
        "requeued (counts as a restart): node lost"
    );
}

#[test]
fn a_second_writer_is_refused_with_a_clear_error() {
    let f = Fixture::new();
    let _first = f.open();
    let e = Db::open(&f.path()).unwrap_err();
    assert!(matches!(e, DbError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("one placer per state dir"), "{e}");
}
