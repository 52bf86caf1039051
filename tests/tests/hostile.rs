//! Hostile peers on every port of a running cluster: the placer's and the shadowds' TCP
//! ports, the shadowds' gossip (UDP) ports, their forwarded-calls (rsys) ports, their
//! local hand-off sockets and the dashboard's HTTP port each get garbage, a handshake with
//! another cluster's key, oversized and unsigned datagrams, and connections that say
//! nothing. Nothing dies, nothing is believed, and the cluster goes on working: a process
//! migrates and ends as an uninterrupted run does.

use mos_integration::*;
use proto::auth;
use proto::msg::{Hello, Role};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn garbage_tcp(addr: &str) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    let _ = s.write_all(&[0xff; 64]);
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let _ = s.write_all(&u32::MAX.to_le_bytes());
    let _ = s.write_all(&[0u8; 4096]);
}

/// A handshake with another cluster's key fails (and the daemon lives on).
fn wrong_key(addr: &str) {
    let other = proto::ClusterKey::generate().unwrap();
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = auth::client_handshake(&mut s, &other, &Hello::new("intruder", Role::Cli));
    assert!(r.is_err(), "{addr} accepted another cluster's key");
}

/// A peer that starts a handshake and stops half-way.
fn half_handshake(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    let _ = s.write_all(&[1, 0, 0, 0]);
    s
}

fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn garbage_and_wrong_keys_on_every_port_harm_nothing() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    c.mos(&["cluster", "up", "--nodes", "2", "--interval-ms", "200", "--mode", "gossip"]).assert_code(0, "mos cluster up --mode gossip");
    let rs = c.run_state();
    let placer = rs["placer"]["addr"].as_str().unwrap().to_string();
    let nodes: Vec<(String, String, std::path::PathBuf, i64)> = rs["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), n["addr"].as_str().unwrap().to_string(), std::path::PathBuf::from(n["state_dir"].as_str().unwrap()), n["pid"].as_i64().unwrap()))
        .collect();
    let mut cmd = c.cmd("mos");
    cmd.args(["dashboard", "--listen", "127.0.0.1:0"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut dash = Proc::spawn_stdout("mos dashboard", cmd, std::process::Stdio::piped());
    dash.wait_stdout("dashboard at http://");
    let dash_addr = String::from_utf8_lossy(&dash.stdout_now()).split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_start_matches("http://").trim_end_matches('/').to_string();

    // a process at node1 that lives through it all
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("crunch")).args(["7", "100000"]).env("MOS_HOME_NODE", "node1");
    let mut during = Proc::spawn("crunch during", cmd);

    let mut silent = Vec::new();
    let mut tcp = vec![placer.clone(), dash_addr.clone()];
    // the ports that authenticate with the cluster key (rsys connections present a
    // session's token instead)
    let mut keyed = vec![placer.clone()];
    for (_, addr, dir, _) in &nodes {
        tcp.push(addr.clone());
        keyed.push(addr.clone());
        tcp.push(std::fs::read_to_string(dir.join("rsys.addr")).unwrap().trim().to_string());
    }
    for addr in &tcp {
        garbage_tcp(addr);
        silent.push(half_handshake(addr));
        silent.push(TcpStream::connect(addr).unwrap());
    }
    // every port that takes the cluster key refuses another cluster's
    for addr in &keyed {
        wrong_key(addr);
    }
    // gossip: garbage, empty, oversized, and a well-formed packet signed with another key
    let other = proto::ClusterKey::generate().unwrap();
    let forged = proto::gossip::encode(&other, &proto::gossip::Packet {
        seq: 1,
        vectors: vec![proto::gossip::LoadVector { node: "intruder".into(), addr: "127.0.0.1:1".into(), gossip: "127.0.0.1:1".into(), run_queue: 0, cpus: 64, speed: 9000, free_mib: 1 << 20, total_mib: 1 << 20, age_ms: 0 }],
    })
    .unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (_, addr, _, _) in &nodes {
        for d in [vec![0xffu8; 200], Vec::new(), vec![7u8; 65_000], forged.clone()] {
            let _ = u.send_to(&d, addr);
        }
    }
    // the local hand-off sockets (unix, seqpacket): bytes that are no message
    for (_, _, dir, _) in &nodes {
        use std::os::fd::AsRawFd;
        // SAFETY: a new socket of ours, connected and written below, closed on drop.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: we own fd.
        let s: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let path = dir.join("shadow.sock");
        // SAFETY: sockaddr_un is plain data.
        let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        a.sun_family = libc::AF_UNIX as u16;
        for (i, b) in path.as_os_str().as_encoded_bytes().iter().enumerate() {
            a.sun_path[i] = *b as libc::c_char;
        }
        // SAFETY: connect/send on our socket with a valid address and buffer.
        unsafe {
            assert_eq!(libc::connect(s.as_raw_fd(), &a as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_un>() as u32), 0, "{}", path.display());
            libc::send(s.as_raw_fd(), [0xffu8; 300].as_ptr().cast(), 300, libc::MSG_NOSIGNAL);
        }
        let mut b = [0u8; 512];
        // SAFETY: reading the answer (an error, or the close) into our buffer, with a timeout.
        unsafe {
            let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const libc::c_void, std::mem::size_of::<libc::timeval>() as u32);
            libc::recv(s.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0);
        }
        let _ = UnixStream::connect(&path);
    }
    // the dashboard answers a malformed request with an error, and stays up
    let mut s = TcpStream::connect(&dash_addr).unwrap();
    s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = Vec::new();
    let _ = s.read_to_end(&mut b);

    // nothing died, nobody believed the intruder, and the cluster still works
    std::thread::sleep(Duration::from_millis(600));
    for (name, _, _, pid) in &nodes {
        assert!(alive(*pid), "shadowd {name} died");
    }
    assert!(alive(rs["placer"]["pid"].as_i64().unwrap()), "the placer died");
    assert!(dash.is_running(), "the dashboard died");
    let st = c.json(&["status", "--json"]);
    let up: Vec<&str> = st.as_array().unwrap().iter().filter(|n| n["state"] == "up").filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(up, ["node1", "node2"], "{st:#}");
    assert!(!st.to_string().contains("intruder"), "{st:#}");
    let (code, body) = {
        let mut s = TcpStream::connect(&dash_addr).unwrap();
        s.write_all(b"GET /api/nodes HTTP/1.0\r\n\r\n").unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        (t.split_whitespace().nth(1).unwrap_or("").to_string(), t)
    };
    assert!(code == "200" && body.contains("node2") && !body.contains("intruder"), "{body}");
    assert!(during.is_running(), "the process under the shim died");
    c.mos(&["migrate", &during.pid().to_string(), "node2"]).assert_code(0, "mos migrate of the process that lived through it");
    during.kill();
    // and a new one starts, moves and ends as an uninterrupted run
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("crunch")).args(["7", "300"]).env("MOS_HOME_NODE", "node1");
    let mut p = Proc::spawn("crunch", cmd);
    poll_until(|| c.json(&["ps", "--json"]).to_string().contains(&format!("\"pid\":{}", p.pid())), || "the new process registered".into());
    c.mos(&["migrate", &p.pid().to_string(), "node2"]).assert_code(0, "mos migrate after the hostile peers");
    drop(silent);
    let out = p.wait();
    out.assert_code(0, "crunch");
    let want = std::process::Command::new(compile_c("crunch")).args(["7", "300"]).output().unwrap();
    assert_same_bytes("crunch's output after the hostile peers and a migration", &out.stdout, &want.stdout);
    let logs: String = ["node1", "node2"].iter().map(|n| std::fs::read_to_string(c.home.path().join(format!("{n}.log"))).unwrap_or_default()).collect();
    assert!(logs.contains("dropped connection from 127.0.0.1:"), "{logs}");
    dash.kill();
}
