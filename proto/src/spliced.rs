//! A migrating process's image, streamed while the shim writes it ([`Msg::MigrationImage`]).
//!
//! The source's shim writes the image into a pipe; the source shadowd moves the bytes from
//! that pipe to the connection with splice(2), in [`Msg::ImageChunk`] frames of whatever
//! the pipe holds, and ends with [`Msg::ImageSealed`], so the bytes never pass through
//! user space on the source; there is no file on the source and no fsync on the target (the
//! image lives only until the restart).
//!
//! Before the source freezes the process it says about how big the image will be, and
//! the target makes that much memory ready (shadowd's `landing`): a first touch of
//! memory can cost more than the wire (on a virtual machine whose freed memory goes back
//! to its host, each page faults in again), so it is done while the process still runs.
//! The target receives with [`recv_chunks`]. There is no stream checksum: an image
//! verifies itself at restart (metadata hash and one CRC per region), and the size sent
//! is checked here. A broken or short stream leaves no file under the final name.

use crate::frame::{encode_header, FrameReader, Limits};
use crate::msg::Msg;
use crate::stream::StreamError;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// The pipe size asked for (more per splice, fewer frames).
pub const PIPE_BYTES: usize = 1 << 20;

/// A pipe for a streamed image (both ends close-on-exec), as large as the system allows
/// up to [`PIPE_BYTES`]: (read end, write end).
pub fn image_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // a smaller pipe only means more frames
    let _ = rustix::pipe::fcntl_setpipe_size(&r, PIPE_BYTES);
    Ok((r, w))
}

/// Move exactly `n` bytes from `from` to `to`.
pub fn splice_exact(from: BorrowedFd<'_>, to: BorrowedFd<'_>, mut n: usize, more: bool) -> io::Result<()> {
    while n > 0 {
        n -= splice_some(from, to, n, more)?;
    }
    Ok(())
}

