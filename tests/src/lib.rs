//! Harness for the mos integration tests.
//!
//! * locates `mos` and `libmosshim.so` in `<workspace>/target/release` (built by `make`),
//! * compiles the C programs of `tests/c/` once per test process,
//! * spawns processes with piped stdio and collects their output in the background,
//! * kills every spawned process on drop (also when a test panics),
//! * wraps the `mos` command line (`ckpt`, `restart`, `image inspect`).
//!
//! Synchronisation with the C programs goes through files: a program calls
//! `mos_sync(n)` (see `tests/c/common.h`), which creates `$MOS_SYNC/ready.N` and
//! then waits for `$MOS_SYNC/go.N`.  [`Env::wait_ready`] / [`Env::go`] are the
//! test side of that protocol.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for every wait on a condition.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Number of `go.N` files created up front for uninterrupted runs.
const MAX_SYNC: u32 = 9;

// ---------------------------------------------------------------------------
// locations

/// The workspace root (`tests/..`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `<workspace>/target/release`, or `$MOS_BIN_DIR` if set (for debugging the
/// harness against other builds).
pub fn release_dir() -> PathBuf {
    match std::env::var_os("MOS_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target").join("release"),
    }
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{what} not found at {} -- build the engine first (`make` in {})",
        path.display(),
        workspace_root().display()
    );
    path
}

/// Absolute path of the `mos` binary (panics with a clear message if missing).
pub fn mos_bin() -> PathBuf {
    require(release_dir().join("mos"), "the mos binary")
}

/// Absolute path of the preload shim (panics with a clear message if missing).
pub fn shim() -> PathBuf {
    require(
        release_dir().join("libmosshim.so"),
        "the shim libmosshim.so",
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------
// C programs

struct CCache {
    dir: PathBuf,
    built: HashMap<String, PathBuf>,
}

static CCACHE: OnceLock<Mutex<CCache>> = OnceLock::new();

extern "C" fn remove_ccache() {
    if let Some(m) = CCACHE.get() {
        if let Ok(c) = m.lock() {
            let _ = fs::remove_dir_all(&c.dir);
        }
    }
}

/// Compiles `tests/c/NAME.c` (once per test process) and returns the absolute
/// path of the executable, which is named NAME (so its comm is NAME, truncated
/// to 15 characters).  The directory is world-readable so that the
/// unprivileged test can execute it.
pub fn compile_c(name: &str) -> PathBuf {
    let cache = CCACHE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("mos-test-c-")
            .tempdir()
            .expect("create temp dir for compiled C programs")
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        // SAFETY: registering a plain extern "C" fn with no arguments.
        unsafe { libc::atexit(remove_ccache) };
        Mutex::new(CCache {
            dir,
            built: HashMap::new(),
        })
    });
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = c.built.get(name) {
        return p.clone();
    }
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
    let src = src_dir.join(format!("{name}.c"));
    assert!(src.is_file(), "no C source {}", src.display());
    let out = c.dir.join(name);
    let res = Command::new("cc")
        .args(["-O1", "-g", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-I")
        .arg(&src_dir)
        .arg("-lpthread")
        .output()
        .expect("run cc");
    assert!(
        res.status.success(),
        "compiling {} failed:\n{}{}",
        src.display(),
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    c.built.insert(name.to_string(), out.clone());
    out
}

/// /proc/<pid>/comm as the kernel would set it for an executable at `prog`.
pub fn comm_of(prog: &Path) -> String {
    let n = prog.file_name().unwrap().to_string_lossy();
    n.chars().take(15).collect()
}

// ---------------------------------------------------------------------------
// output collection

#[derive(Default)]
struct StreamState {
    data: Vec<u8>,
    eof: bool,
}

#[derive(Default)]
struct Stream {
    state: Mutex<StreamState>,
    cv: Condvar,
}

impl Stream {
    fn start<R: Read + Send + 'static>(mut r: R) -> Arc<Stream> {
        let s = Arc::new(Stream::default());
        let s2 = s.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut st = s2.state.lock().unwrap();
                        st.data.extend_from_slice(&buf[..n]);
                        s2.cv.notify_all();
                    }
                }
            }
            let mut st = s2.state.lock().unwrap();
            st.eof = true;
            s2.cv.notify_all();
        });
        s
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.lock().unwrap().data.clone()
    }

    /// Waits for EOF (all writers closed) up to `timeout`; returns the data and whether EOF was seen.
    fn drain(&self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap();
        while !st.eof {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        (st.data.clone(), st.eof)
    }
}

