//! `mos dashboard` in a real browser: headless Chromium (Debian's package, which
//! `make test` installs) loads the page, and the test reads what it rendered through the
//! DevTools protocol (a WebSocket): the nodes with their plots and the process at home,
//! then, without a reload, the process at node2 and the move in the migrations and the
//! events. The JSON API answers under /api/, the dashboard refuses to write, and beyond
//! loopback it wants the token derived from the cluster key.

use mos_integration::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (with its process group) however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: killing the process group of a child this test started in its own group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_group(mut c: Command) -> Child {
    use std::os::unix::process::CommandExt;
    c.process_group(0);
    c.spawn().unwrap_or_else(|e| panic!("cannot start {c:?}: {e}"))
}

/// `mos dashboard --listen ADDR` started; its child and the URL it printed.
fn dashboard(c: &Cluster, listen: &str) -> (Killed, String) {
    let mut cmd = c.cmd("mos");
    cmd.args(["dashboard", "--listen", listen, "--interval-ms", "200"]).stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
    let mut child = spawn_group(cmd);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("mos dashboard printed no URL: {line:?}")).to_string();
    (Killed(child), url)
}

/// One HTTP/1.1 request; (status, body).
fn http(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // the head, then Content-Length bytes (a server may keep the connection open)
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        }
        None => {
            r.read_to_end(&mut body).unwrap();
        }
    }
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            return c.to_string();
        }
    }
    panic!("no Chromium here: `make test` installs it (apt-get install chromium)");
}

