//! "compression on the wire": a migration stream (the product's own sender and
//! receiver, `proto::spliced`) of real images over a rate-limited link, with and without
//! lz4, beside raw TCP over the same link in the same run. The link is a veth pair into
//! a network namespace with tc (tbf) at 1 Gbit/s each way, on private addresses of
//! this machine; the same streams over loopback show why `--compress auto` leaves
//! lz4 off when the target is on this machine. Namespace and links are removed on drop.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::msg::{JobId, Msg};

use crate::bin;

/// A network namespace joined to this one by a veth pair, both ends limited by tbf.
struct Link {
    ns: String,
    host_if: String,
    /// The namespace side's address.
    far: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn tc(args: &[&str]) -> Result<(), String> {
    let out = Command::new("tc").args(args).output().map_err(|e| format!("tc: {e}"))?;
    if !out.status.success() {
        return Err(format!("tc {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

impl Link {
    fn up(rate: &str) -> Result<Link, String> {
        let id = std::process::id() % 250 + 1;
        let l = Link { ns: format!("mosbench{id}"), host_if: format!("mosb{id}a"), far: format!("10.203.{id}.2") };
        let near = format!("10.203.{id}.1/30");
        let peer = format!("mosb{id}b");
        ip(&["netns", "add", &l.ns])?;
        ip(&["link", "add", &l.host_if, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &l.ns])?;
        ip(&["addr", "add", &near, "dev", &l.host_if])?;
        ip(&["link", "set", &l.host_if, "up"])?;
        ip(&["-n", &l.ns, "addr", "add", &format!("{}/30", l.far), "dev", &peer])?;
        ip(&["-n", &l.ns, "link", "set", &peer, "up"])?;
        ip(&["-n", &l.ns, "link", "set", "lo", "up"])?;
        tc(&["qdisc", "add", "dev", &l.host_if, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"])?;
        tc(&["-n", &l.ns, "qdisc", "add", "dev", &peer, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"])?;
        Ok(l)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).stderr(Stdio::null()).status();
    }
}

/// A listener in namespace `ns` (None: this one) on `addr`:0, made by a thread that
/// joined it, and the thread receiving one stream into `dest` as a target shadowd does
/// (memory for `reserve` bytes made ready first; its result).
fn receiver(ns: Option<&str>, addr: &str, dest: PathBuf, reserve: u64) -> Result<(String, std::thread::JoinHandle<Result<u64, String>>), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.map(|n| format!("/var/run/netns/{n}"));
    let addr = addr.to_string();
    let h = std::thread::spawn(move || {
        if let Some(ns) = ns {
            let f = File::open(&ns).map_err(|e| format!("{ns}: {e}"))?;
            // SAFETY: setns on an fd we own; it moves only this thread.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
            }
        }
        // as at a target: the memory made ready before the stream starts
        let landing = shadowd::landing::Landing::prepare(&dest, reserve, true).map_err(|e| e.to_string())?;
        let l = TcpListener::bind((addr.as_str(), 0)).map_err(|e| e.to_string())?;
        let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
        let (c, _) = l.accept().map_err(|e| e.to_string())?;
        let mut r = proto::FrameReader::new(c);
        let _first: Msg = r.read_header_only().map_err(|e| e.to_string())?;
        landing.receive(&mut r).map_err(|e| e.to_string())
    });
    let a = rx.recv().map_err(|_| "the receiver thread ended".to_string())??;
    Ok((a.to_string(), h))
}

/// Stream `image` to a receiver at `ns`/`addr` as a migration stream (compressed or
/// not), as shadowds do; the time from connecting until the receiver has it whole.
fn stream(image: &Path, ns: Option<&str>, addr: &str, compress: bool, dir: &Path) -> Result<Duration, String> {
    let dest = dir.join("received.mosimg");
    let size = std::fs::metadata(image).map_err(|e| e.to_string())?.len();
    let (at, rx) = receiver(ns, addr, dest.clone(), size)?;
    let (pr, pw) = proto::spliced::image_pipe().map_err(|e| e.to_string())?;
    let mut src = File::open(image).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let feeder = std::thread::spawn(move || std::io::copy(&mut src, &mut File::from(pw)).map_err(|e| e.to_string()));
    let mut s = TcpStream::connect(&at).map_err(|e| e.to_string())?;
    let first = Msg::MigrationImage { job: JobId(1), home: "bench".into(), reserve: 0, lanes: 0 };
    let n = proto::spliced::send_stream(&mut s, pr.as_fd(), Some(&first), None, compress).map_err(|e| e.to_string())?;
    feeder.join().map_err(|_| "feeder panicked".to_string())??;
    proto::spliced::seal(&mut s, n).map_err(|e| e.to_string())?;
    let got = rx.join().map_err(|_| "receiver panicked".to_string())??;
    let took = t0.elapsed();
    if got != n || !same_file(image, &dest)? {
        return Err(format!("the received image differs ({got} of {n} bytes)"));
    }
    let _ = std::fs::remove_file(&dest);
    Ok(took)
}

fn same_file(a: &Path, b: &Path) -> Result<bool, String> {
    let (mut x, mut y) = (BufReader::new(File::open(a).map_err(|e| e.to_string())?), BufReader::new(File::open(b).map_err(|e| e.to_string())?));
    let (mut p, mut q) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = x.read(&mut p).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(y.read(&mut q).map_err(|e| e.to_string())? == 0);
        }
        y.read_exact(&mut q[..n]).map_err(|e| e.to_string())?;
        if p[..n] != q[..n] {
            return Ok(false);
        }
    }
}

/// `bytes` of raw TCP to a listener at `ns`/`addr` (1 MiB writes): the link's speed.
fn raw(ns: Option<&str>, addr: &str, bytes: u64) -> Result<Duration, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.map(|n| format!("/var/run/netns/{n}"));
    let addr = addr.to_string();
    let h = std::thread::spawn(move || -> Result<u64, String> {
        if let Some(ns) = ns {
            let f = File::open(&ns).map_err(|e| format!("{ns}: {e}"))?;
            // SAFETY: setns on an fd we own; it moves only this thread.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
        }
        let l = TcpListener::bind((addr.as_str(), 0)).map_err(|e| e.to_string())?;
        let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
        let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match c.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got += n as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let at = rx.recv().map_err(|_| "the receiver thread ended".to_string())??;
    let buf = vec![7u8; 1 << 20];
    let t0 = Instant::now();
    let mut s = TcpStream::connect(at).map_err(|e| e.to_string())?;
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf).map_err(|e| e.to_string())?;
        sent += buf.len() as u64;
    }
    drop(s);
    h.join().map_err(|_| "receiver panicked".to_string())??;
    Ok(t0.elapsed())
}

/// A python3 process holding `MOS_BENCH_WIRE_MIB` (256) MiB or so of ordinary objects
/// (records of ints, floats, strings, lists), checkpointed into `img`.
fn python_image(img: &Path) -> Result<(), String> {
    let mib: u64 = std::env::var("MOS_BENCH_WIRE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let n = mib * 1024 * 1024 / 400;
    let script = format!(
        "import sys\nrows=[{{'id':i,'name':'user%07d'%i,'score':i*0.37,'tags':['a','b',str(i%97)],'email':'u%d@example.org'%(i*7919%1000003)}} for i in range({n})]\nprint('ready',flush=True)\nsys.stdin.readline()\n"
    );
    let mut c = Command::new("python3").args(["-c", &script]).env("LD_PRELOAD", bin("libmosshim.so")).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| format!("python3: {e}"))?;
    let mut out = BufReader::new(c.stdout.take().ok_or("no stdout")?);
    let mut l = String::new();
    out.read_line(&mut l).map_err(|e| e.to_string())?;
    if !l.starts_with("ready") {
        let _ = c.kill();
        return Err(format!("python3 said {l:?}"));
    }
    let o = Command::new(bin("mos")).args(["ckpt", &c.id().to_string(), "--exit", "-o"]).arg(img).output().map_err(|e| e.to_string())?;
    let _ = c.kill();
    let _ = c.wait();
    if !o.status.success() {
        return Err(format!("mos ckpt: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(())
}

/// As many bytes as `like` of random data (nothing to compress: lz4's worst case).
fn random_image(like: &Path, out: &Path) -> Result<(), String> {
    let n = std::fs::metadata(like).map_err(|e| e.to_string())?.len();
    let mut f = File::create(out).map_err(|e| e.to_string())?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < n {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let k = (n - done).min(buf.len() as u64) as usize;
        f.write_all(&buf[..k]).map_err(|e| e.to_string())?;
        done += k as u64;
    }
    Ok(())
}

pub fn run(dir: &Path) {
    println!("== mos bench: compression on the wire (lz4), a 1 Gbit/s link and loopback ==");
    if let Err(e) = compare(dir) {
        println!("compression: FAILED: {e}");
    }
}

fn compare(dir: &Path) -> Result<(), String> {
    let py = dir.join("python.mosimg");
    python_image(&py)?;
    let rnd = dir.join("random.bin");
    random_image(&py, &rnd)?;
    let bytes = std::fs::metadata(&py).map_err(|e| e.to_string())?.len();
    let mib = bytes as f64 / f64::from(1u32 << 20);
    let link = Link::up("1gbit")?;
    let wire = raw(Some(&link.ns), &link.far, bytes)?;
    println!("raw TCP over the 1 Gbit/s veth link (tbf), {mib:.0} MiB: {:.0} ms = {:.0} MB/s (baseline, same run)", wire.as_secs_f64() * 1e3, bytes as f64 / wire.as_secs_f64() / 1e6);
    let lo = raw(None, "127.0.0.1", bytes)?;
    println!("raw TCP over loopback, {mib:.0} MiB: {:.0} ms (baseline, same run)", lo.as_secs_f64() * 1e3);
    for (what, img) in [("python3 image (typical)", &py), ("random bytes (incompressible)", &rnd)] {
        let plain = stream(img, Some(&link.ns), &link.far, false, dir)?;
        let lz4 = stream(img, Some(&link.ns), &link.far, true, dir)?;
        let lplain = stream(img, None, "127.0.0.1", false, dir)?;
        let llz4 = stream(img, None, "127.0.0.1", true, dir)?;
        println!(
            "{what}, {mib:.0} MiB: 1 Gbit/s link: plain {:.0} ms ({:.2} x raw), lz4 {:.0} ms ({:.2} x raw): lz4 {} it {:.2} x; loopback: plain {:.0} ms, lz4 {:.0} ms ({:.2} x)",
            plain.as_secs_f64() * 1e3,
            wire.as_secs_f64() / plain.as_secs_f64(),
            lz4.as_secs_f64() * 1e3,
            wire.as_secs_f64() / lz4.as_secs_f64(),
            if lz4 < plain { "shortens" } else { "lengthens" },
            plain.as_secs_f64() / lz4.as_secs_f64(),
            lplain.as_secs_f64() * 1e3,
            llz4.as_secs_f64() * 1e3,
            lplain.as_secs_f64() / llz4.as_secs_f64()
        );
    }
    println!("  (mos migrate --compress auto: lz4 when the target is on another machine, off on this one; streams are checked byte for byte)");
    let _ = std::fs::remove_file(&py);
    let _ = std::fs::remove_file(&rnd);
    Ok(())
}