/// Result of a finished process.
#[derive(Clone)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Panics (showing all output) unless the exit status is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{what}: expected exit code {code}, got {:?}\n{}",
            self.status,
            self.describe()
        );
        self
    }
    pub fn describe(&self) -> String {
        format!(
            "--- stdout ({} bytes) ---\n{}\n--- stderr ({} bytes) ---\n{}",
            self.stdout.len(),
            tail(&self.stdout, 4000),
            self.stderr.len(),
            tail(&self.stderr, 4000)
        )
    }
}

fn tail(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= max {
        s.into_owned()
    } else {
        let mut start = s.len() - max;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        format!("[... {} bytes omitted ...]{}", start, &s[start..])
    }
}

// ---------------------------------------------------------------------------
// processes

/// A spawned process with piped stdin/stdout/stderr.  Killed (SIGKILL) and
/// reaped on drop if still running.
pub struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Stream>,
    err: Arc<Stream>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin/stdout/stderr piped.  stdin stays open (the
    /// program sees a pipe with no data) until [`Proc::close_stdin`].
    pub fn spawn(label: &str, cmd: Command) -> Proc {
        Proc::spawn_stdout(label, cmd, Stdio::piped())
    }

    /// Like [`Proc::spawn`] but with the given stdout (e.g. a regular file);
    /// stdout is only collected when it is `Stdio::piped()`.
    pub fn spawn_stdout(label: &str, mut cmd: Command, stdout: Stdio) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot spawn {cmd:?}: {e}"));
        let out = match child.stdout.take() {
            Some(o) => Stream::start(o),
            None => Stream::start(std::io::empty()),
        };
        let err = Stream::start(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Proc {
            label: label.to_string(),
            child,
            stdin,
            out,
            err,
            status: None,
        }
    }

    /// The real pid (what `$!` gives in a shell).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        let s = self.stdin.as_mut().expect("stdin already closed");
        s.write_all(data).expect("write to child stdin");
        s.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stdout_now(&self) -> Vec<u8> {
        self.out.snapshot()
    }

    pub fn stderr_now(&self) -> Vec<u8> {
        self.err.snapshot()
    }

    /// Everything collected so far, for panic messages.
    pub fn describe(&self) -> String {
        format!(
            "[{} pid {}] status {:?}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
            self.label,
            self.pid(),
            self.status,
            tail(&self.stdout_now(), 4000),
            tail(&self.stderr_now(), 4000)
        )
    }

    /// Non-blocking: has the process exited?
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            r,
            0,
            "kill({}, {sig}) failed: {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Waits until stdout contains `marker` (panics with all output after TIMEOUT
    /// or if the process exits first without printing it).
    #[track_caller]
    pub fn wait_stdout(&mut self, marker: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if contains(&self.stdout_now(), marker.as_bytes()) {
                return;
            }
            if !self.is_running() {
                // the reader thread may still be catching up
                let (data, _) = self.out.drain(Duration::from_secs(2));
                if contains(&data, marker.as_bytes()) {
                    return;
                }
                panic!(
                    "process exited before printing {marker:?}\n{}",
                    self.describe()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timeout waiting for {marker:?} on stdout\n{}",
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the process to exit (≤ TIMEOUT, then kills it and panics) and
    /// returns its status and complete output.
    #[track_caller]
    pub fn wait(&mut self) -> RunOutput {
        self.wait_timeout(TIMEOUT)
    }

    #[track_caller]
    pub fn wait_timeout(&mut self, timeout: Duration) -> RunOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.try_status() {
                break st;
            }
            if Instant::now() > deadline {
                let msg = format!(
                    "timeout ({timeout:?}) waiting for exit\n{}",
                    self.describe()
                );
                self.kill();
                panic!("{msg}");
            }
            thread::sleep(Duration::from_millis(2));
        };
        self.close_stdin();
        let (stdout, e1) = self.out.drain(Duration::from_secs(5));
        let (stderr, e2) = self.err.drain(Duration::from_secs(5));
        assert!(
            e1 && e2,
            "[{}] exited ({status:?}) but its stdout/stderr pipes stay open (a leftover process?)\n{}",
            self.label,
            self.describe()
        );
        RunOutput {
            status,
            stdout,
            stderr,
        }
    }

    pub fn kill(&mut self) {
        if self.is_running() {
            // SAFETY: killing our own child process.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child starts with signal `sig`'s disposition `action` (SIG_DFL or SIG_IGN):
/// dispositions are inherited across exec, and a test runner started in the background of
/// a non-interactive shell hands its children SIGINT and SIGQUIT ignored.
pub fn signal_action(cmd: &mut Command, sig: i32, action: libc::sighandler_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal() is async-signal-safe; nothing else runs in the forked child.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, action);
            Ok(())
        });
    }
}

