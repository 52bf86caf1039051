//! Receiving a live migration's stream ([`Msg::LiveMigrationImage`]): records of a sparse
//! image (`ckpt::image::live`) inside [`Msg::ImageChunk`] frames, each written where it
//! says in the image file (splice: the page bytes do not pass through user space), until
//! the end record and [`Msg::ImageSealed`]. The file is then opened as an image (header,
//! metadata and trailer checked) before it is kept. A truncated, mis-sealed or corrupt
//! stream leaves no file and is refused with what was wrong.

use ckpt::image::live::{parse_record, Record, RECORD_LEN, STREAM_MAGIC};
use proto::frame::FrameReader;
use proto::spliced::{conn, image_pipe, splice_some, PIPE_BYTES};
use proto::stream::StreamError;
use proto::Msg;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

/// The chunked byte stream after the first message: chunk frames read as they come.
struct Chunks<'a, R: Read + AsFd> {
    r: &'a mut FrameReader<R>,
    /// Bytes left in the current chunk.
    left: u64,
    /// Bytes of every chunk so far.
    total: u64,
}

impl<R: Read + AsFd> Chunks<'_, R> {
    /// Make sure the current chunk has bytes; error at the seal or anything else.
    fn fill(&mut self) -> Result<(), StreamError> {
        while self.left == 0 {
            match self.r.read_header_only::<Msg>()? {
                Msg::ImageChunk { len } => {
                    self.left = u64::from(len);
                    self.total += u64::from(len);
                }
                Msg::ImageSealed { .. } => return Err(StreamError::Corrupt("the stream was sealed before its end record".into())),
                other => return Err(StreamError::Unexpected { want: "ImageChunk or ImageSealed", got: other.name() }),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), StreamError> {
        while !buf.is_empty() {
            self.fill()?;
            let n = (buf.len() as u64).min(self.left) as usize;
            self.r.get_mut().read_exact(&mut buf[..n]).map_err(conn)?;
            self.left -= n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// `n` bytes into `file` at `off`, through our pipe.
    fn splice_to(&mut self, mut n: u64, file: &File, mut off: u64, pipe: &(std::os::fd::OwnedFd, std::os::fd::OwnedFd)) -> Result<(), StreamError> {
        let ferr = |e: std::io::Error| StreamError::File { path: "live image".into(), source: e };
        while n > 0 {
            self.fill()?;
            let step = n.min(self.left).min(PIPE_BYTES as u64) as usize;
            let moved = splice_some(self.r.get_ref().as_fd(), pipe.1.as_fd(), step, false).map_err(conn)?;
            let mut left = moved;
            while left > 0 {
                let k = rustix_splice_at(pipe.0.as_fd(), file, off, left).map_err(ferr)?;
                off += k as u64;
                left -= k;
            }
            self.left -= moved as u64;
            n -= moved as u64;
        }
        Ok(())
    }
}

/// splice from a pipe into a file at an offset.
fn rustix_splice_at(pipe: std::os::fd::BorrowedFd<'_>, file: &File, off: u64, n: usize) -> std::io::Result<usize> {
    let mut o = off as libc::loff_t;
    loop {
        // SAFETY: splice between two descriptors we own, with our offset variable.
        let k = unsafe { libc::splice(std::os::fd::AsRawFd::as_raw_fd(&pipe), std::ptr::null_mut(), std::os::fd::AsRawFd::as_raw_fd(file), &mut o, n, libc::SPLICE_F_MOVE) };
        if k < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if k == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "pipe empty"));
        }
        return Ok(k as usize);
    }
}

