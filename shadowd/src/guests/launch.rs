//! Starting a guest: the launch plan decided from a job spec before anything starts (fresh
//! under the shim, or `mos restart` of an image), its stdio and environment, and what the
//! forked child does before exec. The pre-exec code runs between fork and exec: no
//! allocation and no locks there.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use proto::msg::{BatchIo, JobSpec, JobState, OsBytes};
use proto::JobId;

use super::{signal_group, Guest, GuestError, Guests, GuestsConfig, Life, Vacate};
use crate::{lock, log};

impl Guests {
    /// Start a guest (fresh, or from `spec.restart_from`). Returns its pid once it is
    /// spawned, after queueing its `Running` status.
    pub fn place(self: &Arc<Self>, job: JobId, spec: JobSpec) -> Result<u32, GuestError> {
        let mut table = lock(&self.table);
        if table.contains_key(&job) {
            return Err(GuestError::AlreadyRunning(job));
        }
        let plan = LaunchPlan::new(&self.cfg, job, &spec)?;
        fs::create_dir_all(&plan.ckpt_dir).map_err(|source| GuestError::Open {
            job,
            what: "checkpoint directory",
            path: plan.ckpt_dir.clone(),
            source,
        })?;
        let program = plan.program.clone();
        let cmd = plan.command(job)?;
        let child = self.spawn(cmd).map_err(|source| GuestError::Spawn {
            job,
            program,
            source,
        })?;
        let pid = child.id();
        let guest = Arc::new(Guest {
            job,
            pid,
            home: spec.home.clone(),
            home_addr: spec.batch.as_ref().and_then(|b| b.home_addr.clone()),
            image: plan.image.clone(),
            restart_log: plan.restart_log(job),
            life: Mutex::new(Life {
                exited: false,
                vacate: Vacate::None,
            }),
            changed: Condvar::new(),
            ckpt: Mutex::new(()),
            started: std::time::Instant::now(),
        });
        table.insert(job, guest.clone());
        drop(table);
        self.report(self.status(&guest, JobState::Running, Some(pid)));
        log!(self.cfg.node, "job {job}: started pid {pid} ({})", plan.describe());

        let me = self.clone();
        let g = guest.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("watch-{job}"))
            .spawn(move || me.watch(g, child));
        if let Err(e) = watcher {
            // Without a watcher nobody would reap it or report its end.
            log!(self.cfg.node, "job {job}: cannot start its watcher ({e}); killing it");
            signal_group(pid, libc::SIGKILL).ok();
            lock(&self.table).remove(&job);
            return Err(GuestError::Spawn {
                job,
                program: plan.program,
                source: e,
            });
        }
        if let Some(every) = plan.ckpt_every {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ckpt-{job}"))
                .spawn(move || me.periodic_checkpoints(guest, every));
            if let Err(e) = spawned {
                log!(self.cfg.node, "job {job}: no periodic checkpoints: {e}");
            }
        }
        Ok(pid)
    }
}

/// Everything decided about how to start a job, before anything is started.
#[derive(Debug)]
struct LaunchPlan {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    /// `None` = keep the daemon's environment (restarts: the image has its own).
    env: Option<Vec<(OsString, OsString)>>,
    restart: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    error: Option<PathBuf>,
    ckpt_dir: PathBuf,
    image: PathBuf,
    ckpt_every: Option<Duration>,
}

