//! The cluster key file: created atomically with mode 0600, never clobbered unless asked,
//! and refused when others could read it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};
use std::thread;

use proto::auth::{create_key_file, load_key};
use proto::KeyError;

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn dir_entries(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn create_then_load_gives_the_same_key() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cluster.key");
    let k = create_key_file(&p, false).unwrap();
    assert_eq!(mode(&p), 0o600);
    let text = fs::read_to_string(&p).unwrap();
    assert_eq!(text.len(), 65);
    assert!(
        text.ends_with('\n') && text[..64].bytes().all(|b| b.is_ascii_hexdigit()),
        "{text:?}"
    );
    assert_eq!(load_key(&p).unwrap(), k);
    assert_eq!(
        dir_entries(d.path()),
        ["cluster.key"],
        "temporary file left behind"
    );
}

#[test]
fn refuses_to_overwrite_unless_asked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cluster.key");
    let k1 = create_key_file(&p, false).unwrap();
    let e = create_key_file(&p, false).unwrap_err();
    assert!(matches!(&e, KeyError::Exists { path } if path == &p), "{e}");
    assert!(e.to_string().contains("already exists"));
    assert_eq!(load_key(&p).unwrap(), k1, "the existing key was changed");
    let k2 = create_key_file(&p, true).unwrap();
    assert_ne!(k1, k2);
    assert_eq!(load_key(&p).unwrap(), k2);
    assert_eq!(mode(&p), 0o600);
    assert_eq!(
        dir_entries(d.path()),
        ["cluster.key"],
        "temporary file left behind"
    );
}

#[test]
fn racing_creators_make_exactly_one_key() {
    let d = tempfile::tempdir().unwrap();
    let p = Arc::new(d.path().join("cluster.key"));
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (p, start) = (p.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                create_key_file(&p, false)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(KeyError::Exists { .. }))));
    assert_eq!(&load_key(&p).unwrap(), winners[0]);
    assert_eq!(dir_entries(d.path()), ["cluster.key"]);
}

#[test]
fn refuses_a_key_others_can_access() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cluster.key");
    create_key_file(&p, false).unwrap();
    for bad in [0o640, 0o604, 0o660, 0o644, 0o602, 0o610] {
        fs::set_permissions(&p, fs::Permissions::from_mode(bad)).unwrap();
        match load_key(&p) {
            Err(e @ KeyError::InsecurePermissions { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("{bad:04o}")) && text.contains("chmod 600"),
                    "{text}"
                );
            }
            other => panic!("mode {bad:o}: {other:?}"),
        }
    }
    fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(load_key(&p).is_ok(), "owner-only read must be accepted");
}

#[test]
fn refuses_missing_malformed_and_non_files() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.key");
    match load_key(&missing) {
        Err(e @ KeyError::Io { op: "open", .. }) => {
            assert!(e.to_string().contains("nope.key"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let p = d.path().join("bad.key");
    for content in [
        "hello\n",
        "",
        &"0".repeat(63),
        &"g".repeat(64),
        &"00".repeat(33),
    ] {
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            matches!(load_key(&p), Err(KeyError::Malformed { .. })),
            "content {content:?}"
        );
    }
    fs::write(&p, [0xffu8; 64]).unwrap();
    assert!(
        matches!(load_key(&p), Err(KeyError::Malformed { .. })),
        "binary content"
    );
    fs::write(&p, vec![b'a'; 1 << 20]).unwrap();
    assert!(
        matches!(load_key(&p), Err(KeyError::Malformed { .. })),
        "huge content"
    );

    let sub = d.path().join("dir.key");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(load_key(&sub), Err(KeyError::NotAFile { .. })));
}

#[test]
fn create_reports_a_missing_directory() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("no/such/dir/cluster.key");
    match create_key_file(&p, false) {
        Err(e @ KeyError::Io { op: "create", .. }) => {
            assert!(e.to_string().contains("no/such/dir"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fifo_in_place_of_the_key_is_refused_without_hanging() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cluster.key");
    let status = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&p)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(matches!(load_key(&p), Err(KeyError::NotAFile { .. })));
}
