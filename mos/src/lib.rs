//! The mos commands. Each returns a one-line error a person can act on.

pub mod cluster;
pub mod dashboard;
pub mod netbed;
pub mod node;
pub mod report;
pub mod testbed;
pub mod top;
pub mod watch;

use anyhow::{anyhow, bail, Result};
use ckpt::control::{self, CkptReply, CkptRequest};
use ckpt::image::{ImageFile, PAGE};
use std::path::{Path, PathBuf};

pub fn ckpt_cmd(pid: i32, exit: bool, output: Option<PathBuf>, stats: bool, strict: bool, exit_code: i32) -> Result<()> {
    let out = match output {
        Some(p) if p.is_absolute() => Some(p),
        Some(p) => Some(std::env::current_dir()?.join(p)),
        None => None,
    };
    let req = CkptRequest { lanes: 0, out: out.map(|p| p.to_string_lossy().into_owned()), exit, migrate: None, stream: false, strict, exit_code, live: false, lazy: false };
    match control::request(pid, &req) {
        Ok(CkptReply::Done { path, bytes, stop_us, frozen_us, threads, total_us, .. }) => {
            println!("{path}");
            if stats {
                eprintln!("{bytes} bytes, {threads} threads, stopped in {stop_us} us, frozen {frozen_us} us, total {total_us} us");
            }
            Ok(())
        }
        Ok(CkptReply::Failed(e)) => bail!("ckpt {pid}: {e} (the process keeps running)"),
        Err(e) => bail!("ckpt {pid}: {e}"),
    }
}

/// The restorer binary: next to this executable, or installed (`proto::paths`).
fn restorer() -> Result<PathBuf> {
    proto::paths::locate("mosrestart").map_err(|e| anyhow::anyhow!("restart: {e}"))
}

/// `mos run -- PROG ARGS`: become PROG with libmosshim.so preloaded (in front of any
/// LD_PRELOAD already set). The pid stays the same, so `mos ckpt` takes `$!` as usual.
pub fn run_cmd(argv: &[std::ffi::OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let shim = proto::paths::locate("libmosshim.so").map_err(|e| anyhow::anyhow!("run: {e}"))?;
    let mut preload = shim.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(" ");
        preload.push(old);
    }
    if let Some(path) = find_program(&argv[0]) {
        if is_static_elf(&path) {
            eprintln!(
                "mos run: {} is statically linked: libmosshim cannot be preloaded into it, so it runs WITHOUT checkpointing or migration (mos ckpt and mos migrate will refuse it)",
                path.display()
            );
        }
    }
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).env("LD_PRELOAD", preload).exec();
    bail!("run: cannot execute {}: {err}", argv[0].to_string_lossy())
}

