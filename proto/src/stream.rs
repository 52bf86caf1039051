//! Checkpoint images over a connection: `ImageBegin`, `ImageChunk`s with the bytes as bulk,
//! `ImageEnd` with an xxh3 checksum of everything sent. The receiver writes to a temp
//! name, checks size and checksum, fsyncs and renames: a broken stream never leaves a
//! partial image under the final name, and never touches the previous one.

use crate::frame::{FrameError, FrameReader, FrameWriter};
use crate::msg::{ImageChecksum, JobId, Msg};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;

/// Why an image could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading or writing the image file.
    #[error("image file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The connection.
    #[error("connection: {0}")]
    Frame(#[from] FrameError),
    /// A message that does not belong in an image stream.
    #[error("expected {want} in the image stream, got {got}")]
    Unexpected {
        /// What was expected.
        want: &'static str,
        /// What came.
        got: &'static str,
    },
    /// Size or checksum do not match.
    #[error("image stream corrupt: {0}")]
    Corrupt(String),
}

/// Send the image at `path` for `job`; returns its size.
pub fn send_image<W: Write>(w: &mut FrameWriter<W>, job: JobId, home: &str, path: &Path) -> Result<u64, StreamError> {
    let ferr = |e| StreamError::File { path: path.to_path_buf(), source: e };
    let mut f = File::open(path).map_err(ferr)?;
    let size = f.metadata().map_err(ferr)?.len();
    w.write_msg(&Msg::ImageBegin { job, home: home.to_string(), size: Some(size) }, &[])?;
    let mut sum = ImageChecksum::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(ferr)?;
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
        w.write_msg(&Msg::ImageChunk { len: n as u32 }, &buf[..n])?;
    }
    if sum.bytes() != size {
        return Err(StreamError::Corrupt(format!("{} changed while being sent", path.display())));
    }
    w.write_msg(&Msg::ImageEnd { checksum: sum.digest() }, &[])?;
    Ok(size)
}

/// A new image file the daemons write: read and write, truncated, owner only (0600):
/// an image is a process's whole memory.
pub fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // (one left from before, made with other modes)
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// `dir` and its missing parents, those it makes owner only (0700), and `dir` itself made
/// so if it was there already (images go there).
pub fn private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Receive the rest of a stream whose `ImageBegin` (with `size`) was already read, into
/// `dest` (atomically, owner only). Returns the size.
pub fn recv_image<R: Read>(r: &mut FrameReader<R>, size: Option<u64>, dest: &Path) -> Result<u64, StreamError> {
    let tmp = dest.with_extension("partial");
    let result = recv_into(r, size, &tmp, dest);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn recv_into<R: Read>(r: &mut FrameReader<R>, size: Option<u64>, tmp: &Path, dest: &Path) -> Result<u64, StreamError> {
    let ferr = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StreamError::File { path: p, source: e }
    };
    if let Some(dir) = dest.parent() {
        private_dir_all(dir).map_err(ferr(dir))?;
    }
    let mut f = private_file(tmp).map_err(ferr(tmp))?;
    let mut sum = ImageChecksum::new();
    loop {
        let (m, bulk): (Msg, Vec<u8>) = r.read_msg()?;
        match m {
            Msg::ImageChunk { .. } => {
                sum.update(&bulk);
                if size.is_some_and(|s| sum.bytes() > s) {
                    return Err(StreamError::Corrupt("more bytes than announced".into()));
                }
                f.write_all(&bulk).map_err(ferr(tmp))?;
            }
            Msg::ImageEnd { checksum } => {
                if size.is_some_and(|s| s != sum.bytes()) {
                    return Err(StreamError::Corrupt(format!("{} bytes received, {} announced", sum.bytes(), size.unwrap_or(0))));
                }
                if checksum != sum.digest() {
                    return Err(StreamError::Corrupt("checksum mismatch".into()));
                }
                f.sync_all().map_err(ferr(tmp))?;
                drop(f);
                std::fs::rename(tmp, dest).map_err(ferr(dest))?;
                if let Some(dir) = dest.parent() {
                    if let Ok(d) = File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
                return Ok(sum.bytes());
            }
            other => return Err(StreamError::Unexpected { want: "ImageChunk or ImageEnd", got: other.name() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8], tamper: impl Fn(&mut Vec<u8>)) -> (Result<u64, StreamError>, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        std::fs::write(&src, data).unwrap();
        let mut wire = Vec::new();
        send_image(&mut FrameWriter::new(&mut wire), JobId(7), "home", &src).unwrap();
        tamper(&mut wire);
        let mut r = FrameReader::new(&wire[..]);
        let (begin, _): (Msg, Vec<u8>) = r.read_msg().unwrap();
        let Msg::ImageBegin { job, size, .. } = begin else { panic!("begin") };
        assert_eq!(job, JobId(7));
        let dest = dir.path().join("out/dest.img");
        (recv_image(&mut r, size, &dest), dest, dir)
    }

    #[test]
    fn image_round_trips() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        let (r, dest, _d) = roundtrip(&data, |_| {});
        assert_eq!(r.unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(dest).unwrap(), data);
    }

    #[test]
    fn corrupt_or_truncated_stream_leaves_nothing() {
        let data = vec![5u8; 100_000];
        // flip a byte inside the first chunk's bulk
        let (r, dest, _d) = roundtrip(&data, |w| {
            let n = w.len();
            w[n / 2] ^= 1;
        });
        assert!(r.is_err(), "a flipped byte must be detected");
        assert!(!dest.exists() && !dest.with_extension("partial").exists());
        let (r, dest, _d) = roundtrip(&data, |w| w.truncate(w.len() - 20));
        assert!(r.is_err(), "a truncated stream must be detected");
        assert!(!dest.exists() && !dest.with_extension("partial").exists());
    }
}
