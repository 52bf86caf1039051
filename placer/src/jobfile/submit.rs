//! HTCondor submit description files (`*.sub`, or any job file that is not TOML): the
//! submit language over the same keys as `job.toml`, meaning the same things.
//!
//! - `key = value` lines (case-insensitive keys, `#` comments, `\` continues a line);
//!   values are the text after `=`, trimmed. Paths may be written in double quotes.
//! - `arguments`: the new syntax in double quotes (`"a 'b c'"`, `""` a literal quote),
//!   or the old one (split on blanks). `environment`: `"A=1 B='x y'"`, or the old
//!   `A=1;B=2`.
//! - Macros: any other `name = value` defines `$(name)`, usable in every value (and
//!   `$(executable)` etc. name the keys' own values). `$(Process)`/`$(Cluster)` (and
//!   `$(ProcId)`/`$(ClusterId)`) are the job's numbers.
//! - `+Attr = value` (and `MY.Attr`): custom job attributes, accepted (mos has no ClassAds
//!   to put them in).
//! - One `queue` statement, last: `queue`, `queue N`, `queue [N] [VAR] in (a, b, ...)`
//!   (items over several lines inside the parentheses too), `queue [N] [VAR[, VAR...]]
//!   from FILE` (one item per line, fields split on commas or blanks) or `from ( ... )`.
//!   `$(Item)` is the default variable; `$(ItemIndex)` and `$(Step)` are set too.
//! - A real HTCondor command that mos does not carry out is refused with its line, unless
//!   it is in [`HARMLESS`], which only warns.

use std::collections::BTreeMap;
use std::path::Path;

use super::{macros, quantity, JobFileError, JobTemplate, Problem, DEFAULT_MAX_RETRIES, MAX_CPUS, MAX_QUEUE};

/// HTCondor commands whose effect mos does not need: accepted with a warning.
pub const HARMLESS: &[&str] = &[
    "notification",
    "notify_user",
    "batch_name",
    "description",
    "should_transfer_files",
    "when_to_transfer_output",
    "transfer_executable",
    "request_disk",
    "priority",
    "nice_user",
    "stream_output",
    "stream_error",
    "job_lease_duration",
    "leave_in_queue",
    "accounting_group",
    "accounting_group_user",
];

/// HTCondor commands mos does not carry out: refused, since the job would not do what the
/// file asks.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("requirements", "mos places by request_cpus and request_memory only"),
    ("rank", "mos places on the least loaded node"),
    ("transfer_input_files", "a mos job reads its files at home, where it was submitted: none need transferring"),
    ("transfer_output_files", "a mos job writes its files at home, where it was submitted"),
    ("transfer_checkpoint_files", "mos keeps its checkpoints itself"),
    ("getenv", "list the variables in `environment`"),
    ("periodic_remove", "no periodic expressions in mos"),
    ("periodic_hold", "no periodic expressions in mos"),
    ("periodic_release", "no periodic expressions in mos"),
    ("on_exit_remove", "no exit expressions in mos (max_retries covers retries)"),
    ("on_exit_hold", "no exit expressions in mos"),
    ("request_gpus", "mos does not place GPUs"),
    ("docker_image", "mos runs programs directly"),
    ("container_image", "mos runs programs directly"),
    ("kill_sig", "mos stops jobs with SIGKILL"),
    ("hold", "submit, then `mos hold`"),
    ("deferral_time", "no deferred starts in mos"),
    ("concurrency_limits", "no concurrency limits in mos"),
    ("max_materialize", "mos queues every job at once"),
    ("coresize", "set the core limit in the program"),
    ("output_destination", "output is written at home"),
    ("checkpoint_exit_code", "mos checkpoints transparently (see docs)"),
];

/// One logical line (continuations joined) and the line it starts on.
struct Line {
    text: String,
    line: usize,
}

fn logical_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut cur: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let piece = raw.trim_end();
        let (body, cont) = match piece.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (piece, false),
        };
        match cur.as_mut() {
            Some(c) => {
                c.text.push(' ');
                c.text.push_str(body.trim());
            }
            None => cur = Some(Line { text: body.trim().to_string(), line: i + 1 }),
        }
        if !cont {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    out
}