/// Each thread of `pid`: name, wait channel, system call, signal masks and kernel stack
/// (for the message of a test that waited in vain).
pub fn describe_tasks(pid: i32) -> String {
    let mut o = String::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    for t in tasks {
        let q = t.path();
        let rd = |f: &str| std::fs::read_to_string(q.join(f)).unwrap_or_default();
        let status = rd("status");
        let sigs: Vec<&str> = status.lines().filter(|l| l.starts_with("Sig") || l.starts_with("ShdPnd")).collect();
        o += &format!(
            "task {} {} wchan={} syscall={} {} stack={}\n",
            t.file_name().to_string_lossy(),
            rd("comm").trim(),
            rd("wchan"),
            rd("syscall").trim(),
            sigs.join(" "),
            rd("stack").replace('\n', " | ")
        );
    }
    o
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs `cmd` to completion (stdin: `input`, then closed) with TIMEOUT.
#[track_caller]
pub fn run(label: &str, cmd: Command, input: &[u8]) -> RunOutput {
    let mut p = Proc::spawn(label, cmd);
    if !input.is_empty() {
        p.write_stdin(input);
    }
    p.close_stdin();
    p.wait()
}

/// Polls `cond` every 2 ms until it holds; panics with `what()` after TIMEOUT.
#[track_caller]
pub fn poll_until(mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timeout: {}", what());
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Asserts byte equality with a readable report (first difference, both sides).
#[track_caller]
pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let ctx = |b: &[u8]| {
        let lo = first.saturating_sub(200);
        let hi = (first + 200).min(b.len());
        String::from_utf8_lossy(&b[lo..hi]).into_owned()
    };
    panic!(
        "{what}: output differs (got {} bytes, want {} bytes, first difference at byte {first})\n\
         --- got around the difference ---\n{}\n--- want around the difference ---\n{}\n\
         --- got (tail) ---\n{}\n--- want (tail) ---\n{}",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want),
        tail(got, 1500),
        tail(want, 1500)
    );
}

