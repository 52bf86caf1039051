//! The daemons' logs (placer and shadowd): `tracing` to stderr, which `mos cluster up`
//! and `mos node start` send to a file per daemon. Each line has its time (UTC, RFC 3339),
//! level, module and fields: `node` for a shadowd's lines, `job` and `pid` where the
//! line is about one. `MOS_LOG` sets the filter (`info` by default; `debug`, `warn`, or
//! any `tracing-subscriber` directive such as `shadowd=debug`).

use tracing_subscriber::EnvFilter;

/// The variable that sets the filter.
pub const ENV: &str = "MOS_LOG";

/// Start logging for this process (once; later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_env(ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    // SAFETY: isatty only looks at fd 2.
    let tty = unsafe { libc::isatty(2) } == 1;
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(tty).try_init();
}

/// The id of a line that begins "job ID: " or "pid N " (`what` = "job" or "pid"), and
/// the rest of it.
pub fn split_subject<'a>(msg: &'a str, what: &str) -> (Option<&'a str>, &'a str) {
    let Some(rest) = msg.strip_prefix(what).and_then(|r| r.strip_prefix(' ')) else { return (None, msg) };
    let n = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (id, tail) = rest.split_at(n);
    let tail = match tail.strip_prefix(": ").or_else(|| tail.strip_prefix(' ')) {
        Some(t) => t,
        None if tail.is_empty() => tail,
        None => return (None, msg),
    };
    if id.is_empty() { (None, msg) } else { (Some(id), tail) }
}

/// One line of a daemon's log at `level`, with the `job` field when it begins
/// "job ID: " (the text stays whole: people and scripts look for it).
pub fn job_line(level: tracing::Level, msg: &str) {
    let (job, _) = split_subject(msg, "job");
    match (level, job) {
        (tracing::Level::WARN, Some(job)) => tracing::warn!(target: "placer", job, "{msg}"),
        (tracing::Level::WARN, None) => tracing::warn!(target: "placer", "{msg}"),
        (_, Some(job)) => tracing::info!(target: "placer", job, "{msg}"),
        (_, None) => tracing::info!(target: "placer", "{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_split_off() {
        assert_eq!(split_subject("job 3.0: terminated", "job"), (Some("3.0"), "terminated"));
        assert_eq!(split_subject("pid 77: migrated to x: y", "pid"), (Some("77"), "migrated to x: y"));
        assert_eq!(split_subject("jobs: 3", "job"), (None, "jobs: 3"));
        assert_eq!(split_subject("job x: y", "job"), (None, "job x: y"));
        assert_eq!(split_subject("pid 12 registered", "pid"), (Some("12"), "registered"));
        assert_eq!(split_subject("pid 12x", "pid"), (None, "pid 12x"));
        assert_eq!(split_subject("node a is up", "pid"), (None, "node a is up"));
    }
}