/// Whether `text` reads as a submit file rather than TOML: it has a `queue` statement.
pub fn looks_like_submit(text: &str) -> bool {
    logical_lines(text).iter().any(|l| {
        let t = l.text.to_ascii_lowercase();
        t == "queue" || (t.starts_with("queue") && t.as_bytes().get(5).is_some_and(|b| b.is_ascii_whitespace()) && !t[5..].trim_start().starts_with('='))
    })
}

struct Cx<'a> {
    file: &'a str,
}

impl Cx<'_> {
    fn err(&self, line: usize, problem: Problem) -> JobFileError {
        JobFileError::Invalid { file: self.file.to_owned(), line, column: 1, problem }
    }

    fn bad(&self, line: usize, key: &str, reason: impl Into<String>) -> JobFileError {
        self.err(line, Problem::BadValue { key: key.to_owned(), reason: reason.into() })
    }
}

/// The `queue` statement: how many per item, the variables, and the items.
struct Queue {
    count: u32,
    vars: Vec<String>,
    items: Vec<Vec<String>>,
}

fn parse_queue(cx: &Cx<'_>, rest: &str, line: usize, submit_dir: &Path) -> Result<Queue, JobFileError> {
    let q = |r: String| cx.bad(line, "queue", r);
    let rest = rest.trim();
    let mut count = 1u32;
    let mut tail = rest;
    let first = rest.split_whitespace().next().unwrap_or("");
    if let Ok(n) = first.parse::<u64>() {
        if n == 0 || n > u64::from(MAX_QUEUE) {
            return Err(q(format!("{n} is out of range; allowed: 1..={MAX_QUEUE}")));
        }
        count = n as u32;
        tail = rest[first.len()..].trim_start();
    }
    if tail.is_empty() {
        return Ok(Queue { count, vars: Vec::new(), items: vec![Vec::new()] });
    }
    let lower = tail.to_ascii_lowercase();
    let (vars_text, kind, source) = if let Some(i) = find_word(&lower, "in") {
        (&tail[..i], "in", tail[i + 2..].trim())
    } else if let Some(i) = find_word(&lower, "from") {
        (&tail[..i], "from", tail[i + 4..].trim())
    } else if find_word(&lower, "matching").is_some() {
        return Err(q("`queue ... matching` is not supported by mos; list the items with `in (...)` or `from FILE`".into()));
    } else {
        return Err(q(format!("cannot read `queue {rest}`: write `queue`, `queue N`, `queue [N] VAR in (a, b)` or `queue [N] VAR from FILE`")));
    };
    let mut vars: Vec<String> = vars_text.split([',', ' ']).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect();
    if vars.is_empty() {
        vars.push("Item".into());
    }
    if let Some(bad) = vars.iter().find(|v| !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(q(format!("`{bad}` is not a variable name")));
    }
    let list_text: String = if let Some(inner) = source.strip_prefix('(') {
        inner.strip_suffix(')').ok_or_else(|| q("the item list has no closing `)`".into()))?.to_string()
    } else if kind == "from" {
        let path = submit_dir.join(source.trim_matches('"'));
        std::fs::read_to_string(&path).map_err(|e| q(format!("cannot read the item file {}: {e}", path.display())))?
    } else {
        source.to_string()
    };
    let items: Vec<Vec<String>> = if kind == "in" {
        split_items(&list_text).into_iter().map(|i| vec![i]).collect()
    } else {
        list_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                if vars.len() == 1 {
                    vec![l.to_string()]
                } else {
                    let mut f: Vec<String> = l.split([',', ' ', '\t']).map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect();
                    // the last variable takes the rest of the line, as HTCondor does
                    if f.len() > vars.len() {
                        let last = f.split_off(vars.len() - 1).join(" ");
                        f.push(last);
                    }
                    f
                }
            })
            .collect()
    };
    if items.is_empty() {
        return Err(q("the item list is empty".into()));
    }
    if let Some(i) = items.iter().position(|f| f.len() < vars.len()) {
        return Err(q(format!("item {} has {} field(s) for {} variable(s)", i + 1, items[i].len(), vars.len())));
    }
    if items.len() as u64 * u64::from(count) > u64::from(MAX_QUEUE) {
        return Err(q(format!("{} jobs is more than {MAX_QUEUE}", items.len() as u64 * u64::from(count))));
    }
    Ok(Queue { count, vars, items })
}

