//! Memory contents and layout across a checkpoint: globals, bss, a 1 GiB
//! malloc, sbrk, anonymous mmap, stack, small malloc blocks, PROT_READ and
//! PROT_NONE regions; brk/malloc/free keep working after the restart.

use mos_integration::*;

const EXPECT_AFTER: &[&str] = &[
    "globals ok\n",
    "bss ok (0 bad)\n",
    "big malloc ok (0 bad)\n",
    "sbrk region ok (0 bad)\n",
    "anon mmap ok (0 bad)\n",
    "stack ok (0 bad)\n",
    "small blocks ok (0 bad)\n",
    "readonly content ok (0 bad)\n",
    "readonly perms r--p\n",
    "prot_none perms ---p\n",
    "sbrk after restart ok\n",
    "malloc/free after restart ok\n",
];

fn check(opts: &[&str]) {
    let prog = compile_c("memory");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    for l in EXPECT_AFTER {
        assert!(
            contains(&reference.stdout, l.as_bytes()),
            "reference lacks {l:?}\n{}",
            reference.describe()
        );
    }

    let env = Env::new();
    let (orig, rest, img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], opts, b"");
    rest.assert_code(0, &format!("mos restart {opts:?}"));
    assert_restart_output(&orig, &rest, &reference, EXPECT_AFTER);

    // 1 GiB malloc'ed but only ~1100 pages + 9 MiB touched: the image must not hold the whole GiB
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(
        size < 256 << 20,
        "image is {size} bytes: untouched pages of the 1 GiB block seem to be stored"
    );
}

#[test]
fn memory_regions_survive_lazy_restart() {
    check(&[]);
}

#[test]
fn memory_regions_survive_eager_restart() {
    check(&["--eager"]);
}

/// One case of `mapflags`: the restarted run prints `want`, and the original plus the
/// restarted output equals an uninterrupted run's.
fn mapflags(case: &str, want: &str) {
    let prog = compile_c("mapflags");
    let (reference, _r) = Env::reference(&prog, &[case], &[], b"");
    reference.assert_code(0, "reference run");
    assert!(contains(&reference.stdout, want.as_bytes()), "reference lacks {want:?}\n{}", reference.describe());
    for opts in [&[][..], &["--eager"][..]] {
        let env = Env::new();
        let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &[case], &[], opts, b"");
        rest.assert_code(0, &format!("mos restart {opts:?} of mapflags {case}"));
        assert_restart_output(&orig, &rest, &reference, &[want]);
    }
}

/// A read-only shared file mapping comes back while the program holds files of other
/// modes at low fd numbers (the restorer's own descriptor of the mapped file used to be
/// replaced by one of them: "cannot map ... gconv-modules.cache: Permission denied").
#[test]
fn read_only_shared_file_mappings_come_back() {
    mapflags("sharedro", "shared ro mapping ok (0 bad), perms r--s\n");
}

/// A 2 TiB MAP_NORESERVE reservation and a 1 TiB read-write one come back as
/// reservations (VmFlags nr), their touched pages whole, and the rest still usable.
#[test]
fn noreserve_reservations_come_back() {
    mapflags("noreserve", "noreserve ok (0 bad), reservation ---p nr=1, rw rw-p nr=1\n");
}

/// Mappings given advice (MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK, MADV_HUGEPAGE)
/// or locked (mlock) come back with it, as their smaps VmFlags show.
#[test]
fn advised_and_locked_mappings_keep_their_flags() {
    mapflags("advised", "advised ok (0 bad), flags dc=1 dd=1 wf=1 hg=1 lo=1\n");
}

/// 30,000 separate mappings: the checkpoint succeeds (its image writer used to die of
/// SIGABRT, out of scratch memory) and every page comes back.
#[test]
fn thousands_of_small_mappings_checkpoint() {
    let prog = compile_c("manymaps");
    let (reference, _r) = Env::reference(&prog, &["30000"], &[], b"");
    reference.assert_code(0, "reference run");
    let env = Env::new();
    let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, &["30000"], &[], &[], b"");
    rest.assert_code(0, "mos restart of manymaps");
    assert_restart_output(&orig, &rest, &reference, &["mappings ok? yes (0 bad)\n"]);
}

/// Every madvise mode on memory restored lazily (big runs mapped from the image) and
/// eagerly behaves as in an uninterrupted run: MADV_DONTNEED gives zeros (not the
/// image's bytes), MADV_FREE succeeds, the others keep the contents.
#[test]
fn madvise_on_restored_memory_behaves_as_before() {
    let prog = compile_c("madvzero");
    let (reference, _r) = Env::reference(&prog, NOARGS, &[], b"");
    reference.assert_code(0, "reference run");
    assert!(contains(&reference.stdout, b"DONTNEED: ok, zeros\n"), "{}", reference.describe());
    for opts in [&[][..], &["--eager"][..]] {
        let env = Env::new();
        let (orig, rest, _img) = ckpt_restart_cycle(&env, &prog, NOARGS, &[], opts, b"");
        rest.assert_code(0, &format!("mos restart {opts:?} of madvzero"));
        assert_restart_output(&orig, &rest, &reference, &["DONTNEED: ok, zeros\n", "FREE: ok, zeros or kept\n", "reused: ok\n"]);
    }
}
