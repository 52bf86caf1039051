//! `make install`: the layout it stages under DESTDIR+PREFIX, and the installed programs
//! finding each other there (the preloaded library in PREFIX/lib, the restorer in
//! PREFIX/lib/mos), not in the build tree.

use mos_integration::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn stage(dest: &Path) -> std::path::PathBuf {
    let mut c = Command::new("bash");
    c.arg("scripts/install.sh").arg("/usr/local").arg(dest).current_dir(workspace_root()).env("REL", release_dir());
    run("scripts/install.sh", c, b"").assert_code(0, "install.sh");
    dest.join("usr/local")
}

#[test]
fn install_stages_programs_library_restorer_units_and_docs() {
    let dest = tempfile::tempdir().unwrap();
    let root = stage(dest.path());
    for f in ["bin/mos", "bin/mossubmit", "bin/shadowd", "bin/placer", "lib/libmosshim.so", "lib/mos/mosrestart"] {
        let m = std::fs::metadata(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0, "{f} is not executable");
    }
    for (unit, exe) in [("mos-shadowd", "shadowd"), ("mos-placer", "placer")] {
        let u = std::fs::read_to_string(root.join(format!("lib/systemd/system/{unit}.service"))).unwrap();
        assert!(u.contains(&format!("ExecStart=/usr/local/bin/{exe} ")) && u.contains("[Install]") && !u.contains("@PREFIX@"), "{u}");
    }
    for page in ["mos.1", "mos-migrate.1", "mos-ckpt.1", "mossubmit.1", "shadowd.1", "placer.1"] {
        let p = std::fs::read_to_string(root.join("share/man/man1").join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(p.starts_with(".ie") || p.contains(".TH "), "{page}: {p}");
    }
    let shadowd_page = std::fs::read_to_string(root.join("share/man/man1/shadowd.1")).unwrap();
    assert!(shadowd_page.contains("advertise"), "the daemon's options are in its page");
    let bash = std::fs::read_to_string(root.join("share/bash-completion/completions/mos")).unwrap();
    assert!(bash.contains("migrate") && bash.contains("complete"), "{bash}");
    assert!(root.join("share/zsh/site-functions/_mos").exists() && root.join("share/fish/vendor_completions.d/mos.fish").exists());
    let mut v = Command::new(root.join("bin/mos"));
    v.arg("--version");
    let v = run("installed mos --version", v, b"");
    v.assert_code(0, "mos --version");
}

/// The installed `mos run`, `mos ckpt` and `mos restart` work from the prefix alone: the
/// program runs with PREFIX/lib/libmosshim.so, and its restart (PREFIX/lib/mos/mosrestart)
/// goes on where it stopped, as an uninterrupted run.
#[test]
fn installed_programs_find_each_other_under_the_prefix() {
    let dest = tempfile::tempdir().unwrap();
    let root = stage(dest.path());
    let prog = compile_c("counter");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("go.1"), b"").unwrap();
    std::fs::write(work.path().join("go.2"), b"").unwrap();
    let mut reference = Command::new(&prog);
    reference.args(["2", "3", "0"]).env("MOS_SYNC", work.path()).env("COUNTER_FLUSH", "1").env_remove("LD_PRELOAD");
    let want = run("counter, not under mos", reference, b"");
    want.assert_code(0, "reference counter");
    for f in ["go.1", "ready.1", "ready.2"] {
        let _ = std::fs::remove_file(work.path().join(f));
    }
    let mos = root.join("bin/mos");
    let mut c = Command::new(&mos);
    c.args(["run", "--"]).arg(&prog).args(["2", "3", "0"]).env("MOS_SYNC", work.path()).env("COUNTER_FLUSH", "1").env_remove("LD_PRELOAD").env_remove("MOS_LIBDIR").env_remove("MOS_HOME");
    let mut p = Proc::spawn("installed mos run counter", c);
    poll_until(|| work.path().join("ready.1").exists(), || "counter to reach its sync point".into());
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
    let shim = root.join("lib/libmosshim.so");
    assert!(maps.contains(&shim.display().to_string()), "the installed library is preloaded:\n{maps}");
    let img = work.path().join("counter.mosimg");
    let mut ck = Command::new(&mos);
    ck.args(["ckpt", "--exit", "-o"]).arg(&img).arg(p.pid().to_string());
    run("installed mos ckpt", ck, b"").assert_code(0, "mos ckpt --exit");
    let first = p.wait_timeout(Duration::from_secs(30));
    first.assert_code(0, "counter after ckpt --exit");
    std::fs::write(work.path().join("go.1"), b"").unwrap();
    let mut rs = Command::new(&mos);
    rs.arg("restart").arg(&img).env("MOS_SYNC", work.path());
    let rest = run("installed mos restart", rs, b"");
    rest.assert_code(0, "mos restart");
    let mut got = first.stdout.clone();
    got.extend_from_slice(&rest.stdout);
    assert_same_bytes("counter stopped and restarted from the prefix", &got, &want.stdout);
}