/// The byte offset of `w` as a whole word in `s`.
fn find_word(s: &str, w: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find(w).map(|i| i + from) {
        let before = i == 0 || b[i - 1].is_ascii_whitespace() || b[i - 1] == b',';
        let after = b.get(i + w.len()).is_none_or(|c| c.is_ascii_whitespace() || *c == b'(');
        if before && after {
            return Some(i);
        }
        from = i + w.len();
    }
    None
}

fn split_items(s: &str) -> Vec<String> {
    s.split([',', '\n', ' ', '\t']).map(str::trim).filter(|x| !x.is_empty()).map(|x| x.trim_matches('"').to_string()).collect()
}

/// Expand the file's own macros in `v` (not Process/Cluster, nor the queue variables),
/// recursively; an unknown one is an error naming it.
fn expand_user(v: &str, defs: &BTreeMap<String, String>, keep: &[String], depth: u32) -> Result<String, String> {
    if depth > 20 {
        return Err("macros nest more than 20 deep (a macro that names itself?)".into());
    }
    let mut out = String::new();
    let mut rest = v;
    while let Some(at) = rest.find("$(") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at + 2]);
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let close = after.find(')').ok_or_else(|| format!("`$(` without a closing `)` in \"{v}\""))?;
        let name = &after[..close];
        let lname = name.trim().to_ascii_lowercase();
        if ["process", "procid", "cluster", "clusterid"].contains(&lname.as_str()) || keep.iter().any(|k| k.eq_ignore_ascii_case(name.trim())) {
            out.push_str(&rest[at..at + 2 + close + 1]);
        } else if let Some(d) = defs.get(&lname) {
            out.push_str(&expand_user(d, defs, keep, depth + 1)?);
        } else {
            return Err(format!("unknown macro `$({name})` in \"{v}\"; define it (`{name} = ...`) or use $(Process), $(Cluster) or a queue variable"));
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// HTCondor's new argument syntax inside its double quotes: blanks separate words,
/// single quotes group (`''` is a literal `'` inside them), `""` is a literal `"`.
fn condor_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut quoted = false;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\'' if quoted && it.peek() == Some(&'\'') => {
                it.next();
                cur.push('\'');
            }
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            '"' if it.peek() == Some(&'"') => {
                it.next();
                cur.push('"');
                started = true;
            }
            '"' => return Err("a lone `\"` inside the quoted arguments (write `\"\"` for a literal one)".into()),
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return Err("a single quote is not closed".into());
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v)
}