/// Receive the rest of a live stream whose [`Msg::LiveMigrationImage`] was read, into
/// `dest` (written under a temp name, renamed once whole and valid). Returns the stream
/// bytes and the image's size.
pub fn recv_live_to_file<R: Read + AsFd>(r: &mut FrameReader<R>, dest: &Path) -> Result<u64, StreamError> {
    let tmp = dest.with_extension("partial");
    let result = recv_into(r, &tmp, dest);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn recv_into<R: Read + AsFd>(r: &mut FrameReader<R>, tmp: &Path, dest: &Path) -> Result<u64, StreamError> {
    let ferr = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StreamError::File { path: p, source: e }
    };
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(ferr(dir))?;
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(tmp).map_err(ferr(tmp))?;
    let pipe = image_pipe().map_err(ferr(tmp))?;
    let mut c = Chunks { r, left: 0, total: 0 };
    let mut magic = [0u8; 8];
    c.read_exact(&mut magic)?;
    if &magic != STREAM_MAGIC {
        return Err(StreamError::Corrupt("not a live migration stream (bad magic)".into()));
    }
    loop {
        let mut h = [0u8; RECORD_LEN];
        c.read_exact(&mut h)?;
        match parse_record(&h).map_err(StreamError::Corrupt)? {
            Record::Data { file_off, len } => c.splice_to(len, &f, file_off, &pipe)?,
            Record::End => break,
        }
    }
    if c.left != 0 {
        return Err(StreamError::Corrupt(format!("{} bytes after the end record", c.left)));
    }
    match c.r.read_header_only::<Msg>()? {
        Msg::ImageSealed { bytes } if bytes == c.total => {}
        Msg::ImageSealed { bytes } => return Err(StreamError::Corrupt(format!("{} bytes received, {bytes} sent", c.total))),
        other => return Err(StreamError::Unexpected { want: "ImageSealed", got: other.name() }),
    }
    drop(f);
    // what arrived must be a whole image (header, metadata, trailer)
    ckpt::image::ImageFile::open(tmp).map_err(|e| StreamError::Corrupt(format!("the live image is not valid: {e}")))?;
    std::fs::rename(tmp, dest).map_err(ferr(dest))?;
    Ok(c.total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt::image::live::{record_header, END};
    use proto::frame::{encode_header, Limits};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// `stream` sent as chunks of `chunk` bytes, sealed as `sealed` (None: what was
    /// sent), into a file in a temp dir.
    fn through(stream: &[u8], chunk: usize, sealed: Option<u64>) -> (Result<u64, StreamError>, tempfile::TempDir) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let data = stream.to_vec();
        let tx = std::thread::spawn(move || {
            let mut s = TcpStream::connect(a).unwrap();
            let lim = Limits::default();
            for c in data.chunks(chunk) {
                let mut h = Vec::new();
                encode_header(&Msg::ImageChunk { len: c.len() as u32 }, &mut h, &lim).unwrap();
                s.write_all(&h).unwrap();
                s.write_all(c).unwrap();
            }
            let mut h = Vec::new();
            encode_header(&Msg::ImageSealed { bytes: sealed.unwrap_or(data.len() as u64) }, &mut h, &lim).unwrap();
            s.write_all(&h).unwrap();
        });
        let (c, _) = l.accept().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut r = FrameReader::new(c);
        let res = recv_live_to_file(&mut r, &dir.path().join("x.mosimg"));
        tx.join().unwrap();
        (res, dir)
    }

    fn stream(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut s = STREAM_MAGIC.to_vec();
        for (off, d) in records {
            s.extend_from_slice(&record_header(*off, d.len() as u64));
            s.extend_from_slice(d);
        }
        s.extend_from_slice(&record_header(END, 0));
        s
    }

    #[test]
    fn corrupt_or_short_live_streams_leave_nothing() {
        let good = stream(&[(1 << 30, vec![7u8; 8192])]);
        // records arrive and are placed, but the result is not an image: refused
        let (r, d) = through(&good, 1000, None);
        assert!(matches!(r, Err(StreamError::Corrupt(ref m)) if m.contains("not valid")), "{r:?}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        // bad magic
        let mut bad = good.clone();
        bad[0] = b'X';
        let (r, _) = through(&bad, 4096, None);
        assert!(matches!(r, Err(StreamError::Corrupt(ref m)) if m.contains("magic")), "{r:?}");
        // a record outside any image
        let far = stream(&[(1 << 50, vec![1u8; 16])]);
        let (r, _) = through(&far, 4096, None);
        assert!(matches!(r, Err(StreamError::Corrupt(ref m)) if m.contains("outside")), "{r:?}");
        // sealed before the end record
        let (r, d) = through(&good[..good.len() - 20], 4096, None);
        assert!(matches!(r, Err(StreamError::Corrupt(ref m)) if m.contains("sealed before")), "{r:?}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        // the seal names another size
        let (r, _) = through(&good, 4096, Some(5));
        assert!(matches!(r, Err(StreamError::Corrupt(ref m)) if m.contains("sent")), "{r:?}");
    }
}
