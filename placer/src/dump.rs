//! Human and JSON views of the job queue (`placer --dump`), in the spirit of `condor_q`.

use serde::Serialize;

use crate::db::{Db, DbError, JobRecord};

/// What `--dump --json` prints.
#[derive(Debug, Serialize)]
pub struct QueueDump {
    pub next_cluster: u64,
    pub jobs: Vec<JobRecord>,
    /// Present with `--history`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<JobRecord>>,
}

/// Reads the queue (and optionally the history) from `db` in one go.
pub fn read_queue(db: &Db, with_history: bool) -> Result<QueueDump, DbError> {
    Ok(QueueDump {
        next_cluster: db.next_cluster_id()?,
        jobs: db.list()?,
        history: if with_history {
            Some(db.history()?)
        } else {
            None
        },
    })
}

/// `condor_q`-like table: one line per job, then a summary line.
pub fn render_table(dump: &QueueDump, now_ms: u64) -> String {
    let mut out = String::new();
    render_section(&mut out, &dump.jobs, now_ms);
    let count = |st| dump.jobs.iter().filter(|j| j.state == st).count();
    use crate::db::JobState::*;
    out.push_str(&format!(
        "{} jobs; {} idle, {} running, {} held; next cluster {}\n",
        dump.jobs.len(),
        count(Idle),
        count(Running),
        count(Held),
        dump.next_cluster
    ));
    if let Some(history) = &dump.history {
        out.push_str("\nhistory:\n");
        render_section(&mut out, history, now_ms);
        out.push_str(&format!("{} finished jobs\n", history.len()));
    }
    out
}

fn render_section(out: &mut String, jobs: &[JobRecord], now_ms: u64) {
    out.push_str(&format!(
        "{:<10} {:<10} {:<19} {:>12} {:<2} {:<12} {:>4} {:>3}  {}\n",
        "ID", "OWNER", "SUBMITTED", "RUN_TIME", "ST", "NODE", "CKPT", "RST", "CMD"
    ));
    for j in jobs {
        let mut cmd = j.spec.executable.display().to_string();
        for a in &j.spec.arguments {
            cmd.push(' ');
            cmd.push_str(a);
        }
        out.push_str(&format!(
            "{:<10} {:<10} {:<19} {:>12} {:<2} {:<12} {:>4} {:>3}  {}\n",
            j.id.to_string(),
            j.owner,
            utc_datetime(j.submitted_ms),
            run_time(j.run_time_at(now_ms)),
            j.state.code(),
            j.node.as_deref().unwrap_or("-"),
            j.checkpoints,
            j.restarts,
            cmd
        ));
    }
}

/// `D+HH:MM:SS`, as condor_q prints run time.
pub fn run_time(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{}+{:02}:{:02}:{:02}",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// `YYYY-MM-DD HH:MM:SS` UTC from ms since the epoch.
pub fn utc_datetime(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::StateChange;
    use crate::id::JobId;
    use crate::jobfile::JobTemplate;
    use std::path::Path;

    #[test]
    fn dates_and_durations() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(utc_datetime(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_datetime(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(run_time(0), "0+00:00:00");
        assert_eq!(
            run_time((2 * 86_400 + 3 * 3600 + 4 * 60 + 5) * 1000 + 999),
            "2+03:04:05"
        );
    }

    #[test]
    fn table_lists_jobs_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_in(dir.path())
            .unwrap()
            .with_clock(|| 1_700_000_000_000);
        let t = JobTemplate::parse(
            "executable = \"/bin/sim\"\narguments = \"-n 3\"\nqueue = 2",
            "j",
            Path::new("/"),
        )
        .unwrap();
        db.submit("ana", &t).unwrap();
        db.set_state(
            JobId::new(1, 1),
            StateChange::Start {
                node: "node7".into(),
            },
        )
        .unwrap();
        db.set_state(JobId::new(1, 1), StateChange::Complete { exit_status: 0 })
            .unwrap();
        let text = render_table(&read_queue(&db, true).unwrap(), 1_700_000_000_000);
        assert!(
            text.contains("1.0        ana        2023-11-14 22:13:20   0+00:00:00 I  -"),
            "{text}"
        );
        assert!(text.contains("/bin/sim -n 3"), "{text}");
        assert!(
            text.contains("1 jobs; 1 idle, 0 running, 0 held; next cluster 2"),
            "{text}"
        );
        assert!(
            text.contains("1.1        ana"),
            "history lists the finished job:\n{text}"
        );
        assert!(text.contains("node7"), "{text}");
        let json = serde_json::to_value(read_queue(&db, false).unwrap()).unwrap();
        assert_eq!(json["jobs"][0]["id"]["cluster"], 1);
        assert!(json.get("history").is_none());
    }
}