/// Move up to `n` bytes (at least one) from `from` to `to`.
pub fn splice_some(from: BorrowedFd<'_>, to: BorrowedFd<'_>, n: usize, more: bool) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    let flags = if more { SpliceFlags::MOVE | SpliceFlags::MORE } else { SpliceFlags::MOVE };
    loop {
        match rustix::pipe::splice(from, None, to, None, n, flags) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended inside a chunk")),
            Ok(k) => return Ok(k),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// How many bytes the pipe holds now; 0 once it is empty and every writer has closed it.
/// Waits while it is empty but still open.
fn pipe_ready(pipe: BorrowedFd<'_>) -> io::Result<usize> {
    use rustix::event::{PollFd, PollFlags};
    loop {
        let mut p = [PollFd::new(&pipe, PollFlags::IN)];
        match rustix::event::poll(&mut p, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let hup = p[0].revents().intersects(PollFlags::HUP | PollFlags::ERR);
        let n = rustix::io::ioctl_fionread(pipe)?;
        if n > 0 {
            return Ok(n as usize);
        }
        if hup {
            return Ok(0);
        }
    }
}

/// The largest image piece compressed as one lz4 block.
pub const LZ4_PIECE: usize = 1 << 20;

/// Stream what is written into `pipe` until every writer has closed it, to `sock`, as
/// chunks after `first` ([`Msg::MigrationImage`], [`Msg::LiveMigrationImage`] or
/// [`Msg::LazyMigrationImage`]; None: the caller sent it); the caller seals it with
/// [`seal`] once it knows the image is whole. Compressed with lz4 when `compress` (a
/// stop-and-copy image: [`Msg::ImageChunkLz4`], or a plain chunk for a piece that does
/// not shrink). `sent`, if given, counts the image bytes as they go. Returns the bytes
/// moved.
pub fn send_stream<S: Write + AsFd>(sock: &mut S, pipe: BorrowedFd<'_>, first: Option<&Msg>, sent: Option<&std::sync::atomic::AtomicU64>, compress: bool) -> Result<u64, StreamError> {
    let limits = Limits::default();
    let mut head = Vec::new();
    if let Some(first) = first {
        encode_header(first, &mut head, &limits)?;
        sock.write_all(&head).map_err(conn)?;
    }
    let mut raw = Vec::new();
    let mut packed = Vec::new();
    if compress {
        raw.resize(LZ4_PIECE, 0);
        packed.resize(lz4_flex::block::get_maximum_output_size(LZ4_PIECE), 0);
    }
    let mut total = 0u64;
    loop {
        let n = pipe_ready(pipe).map_err(|e| StreamError::File { path: "image pipe".into(), source: e })?;
        if n == 0 {
            return Ok(total);
        }
        head.clear();
        if compress {
            let n = read_pipe(pipe, &mut raw[..n.min(LZ4_PIECE)]).map_err(|e| StreamError::File { path: "image pipe".into(), source: e })?;
            let c = lz4_flex::block::compress_into(&raw[..n], &mut packed).map_err(|e| StreamError::Corrupt(format!("lz4: {e}")))?;
            let (msg, body) = if c < n { (Msg::ImageChunkLz4 { len: c as u32, raw: n as u32 }, &packed[..c]) } else { (Msg::ImageChunk { len: n as u32 }, &raw[..n]) };
            encode_header(&msg, &mut head, &limits)?;
            sock.write_all(&head).map_err(conn)?;
            sock.write_all(body).map_err(conn)?;
            total += n as u64;
        } else {
            encode_header(&Msg::ImageChunk { len: n as u32 }, &mut head, &limits)?;
            sock.write_all(&head).map_err(conn)?;
            splice_exact(pipe, sock.as_fd(), n, true).map_err(conn)?;
            total += n as u64;
        }
        if let Some(s) = sent {
            s.store(total, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Read what is there (at least one byte) from a pipe.
fn read_pipe(pipe: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(pipe, &mut *buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the image pipe ended")),
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// End a [`send_stream`] stream: the image is whole, `bytes` long.
pub fn seal<S: Write>(sock: &mut S, bytes: u64) -> Result<(), StreamError> {
    let mut head = Vec::new();
    encode_header(&Msg::ImageSealed { bytes }, &mut head, &Limits::default())?;
    sock.write_all(&head).map_err(conn)?;
    sock.flush().map_err(conn)
}

/// The end of a stream whose bytes came another way (`ckpt::image::lanes`): only
/// [`Msg::ImageSealed`] is due; its size.
pub fn recv_seal<R: Read>(r: &mut FrameReader<R>) -> Result<u64, StreamError> {
    match r.read_header_only()? {
        Msg::ImageSealed { bytes } => Ok(bytes),
        other => Err(StreamError::Unexpected { want: "ImageSealed", got: other.name() }),
    }
}

/// A connection error as a stream error.
pub fn conn(e: io::Error) -> StreamError {
    StreamError::Frame(crate::frame::FrameError::Io(e))
}

/// Receive into `dest`'s temp name (`.partial` beside it, its directory made): `fill`
/// writes it and renames it to `dest` once whole; on an error the temp file is removed.
pub fn via_partial<T>(dest: &Path, fill: impl FnOnce(&Path) -> Result<T, StreamError>) -> Result<T, StreamError> {
    let tmp = dest.with_extension("partial");
    if let Some(dir) = dest.parent() {
        crate::stream::private_dir_all(dir).map_err(|e| StreamError::File { path: dir.to_path_buf(), source: e })?;
    }
    let result = fill(&tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where [`recv_chunks`] puts a stream's bytes.
pub trait ChunkSink {
    /// Take at least one and at most `left` bytes of the current chunk from the
    /// connection `sock`, for image offset `at`; how many.
    fn recv(&mut self, sock: BorrowedFd<'_>, at: u64, left: usize) -> Result<usize, StreamError>;
    /// Put `data` (decompressed) at image offset `at`.
    fn put(&mut self, at: u64, data: &[u8]) -> Result<(), StreamError>;
}

/// The body of an [`Msg::ImageChunkLz4`] of `len` compressed bytes standing for `n`:
/// read from `r` (through `packed`) and inflated into `raw[..n]`; returns `n`. Sizes
/// beyond a piece, a body that does not inflate or inflates to another size are refused.
pub fn read_lz4_chunk<R: Read>(r: &mut R, len: u32, n: u32, packed: &mut Vec<u8>, raw: &mut Vec<u8>) -> Result<usize, StreamError> {
    let (len, n) = (len as usize, n as usize);
    if n > LZ4_PIECE || len > lz4_flex::block::get_maximum_output_size(LZ4_PIECE) {
        return Err(StreamError::Corrupt(format!("an lz4 chunk of {len} bytes for {n}: pieces are at most {LZ4_PIECE} bytes")));
    }
    packed.resize(len, 0);
    r.read_exact(packed).map_err(conn)?;
    raw.resize(LZ4_PIECE, 0);
    let got = lz4_flex::block::decompress_into(packed, &mut raw[..n]).map_err(|e| StreamError::Corrupt(format!("an lz4 chunk does not decompress: {e}")))?;
    if got != n {
        return Err(StreamError::Corrupt(format!("an lz4 chunk gave {got} bytes, {n} announced")));
    }
    Ok(n)
}

/// An lz4 chunk of `data` as the sender makes it: (compressed body, raw length); None
/// when it does not shrink (it goes plain).
pub fn lz4_chunk(data: &[u8]) -> Option<Vec<u8>> {
    let c = lz4_flex::block::compress(data);
    (c.len() < data.len()).then_some(c)
}

/// Receive a stream's chunks (plain or lz4) into `sink` until it is sealed, checking
/// the size sealed against what came. Returns the size.
pub fn recv_chunks<R: Read + AsFd>(r: &mut FrameReader<R>, sink: &mut dyn ChunkSink) -> Result<u64, StreamError> {
    let mut total = 0u64;
    let (mut packed, mut raw) = (Vec::new(), Vec::new());
    loop {
        let m: Msg = r.read_header_only()?;
        match m {
            Msg::ImageChunk { len } => {
                let mut left = len as usize;
                while left > 0 {
                    let got = sink.recv(r.get_ref().as_fd(), total, left)?;
                    left -= got;
                    total += got as u64;
                }
            }
            Msg::ImageChunkLz4 { len, raw: n } => {
                let n = read_lz4_chunk(r.get_mut(), len, n, &mut packed, &mut raw)?;
                sink.put(total, &raw[..n])?;
                total += n as u64;
            }
            Msg::ImageSealed { bytes } if bytes == total => return Ok(total),
            Msg::ImageSealed { bytes } => return Err(StreamError::Corrupt(format!("{total} bytes received, {bytes} sent"))),
            other => return Err(StreamError::Unexpected { want: "ImageChunk or ImageSealed", got: other.name() }),
        }
    }
}

/// A [`ChunkSink`] that writes into a file through a buffer (grown to [`PIPE_BYTES`] on
/// first use); `path` names the file in errors.
pub struct BufferedFile<'a> {
    /// The file written.
    pub file: &'a File,
    /// Its name, for errors.
    pub path: &'a Path,
    /// The buffer (empty until first used).
    pub buf: Vec<u8>,
}

impl ChunkSink for BufferedFile<'_> {
    fn recv(&mut self, sock: BorrowedFd<'_>, at: u64, left: usize) -> Result<usize, StreamError> {
        if self.buf.is_empty() {
            self.buf.resize(PIPE_BYTES, 0);
        }
        let n = left.min(self.buf.len());
        let got = recv_some(sock, &mut self.buf[..n]).map_err(conn)?;
        let data = std::mem::take(&mut self.buf);
        let r = self.put(at, &data[..got]);
        self.buf = data;
        r.map(|()| got)
    }

    fn put(&mut self, at: u64, data: &[u8]) -> Result<(), StreamError> {
        write_all_at(self.file, data, at).map_err(|e| StreamError::File { path: self.path.to_path_buf(), source: e })
    }
}

/// Receive at least one byte (fewer than asked if that is what came) into `dst`.
pub fn recv_some(sock: BorrowedFd<'_>, dst: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(sock, &mut *dst, rustix::net::RecvFlags::empty()) {
            Ok((0, _)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended inside a chunk")),
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all_at(f: &File, b: &[u8], off: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(b, off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Send `data` through a pipe and a loopback connection, sealed as `sealed` bytes
    /// (None: what was sent), the wire cut after `cut_after` bytes (None: whole), into a
    /// receiver; its result and directory.
    fn through(data: &[u8], sealed: Option<u64>, cut_after: Option<usize>) -> (Result<u64, StreamError>, tempfile::TempDir) {
        through_as(data, sealed, cut_after, false, None)
    }

    /// [`through`], compressed or not, the wire byte at `flip` (if any) flipped.
    fn through_as(data: &[u8], sealed: Option<u64>, cut_after: Option<usize>, compress: bool, flip: Option<usize>) -> (Result<u64, StreamError>, tempfile::TempDir) {
        // what the sender puts on the wire, captured first
        let grab = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = grab.local_addr().unwrap();
        let capture = std::thread::spawn(move || {
            let (mut c, _) = grab.accept().unwrap();
            let mut v = Vec::new();
            c.read_to_end(&mut v).unwrap();
            v
        });
        let (pr, pw) = image_pipe().unwrap();
        let owned = data.to_vec();
        let writer = std::thread::spawn(move || File::from(pw).write_all(&owned).unwrap());
        let mut t = TcpStream::connect(a).unwrap();
        let first = Msg::MigrationImage { job: crate::msg::JobId(7), home: "n1".into(), reserve: 0, lanes: 0 };
        let n = send_stream(&mut t, pr.as_fd(), Some(&first), None, compress).unwrap();
        writer.join().unwrap();
        assert_eq!(n, data.len() as u64);
        seal(&mut t, sealed.unwrap_or(n)).unwrap();
        drop(t);
        let mut wire = capture.join().unwrap();
        if let Some(k) = cut_after {
            wire.truncate(k);
        }
        if let Some(k) = flip {
            wire[k] ^= 0xff;
        }
        // ...then replayed to the receiver
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let replay = std::thread::spawn(move || TcpStream::connect(addr).unwrap().write_all(&wire).unwrap());
        let (c, _) = l.accept().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut r = FrameReader::new(c);
        let first: Msg = r.read_header_only().unwrap();
        assert_eq!(first, Msg::MigrationImage { job: crate::msg::JobId(7), home: "n1".into(), reserve: 0, lanes: 0 });
        let dest = dir.path().join("img");
        let got = via_partial(&dest, |tmp| {
            let f = File::create(tmp).map_err(|e| StreamError::File { path: tmp.to_path_buf(), source: e })?;
            let total = recv_chunks(&mut r, &mut BufferedFile { file: &f, path: tmp, buf: Vec::new() })?;
            std::fs::rename(tmp, &dest).map_err(|e| StreamError::File { path: dest.clone(), source: e })?;
            Ok(total)
        });
        replay.join().unwrap();
        (got, dir)
    }

    #[test]
    fn an_image_arrives_whole_through_pipes_and_splices() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (got, dir) = through(&data, None, None);
        assert_eq!(got.unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), data);
        assert!(!dir.path().join("img.partial").exists());
    }

    #[test]
    fn a_compressed_image_arrives_whole_and_a_bad_lz4_chunk_is_refused() {
        // compressible, then incompressible (sent as plain chunks inside the stream)
        let mut data: Vec<u8> = (0..3_000_000u32).map(|i| (i / 1000 % 251) as u8).collect();
        let mut x = 1u32;
        data.extend((0..2_000_000).map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        }));
        let (got, dir) = through_as(&data, None, None, true, None);
        assert_eq!(got.unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), data);
        // a byte inside the first (compressed) chunk's body flipped
        let (got, dir) = through_as(&data, None, None, true, Some(200));
        assert!(got.is_err(), "{got:?}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
    }

    #[test]
    fn a_short_or_missealed_stream_leaves_no_image() {
        let data = vec![5u8; 300_000];
        let (got, dir) = through(&data, Some(299_999), None);
        assert!(matches!(got, Err(StreamError::Corrupt(_))), "{got:?}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
        // cut inside a chunk: the connection ends early
        let (got, dir) = through(&data, None, Some(100_000));
        assert!(got.is_err(), "{got:?}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
    }
}