impl LaunchPlan {
    fn new(cfg: &GuestsConfig, job: JobId, spec: &JobSpec) -> Result<Self, GuestError> {
        let bad = |reason: String| GuestError::BadSpec { job, reason };
        if spec.cwd.as_bytes().is_empty() {
            return Err(bad("empty working directory".into()));
        }
        let cwd = PathBuf::from(spec.cwd.as_os_str());
        let batch = spec.batch.clone().unwrap_or_default();
        let at_cwd = |p: &Option<OsBytes>| -> Option<PathBuf> {
            p.as_ref()
                .filter(|p| !p.as_bytes().is_empty())
                .map(|p| cwd.join(p.as_path()))
        };
        let ckpt_dir = at_cwd(&batch.ckpt_dir).unwrap_or_else(|| cfg.default_ckpt_dir.clone());
        let image = ckpt_dir.join(format!("job{job}.mosimg"));
        let ckpt_every = batch_interval(&batch);
        let mos = cfg.mos.clone();
        if let Some(from) = &spec.restart_from {
            if from.as_bytes().is_empty() {
                return Err(bad("empty restart image path".into()));
            }
            let from = cwd.join(from.as_path());
            let mut args: Vec<std::ffi::OsString> = vec!["restart".into()];
            if job.0 & crate::rsys::PROCESS_JOB_BIT != 0 && cfg.migration_dirs.iter().any(|d| from.starts_with(d)) {
                args.push("--unlink".into());
                // post-copy: this node's shadowd serves the rest of its memory there
                let sock = crate::live::lazy_socket(&from);
                if sock.exists() {
                    args.push("--lazy-pages".into());
                    args.push(sock.into_os_string());
                }
            }
            args.push(from.into_os_string());
            return Ok(LaunchPlan {
                program: mos,
                args,
                cwd,
                env: None,
                restart: true,
                input: None,
                output: None,
                error: None,
                ckpt_dir,
                image,
                ckpt_every,
            });
        }
        let (first, rest) = spec
            .argv
            .split_first()
            .ok_or_else(|| bad("empty argv".into()))?;
        if first.as_bytes().is_empty() {
            return Err(bad("empty program path".into()));
        }
        let shim = cfg.shim.clone();
        if !shim.exists() {
            return Err(bad(format!("{} is missing on this node (run `make build`)", shim.display())));
        }
        let mut env = guest_env(&spec.env, &shim, &ckpt_dir);
        let program = cwd.join(first.as_path());
        let remote = batch.remote_home.is_some();
        if let Some((token, addr)) = &batch.remote_home {
            // the job's files and cwd are at its home: the shim runs it in remote mode
            let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
            env.push(("MOS_REMOTE_HOME".into(), format!("{hex}@{addr}").into()));
        }
        let run_dir = if remote && !cwd.is_dir() { PathBuf::from("/") } else { cwd.clone() };
        Ok(LaunchPlan {
            program,
            args: rest.iter().map(|a| a.as_os_str().to_owned()).collect(),
            cwd: run_dir,
            env: Some(env),
            restart: false,
            input: if remote { None } else { at_cwd(&batch.input) },
            output: if remote { None } else { at_cwd(&batch.output) },
            error: if remote { None } else { at_cwd(&batch.error) },
            ckpt_dir,
            image,
            ckpt_every,
        })
    }

    /// Where a restart's own error messages go (None for a fresh start).
    fn restart_log(&self, job: JobId) -> Option<PathBuf> {
        self.restart.then(|| self.ckpt_dir.join(format!("job{job}.restart.log")))
    }

    fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// The command, stdio opened, ready for the spawner.
    fn command(&self, job: JobId) -> Result<Command, GuestError> {
        let open_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| GuestError::Open {
                job,
                what,
                path,
                source,
            }
        };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).current_dir(&self.cwd);
        match &self.env {
            Some(env) => {
                cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
            }
            None => {
                cmd.env_remove("LD_PRELOAD");
            }
        }
        if let Some(log) = self.restart_log(job) {
            // The image reopens its own files; until then, errors of `mos restart` itself
            // go to a file the watcher puts into the node's log.
            let err = create_output(&log).map_err(open_err("restart log", &log))?;
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(err));
        } else {
            let stdin = match &self.input {
                Some(p) => Stdio::from(File::open(p).map_err(open_err("input", p))?),
                None => Stdio::null(),
            };
            let out = match &self.output {
                Some(p) => Some(create_output(p).map_err(open_err("output", p))?),
                None => None,
            };
            let err = match (&self.error, &self.output, &out) {
                (Some(e), Some(o), Some(f)) if e == o => {
                    Some(f.try_clone().map_err(open_err("error", e))?)
                }
                (Some(e), _, _) => Some(create_output(e).map_err(open_err("error", e))?),
                (None, _, _) => None,
            };
            cmd.stdin(stdin)
                .stdout(out.map_or_else(Stdio::null, Stdio::from))
                .stderr(err.map_or_else(Stdio::null, Stdio::from));
        }
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // The closure runs in the forked child before exec and only makes async-signal-safe
        // system calls (sigprocmask, close_range/fcntl, prctl, getppid, setpgid).
        // SAFETY: it allocates nothing and takes no lock (see above).
        unsafe {
            cmd.pre_exec(move || guest_pre_exec(parent));
        }
        Ok(cmd)
    }
}