/// Parse a submit description file into the same template a job.toml gives; warnings
/// (harmless commands mos ignores) in the template's `warnings`.
pub fn parse(text: &str, file: &str, submit_dir: &Path) -> Result<JobTemplate, JobFileError> {
    let cx = Cx { file };
    let mut defs: BTreeMap<String, String> = BTreeMap::new();
    let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut queue: Option<(Queue, usize)> = None;
    let all = logical_lines(text);
    let mut i = 0;
    while i < all.len() {
        let l = &all[i];
        i += 1;
        let t = l.text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some((_, qline)) = &queue {
            return Err(cx.err(l.line, Problem::Syntax { message: format!("a statement after the `queue` on line {qline}: mos takes one queue statement, last in the file") }));
        }
        let lower = t.to_ascii_lowercase();
        if lower == "queue" || (lower.starts_with("queue") && lower.as_bytes()[5].is_ascii_whitespace() && !lower[5..].trim_start().starts_with('=')) {
            let mut stmt = t[5..].to_string();
            // an item list may go on over the next lines until its `)`
            if stmt.contains('(') && !stmt.contains(')') {
                while i < all.len() && !stmt.contains(')') {
                    stmt.push('\n');
                    stmt.push_str(all[i].text.trim());
                    i += 1;
                }
            }
            queue = Some((parse_queue(&cx, &stmt, l.line, submit_dir)?, l.line));
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(cx.err(l.line, Problem::Syntax { message: format!("expected `key = value` or `queue`, found `{t}` (an HTCondor submit file; a job.toml must be TOML)") }));
        };
        let key = k.trim();
        let value = v.trim().to_string();
        if key.starts_with('+') || key.to_ascii_lowercase().starts_with("my.") {
            continue; // a custom job attribute: accepted, nothing in mos reads it
        }
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(cx.err(l.line, Problem::Syntax { message: format!("`{key}` is not a key") }));
        }
        let lk = key.to_ascii_lowercase();
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(u, _)| *u == lk) {
            return Err(cx.err(l.line, Problem::BadValue { key: key.to_owned(), reason: format!("is an HTCondor command mos does not carry out: {why}") }));
        }
        if HARMLESS.contains(&lk.as_str()) {
            warnings.push(format!("{file}:{}: `{key}` has no effect in mos; ignored", l.line));
        }
        defs.insert(lk.clone(), value);
        lines_of.insert(lk, l.line);
    }
    let (queue, _) = queue.ok_or_else(|| cx.err(all.last().map_or(1, |l| l.line), Problem::Syntax { message: "no `queue` statement: nothing would be submitted".into() }))?;
    let mut keep: Vec<String> = queue.vars.clone();
    if !keep.is_empty() {
        keep.extend(["ItemIndex".to_string(), "Step".to_string()]);
    }
    let get = |k: &str| -> Result<Option<(String, usize)>, JobFileError> {
        match defs.get(k) {
            None => Ok(None),
            Some(v) => {
                let line = lines_of.get(k).copied().unwrap_or(1);
                let x = expand_user(v, &defs, &keep, 0).map_err(|r| cx.bad(line, k, r))?;
                Ok(Some((x, line)))
            }
        }
    };
    let num = |k: &str, min: u32, max: u32| -> Result<Option<u32>, JobFileError> {
        let Some((v, line)) = get(k)? else { return Ok(None) };
        let n: i64 = v.trim().parse().map_err(|_| cx.bad(line, k, format!("`{v}` is not an integer")))?;
        if n < i64::from(min) || n > i64::from(max) {
            return Err(cx.bad(line, k, format!("{n} is out of range; allowed: {min}..={max}")));
        }
        Ok(Some(n as u32))
    };
    let path = |k: &str| -> Result<Option<String>, JobFileError> {
        match get(k)? {
            None => Ok(None),
            Some((v, line)) => {
                let p = unquote(v.trim()).to_string();
                if p.is_empty() {
                    return Err(cx.bad(line, k, "is empty; give a path or leave the key out"));
                }
                Ok(Some(p))
            }
        }
    };
    let (executable, exe_line) = get("executable")?.ok_or_else(|| cx.err(1, Problem::MissingKey { key: "executable" }))?;
    let executable = unquote(executable.trim()).to_string();
    if executable.is_empty() {
        return Err(cx.bad(exe_line, "executable", "must name a program, not be empty"));
    }
    let arguments = match get("arguments")? {
        None => Vec::new(),
        Some((v, line)) => {
            let v = v.trim();
            if let Some(inner) = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                condor_words(inner).map_err(|e| cx.bad(line, "arguments", e))?
            } else {
                v.split_whitespace().map(str::to_string).collect()
            }
        }
    };
    let mut environment = BTreeMap::new();
    if let Some((v, line)) = get("environment")? {
        let v = v.trim();
        let pairs: Vec<String> = if let Some(inner) = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            condor_words(inner).map_err(|e| cx.bad(line, "environment", e))?
        } else {
            v.split(';').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
        };
        for p in pairs {
            let (n, val) = p.split_once('=').ok_or_else(|| cx.bad(line, "environment", format!("`{p}` is not NAME=VALUE")))?;
            super::check_env_name(n).map_err(|r| cx.bad(line, "environment", r))?;
            environment.insert(n.to_string(), val.to_string());
        }
    }
    let request_memory_mib = match get("request_memory")? {
        None => None,
        Some((v, line)) => Some(match v.trim().parse::<i64>() {
            Ok(n) => quantity::memory_from_integer(n),
            Err(_) => quantity::parse_memory_mib(unquote(v.trim())),
        }
        .map_err(|r| cx.bad(line, "request_memory", r))?),
    };
    let checkpoint_interval_s = match get("checkpoint_interval")? {
        None => None,
        Some((v, line)) => match v.trim().parse::<i64>() {
            Ok(n) => quantity::interval_from_integer(n),
            Err(_) => quantity::parse_interval_s(unquote(v.trim())),
        }
        .map_err(|r| cx.bad(line, "checkpoint_interval", r))?,
    };
    let vanilla = match get("universe")? {
        None => false,
        Some((v, line)) => match v.trim().to_ascii_lowercase().as_str() {
            "standard" => false,
            "vanilla" => true,
            other => return Err(cx.bad(line, "universe", format!("`{other}`: mos runs the standard and vanilla universes"))),
        },
    };
    // every string the template keeps must pass the same macro check as job.toml's, the
    // queue variables standing in for their values
    let mut per_proc: Vec<BTreeMap<String, String>> = Vec::new();
    for (idx, item) in queue.items.iter().enumerate().filter(|_| !queue.vars.is_empty()) {
        for step in 0..queue.count {
            let mut m: BTreeMap<String, String> = queue.vars.iter().map(|v| v.to_ascii_lowercase()).zip(item.iter().cloned()).collect();
            m.insert("itemindex".into(), idx.to_string());
            m.insert("step".into(), step.to_string());
            per_proc.push(m);
        }
    }
    let total = if queue.vars.is_empty() { queue.count } else { per_proc.len() as u32 };
    let t = JobTemplate {
        submit_dir: submit_dir.to_owned(),
        executable,
        arguments,
        input: path("input")?,
        output: path("output")?,
        error: path("error")?,
        log: path("log")?,
        initialdir: path("initialdir")?,
        environment,
        request_memory_mib,
        request_cpus: num("request_cpus", 1, MAX_CPUS)?.unwrap_or(1),
        checkpoint_interval_s,
        max_retries: num("max_retries", 0, u32::MAX)?.unwrap_or(DEFAULT_MAX_RETRIES),
        queue: total,
        vanilla,
        vars: per_proc,
        warnings,
    };
    for s in t.strings() {
        macros::validate(&t.with_vars(s, 0)).map_err(|r| cx.err(1, Problem::BadValue { key: "(a value)".into(), reason: r }))?;
    }
    Ok(t)
}

