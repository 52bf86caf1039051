use super::*;

const SUBMIT: &str = "/home/ana/exp";

fn parse(text: &str) -> Result<Vec<JobSpec>, JobFileError> {
    parse_job_file(text, "job.toml", Path::new(SUBMIT), 41)
}

fn one(text: &str) -> JobSpec {
    let mut v = parse(text).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn problem(text: &str) -> (usize, Problem) {
    match parse(text) {
        Err(JobFileError::Invalid { line, problem, .. }) => (line, problem),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let s = one(r#"executable = "sim""#);
    assert_eq!(s.cluster, 41);
    assert_eq!(s.process, 0);
    assert_eq!(s.executable, PathBuf::from("/home/ana/exp/sim"));
    assert_eq!(s.initialdir, PathBuf::from(SUBMIT));
    assert!(s.arguments.is_empty());
    assert_eq!(
        (s.input, s.output, s.error, s.log),
        (None, None, None, None)
    );
    assert!(s.environment.is_empty());
    assert_eq!(s.request_memory_mib, None);
    assert_eq!(s.request_cpus, 1);
    assert_eq!(s.checkpoint_interval_s, None);
    assert_eq!(s.max_retries, DEFAULT_MAX_RETRIES);
}

#[test]
fn full_file_with_every_key() {
    let text = r#"
executable = "/usr/bin/sim"
arguments = "--seed $(Process) --name 'run $(Cluster).$(Process)'"
input = "in/$(Process).dat"
output = "out.$(Process)"
error = "err.$(Process)"
log = "/var/log/sim.log"
initialdir = "runs/$(Process)"
request_memory = "2 GiB"
request_cpus = 4
checkpoint_interval = "5m"
max_retries = 0
queue = 3

[environment]
OMP_NUM_THREADS = "4"
RUN = "$(Cluster)-$(Process)"
"#;
    let specs = parse(text).unwrap();
    assert_eq!(specs.len(), 3);
    for (p, s) in specs.iter().enumerate() {
        let dir = PathBuf::from(format!("/home/ana/exp/runs/{p}"));
        assert_eq!(s.process, p as u32);
        assert_eq!(s.cluster, 41);
        assert_eq!(s.executable, PathBuf::from("/usr/bin/sim"));
        assert_eq!(
            s.arguments,
            vec![
                "--seed".to_string(),
                p.to_string(),
                "--name".into(),
                format!("run 41.{p}")
            ]
        );
        assert_eq!(s.input, Some(dir.join(format!("in/{p}.dat"))));
        assert_eq!(s.output, Some(dir.join(format!("out.{p}"))));
        assert_eq!(s.error, Some(dir.join(format!("err.{p}"))));
        assert_eq!(s.log, Some(PathBuf::from("/var/log/sim.log")));
        assert_eq!(s.initialdir, dir);
        assert_eq!(s.environment["OMP_NUM_THREADS"], "4");
        assert_eq!(s.environment["RUN"], format!("41-{p}"));
        assert_eq!(s.request_memory_mib, Some(2048));
        assert_eq!(s.request_cpus, 4);
        assert_eq!(s.checkpoint_interval_s, Some(300));
        assert_eq!(s.max_retries, 0);
    }
}

#[test]
fn cluster_id_comes_from_the_caller() {
    let t = JobTemplate::parse(
        r#"executable = "a"
output = "o.$(Cluster).$(Process)""#,
        "j",
        Path::new("/s"),
    )
    .unwrap();
    assert_eq!(t.queue(), 1);
    assert_eq!(t.expand(7)[0].output, Some(PathBuf::from("/s/o.7.0")));
    assert_eq!(t.expand(8)[0].output, Some(PathBuf::from("/s/o.8.0")));
}

#[test]
fn paths_resolve_like_htcondor() {
    // Relative initialdir -> submit dir; files -> initialdir; executable -> submit dir.
    let s = one(r#"
executable = "./bin/sim"
initialdir = "data"
output = "./o"
input = "../shared/in"
"#);
    assert_eq!(s.executable, PathBuf::from("/home/ana/exp/bin/sim"));
    assert_eq!(s.initialdir, PathBuf::from("/home/ana/exp/data"));
    assert_eq!(s.output, Some(PathBuf::from("/home/ana/exp/data/o")));
    assert_eq!(
        s.input,
        Some(PathBuf::from("/home/ana/exp/data/../shared/in"))
    );
    // Absolute initialdir wins over the submit dir.
    let s = one(r#"
executable = "sim"
initialdir = "/scratch/x"
error = "e"
"#);
    assert_eq!(s.initialdir, PathBuf::from("/scratch/x"));
    assert_eq!(s.error, Some(PathBuf::from("/scratch/x/e")));
    assert_eq!(s.executable, PathBuf::from("/home/ana/exp/sim"));
}

#[test]
fn arguments_split_like_a_shell_or_come_as_an_array() {
    let s = one(r#"executable = "x"
arguments = "a 'b c' \"d \\\"e\\\"\" f\\ g ''""#);
    assert_eq!(s.arguments, ["a", "b c", "d \"e\"", "f g", ""]);
    let s = one(r#"executable = "x"
arguments = ["one two", "$(Process)"]"#);
    assert_eq!(s.arguments, ["one two", "0"]);
}

#[test]
fn environment_as_string() {
    let s = one(r#"executable = "x"
environment = "A=1 B='two words' C= D=x=y E=$(Process)""#);
    let env: Vec<_> = s
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("A", "1"),
            ("B", "two words"),
            ("C", ""),
            ("D", "x=y"),
            ("E", "0")
        ]
    );
}

#[test]
fn environment_as_inline_table() {
    let s = one(r#"executable = "x"
environment = { PATH = "/bin", HOME = "/h" }"#);
    assert_eq!(s.environment.len(), 2);
    assert_eq!(s.environment["PATH"], "/bin");
}

#[test]
fn memory_and_interval_forms() {
    let s = one("executable = \"x\"\nrequest_memory = 512\ncheckpoint_interval = 90");
    assert_eq!(
        (s.request_memory_mib, s.checkpoint_interval_s),
        (Some(512), Some(90))
    );
    let s = one("executable = \"x\"\nrequest_memory = \"512MB\"\ncheckpoint_interval = \"10s\"");
    assert_eq!(
        (s.request_memory_mib, s.checkpoint_interval_s),
        (Some(512), Some(10))
    );
    let s = one("executable = \"x\"\ncheckpoint_interval = 0");
    assert_eq!(
        s.checkpoint_interval_s, None,
        "0 turns periodic checkpoints off"
    );
}

#[test]
fn keys_are_case_insensitive() {
    let s = one("Executable = \"x\"\nRequest_CPUs = 2\nQUEUE = 1");
    assert_eq!(s.request_cpus, 2);
}

#[test]
fn queue_makes_n_jobs_numbered_from_zero() {
    let specs = parse("executable = \"x\"\nqueue = 5").unwrap();
    let procs: Vec<u32> = specs.iter().map(|s| s.process).collect();
    assert_eq!(procs, [0, 1, 2, 3, 4]);
}

#[test]
fn literal_dollar_paren_survives() {
    let s = one(r#"executable = "sh"
arguments = "-c 'echo $$(date)'""#);
    assert_eq!(s.arguments, ["-c", "echo $(date)"]);
}

// ---- errors: each names the key and the line, and queues nothing ----

#[test]
fn syntax_error_has_a_line() {
    let (line, p) = problem("executable = \"x\"\n\nqueue = = 3\n");
    assert_eq!(line, 3);
    assert!(matches!(p, Problem::Syntax { .. }), "{p:?}");
}

#[test]
fn unknown_key_names_key_line_and_suggestion() {
    let (line, p) = problem("executable = \"x\"\nqueue = 2\nargumnets = \"a\"\n");
    assert_eq!(line, 3);
    assert_eq!(
        p,
        Problem::UnknownKey {
            key: "argumnets".into(),
            suggestion: Some("arguments")
        }
    );
    let (line, p) = problem("notification = \"never\"\nexecutable = \"x\"");
    assert_eq!(line, 1);
    assert!(matches!(
        p,
        Problem::UnknownKey {
            suggestion: None,
            ..
        }
    ));
    assert!(p.to_string().contains("known keys: executable"), "{p}");
}

#[test]
fn duplicate_key_differing_in_case() {
    let (line, p) = problem("executable = \"x\"\nExecutable = \"y\"");
    assert_eq!(line, 2);
    assert_eq!(
        p,
        Problem::DuplicateKey {
            key: "Executable".into(),
            first_line: 1
        }
    );
}

#[test]
fn missing_executable() {
    let (_, p) = problem("queue = 2\n");
    assert_eq!(p, Problem::MissingKey { key: "executable" });
    let (_, p) = problem("");
    assert_eq!(p, Problem::MissingKey { key: "executable" });
}

#[test]
fn wrong_types_name_key_line_and_types() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("executable = 3", 1, "executable", "integer"),
        (
            "executable = \"x\"\n\noutput = true",
            3,
            "output",
            "boolean",
        ),
        (
            "executable = \"x\"\nrequest_cpus = \"4\"",
            2,
            "request_cpus",
            "string",
        ),
        ("executable = \"x\"\nqueue = 2.5", 2, "queue", "float"),
        (
            "executable = \"x\"\nrequest_memory = 1.5",
            2,
            "request_memory",
            "float",
        ),
        (
            "executable = \"x\"\ncheckpoint_interval = [1]",
            2,
            "checkpoint_interval",
            "array",
        ),
        (
            "executable = \"x\"\nenvironment = 5",
            2,
            "environment",
            "integer",
        ),
        (
            "executable = \"x\"\narguments = { a = 1 }",
            2,
            "arguments",
            "table",
        ),
        (
            "executable = \"x\"\nmax_retries = 1979-05-27",
            2,
            "max_retries",
            "datetime",
        ),
    ];
    for &(text, want_line, want_key, want_found) in cases {
        let (line, p) = problem(text);
        assert_eq!(line, want_line, "{text}");
        match &p {
            Problem::WrongType { key, found, .. } => {
                assert_eq!(key, want_key, "{text}");
                assert_eq!(*found, want_found, "{text}");
            }
            other => panic!("{text}: expected WrongType, got {other:?}"),
        }
    }
}

#[test]
fn wrong_types_inside_arrays_and_tables() {
    let (line, p) = problem("executable = \"x\"\narguments = [\"a\",\n 2]");
    assert_eq!(line, 3, "points at the element");
    assert_eq!(p.key(), Some("arguments[1]"));
    let (line, p) = problem("executable = \"x\"\n[environment]\nA = \"1\"\nB = 2\n");
    assert_eq!(line, 4);
    assert_eq!(p.key(), Some("environment.B"));
    assert!(matches!(p, Problem::WrongType { .. }));
}

#[test]
fn bad_values_name_key_and_line() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("executable = \"\"", 1, "executable", "empty"),
        (
            "executable = \"x\"\narguments = \"a 'b\"",
            2,
            "arguments",
            "unterminated single quote",
        ),
        (
            "executable = \"x\"\nrequest_memory = \"2 GB RAM\"",
            2,
            "request_memory",
            "unknown memory unit",
        ),
        (
            "executable = \"x\"\nrequest_memory = 0",
            2,
            "request_memory",
            "positive",
        ),
        (
            "executable = \"x\"\nrequest_cpus = 0",
            2,
            "request_cpus",
            "out of range",
        ),
        (
            "executable = \"x\"\nrequest_cpus = -2",
            2,
            "request_cpus",
            "out of range",
        ),
        (
            "executable = \"x\"\nmax_retries = -1",
            2,
            "max_retries",
            "out of range",
        ),
        ("executable = \"x\"\nqueue = 0", 2, "queue", "out of range"),
        (
            "executable = \"x\"\nqueue = 99999999999999999",
            2,
            "queue",
            "out of range",
        ),
        (
            "executable = \"x\"\ncheckpoint_interval = \"soon\"",
            2,
            "checkpoint_interval",
            "number",
        ),
        (
            "executable = \"x\"\ncheckpoint_interval = -3",
            2,
            "checkpoint_interval",
            "negative",
        ),
        (
            "executable = \"x\"\noutput = \"o.$(Proces)\"",
            2,
            "output",
            "unknown macro",
        ),
        (
            "executable = \"x\"\nerror = \"e.$(Process\"",
            2,
            "error",
            "closing",
        ),
        (
            "executable = \"x\"\nenvironment = \"A=1 B\"",
            2,
            "environment",
            "not NAME=VALUE",
        ),
        (
            "executable = \"x\"\nenvironment = \"=1\"",
            2,
            "environment",
            "needs a name",
        ),
        ("executable = \"x\"\ninput = \"\"", 2, "input", "empty"),
        (
            "executable = \"x\"\noutput = \"a\\u0000b\"",
            2,
            "output",
            "NUL",
        ),
    ];
    for &(text, want_line, want_key, want_reason) in cases {
        let (line, p) = problem(text);
        assert_eq!(line, want_line, "{text}");
        match &p {
            Problem::BadValue { key, reason } => {
                assert_eq!(key, want_key, "{text}");
                assert!(
                    reason.contains(want_reason),
                    "{text}: reason was {reason:?}"
                );
            }
            other => panic!("{text}: expected BadValue, got {other:?}"),
        }
    }
}

#[test]
fn bad_environment_name_in_table() {
    let (line, p) = problem("executable = \"x\"\n[environment]\n\"A B\" = \"1\"");
    assert_eq!(line, 3);
    assert_eq!(p.key(), Some("environment.A B"));
}

#[test]
fn first_error_in_file_order_wins() {
    // Both lines are bad; the user fixes from the top.
    let (line, p) = problem("executable = \"x\"\nzzz = 1\naaa = 2\n");
    assert_eq!(line, 2);
    assert_eq!(p.key(), Some("zzz"));
}

#[test]
fn error_message_has_file_line_column_and_key() {
    let e = parse("executable = \"x\"\n  request_cpus = \"many\"").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("job.toml:2:18: "), "{msg}");
    assert!(
        msg.contains("`request_cpus` must be an integer, not string"),
        "{msg}"
    );
    assert_eq!(e.line(), Some(2));
    assert_eq!(e.key(), Some("request_cpus"));
}

#[test]
fn load_reads_a_file_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, "executable = \"x\"\nqueue = 2\n").unwrap();
    let t = JobTemplate::load(&path, dir.path()).unwrap();
    assert_eq!(t.expand(1).len(), 2);
    std::fs::write(&path, "executable = \"x\"\nbogus = 1\n").unwrap();
    let e = JobTemplate::load(&path, dir.path()).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("{}:2:", path.display())),
        "{e}"
    );
    let e = JobTemplate::load(&dir.path().join("missing.toml"), dir.path()).unwrap_err();
    assert!(matches!(e, JobFileError::Read { .. }));
    assert!(e.to_string().contains("missing.toml"), "{e}");
    assert_eq!(e.line(), None);
}

