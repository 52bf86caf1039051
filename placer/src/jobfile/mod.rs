//! Job files: HTCondor-flavoured `job.toml` -> one [`JobSpec`] per queued process.
//!
//! Keys mean what they mean in an HTCondor submit file (see [`KNOWN_KEYS`]). Keys are
//! case-insensitive, as in HTCondor. Parsing is all-or-nothing: the first problem (in file
//! order) is returned with its line, column and key, and nothing is queued.
//!
//! Paths: `initialdir` resolves against the submit directory; `input`, `output`, `error`
//! and `log` resolve against `initialdir`; `executable` resolves against the submit
//! directory (HTCondor's rule: the program is named from where `mossubmit` runs, not from
//! where the job runs). `initialdir` is also the job's working directory. Resolution is
//! lexical (no filesystem access): the files may exist only on the home node.
//!
//! `$(Process)` and `$(Cluster)` expand in every string-valued key (paths, arguments,
//! environment values); numbers with units are quantities, not strings, and take no macros.

mod macros;
mod quantity;
pub mod submit;
mod words;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use quantity::{parse_interval_s, parse_memory_mib, MAX_INTERVAL_S, MAX_MEMORY_MIB};
pub use words::{split_words, SplitError};

/// Every key a job file may contain.
pub const KNOWN_KEYS: &[&str] = &[
    "executable",
    "arguments",
    "input",
    "output",
    "error",
    "log",
    "initialdir",
    "environment",
    "request_memory",
    "request_cpus",
    "checkpoint_interval",
    "max_retries",
    "queue",
    "universe",
];

/// `max_retries` when the file does not say.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Largest `queue` count accepted in one file.
pub const MAX_QUEUE: u32 = 1_000_000;
/// Largest `request_cpus` accepted.
pub const MAX_CPUS: u32 = 4096;

/// One queued process, fully expanded and resolved: what the placer stores and runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub cluster: u64,
    /// `$(Process)`: 0..queue.
    pub process: u32,
    pub executable: PathBuf,
    /// argv\[1..\], already split.
    pub arguments: Vec<String>,
    /// stdin; `None` = /dev/null.
    pub input: Option<PathBuf>,
    /// stdout; `None` = /dev/null.
    pub output: Option<PathBuf>,
    /// stderr; `None` = /dev/null.
    pub error: Option<PathBuf>,
    /// Job event log (HTCondor's user log); `None` = none.
    pub log: Option<PathBuf>,
    /// Working directory of the job.
    pub initialdir: PathBuf,
    pub environment: BTreeMap<String, String>,
    /// `None` = not stated: placement treats the job as needing no reserved memory.
    pub request_memory_mib: Option<u64>,
    pub request_cpus: u32,
    /// Periodic checkpoint interval; `None` = off.
    pub checkpoint_interval_s: Option<u64>,
    pub max_retries: u32,
}

/// A job file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    #[error("cannot read job file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {problem}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        problem: Problem,
    },
}

impl JobFileError {
    /// 1-based line of the problem, if it is in the file's text.
    pub fn line(&self) -> Option<usize> {
        match self {
            JobFileError::Invalid { line, .. } => Some(*line),
            JobFileError::Read { .. } => None,
        }
    }

    /// The key at fault, if any.
    pub fn key(&self) -> Option<&str> {
        self.problem().and_then(Problem::key)
    }

    pub fn problem(&self) -> Option<&Problem> {
        match self {
            JobFileError::Invalid { problem, .. } => Some(problem),
            JobFileError::Read { .. } => None,
        }
    }
}

/// What is wrong at a place in a job file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("TOML syntax error: {message}")]
    Syntax { message: String },
    #[error("unknown key `{key}`{}", suggestion_text(*.suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<&'static str>,
    },
    #[error("`{key}` is given twice (first at line {first_line}); keys are case-insensitive")]
    DuplicateKey { key: String, first_line: usize },
    #[error("`{key}` must be {expected}, not {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("required key `{key}` is missing; add e.g. `{key} = \"/path/to/program\"`")]
    MissingKey { key: &'static str },
    #[error("`{key}`: {reason}")]
    BadValue { key: String, reason: String },
}