/// Headless Chromium showing `url`, and a DevTools connection to its page.
struct Browser {
    _child: Killed,
    _profile: tempfile::TempDir,
    ws: std::cell::RefCell<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>>,
    next: std::cell::Cell<u64>,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(chromium());
        cmd.args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--window-size=1280,1600", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = spawn_group(cmd);
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                if let Some(at) = l.find("ws://") {
                    let _ = tx.send(l[at..].to_string());
                }
            }
        });
        let child = Killed(child);
        let browser_ws = rx.recv_timeout(Duration::from_secs(60)).expect("Chromium did not say where DevTools listens");
        let port = browser_ws.trim_start_matches("ws://").split(['/', ':']).nth(1).unwrap().to_string();
        // the page's own DevTools address
        let deadline = Instant::now() + Duration::from_secs(30);
        let page_ws = loop {
            let (_, body) = http("GET", &format!("http://127.0.0.1:{port}/json/list"), &[]);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(ws) = v.as_array().and_then(|a| a.iter().find(|t| t["type"] == "page")).and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                break ws.to_string();
            }
            assert!(Instant::now() < deadline, "no page in Chromium: {body}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let (ws, _) = tungstenite::connect(page_ws.as_str()).expect("DevTools WebSocket");
        Browser { _child: child, _profile: profile, ws: ws.into(), next: 1.into() }
    }

    /// A DevTools command's result.
    fn call(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next.get();
        self.next.set(id + 1);
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        let mut ws = self.ws.borrow_mut();
        ws.send(tungstenite::Message::Text(msg.to_string().into())).unwrap();
        loop {
            let m = ws.read().expect("DevTools answer");
            if let tungstenite::Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// A JavaScript expression's value in the page.
    fn eval(&self, js: &str) -> serde_json::Value {
        self.call("Runtime.evaluate", serde_json::json!({"expression": js, "returnByValue": true}))["result"]["value"].clone()
    }

    fn text_of(&self, id: &str) -> String {
        self.eval(&format!("(document.getElementById('{id}') || {{innerText: ''}}).innerText")).as_str().unwrap_or("").to_string()
    }
}

#[test]
fn the_dashboard_renders_the_cluster_in_a_browser_and_follows_a_migration() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    c.mos(&["cluster", "up", "--nodes", "2", "--interval-ms", "200", "--no-balance"]).assert_code(0, "mos cluster up");
    let mut cmd = c.cmd("mos");
    cmd.args(["run", "--"]).arg(compile_c("crunch")).args(["5", "100000"]).env("MOS_HOME_NODE", "node1");
    let mut p = Proc::spawn("crunch", cmd);
    let pid = p.pid().to_string();
    let (_d, url) = dashboard(&c, "127.0.0.1:0");
    assert!(url.starts_with("http://127.0.0.1:") && !url.contains("token="), "{url}");

    // the JSON API
    let (code, body) = http("GET", &format!("{url}api/nodes"), &[]);
    assert_eq!(code, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = nodes.as_array().unwrap().iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names, ["node1", "node2"], "{body}");
    let (code, body) = http("GET", &format!("{url}api/"), &[]);
    assert!(code == 200 && body.contains("/api/cluster"), "{code} {body}");
    assert_eq!(http("POST", &format!("{url}api/cluster"), &[]).0, 405, "the dashboard is read-only");
    assert_eq!(http("GET", &format!("{url}nothing"), &[]).0, 404);

    // the page in Chromium: the nodes, their plots, the process at home
    let b = Browser::open(&url);
    poll_until(
        || {
            let n = b.text_of("nodes");
            let procs = b.text_of("processes");
            let lines = b.eval("document.querySelectorAll('#nodes svg polyline').length").as_u64().unwrap_or(0);
            n.contains("node1") && n.contains("node2") && n.contains("load ") && n.contains("memory used") && lines == 4 && procs.lines().any(|l| l.contains(&pid) && l.contains("crunch") && l.matches("node1").count() == 2)
        },
        || format!("the nodes and the process at home in the page:\n{}\n{}", b.text_of("nodes"), b.text_of("processes")),
    );
    let loaded_at = b.eval("performance.timeOrigin").as_f64();

    // a migration shows without a reload
    c.mos(&["migrate", &pid, "node2"]).assert_code(0, "mos migrate");
    poll_until(
        || {
            let procs = b.text_of("processes");
            let migs = b.text_of("migrations");
            let events = b.text_of("events");
            procs.lines().any(|l| l.contains(&pid) && l.contains("node2")) && migs.contains("node1 -> node2") && migs.contains(&pid) && events.contains(&format!("pid {pid} (")) && events.contains("moved node1 -> node2")
        },
        || format!("the move in the page:\n{}\n{}\n{}", b.text_of("processes"), b.text_of("migrations"), b.text_of("events")),
    );
    assert_eq!(b.eval("performance.timeOrigin").as_f64(), loaded_at, "the page was reloaded");
    assert_eq!(b.eval("document.querySelector('#processes td.away') !== null"), serde_json::json!(true), "the process away is not marked");

    // a picture of it, for people (target/dashboard.png)
    let shot = b.call("Page.captureScreenshot", serde_json::json!({"format": "png", "captureBeyondViewport": true}));
    let png = base64_decode(shot["data"].as_str().unwrap_or(""));
    assert!(png.starts_with(b"\x89PNG"), "no screenshot");
    let _ = std::fs::write(release_dir().join("..").join("dashboard.png"), &png);
    p.kill();
}

#[test]
fn beyond_loopback_the_dashboard_wants_its_token() {
    let c = Cluster::new();
    c.mos(&["cluster", "init"]).assert_code(0, "mos cluster init");
    c.mos(&["cluster", "up", "--nodes", "1", "--interval-ms", "200", "--no-balance"]).assert_code(0, "mos cluster up");
    let (_d, url) = dashboard(&c, "0.0.0.0:0");
    let (base, token) = url.split_once("?token=").unwrap_or_else(|| panic!("no token in {url}"));
    assert_eq!(token.len(), 64, "{url}");
    let key = std::fs::read_to_string(c.home.path().join("cluster.key")).unwrap_or_default();
    assert!(key.is_empty() || !key.contains(token), "the token is the key");
    assert_eq!(http("GET", &format!("{base}api/cluster"), &[]).0, 401);
    assert_eq!(http("GET", base, &[]).0, 401);
    assert_eq!(http("GET", &format!("{base}api/cluster?token=00{}", &token[2..]), &[]).0, 401);
    let (code, body) = http("GET", &format!("{base}api/cluster?token={token}"), &[]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"node1\""), "{body}");
    assert_eq!(http("GET", &format!("{base}api/nodes"), &[("Authorization", &format!("Bearer {token}"))]).0, 200);
    assert_eq!(http("GET", &url, &[]).0, 200, "the page with its token");
}

/// Standard base64 (the screenshot DevTools sends).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
