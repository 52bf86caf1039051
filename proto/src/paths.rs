//! Where mos's own files are: the programs find each other and the preloaded library
//! both in the build tree (everything in `target/release/`) and installed under a prefix
//! (`make install`: programs in `PREFIX/bin`, `libmosshim.so` in `PREFIX/lib`, the
//! restorer in `PREFIX/lib/mos`). `MOS_LIBDIR`, when set, is looked in first.

use std::path::{Path, PathBuf};

/// The directories `name` may be in, for a program in `exe_dir`, in the order looked in.
pub fn candidates(exe_dir: &Path, libdir: Option<&Path>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = libdir.map(Path::to_path_buf).into_iter().collect();
    v.push(exe_dir.to_path_buf());
    if let Some(prefix) = exe_dir.parent() {
        v.push(prefix.join("lib"));
        v.push(prefix.join("lib").join("mos"));
        v.push(prefix.join("bin"));
    }
    v
}

/// mos's file `name` (`libmosshim.so`, `mosrestart`, `mos`, `shadowd`, ...) for this
/// program, or the places looked in when it is nowhere.
pub fn locate(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's own path: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let libdir = std::env::var_os("MOS_LIBDIR").map(PathBuf::from);
    let dirs = candidates(dir, libdir.as_deref());
    dirs.iter().map(|d| d.join(name)).find(|p| p.exists()).ok_or_else(|| {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!("{name} not found (looked in {}; build with `make`, or install with `make install`)", looked.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_tree_then_the_prefix() {
        let c = candidates(Path::new("/usr/local/bin"), None);
        assert_eq!(c, ["/usr/local/bin", "/usr/local/lib", "/usr/local/lib/mos", "/usr/local/bin"].map(PathBuf::from));
        let c = candidates(Path::new("/w/target/release"), Some(Path::new("/opt/mos")));
        assert_eq!(c[0], PathBuf::from("/opt/mos"));
        assert_eq!(c[1], PathBuf::from("/w/target/release"));
    }
}