impl Problem {
    pub fn key(&self) -> Option<&str> {
        match self {
            Problem::Syntax { .. } => None,
            Problem::UnknownKey { key, .. }
            | Problem::DuplicateKey { key, .. }
            | Problem::WrongType { key, .. }
            | Problem::BadValue { key, .. } => Some(key),
            Problem::MissingKey { key } => Some(key),
        }
    }
}

fn suggestion_text(s: Option<&'static str>) -> String {
    match s {
        Some(k) => format!("; did you mean `{k}`?"),
        None => format!("; known keys: {}", KNOWN_KEYS.join(", ")),
    }
}

/// A validated job file, before `$(Process)`/`$(Cluster)` expansion. Expanding cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTemplate {
    submit_dir: PathBuf,
    executable: String,
    arguments: Vec<String>,
    input: Option<String>,
    output: Option<String>,
    error: Option<String>,
    log: Option<String>,
    initialdir: Option<String>,
    environment: BTreeMap<String, String>,
    request_memory_mib: Option<u64>,
    request_cpus: u32,
    checkpoint_interval_s: Option<u64>,
    max_retries: u32,
    queue: u32,
    /// HTCondor's universe: `standard` (default) runs the job with its files at its home
    /// node through the shadow, migratable, no fork/exec (as Condor's standard universe);
    /// `vanilla` opens its files where it runs and lets it fork and exec.
    vanilla: bool,
    /// A submit file's queue variables, one map per process (lower-case names); empty
    /// when it has none (and for job.toml).
    vars: Vec<BTreeMap<String, String>>,
    /// What mos ignores in the file (harmless HTCondor commands), one line each.
    warnings: Vec<String>,
}

impl JobTemplate {
    /// `universe = "vanilla"`: files where the job runs, fork and exec allowed.
    pub fn is_vanilla(&self) -> bool {
        self.vanilla
    }