#[test]
fn specs_survive_a_postcard_round_trip() {
    let specs = parse(
        "executable = \"x\"\narguments = \"a b\"\nenvironment = \"K=V\"\nrequest_memory = 9\nqueue = 2",
    )
    .unwrap();
    let bytes = postcard::to_allocvec(&specs).unwrap();
    let back: Vec<JobSpec> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, specs);
}

#[test]
fn suggestions_only_for_close_names() {
    assert_eq!(closest_key("exectuable"), Some("executable"));
    assert_eq!(closest_key("request_cpu"), Some("request_cpus"));
    assert_eq!(closest_key("requirements"), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

proptest::proptest! {
    /// Whatever the text, parsing returns specs or an error with a line inside the file.
    #[test]
    fn arbitrary_text_never_panics_and_errors_point_into_the_file(text in "(?s).{0,200}") {
        match parse(&text) {
            Ok(specs) => proptest::prop_assert!(!specs.is_empty()),
            Err(e) => {
                let line = e.line().unwrap();
                proptest::prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "{e}");
            }
        }
    }

    /// Files built from known keys with random values: never a panic, and on success the
    /// job count is `queue` and every `$(Process)` became the process number.
    #[test]
    fn generated_files_expand_consistently(
        queue in 1u32..20,
        out in "[a-z]{1,8}",
        mem in proptest::option::of(1u64..100_000),
        cpus in 0i64..10,
    ) {
        let mut text = format!("executable = \"x\"\noutput = \"{out}.$(Process)\"\nqueue = {queue}\nrequest_cpus = {cpus}\n");
        if let Some(m) = mem {
            text.push_str(&format!("request_memory = \"{m} MiB\"\n"));
        }
        match parse(&text) {
            Ok(specs) => {
                proptest::prop_assert!(cpus >= 1);
                proptest::prop_assert_eq!(specs.len(), queue as usize);
                for (p, s) in specs.iter().enumerate() {
                    let want = PathBuf::from(format!("{SUBMIT}/{out}.{p}"));
                    proptest::prop_assert_eq!(s.output.as_ref(), Some(&want));
                    proptest::prop_assert_eq!(s.request_memory_mib, mem);
                }
            }
            Err(e) => {
                proptest::prop_assert_eq!(cpus, 0);
                proptest::prop_assert_eq!(e.key(), Some("request_cpus"));
                proptest::prop_assert_eq!(e.line(), Some(4));
            }
        }
    }
}

#[test]
fn universe_is_standard_or_vanilla() {
    let dir = Path::new("/tmp");
    assert!(!JobTemplate::parse("executable = \"x\"", "j", dir).unwrap().is_vanilla());
    assert!(JobTemplate::parse("universe = \"vanilla\"\nexecutable = \"x\"", "j", dir).unwrap().is_vanilla());
    assert!(!JobTemplate::parse("universe = \"standard\"\nexecutable = \"x\"", "j", dir).unwrap().is_vanilla());
    let (line, p) = problem("executable = \"x\"\nuniverse = \"grid\"");
    assert_eq!(line, 2);
    assert!(matches!(p, Problem::BadValue { .. }), "{p:?}");
}