/// In the forked guest, before exec: no inherited fds beyond stdio, no signals blocked (the
/// daemon blocks SIGTERM/SIGINT in all its threads, and a mask survives exec), death with the
/// daemon, its own process group. Async-signal-safe only: no allocation, no locks.
fn guest_pre_exec(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain system calls on integers, and one on a local, initialised sigset_t
    // (sigemptyset initialises it; a zeroed sigset_t is a valid value to start from).
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            // Kernels before 5.11: mark them one by one.
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The daemon may have died between fork and prctl: then nobody would kill us.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// stdout/stderr of a fresh job: truncated, never `O_APPEND` (a restart rewrites the file at
/// its saved offset).
fn create_output(p: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).open(p)
}

fn batch_interval(b: &BatchIo) -> Option<Duration> {
    b.ckpt_interval_s.filter(|&n| n > 0).map(Duration::from_secs)
}

/// A fresh guest's environment: the job's, plus the shim (ahead of any preload of its own)
/// and the checkpoint directory.
fn guest_env(env: &[(OsBytes, OsBytes)], shim: &Path, ckpt_dir: &Path) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = Vec::with_capacity(env.len() + 2);
    let mut preload = shim.as_os_str().to_owned();
    for (k, v) in env {
        match k.as_bytes() {
            b"LD_PRELOAD" => {
                if !v.as_bytes().is_empty() && v.as_os_str() != shim.as_os_str() {
                    preload.push(":");
                    preload.push(v.as_os_str());
                }
            }
            b"MOS_CKPT_DIR" => {}
            _ => out.push((k.as_os_str().to_owned(), v.as_os_str().to_owned())),
        }
    }
    out.push(("LD_PRELOAD".into(), preload));
    out.push(("MOS_CKPT_DIR".into(), ckpt_dir.as_os_str().to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuestsConfig {
        GuestsConfig {
            node: "n1".into(),
            mos: PathBuf::from("/opt/mos/bin/mos"),
            shim: PathBuf::from("/opt/mos/lib/libmosshim.so"),
            default_ckpt_dir: PathBuf::from("/var/mos/ckpt"),
            key: None,
            migration_dirs: vec![PathBuf::from("/dev/shm/mos-n1-1")],
        }
    }

    fn spec() -> JobSpec {
        JobSpec {
            argv: vec!["./app".into(), "7".into()],
            env: vec![("A".into(), "1".into())],
            cwd: "/home/u".into(),
            home: "h".into(),
            mem_mib: 0,
            restart_from: None,
            batch: None,
        }
    }

    #[test]
    fn env_adds_shim_first_and_replaces_ckpt_dir() {
        let env = vec![
            (OsBytes::from("LD_PRELOAD"), OsBytes::from("/x/other.so")),
            (OsBytes::from("MOS_CKPT_DIR"), OsBytes::from("/old")),
            (OsBytes::from("PATH"), OsBytes::from("/bin")),
        ];
        let out = guest_env(&env, Path::new("/b/libmosshim.so"), Path::new("/ck"));
        let get = |k: &str| {
            let hits: Vec<_> = out.iter().filter(|(n, _)| n == k).collect();
            assert_eq!(hits.len(), 1, "{k} in {out:?}");
            hits[0].1.clone()
        };
        assert_eq!(get("LD_PRELOAD"), "/b/libmosshim.so:/x/other.so");
        assert_eq!(get("MOS_CKPT_DIR"), "/ck");
        assert_eq!(get("PATH"), "/bin");
    }

    #[test]
    fn restart_plan_runs_mos_restart_on_the_image() {
        let mut s = spec();
        s.restart_from = Some("img/job3.mosimg".into());
        s.batch = Some(BatchIo {
            ckpt_dir: Some("ck".into()),
            ckpt_interval_s: Some(0),
            home_addr: None,
            remote_home: None,
            ..Default::default()
        });
        let p = LaunchPlan::new(&cfg(), JobId(3), &s).unwrap();
        assert_eq!(p.program, PathBuf::from("/opt/mos/bin/mos"));
        assert_eq!(p.args, vec![OsString::from("restart"), "/home/u/img/job3.mosimg".into()]);
        assert_eq!(p.image, PathBuf::from("/home/u/ck/job3.mosimg"));
        assert_eq!(p.ckpt_every, None, "an interval of 0 means off");
        assert!(p.restart && p.env.is_none());
    }

    #[test]
    fn bad_specs_are_refused_by_name() {
        let mut s = spec();
        s.argv.clear();
        let e = LaunchPlan::new(&cfg(), JobId(1), &s).unwrap_err();
        assert_eq!(e.to_string(), "job 1: empty argv");
        let mut s = spec();
        s.cwd = OsBytes::default();
        assert!(LaunchPlan::new(&cfg(), JobId(1), &s).is_err());
        // The shim is missing from this fake bin dir.
        let e = LaunchPlan::new(&cfg(), JobId(2), &spec()).unwrap_err();
        assert!(e.to_string().contains("libmosshim.so is missing"), "{e}");
    }

    #[test]
    fn fresh_plan_resolves_files_against_cwd() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("libmosshim.so"), b"").unwrap();
        let mut c = cfg();
        c.shim = dir.path().join("libmosshim.so");
        let mut s = spec();
        s.batch = Some(BatchIo {
            input: Some("in".into()),
            output: Some("/abs/out".into()),
            error: Some("".into()),
            ckpt_dir: None,
            ckpt_interval_s: Some(5),
            home_addr: None,
            remote_home: None,
        });
        let p = LaunchPlan::new(&c, JobId(9), &s).unwrap();
        assert_eq!(p.program, PathBuf::from("/home/u/app"));
        assert_eq!(p.args, vec![OsString::from("7")]);
        assert_eq!(p.input, Some(PathBuf::from("/home/u/in")));
        assert_eq!(p.output, Some(PathBuf::from("/abs/out")));
        assert_eq!(p.error, None);
        assert_eq!(p.image, PathBuf::from("/var/mos/ckpt/job9.mosimg"));
        assert_eq!(p.ckpt_every, Some(Duration::from_secs(5)));
    }


    #[test]
    fn shared_output_and_error_are_one_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::write(&out, b"old contents, longer than the new").unwrap();
        let plan = LaunchPlan {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "echo one; echo two >&2; echo three".into()],
            cwd: dir.path().to_path_buf(),
            env: Some(vec![]),
            restart: false,
            input: None,
            output: Some(out.clone()),
            error: Some(out.clone()),
            ckpt_dir: dir.path().to_path_buf(),
            image: dir.path().join("img"),
            ckpt_every: None,
        };
        let status = plan.command(JobId(1)).unwrap().status().unwrap();
        assert!(status.success());
        assert_eq!(fs::read_to_string(&out).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn guests_run_in_their_own_group_without_inherited_fds() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // An fd of ours without CLOEXEC must not reach the guest.
        let leak = File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let fd = leak.as_raw_fd();
        // SAFETY: fd is open and owned by `leak` for the whole test.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let plan = LaunchPlan {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                format!("cut -d' ' -f5 /proc/$$/stat; echo $$; test -e /proc/self/fd/{fd} && echo leaked || echo closed; exec grep SigBlk /proc/self/status").into(),
            ],
            cwd: dir.path().to_path_buf(),
            env: Some(vec![("PATH".into(), "/usr/bin:/bin".into())]),
            restart: false,
            input: None,
            output: Some(out.clone()),
            error: None,
            ckpt_dir: dir.path().to_path_buf(),
            image: dir.path().join("img"),
            ckpt_every: None,
        };
        let cmd = plan.command(JobId(1)).unwrap();
        // Spawned from a thread that blocks SIGTERM, as the daemon's threads do.
        let status = std::thread::spawn(move || {
            let mut cmd = cmd;
            // SAFETY: `set` is a local sigset_t (all-zero is a valid value, and sigemptyset
            // initialises it); the mask change affects this short-lived thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            cmd.status().unwrap()
        })
        .join()
        .unwrap();
        assert!(status.success());
        let text = fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], lines[1], "pgid == pid: {text}");
        assert_eq!(lines[2], "closed");
        assert_eq!(lines[3], "SigBlk:\t0000000000000000");
        drop(leak);
    }
}