/// `text` with a `queue ... from FILE` item file written into it as `from ( ... )`, so that
/// the file is read where the submitter is (the placer may run on another host).
pub fn inline_item_files(text: &str, submit_dir: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim();
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("queue") && !lower.contains('(') {
            if let Some(i) = find_word(&lower, "from") {
                let file = t[i + 4..].trim().trim_matches('"');
                if let Ok(items) = std::fs::read_to_string(submit_dir.join(file)) {
                    out.push_str(&t[..i + 4]);
                    out.push_str(" (\n");
                    for l in items.lines().filter(|l| !l.trim().is_empty() && !l.contains(')')) {
                        out.push_str(l.trim());
                        out.push('\n');
                    }
                    out.push_str(")\n");
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{JobSpec, JobTemplate};
    use std::path::Path;

    fn specs(text: &str, dir: &Path) -> Vec<JobSpec> {
        JobTemplate::parse(text, "job.sub", dir).unwrap_or_else(|e| panic!("{e}")).expand(7)
    }

    #[test]
    fn a_classic_submit_file() {
        let s = specs(
            "# a comment\nUniverse   = vanilla\nExecutable = /bin/prog\nArguments  = \"-n $(Process) 'two words' \"\"q\"\"\"\nbase = run\nOutput = $(base).$(Cluster).$(Process).out\nError  = err.$(Process)\nLog    = jobs.log\nrequest_memory = 2 GB\nrequest_cpus = 2\nenvironment = \"A=1 B='x y'\"\n+ProjectName = \"mos\"\nqueue 3\n",
            Path::new("/home/u"),
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].arguments, vec!["-n", "2", "two words", "\"q\""]);
        assert_eq!(s[2].output.as_deref(), Some(Path::new("/home/u/run.7.2.out")));
        assert_eq!(s[0].request_memory_mib, Some(2048));
        assert_eq!(s[0].request_cpus, 2);
        assert_eq!(s[0].environment.get("B").map(String::as_str), Some("x y"));
        assert_eq!(s[1].log.as_deref(), Some(Path::new("/home/u/jobs.log")));
    }

    #[test]
    fn queue_in_a_list_and_from_a_file() {
        let s = specs("executable = prog\narguments = $(name) $(ItemIndex)\noutput = $(name).out\nqueue name in (alpha, beta\n  gamma)\n", Path::new("/d"));
        let args: Vec<_> = s.iter().map(|j| j.arguments.join(" ")).collect();
        assert_eq!(args, ["alpha 0", "beta 1", "gamma 2"]);
        assert_eq!((s[2].process, s[2].output.as_deref()), (2, Some(Path::new("/d/gamma.out"))));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("items.txt"), "a, 1\nb, 2\n\n").unwrap();
        let s = specs("executable = prog\narguments = $(x) $(n) $(Step)\nqueue 2 x, n from items.txt\n", dir.path());
        let args: Vec<_> = s.iter().map(|j| j.arguments.join(" ")).collect();
        assert_eq!(args, ["a 1 0", "a 1 1", "b 2 0", "b 2 1"]);
        // inlined for a placer on another host, it means the same
        let text = super::inline_item_files("executable = prog\narguments = $(x) $(n) $(Step)\nqueue 2 x, n from items.txt\n", dir.path());
        assert!(text.contains("from (\na, 1\nb, 2\n)"), "{text}");
        assert_eq!(specs(&text, Path::new("/elsewhere")).iter().map(|j| j.arguments.join(" ")).collect::<Vec<_>>(), args);
        // $(Item) by default
        let s = specs("executable = prog\narguments = $(Item)\nqueue in (x y)\n", Path::new("/d"));
        assert_eq!(s.iter().map(|j| j.arguments.join(" ")).collect::<Vec<_>>(), ["x", "y"]);
    }

    #[test]
    fn what_mos_cannot_do_is_refused_with_its_line() {
        let e = JobTemplate::parse("executable = prog\nrequirements = Arch == \"X86_64\"\nqueue\n", "j.sub", Path::new("/")).unwrap_err();
        assert_eq!((e.line(), e.key()), (Some(2), Some("requirements")));
        assert!(e.to_string().contains("does not carry out"), "{e}");
        let e = JobTemplate::parse("executable = prog\noutput = $(nope).out\nqueue\n", "j.sub", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("unknown macro `$(nope)`") && e.line() == Some(2), "{e}");
        let e = JobTemplate::parse("executable = prog\nqueue\narguments = x\n", "j.sub", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("after the `queue` on line 2"), "{e}");
        let e = JobTemplate::parse("executable = prog\n", "j.sub", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("no `queue` statement"), "{e}");
        let e = JobTemplate::parse("executable = prog\nqueue x matching (*.dat)\n", "j.sub", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("matching") && e.line() == Some(2), "{e}");
        let e = JobTemplate::parse("executable = prog\nthis is not a line\nqueue\n", "j.sub", Path::new("/")).unwrap_err();
        assert_eq!(e.line(), Some(2));
        let t = JobTemplate::parse("executable = prog\nnotification = never\nqueue\n", "j.sub", Path::new("/")).unwrap();
        assert_eq!(t.warnings(), ["j.sub:2: `notification` has no effect in mos; ignored"]);
    }

    #[test]
    fn a_submit_file_is_told_from_toml_by_its_content() {
        // not named .sub: it is not TOML, and has a queue statement
        let t = JobTemplate::parse("executable = /bin/true\nqueue 2\n", "jobs.txt", Path::new("/")).unwrap();
        assert_eq!(t.queue(), 2);
        // TOML stays TOML
        let t = JobTemplate::parse("executable = \"/bin/true\"\nqueue = 2\n", "job.toml", Path::new("/")).unwrap();
        assert_eq!(t.queue(), 2);
        // neither: the TOML error says what a job file may be
        let e = JobTemplate::parse("executable /bin/true\n", "job.toml", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("HTCondor submit file"), "{e}");
    }
}