/// The file `prog` names as exec would find it (a name with a slash as it is, else the
/// first executable file of that name in $PATH).
fn find_program(prog: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if prog.as_bytes().contains(&b'/') {
        return Some(prog.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// An x86_64 ELF executable with no program interpreter (PT_INTERP): nothing would
/// load LD_PRELOAD libraries into it (`cc -static`, static-pie, Go, musl static).
/// Scripts and anything unreadable are not.
fn is_static_elf(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let mut h = [0u8; 64];
    if f.read_exact(&mut h).is_err() || &h[..4] != b"\x7fELF" || h[4] != 2 {
        return false;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let (phoff, phentsize, phnum) = (u64::from_le_bytes(h[32..40].try_into().unwrap_or_default()), u16_at(&h, 54) as usize, u16_at(&h, 56) as usize);
    if phentsize < 4 || phnum == 0 || phnum > 256 || f.seek(SeekFrom::Start(phoff)).is_err() {
        return false;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    if f.read_exact(&mut ph).is_err() {
        return false;
    }
    const PT_INTERP: u32 = 3;
    !ph.chunks(phentsize).any(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) == PT_INTERP)
}

pub fn restart_cmd(image: &Path, eager: bool, no_verify: bool, unlink: bool, lazy_pages: Option<&Path>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    // Validate here so a bad image fails before anything happens; the restorer checks again.
    let img = ImageFile::open(image).map_err(|e| anyhow!("restart: {}: {e}", image.display()))?;
    if !no_verify {
        img.verify_data().map_err(|e| anyhow!("restart: {}: {e}", image.display()))?;
    }
    drop(img);
    let mut cmd = std::process::Command::new(restorer()?);
    cmd.arg0("mosrestart");
    if eager {
        cmd.arg("--eager");
    }
    // data already verified above
    cmd.arg("--no-verify");
    if unlink {
        cmd.arg("--unlink");
    }
    if let Some(sock) = lazy_pages {
        cmd.env(ckpt::restore::LAZY_PAGES_ENV, sock);
    }
    cmd.arg(image);
    let err = cmd.exec();
    bail!("restart: cannot run the restorer: {err}")
}

fn prot_str(p: u32) -> String {
    let f = |b: i32, c: char| if p & b as u32 != 0 { c } else { '-' };
    [f(libc::PROT_READ, 'r'), f(libc::PROT_WRITE, 'w'), f(libc::PROT_EXEC, 'x')].iter().collect()
}

pub fn inspect_cmd(image: &Path, json: bool) -> Result<()> {
    let img = ImageFile::open(image).map_err(|e| anyhow!("inspect: {}: {e}", image.display()))?;
    let data_ok = img.verify_data();
    let m = &img.meta;
    let h = &img.header;
    if json {
        let regions: Vec<_> = m
            .regions
            .iter()
            .zip(&img.region_hashes)
            .map(|(r, hsh)| {
                serde_json::json!({
                    "start": r.start, "end": r.end, "prot": prot_str(r.prot), "kind": format!("{:?}", r.kind),
                    "path": r.path, "data_bytes": r.data_bytes(), "extents": r.extents.len(), "checksum": format!("{hsh:016x}"),
                })
            })
            .collect();
        let fds: Vec<_> = m
            .fds
            .iter()
            .map(|f| serde_json::json!({"fd": f.fd, "kind": format!("{:?}", f.kind), "path": f.path, "offset": f.offset, "flags": format!("{:o}", f.flags), "target": f.target}))
            .collect();
        let threads: Vec<_> = m
            .threads
            .iter()
            .map(|t| serde_json::json!({"tid": t.old_tid, "main": t.is_main, "manager": t.is_manager, "fs_base": t.fs_base}))
            .collect();
        let v = serde_json::json!({
            "file": image, "size": img.size, "version": h.version, "arch": ckpt::image::arch_name(h.arch),
            "page_size": h.page_size, "meta_bytes": h.meta_len, "data_bytes": h.data_len,
            "data_checksums_ok": data_ok.is_ok(),
            "pid": m.vpid, "real_pid": m.real_pid, "comm": m.comm, "exe": m.exe, "cmdline": m.cmdline,
            "cwd": m.cwd, "uid": m.uid, "gid": m.gid, "umask": format!("{:04o}", m.umask),
            "created_unix_ms": m.created_unix_ms, "regions": regions, "fds": fds, "threads": threads,
            "special": m.special.iter().map(|s| serde_json::json!({"name": s.name, "start": s.start, "end": s.end})).collect::<Vec<_>>(),
            "sigactions": m.sigactions.len(), "itimers": m.itimers.len(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("image      {}", image.display());
    println!("format     mos image v{} ({}), {} bytes: metadata {} B, page data {} B", h.version, ckpt::image::arch_name(h.arch), img.size, h.meta_len, h.data_len);
    println!("checksums  header ok, metadata ok, page data {}", match &data_ok { Ok(()) => "ok".to_string(), Err(e) => e.to_string() });
    println!("process    {} pid {} (real pid {} when taken), uid {} gid {}", m.comm, m.vpid, m.real_pid, m.uid, m.gid);
    println!("command    {}", m.cmdline.join(" "));
    println!("exe        {}", m.exe);
    println!("cwd        {}  umask {:04o}", m.cwd, m.umask);
    println!("threads    {} ({} application + manager)", m.threads.len(), m.threads.iter().filter(|t| !t.is_manager).count());
    println!("signals    {} dispositions, {} itimers, {} rlimits", m.sigactions.len(), m.itimers.len(), m.rlimits.len());
    println!("regions    {} ({} pages saved)", m.regions.len(), m.data_bytes() / PAGE);
    for (r, hsh) in m.regions.iter().zip(&img.region_hashes) {
        println!(
            "  {:012x}-{:012x} {} {:>10} KiB saved {:>10} KiB  {:<12} {:016x} {}",
            r.start,
            r.end,
            prot_str(r.prot),
            (r.end - r.start) / 1024,
            r.data_bytes() / 1024,
            format!("{:?}", r.kind),
            hsh,
            r.path
        );
    }
    for s in &m.special {
        println!("  {:012x}-{:012x} moved at restart {}", s.start, s.end, s.name);
    }
    println!("fds        {}", m.fds.len());
    for f in &m.fds {
        println!("  {:>4} {:<8} flags {:o} offset {} {}", f.fd, format!("{:?}", f.kind), f.flags, f.offset, f.target);
    }
    Ok(())
}

/// `mos sim`: the classic policies on one workload, a row each.
pub fn sim_cmd(policy: &str, nodes: usize, jobs: usize, seed: u64, utilization: f64, placed_first: bool, json: bool) -> Result<()> {
    use placer::taxonomy::{self, TaxConfig, POLICIES};
    let policies: Vec<&str> = if policy == "all" {
        POLICIES.to_vec()
    } else if POLICIES.contains(&policy) {
        vec![policy]
    } else {
        bail!("sim: no policy {policy:?} (one of {}, or all)", POLICIES.join(", "));
    };
    if nodes == 0 || jobs == 0 {
        bail!("sim: --nodes and --jobs must be at least 1");
    }
    if !(utilization > 0.0 && utilization < 1.0) {
        bail!("sim: --utilization {utilization}: want a number between 0 and 1 (e.g. 0.85)");
    }
    let cfg = TaxConfig { utilization, local_start: !placed_first, ..TaxConfig::new(nodes, jobs, seed) };
    let rows: Vec<_> = policies.iter().map(|p| taxonomy::run_policy(&cfg, p)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"config": cfg, "rows": rows}))?);
    } else {
        println!("{nodes} nodes (speeds 0.5/1/1/2), {jobs} processes, Pareto lifetimes 1-10000 s, utilization {utilization}, seed {seed}{}", if placed_first { ", preemptive policies place first" } else { ", preemptive policies start at home" });
        print!("{}", taxonomy::table(&rows));
    }
    Ok(())
}

/// `mos wait LOG [JOB] [--wait S]` (condor_wait): true once every job of the event log
/// (or JOB: `CLUSTER` or `CLUSTER.PROC`) that was submitted has terminated (005) or been
/// aborted (009); false if `limit` passes first. A log that does not exist yet is waited
/// for; one that holds none of JOB's records is an error once JOB is named and submitted
/// nowhere in it by the deadline.
pub fn wait_cmd(log: &Path, job: Option<&str>, limit: Option<std::time::Duration>) -> Result<bool> {
    use placer::ulog::headers;
    let want = |id: &placer::id::JobId| -> bool {
        match job {
            None => true,
            Some(j) if j.contains('.') => j == id.to_string(),
            Some(j) => j.parse::<u64>().is_ok_and(|c| c == id.cluster),
        }
    };
    if let Some(j) = job {
        let ok = if j.contains('.') { j.parse::<placer::id::JobId>().is_ok() } else { j.parse::<u64>().is_ok() };
        if !ok {
            bail!("wait: bad job {j:?} (want CLUSTER or CLUSTER.PROC, like 1 or 1.0)");
        }
    }
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    loop {
        let text = match std::fs::read(log) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => bail!("wait: {}: {e}", log.display()),
        };
        let mut open = std::collections::BTreeSet::new();
        let mut seen = false;
        for h in headers(&text).into_iter().filter(|h| want(&h.id)) {
            seen = true;
            match h.code {
                0 => {
                    open.insert(h.id);
                }
                5 | 9 => {
                    open.remove(&h.id);
                }
                _ => {}
            }
        }
        if seen && open.is_empty() {
            println!("All jobs done.");
            return Ok(true);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            println!("Time expired.");
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