    /// Add (or replace) one environment variable of every job of the template.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.environment.insert(key.to_string(), value.to_string());
    }

    /// What mos ignores in the file, one line each (say them to the submitter).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every string of the template that macros expand in.
    fn strings(&self) -> Vec<&str> {
        let mut v = vec![self.executable.as_str()];
        v.extend(self.arguments.iter().map(String::as_str));
        v.extend([&self.input, &self.output, &self.error, &self.log, &self.initialdir].into_iter().flatten().map(String::as_str));
        v.extend(self.environment.values().map(String::as_str));
        v
    }

    /// `s` with process `process`'s queue variables substituted (`$(name)`, any case).
    fn with_vars(&self, s: &str, process: u32) -> String {
        let Some(vars) = self.vars.get(process as usize) else { return s.to_string() };
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find("$(") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at + 2]);
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            match after.find(')') {
                Some(close) => match vars.get(&after[..close].trim().to_ascii_lowercase()) {
                    Some(v) => {
                        out.push_str(v);
                        rest = &after[close + 1..];
                    }
                    None => {
                        out.push_str("$(");
                        rest = after;
                    }
                },
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Parses and expands a job file in one step: `Ok` holds `queue` specs, `Err` queues nothing.
pub fn parse_job_file(
    text: &str,
    file_label: &str,
    submit_dir: &Path,
    cluster: u64,
) -> Result<Vec<JobSpec>, JobFileError> {
    Ok(JobTemplate::parse(text, file_label, submit_dir)?.expand(cluster))
}

impl JobTemplate {
    /// Reads and validates a job file. `submit_dir` should be absolute (the submitter's cwd).
    pub fn load(path: &Path, submit_dir: &Path) -> Result<Self, JobFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), submit_dir)
    }

    /// Validates job-file text: a job.toml, or an HTCondor submit description file (named
    /// `*.sub`, or any text that is not TOML and has a `queue` statement; see
    /// [`submit`]). `file_label` names the file in error messages.
    pub fn parse(text: &str, file_label: &str, submit_dir: &Path) -> Result<Self, JobFileError> {
        let lower = file_label.to_ascii_lowercase();
        if [".sub", ".submit", ".condor", ".jdl"].iter().any(|x| lower.ends_with(x)) {
            return submit::parse(text, file_label, submit_dir);
        }
        match Self::parse_toml(text, file_label, submit_dir) {
            Err(e) if matches!(e.problem(), Some(Problem::Syntax { .. })) && submit::looks_like_submit(text) => submit::parse(text, file_label, submit_dir),
            Err(JobFileError::Invalid { file, line, column, problem: Problem::Syntax { message } }) => Err(JobFileError::Invalid {
                file,
                line,
                column,
                problem: Problem::Syntax { message: format!("{message} (a job file is TOML, like job.toml, or an HTCondor submit file with a `queue` statement)") },
            }),
            r => r,
        }
    }

    fn parse_toml(text: &str, file_label: &str, submit_dir: &Path) -> Result<Self, JobFileError> {
        let cx = Cx {
            text,
            file: file_label,
        };
        let doc = DeTable::parse(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            cx.err(
                at,
                Problem::Syntax {
                    message: e.message().trim().to_owned(),
                },
            )
        })?;
        let mut entries: Vec<_> = doc.get_ref().iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);

        let mut t = JobTemplate {
            submit_dir: submit_dir.to_owned(),
            executable: String::new(),
            arguments: Vec::new(),
            input: None,
            output: None,
            error: None,
            log: None,
            initialdir: None,
            environment: BTreeMap::new(),
            request_memory_mib: None,
            request_cpus: 1,
            checkpoint_interval_s: None,
            max_retries: DEFAULT_MAX_RETRIES,
            vanilla: false,
            queue: 1,
            vars: Vec::new(),
            warnings: Vec::new(),
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut have_executable = false;
        for (k, v) in entries {
            let key: &str = k.get_ref();
            let canonical = key.to_ascii_lowercase();
            let at = k.span().start;
            if let Some(&first_line) = seen.get(&canonical) {
                return Err(cx.err(
                    at,
                    Problem::DuplicateKey {
                        key: key.to_owned(),
                        first_line,
                    },
                ));
            }
            seen.insert(canonical.clone(), cx.line_col(at).0);
            match canonical.as_str() {
                "executable" => {
                    let s = cx.string(key, v)?;
                    if s.trim().is_empty() {
                        return Err(cx.bad(key, v, "must name a program, not be empty"));
                    }
                    t.executable = s;
                    have_executable = true;
                }
                "arguments" => t.arguments = cx.arguments(key, v)?,
                "input" => t.input = Some(cx.path(key, v)?),
                "output" => t.output = Some(cx.path(key, v)?),
                "error" => t.error = Some(cx.path(key, v)?),
                "log" => t.log = Some(cx.path(key, v)?),
                "initialdir" => t.initialdir = Some(cx.path(key, v)?),
                "environment" => t.environment = cx.environment(key, v)?,
                "request_memory" => t.request_memory_mib = Some(cx.memory(key, v)?),
                "request_cpus" => t.request_cpus = cx.int_in(key, v, 1, MAX_CPUS)?,
                "checkpoint_interval" => t.checkpoint_interval_s = cx.interval(key, v)?,
                "max_retries" => t.max_retries = cx.int_in(key, v, 0, u32::MAX)?,
                "queue" => t.queue = cx.int_in(key, v, 1, MAX_QUEUE)?,
                "universe" => {
                    t.vanilla = match cx.string(key, v)?.as_str() {
                        "standard" => false,
                        "vanilla" => true,
                        _ => return Err(cx.bad(key, v, "must be \"standard\" or \"vanilla\"")),
                    }
                }
                _ => {
                    return Err(cx.err(
                        at,
                        Problem::UnknownKey {
                            key: key.to_owned(),
                            suggestion: closest_key(&canonical),
                        },
                    ))
                }
            }
        }
        if !have_executable {
            return Err(cx.err(0, Problem::MissingKey { key: "executable" }));
        }
        Ok(t)
    }

    /// How many processes this file queues.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// One spec per process, with `$(Process)` = 0..queue and `$(Cluster)` = `cluster`.
    pub fn expand(&self, cluster: u64) -> Vec<JobSpec> {
        (0..self.queue)
            .map(|p| self.expand_one(cluster, p))
            .collect()
    }

    fn expand_one(&self, cluster: u64, process: u32) -> JobSpec {
        let x = |s: &str| macros::expand(&self.with_vars(s, process), cluster, process);
        let initialdir = resolve(
            &self.submit_dir,
            &x(self.initialdir.as_deref().unwrap_or(".")),
        );
        let in_dir = |s: &Option<String>| s.as_deref().map(|p| resolve(&initialdir, &x(p)));
        JobSpec {
            cluster,
            process,
            executable: resolve(&self.submit_dir, &x(&self.executable)),
            arguments: self.arguments.iter().map(|a| x(a)).collect(),
            input: in_dir(&self.input),
            output: in_dir(&self.output),
            error: in_dir(&self.error),
            log: in_dir(&self.log),
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), x(v)))
                .collect(),
            request_memory_mib: self.request_memory_mib,
            request_cpus: self.request_cpus,
            checkpoint_interval_s: self.checkpoint_interval_s,
            max_retries: self.max_retries,
            initialdir,
        }
    }
}

