//! The job event log in HTCondor's user-log (ULOG) format, so HTCondor's own readers
//! (`condor_wait`, DAGMan, `htcondor2.JobEventLog`) and `mos wait` read it: one event per
//! record, `NNN (cluster.proc.subproc) YYYY-MM-DD HH:MM:SS text`, detail lines indented
//! by tabs, `...` after each. Times are local, as HTCondor writes them. Rendering is a
//! pure function; [`append`] writes one whole record per `write`.

use std::io::Write;
use std::path::Path;

use crate::id::JobId;

/// The events mos writes, with HTCondor's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// 000: queued (`host`: where it was submitted, `<addr>`).
    Submitted { host: &'a str },
    /// 001: started or restarted on `host` (`<addr>`).
    Executing { host: &'a str },
    /// 003: a checkpoint was taken.
    Checkpointed,
    /// 004: taken off its node, back in the queue (`checkpointed`: it resumes from one).
    Evicted { checkpointed: bool },
    /// 005: ended with a return value.
    Exited { code: i32 },
    /// 005: ended by a signal.
    Signaled { signal: i32 },
    /// 009: removed.
    Aborted { reason: &'a str },
    /// 012: held.
    Held { reason: &'a str },
    /// 013: released.
    Released { reason: &'a str },
}

const USAGE0: &str = "Usr 0 00:00:00, Sys 0 00:00:00";

/// One record, with its trailing `...` line.
pub fn render(ev: &Event<'_>, id: JobId, when: &str) -> String {
    let (code, text) = match ev {
        Event::Submitted { host } => (0, format!("Job submitted from host: {host}\n")),
        Event::Executing { host } => (1, format!("Job executing on host: {host}\n")),
        Event::Checkpointed => (3, format!("Job was checkpointed.\n\t{USAGE0}  -  Run Remote Usage\n\t{USAGE0}  -  Run Local Usage\n")),
        Event::Evicted { checkpointed } => (
            4,
            format!(
                "Job was evicted.\n\t({}) Job was {}checkpointed.\n\t\t{USAGE0}  -  Run Remote Usage\n\t\t{USAGE0}  -  Run Local Usage\n\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n",
                u8::from(*checkpointed),
                if *checkpointed { "" } else { "not " }
            ),
        ),
        Event::Exited { code } => (5, format!("Job terminated.\n\t(1) Normal termination (return value {code})\n{}", TERM_TAIL)),
        Event::Signaled { signal } => (5, format!("Job terminated.\n\t(0) Abnormal termination (signal {signal})\n\t(0) No core file\n{}", TERM_TAIL)),
        Event::Aborted { reason } => (9, format!("Job was aborted.\n\t{}\n", one_line(reason))),
        Event::Held { reason } => (12, format!("Job was held.\n\t{}\n\tCode 1 Subcode 0\n", one_line(reason))),
        Event::Released { reason } => (13, format!("Job was released.\n\t{}\n", one_line(reason))),
    };
    format!("{code:03} ({:03}.{:03}.000) {when} {text}...\n", id.cluster, id.proc)
}

const TERM_TAIL: &str = "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage\n\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage\n\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Remote Usage\n\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage\n\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n\t0  -  Total Bytes Sent By Job\n\t0  -  Total Bytes Received By Job\n";

/// A reason as one detail line (a record's lines are its structure).
fn one_line(s: &str) -> String {
    let t: String = s.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    if t.trim().is_empty() {
        "-".into()
    } else {
        t.trim().to_string()
    }
}

/// `unix_s` as local `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(unix_s: i64) -> String {
    // SAFETY: tm is plain data; localtime_r fills it from a valid time_t.
    let mut tm: libc::tm = unsafe { core::mem::zeroed() };
    let t = unix_s as libc::time_t;
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "1970-01-01 00:00:00".into();
    }
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Append one event for job `id` to the log at `path`, dated now.
pub fn append(path: &Path, id: JobId, ev: &Event<'_>) -> std::io::Result<()> {
    append_record(path, &record(id, ev))
}

/// The record of `ev` now (its date and time taken here and now, local time).
pub fn record(id: JobId, ev: &Event<'_>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    render(ev, id, &local_time(now))
}

/// Append a record made by [`record`].
pub fn append_record(path: &Path, rec: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // one write per record (O_APPEND): records of several writers never interleave
    f.write_all(rec.as_bytes())
}

/// One record read back (`mos wait`): its event number and job, from its header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Event number (0 submitted, 5 terminated, 9 aborted...).
    pub code: u32,
    /// The job.
    pub id: JobId,
}

/// The header lines of a ULOG text (detail lines and separators are skipped).
pub fn headers(text: &str) -> Vec<Header> {
    text.lines().filter_map(parse_header).collect()
}

fn parse_header(line: &str) -> Option<Header> {
    let (code, rest) = line.split_once(" (")?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (ids, _) = rest.split_once(')')?;
    let mut it = ids.split('.');
    let cluster = it.next()?.parse().ok()?;
    let proc = it.next()?.parse().ok()?;
    Some(Header { code: code.parse().ok()?, id: JobId { cluster, proc } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_condor_headers_details_and_separators() {
        let id = JobId { cluster: 12, proc: 3 };
        let r = render(&Event::Exited { code: 7 }, id, "2026-12-04 10:00:00");
        assert!(r.starts_with("005 (012.003.000) 2026-12-04 10:00:00 Job terminated.\n\t(1) Normal termination (return value 7)\n"), "{r}");
        assert!(r.ends_with("\t0  -  Total Bytes Received By Job\n...\n"), "{r}");
        let h = render(&Event::Held { reason: "held by\nuser" }, id, "2026-12-04 10:00:01");
        assert_eq!(h, "012 (012.003.000) 2026-12-04 10:00:01 Job was held.\n\theld by user\n\tCode 1 Subcode 0\n...\n");
        let s = render(&Event::Signaled { signal: 9 }, id, "t");
        assert!(s.contains("(0) Abnormal termination (signal 9)\n\t(0) No core file\n"), "{s}");
        let e = render(&Event::Evicted { checkpointed: false }, id, "t");
        assert!(e.contains("\t(0) Job was not checkpointed.\n"), "{e}");
    }

    #[test]
    fn headers_read_back() {
        let a = JobId { cluster: 1, proc: 0 };
        let b = JobId { cluster: 1, proc: 1 };
        let text = render(&Event::Submitted { host: "<127.0.0.1:1>" }, a, "t") + &render(&Event::Exited { code: 0 }, a, "t") + &render(&Event::Aborted { reason: "x" }, b, "t");
        assert_eq!(headers(&text), vec![Header { code: 0, id: a }, Header { code: 5, id: a }, Header { code: 9, id: b }]);
        assert!(headers("garbage\n12 (1.0.0) x\n").is_empty());
    }

    #[test]
    fn local_time_has_the_shape() {
        let t = local_time(1_796_410_320);
        assert_eq!(t.len(), 19, "{t}");
        assert_eq!(&t[4..5], "-");
    }
}