/// Asserts the shape of a `mos` error: given exit code, exactly one non-empty
/// line on stderr that contains `keyword` (case-insensitive), nothing on stdout.
#[track_caller]
pub fn assert_one_line_error(what: &str, out: &RunOutput, code: i32, keyword: Option<&str>) {
    assert_eq!(
        out.code(),
        Some(code),
        "{what}: exit code\n{}",
        out.describe()
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout must be empty\n{}",
        out.describe()
    );
    let err = out.stderr_str();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "{what}: expected exactly one line on stderr, got {}:\n{err}",
        lines.len()
    );
    if let Some(k) = keyword {
        assert!(
            lines[0].to_lowercase().contains(&k.to_lowercase()),
            "{what}: stderr should mention {k:?}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// per-run environment

/// One isolated run: a temp dir with `work/` (the app's start cwd), `ckpt/`
/// (MOS_CKPT_DIR) and `sync/` (MOS_SYNC).  Everything is removed on drop.
pub struct Env {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
    pub ckpt_dir: PathBuf,
    pub sync: PathBuf,
    /// When set, app / mos commands run as uid/gid 65534 through setpriv.
    pub unprivileged: bool,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("mos-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let work = root.join("work");
        let ckpt_dir = root.join("ckpt");
        let sync = root.join("sync");
        for d in [&work, &ckpt_dir, &sync] {
            fs::create_dir(d).unwrap();
        }
        Env {
            _dir: dir,
            root,
            work,
            ckpt_dir,
            sync,
            unprivileged: false,
        }
    }

    /// Like [`Env::new`], with all directories mode 0777 and commands run as
    /// uid/gid 65534 (via setpriv) when the test process is root.
    pub fn new_unprivileged() -> Env {
        let mut e = Env::new();
        for d in [&e.root, &e.work, &e.ckpt_dir, &e.sync] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        }
        e.unprivileged = is_root();
        e
    }

    /// Creates (if needed) and returns a directory under the env root.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        fs::create_dir_all(&d).unwrap();
        if self.unprivileged {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        }
        d
    }

    fn base_cmd<S: AsRef<OsStr>>(
        &self,
        prog: &Path,
        args: &[S],
        envs: &[(&str, &str)],
        shim: bool,
    ) -> Command {
        let mut vars: Vec<(String, String)> =
            vec![("MOS_SYNC".into(), self.sync.display().to_string())];
        if shim {
            vars.push(("LD_PRELOAD".into(), crate::shim().display().to_string()));
            vars.push(("MOS_CKPT_DIR".into(), self.ckpt_dir.display().to_string()));
        }
        for (k, v) in envs {
            vars.retain(|(kk, _)| kk != k);
            vars.push((k.to_string(), v.to_string()));
        }
        let mut cmd = if self.unprivileged {
            // env(1) sets the variables only for the final program, so neither
            // setpriv nor anything else gets the shim preloaded.
            let mut c = Command::new("setpriv");
            c.env_remove("LD_PRELOAD");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"]);
            for (k, v) in &vars {
                c.arg(format!("{k}={v}"));
            }
            c.arg(prog);
            c
        } else {
            let mut c = Command::new(prog);
            c.env_remove("LD_PRELOAD");
            c.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c
        };
        cmd.args(args);
        cmd.current_dir(&self.work);
        cmd
    }

    /// Command running `prog` under the shim (LD_PRELOAD, MOS_CKPT_DIR,
    /// MOS_SYNC set, cwd = work/).  `envs` override/add variables (a variable
    /// set to "" is still set; use `cmd.env_remove` for removal).
    pub fn app_cmd<S: AsRef<OsStr>>(
        &self,
        prog: &Path,
        args: &[S],
        envs: &[(&str, &str)],
    ) -> Command {
        self.base_cmd(prog, args, envs, true)
    }

    /// Same as [`Env::app_cmd`] but without the shim (the reference run).
    pub fn plain_cmd<S: AsRef<OsStr>>(
        &self,
        prog: &Path,
        args: &[S],
        envs: &[(&str, &str)],
    ) -> Command {
        self.base_cmd(prog, args, envs, false)
    }

    /// Spawns `prog` under the shim.
    pub fn spawn_app<S: AsRef<OsStr>>(
        &self,
        prog: &Path,
        args: &[S],
        envs: &[(&str, &str)],
    ) -> Proc {
        Proc::spawn(
            &format!("app {}", comm_of(prog)),
            self.app_cmd(prog, args, envs),
        )
    }

    /// A `mos` command (run as 65534 in unprivileged envs), cwd = env root.
    pub fn mos_cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = if self.unprivileged {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            c.arg(mos_bin());
            c
        } else {
            Command::new(mos_bin())
        };
        c.args(args);
        c.env_remove("LD_PRELOAD");
        c.env("MOS_CKPT_DIR", &self.ckpt_dir);
        c.env("MOS_SYNC", &self.sync);
        c.current_dir(&self.root);
        c
    }

    // -- sync protocol ------------------------------------------------------

    pub fn ready_path(&self, n: u32) -> PathBuf {
        self.sync.join(format!("ready.{n}"))
    }

    /// Lets the program pass sync point `n`.
    pub fn go(&self, n: u32) {
        let p = self.sync.join(format!("go.{n}"));
        fs::write(&p, b"").unwrap();
        if self.unprivileged {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o666));
        }
    }

    /// Creates all go files: the program runs uninterrupted.
    pub fn go_all(&self) {
        for n in 1..=MAX_SYNC {
            self.go(n);
        }
    }

    /// Waits until `p` reached sync point `n` (panics if it exits first or after TIMEOUT).
    #[track_caller]
    pub fn wait_ready(&self, p: &mut Proc, n: u32) {
        let path = self.ready_path(n);
        let deadline = Instant::now() + TIMEOUT;
        while !path.exists() {
            if !p.is_running() {
                panic!(
                    "process exited before reaching sync point {n}\n{}",
                    p.describe()
                );
            }
            if Instant::now() > deadline {
                panic!("timeout waiting for sync point {n}\n{}", p.describe());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    // -- reference runs ------------------------------------------------------

    /// Uninterrupted run of `prog` WITHOUT the shim in a fresh env (all sync
    /// points pre-released), with `input` on stdin.  Returns the output and the
    /// env (whose work/ holds any files the program wrote).
    pub fn reference<S: AsRef<OsStr>>(
        prog: &Path,
        args: &[S],
        envs: &[(&str, &str)],
        input: &[u8],
    ) -> (RunOutput, Env) {
        let e = Env::new();
        e.go_all();
        let out = run("reference run", e.plain_cmd(prog, args, envs), input);
        (out, e)
    }

    // -- mos command line -----------------------------------------------------

    /// `mos ckpt <pid> [extra...]`, returning raw output.
    pub fn mos_ckpt_raw(&self, pid: i32, extra: &[&str]) -> RunOutput {
        let mut args = vec!["ckpt".to_string(), pid.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        run("mos ckpt", self.mos_cmd(&args), b"")
    }

    /// `mos ckpt <pid> [extra...] -o <ckpt_dir>/<name>`; asserts success and that the
    /// only stdout line is the image path, and that the file exists.
    #[track_caller]
    pub fn ckpt_to(&self, pid: i32, name: &str, extra: &[&str]) -> PathBuf {
        let img = self.ckpt_dir.join(name);
        let mut args: Vec<&str> = extra.to_vec();
        let s = img.display().to_string();
        args.push("-o");
        args.push(&s);
        let out = self.mos_ckpt_raw(pid, &args);
        out.assert_code(0, &format!("mos ckpt {pid} {}", args.join(" ")));
        assert_eq!(
            out.stdout_str().lines().collect::<Vec<_>>(),
            vec![s.as_str()],
            "mos ckpt must print the image path as its only stdout line\n{}",
            out.describe()
        );
        assert!(
            img.is_file(),
            "image {} missing after mos ckpt returned",
            img.display()
        );
        img
    }

    /// Checkpoints `p` with `--exit` into `<ckpt_dir>/<name>`; waits for the app to
    /// exit with status 0 and returns (image path, the app's output).
    #[track_caller]
    pub fn ckpt_exit(&self, p: &mut Proc, name: &str) -> (PathBuf, RunOutput) {
        let img = self.ckpt_to(p.pid(), name, &["--exit"]);
        let out = p.wait();
        assert_eq!(
            out.code(),
            Some(0),
            "app must exit with status 0 after `mos ckpt --exit`, got {:?}\n{}",
            out.status,
            out.describe()
        );
        (img, out)
    }

    /// Command line for `mos restart [opts...] IMG`.
    pub fn restart_cmd(&self, img: &Path, opts: &[&str]) -> Command {
        let mut args: Vec<String> = vec!["restart".into()];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push(img.display().to_string());
        self.mos_cmd(&args)
    }

    /// Runs `mos restart [opts] IMG` to completion with `input` on stdin.
    pub fn restart(&self, img: &Path, opts: &[&str], input: &[u8]) -> RunOutput {
        run("mos restart", self.restart_cmd(img, opts), input)
    }

    /// Spawns `mos restart [opts] IMG` (for interaction: signals, re-checkpoint).
    pub fn spawn_restart(&self, img: &Path, opts: &[&str]) -> Proc {
        Proc::spawn("mos restart", self.restart_cmd(img, opts))
    }

    /// `mos image inspect FILE [--json]`.
    pub fn inspect(&self, img: &Path, json: bool) -> RunOutput {
        let mut args = vec![
            "image".to_string(),
            "inspect".into(),
            img.display().to_string(),
        ];
        if json {
            args.push("--json".into());
        }
        run("mos image inspect", self.mos_cmd(&args), b"")
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// The default image path for an app: `<dir>/<comm>.<pid>.mosimg`.
pub fn default_image_path(dir: &Path, comm: &str, pid: i32) -> PathBuf {
    dir.join(format!("{comm}.{pid}.mosimg"))
}

/// Reads /proc/<pid>/comm (without the newline).
pub fn proc_comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// Waits until `path` exists (a complete image: images are renamed into place).
#[track_caller]
pub fn wait_file(path: &Path, what: &str) {
    poll_until(
        || path.exists(),
        || format!("{what}: {} never appeared", path.display()),
    );
}

/// Waits until `path` exists while `p` keeps running (fails fast with `p`'s
/// output if it dies, e.g. killed by a checkpoint signal the shim did not catch).
#[track_caller]
pub fn wait_image(p: &mut Proc, path: &Path, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let dir = path.parent().unwrap();
    let images = || -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .filter(|n| n.to_string_lossy().ends_with(".mosimg"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let existing = images();
    while !path.exists() {
        // fail fast when an image shows up under another name (not the expected one, which
        // may have been renamed into place since the exists() above)
        let want = path.file_name().unwrap_or_default();
        if let Some(other) = images().into_iter().find(|n| !existing.contains(n) && n.as_os_str() != want) {
            panic!(
                "{what}: expected image {}, but {:?} was written instead\n{}",
                path.display(),
                other,
                p.describe()
            );
        }
        if !p.is_running() {
            panic!(
                "{what}: process exited before {} appeared\n{}",
                path.display(),
                p.describe()
            );
        }
        if Instant::now() > deadline {
            let dir = path.parent().unwrap();
            let names: Vec<_> = fs::read_dir(dir)
                .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!(
                "{what}: timeout waiting for {} (directory holds {names:?})\n{}",
                path.display(),
                p.describe()
            );
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Bytes of `full` after the first occurrence of `marker` (which must occur).
#[track_caller]
pub fn after_marker<'a>(full: &'a [u8], marker: &str) -> &'a [u8] {
    let m = marker.as_bytes();
    let pos = full
        .windows(m.len())
        .position(|w| w == m)
        .unwrap_or_else(|| panic!("marker {marker:?} not in output:\n{}", tail(full, 3000)));
    &full[pos + m.len()..]
}

/// Cheap content fingerprint for "file untouched" checks.
pub fn file_bytes(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The standard cycle: run `prog` under the shim, wait for sync point 1,
/// `mos ckpt --exit` it, release sync point 1, `mos restart` it with `input`
/// on stdin.  Returns (original output, restarted output, image).
#[track_caller]
pub fn ckpt_restart_cycle<S: AsRef<OsStr>>(
    env: &Env,
    prog: &Path,
    args: &[S],
    envs: &[(&str, &str)],
    restart_opts: &[&str],
    input: &[u8],
) -> (RunOutput, RunOutput, PathBuf) {
    let mut app = env.spawn_app(prog, args, envs);
    env.wait_ready(&mut app, 1);
    let (img, orig) = env.ckpt_exit(&mut app, &format!("{}.img", comm_of(prog)));
    env.go(1);
    let rest = env.restart(&img, restart_opts, input);
    (orig, rest, img)
}

/// After a checkpoint/restart cycle: the restarted app printed each of `lines`, and
/// original + restarted stdout equals the uninterrupted run.
#[track_caller]
pub fn assert_restart_output(
    orig: &RunOutput,
    rest: &RunOutput,
    reference: &RunOutput,
    lines: &[&str],
) {
    for l in lines {
        assert!(
            contains(&rest.stdout, l.as_bytes()),
            "restarted app: expected {l:?}\n{}",
            rest.describe()
        );
    }
    assert_same_bytes(
        "stdout (original + restarted vs uninterrupted)",
        &cat(&orig.stdout, &rest.stdout),
        &reference.stdout,
    );
}

/// Concatenation helper.
pub fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    v
}

/// No arguments.
pub const NOARGS: &[&str] = &[];

// ---------------------------------------------------------------------------
// a localhost cluster

/// MOS_HOME in a temp dir; `mos cluster down` (and a kill of every daemon it started)
/// on drop, even when the test panics.
pub struct Cluster {
    /// $MOS_HOME of this cluster
    pub home: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            home: tempfile::Builder::new()
                .prefix("mos-cluster-")
                .tempdir()
                .unwrap(),
        }
    }
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(release_dir().join(prog));
        c.env("MOS_HOME", self.home.path()).env_remove("LD_PRELOAD");
        c
    }
    pub fn mos(&self, args: &[&str]) -> RunOutput {
        let mut c = self.cmd("mos");
        c.args(args);
        run(&format!("mos {}", args.join(" ")), c, b"")
    }
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.mos(args);
        out.assert_code(0, &format!("mos {}", args.join(" ")));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad json from mos {args:?}: {e}\n{}", out.describe()))
    }
    pub fn run_state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.home.path().join("cluster.json")).unwrap())
            .unwrap()
    }
    pub fn pids(&self) -> Vec<i32> {
        let Ok(b) = std::fs::read(self.home.path().join("cluster.json")) else {
            return vec![];
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        let mut p = vec![v["placer"]["pid"].as_i64().unwrap_or(0) as i32];
        for n in v["nodes"].as_array().cloned().unwrap_or_default() {
            p.push(n["pid"].as_i64().unwrap_or(0) as i32);
        }
        p.into_iter().filter(|&p| p > 0).collect()
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pids = self.pids();
        if std::thread::panicking() {
            // the daemons' side of a failure: their logs go with the test's output
            let mut logs: Vec<_> = std::fs::read_dir(self.home.path())
                .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
                .unwrap_or_default();
            logs.sort();
            for l in logs {
                let text = std::fs::read(&l).unwrap_or_default();
                eprintln!("--- {} ---\n{}", l.display(), tail(&text, 6000));
            }
        }
        let _ = self.cmd("mos").args(["cluster", "down"]).output();
        for p in pids {
            // SAFETY: killing daemons this test started (already gone after `down`).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}


/// The Python with HTCondor's bindings (`htcondor2`) that `make test` installs in a venv
/// (`MOS_CONDOR_PYTHON`, else `target/venv-htcondor/bin/python`); None where neither is.
pub fn condor_python() -> Option<PathBuf> {
    let p = std::env::var_os("MOS_CONDOR_PYTHON").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/venv-htcondor/bin/python"));
    p.exists().then_some(p)
}

/// The events of a job event log as HTCondor's own parser reads them
/// (`htcondor2.JobEventLog`): one JSON object per event with its attributes
/// (`EventTypeNumber`, `Cluster`, `Proc`, `ReturnValue`...). None without the bindings.
pub fn condor_events(log: &Path) -> Option<Vec<serde_json::Value>> {
    let py = condor_python()?;
    let script = "import sys, json, htcondor2\nout = []\nfor e in htcondor2.JobEventLog(sys.argv[1]).events(stop_after=0):\n    out.append({k: e[k] for k in e.keys()})\nprint(json.dumps(out))\n";
    let out = Command::new(&py).arg("-c").arg(script).arg(log).output().unwrap_or_else(|e| panic!("{}: {e}", py.display()));
    assert!(out.status.success(), "htcondor2.JobEventLog could not read {}: {}", log.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?.as_array().cloned()
}