/// Joins `p` onto `base` unless absolute, dropping `.` components (lexically: `..` is kept,
/// since resolving it would need the real filesystem and its symlinks).
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The known key within edit distance 2 of `key`, if exactly one is closest.
fn closest_key(key: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for &k in KNOWN_KEYS {
        let d = edit_distance(key, k);
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parsing context: the text (for line numbers) and the file's name.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
}

type Val<'i> = Spanned<DeValue<'i>>;

impl Cx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let bytes = &self.text.as_bytes()[..offset.min(self.text.len())];
        let line = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        (line, offset.min(self.text.len()) - line_start + 1)
    }

    fn err(&self, offset: usize, problem: Problem) -> JobFileError {
        let (line, column) = self.line_col(offset);
        JobFileError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            problem,
        }
    }

    fn bad(&self, key: &str, v: &Val<'_>, reason: impl Into<String>) -> JobFileError {
        self.err(
            v.span().start,
            Problem::BadValue {
                key: key.to_owned(),
                reason: reason.into(),
            },
        )
    }

    fn wrong_type(&self, key: &str, v: &Val<'_>, expected: &'static str) -> JobFileError {
        self.err(
            v.span().start,
            Problem::WrongType {
                key: key.to_owned(),
                expected,
                found: v.get_ref().type_str(),
            },
        )
    }

    /// A plain string (no macro check).
    fn raw_string<'v>(&self, key: &str, v: &'v Val<'_>) -> Result<&'v str, JobFileError> {
        match v.get_ref() {
            DeValue::String(s) => {
                if s.contains('\0') {
                    return Err(self.bad(
                        key,
                        v,
                        "contains a NUL character, which no program can receive",
                    ));
                }
                Ok(s)
            }
            _ => Err(self.wrong_type(key, v, "a string")),
        }
    }

    /// A string whose macros are valid.
    fn string(&self, key: &str, v: &Val<'_>) -> Result<String, JobFileError> {
        let s = self.raw_string(key, v)?;
        macros::validate(s).map_err(|r| self.bad(key, v, r))?;
        Ok(s.to_owned())
    }

    fn path(&self, key: &str, v: &Val<'_>) -> Result<String, JobFileError> {
        let s = self.string(key, v)?;
        if s.trim().is_empty() {
            return Err(self.bad(key, v, "is empty; give a path or leave the key out"));
        }
        Ok(s)
    }

    fn arguments(&self, key: &str, v: &Val<'_>) -> Result<Vec<String>, JobFileError> {
        match v.get_ref() {
            DeValue::String(_) => {
                let s = self.string(key, v)?;
                words::split_words(&s).map_err(|e| self.bad(key, v, e.to_string()))
            }
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(&format!("{key}[{i}]"), item))
                .collect(),
            _ => Err(self.wrong_type(
                key,
                v,
                "a string (split like a shell) or an array of strings",
            )),
        }
    }

    fn environment(
        &self,
        key: &str,
        v: &Val<'_>,
    ) -> Result<BTreeMap<String, String>, JobFileError> {
        let mut env = BTreeMap::new();
        match v.get_ref() {
            DeValue::Table(table) => {
                let mut entries: Vec<_> = table.iter().collect();
                entries.sort_by_key(|(k, _)| k.span().start);
                for (name, value) in entries {
                    let full = format!("{key}.{}", name.get_ref());
                    check_env_name(name.get_ref()).map_err(|r| {
                        self.err(
                            name.span().start,
                            Problem::BadValue {
                                key: full.clone(),
                                reason: r,
                            },
                        )
                    })?;
                    let value = self.string(&full, value)?;
                    env.insert(name.get_ref().to_string(), value);
                }
            }
            DeValue::String(_) => {
                let s = self.string(key, v)?;
                let words = words::split_words(&s).map_err(|e| self.bad(key, v, e.to_string()))?;
                for word in words {
                    let Some((name, value)) = word.split_once('=') else {
                        return Err(self.bad(
                            key,
                            v,
                            format!("`{word}` is not NAME=VALUE; write e.g. \"A=1 B='two words'\""),
                        ));
                    };
                    check_env_name(name).map_err(|r| self.bad(key, v, r))?;
                    env.insert(name.to_owned(), value.to_owned());
                }
            }
            _ => {
                return Err(self.wrong_type(
                    key,
                    v,
                    "a table of strings ([environment] NAME = \"value\") or a string \"A=1 B=2\"",
                ))
            }
        }
        Ok(env)
    }

    fn integer(&self, key: &str, v: &Val<'_>) -> Result<i64, JobFileError> {
        match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| self.bad(key, v, "integer out of range")),
            _ => Err(self.wrong_type(key, v, "an integer")),
        }
    }

    fn int_in(&self, key: &str, v: &Val<'_>, min: u32, max: u32) -> Result<u32, JobFileError> {
        let n = self.integer(key, v)?;
        if n < i64::from(min) || n > i64::from(max) {
            return Err(self.bad(
                key,
                v,
                format!("{n} is out of range; allowed: {min}..={max}"),
            ));
        }
        Ok(n as u32)
    }

    fn memory(&self, key: &str, v: &Val<'_>) -> Result<u64, JobFileError> {
        let r = match v.get_ref() {
            DeValue::Integer(_) => quantity::memory_from_integer(self.integer(key, v)?),
            DeValue::String(s) => quantity::parse_memory_mib(s),
            _ => {
                return Err(self.wrong_type(key, v, "an integer (MiB) or a string like \"2 GiB\""))
            }
        };
        r.map_err(|reason| self.bad(key, v, reason))
    }

    fn interval(&self, key: &str, v: &Val<'_>) -> Result<Option<u64>, JobFileError> {
        let r = match v.get_ref() {
            DeValue::Integer(_) => quantity::interval_from_integer(self.integer(key, v)?),
            DeValue::String(s) => quantity::parse_interval_s(s),
            _ => {
                return Err(self.wrong_type(
                    key,
                    v,
                    "an integer (seconds) or a string like \"10m\"",
                ))
            }
        };
        r.map_err(|reason| self.bad(key, v, reason))
    }
}

pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an environment variable needs a name".to_owned());
    }
    if name.contains(['=', '\0']) || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{name}` is not a usable environment variable name (no `=`, blanks or NUL)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
