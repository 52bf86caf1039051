//! `mos image inspect FILE [--json]`.

use mos_integration::*;
use serde_json::Value;
use std::path::PathBuf;

/// counter with a log file: fd 3 = counter.log (O_APPEND), offset 8 ("stage 1\n").
fn image(env: &Env) -> (PathBuf, i32) {
    let prog = compile_c("counter");
    let mut app = env.spawn_app(&prog, &["1", "100", "0", "counter.log"], &[]);
    let pid = app.pid();
    env.wait_ready(&mut app, 1);
    let (img, _) = env.ckpt_exit(&mut app, "counter.img");
    (img, pid)
}

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok().or_else(|| u64::from_str_radix(s, 16).ok()),
            }
        }
        _ => None,
    }
}

#[test]
fn inspect_human_summary() {
    let env = Env::new();
    let (img, pid) = image(&env);
    let before = file_bytes(&img);
    let out = env.inspect(&img, false);
    out.assert_code(0, "mos image inspect");
    let text = out.stdout_str();
    assert!(
        text.contains("counter"),
        "summary must name the comm:\n{text}"
    );
    assert!(
        text.to_lowercase().contains("regions"),
        "summary must mention regions:\n{text}"
    );
    assert!(
        text.contains(&pid.to_string()),
        "summary should show the pid {pid}:\n{text}"
    );
    assert!(file_bytes(&img) == before, "inspect modified the image");
}

#[test]
fn inspect_json() {
    let env = Env::new();
    let (img, pid) = image(&env);
    let out = env.inspect(&img, true);
    out.assert_code(0, "mos image inspect --json");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not one JSON value: {e}\n{}",
            out.describe()
        )
    });
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"));
    for k in [
        "version", "arch", "pid", "comm", "regions", "fds", "threads",
    ] {
        assert!(o.contains_key(k), "missing key {k:?} in {v}");
    }
    assert_eq!(num(&o["version"]), Some(2), "version");
    assert_eq!(num(&o["pid"]), Some(pid as u64), "pid");
    assert_eq!(o["comm"].as_str(), Some("counter"), "comm");

    let regions = o["regions"].as_array().expect("regions is an array");
    assert!(!regions.is_empty(), "no regions");
    let mut data = 0u64;
    for r in regions {
        for k in ["start", "end", "prot", "path", "data_bytes"] {
            assert!(r.get(k).is_some(), "region lacks {k:?}: {r}");
        }
        let (s, e) = (num(&r["start"]), num(&r["end"]));
        if let (Some(s), Some(e)) = (s, e) {
            assert!(s < e, "region start >= end: {r}");
        }
        data += num(&r["data_bytes"]).unwrap_or(0);
    }
    assert!(
        regions
            .iter()
            .any(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/counter"))),
        "no region of the executable: {}",
        serde_json::to_string_pretty(regions).unwrap()
    );
    assert!(
        data >= 4 << 20,
        "regions hold only {data} data bytes, the app touched 4 MiB of heap"
    );

    let fds = o["fds"].as_array().expect("fds is an array");
    for f in fds {
        for k in ["fd", "kind", "path", "offset"] {
            assert!(f.get(k).is_some(), "fd entry lacks {k:?}: {f}");
        }
    }
    let log = fds
        .iter()
        .find(|f| num(&f["fd"]) == Some(3))
        .unwrap_or_else(|| panic!("no fd 3 in {}", serde_json::to_string_pretty(fds).unwrap()));
    assert!(
        log["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/counter.log")),
        "fd 3 path: {log}"
    );
    assert_eq!(num(&log["offset"]), Some(8), "fd 3 offset: {log}");
    assert!(
        fds.iter().any(|f| num(&f["fd"]) == Some(1)),
        "no fd 1 in fds"
    );
}
