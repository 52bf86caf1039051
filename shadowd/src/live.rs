//! Receiving a live migration's stream ([`Msg::LiveMigrationImage`]): records of a sparse
//! image (`ckpt::image::live`) inside [`Msg::ImageChunk`] frames (or lz4-compressed
//! [`Msg::ImageChunkLz4`] ones, between hosts), each written where it says in the image
//! file (splice from plain chunks: the page bytes do not pass through user space), until
//! the end record and [`Msg::ImageSealed`]. The file is then opened as an image (header,
//! metadata and trailer checked) before it is kept. A truncated, mis-sealed or corrupt
//! stream leaves no file and is refused with what was wrong.

use ckpt::image::live::{parse_record, Record, RECORD_LEN, STREAM_MAGIC};
use proto::frame::FrameReader;
use proto::spliced::{conn, image_pipe, read_lz4_chunk, splice_some, PIPE_BYTES};
use proto::stream::StreamError;
use proto::Msg;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

/// The chunked byte stream after the first message: chunk frames read as they come,
/// plain (their bytes read from the connection as needed) or lz4 (inflated whole).
struct Chunks<'a, R: Read + AsFd> {
    r: &'a mut FrameReader<R>,
    /// Bytes left in the current chunk.
    left: u64,
    /// Bytes of every chunk so far (as inflated).
    total: u64,
    /// The current chunk came compressed: its bytes are in `inflated` from `at` on.
    lz4: bool,
    /// Compressed chunks are taken (a post-copy stream, whose pages are served as they
    /// come off the socket, has none).
    lz4_ok: bool,
    inflated: Vec<u8>,
    at: usize,
    packed: Vec<u8>,
}

impl<R: Read + AsFd> Chunks<'_, R> {
    /// Make sure the current chunk has bytes; error at the seal or anything else.
    fn fill(&mut self) -> Result<(), StreamError> {
        while self.left == 0 {
            match self.r.read_header_only::<Msg>()? {
                Msg::ImageChunk { len } => {
                    self.lz4 = false;
                    self.left = u64::from(len);
                    self.total += u64::from(len);
                }
                Msg::ImageChunkLz4 { .. } if !self.lz4_ok => return Err(StreamError::Corrupt("an lz4 chunk in a post-copy stream (its pages go plain)".into())),
                Msg::ImageChunkLz4 { len, raw } => {
                    let n = read_lz4_chunk(self.r.get_mut(), len, raw, &mut self.packed, &mut self.inflated)?;
                    self.lz4 = true;
                    self.at = 0;
                    self.left = n as u64;
                    self.total += n as u64;
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
            if self.lz4 {
                buf[..n].copy_from_slice(&self.inflated[self.at..self.at + n]);
                self.at += n;
            } else {
                self.r.get_mut().read_exact(&mut buf[..n]).map_err(conn)?;
            }
            self.left -= n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// `n` bytes into `file` at `off`, through our pipe (an inflated chunk's: written).
    fn splice_to(&mut self, mut n: u64, file: &File, mut off: u64, pipe: &(std::os::fd::OwnedFd, std::os::fd::OwnedFd)) -> Result<(), StreamError> {
        use std::os::unix::fs::FileExt;
        let ferr = |e: std::io::Error| StreamError::File { path: "live image".into(), source: e };
        while n > 0 {
            self.fill()?;
            if self.lz4 {
                let k = n.min(self.left) as usize;
                file.write_all_at(&self.inflated[self.at..self.at + k], off).map_err(ferr)?;
                self.at += k;
                self.left -= k as u64;
                off += k as u64;
                n -= k as u64;
                continue;
            }
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
    proto::spliced::via_partial(dest, |tmp| recv_into(r, tmp, dest))
}

fn recv_into<R: Read + AsFd>(r: &mut FrameReader<R>, tmp: &Path, dest: &Path) -> Result<u64, StreamError> {
    let ferr = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StreamError::File { path: p, source: e }
    };
    let f = proto::stream::private_file(tmp).map_err(ferr(tmp))?;
    let pipe = image_pipe().map_err(ferr(tmp))?;
    let mut c = Chunks { r, left: 0, total: 0, lz4: false, lz4_ok: true, inflated: Vec::new(), at: 0, packed: Vec::new() };
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
            Record::HeadEnd => return Err(StreamError::Corrupt("a head-end record in a live (pre-copy) stream".into())),
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

/// Where a post-copy image's page faults are served: beside the image.
pub fn lazy_socket(image: &Path) -> std::path::PathBuf {
    image.with_extension("lazy")
}

/// How long a post-copy target waits for the restored body to hand over its faults.
const BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Post-copy, at the target: receive the image part of the stream whose
/// [`Msg::LazyMigrationImage`] was read into `dest` (its fault socket listening beside
/// it before the image is announced), answer [`Msg::ImageReceived`] on `w`, then serve
/// the body's page faults until every page arrived: each fault becomes a
/// [`Msg::PageRequest`] to the source, each page record a UFFDIO_COPY. Returns the
/// stream bytes.
pub fn recv_lazy<R: Read + AsFd, W: std::io::Write>(
    r: &mut FrameReader<R>,
    w: &mut proto::frame::FrameWriter<W>,
    job: proto::JobId,
    dest: &Path,
) -> Result<u64, StreamError> {
    let sock = lazy_socket(dest);
    let _ = std::fs::remove_file(&sock);
    let ferr = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StreamError::File { path: p, source: e }
    };
    if let Some(dir) = dest.parent() {
        proto::stream::private_dir_all(dir).map_err(ferr(dir))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(ferr(&sock))?;
    let result = lazy_phases(r, w, job, dest, &listener);
    let _ = std::fs::remove_file(&sock);
    result
}

fn lazy_phases<R: Read + AsFd, W: std::io::Write>(
    r: &mut FrameReader<R>,
    w: &mut proto::frame::FrameWriter<W>,
    job: proto::JobId,
    dest: &Path,
    listener: &std::os::unix::net::UnixListener,
) -> Result<u64, StreamError> {
    let tmp = dest.with_extension("partial");
    let f = proto::stream::private_file(&tmp).map_err(|e| StreamError::File { path: tmp.clone(), source: e })?;
    let pipe = image_pipe().map_err(|e| StreamError::File { path: tmp.clone(), source: e })?;
    let mut c = Chunks { r, left: 0, total: 0, lz4: false, lz4_ok: false, inflated: Vec::new(), at: 0, packed: Vec::new() };
    let head = (|| {
        let mut magic = [0u8; 8];
        c.read_exact(&mut magic)?;
        if &magic != STREAM_MAGIC {
            return Err(StreamError::Corrupt("not a migration stream (bad magic)".into()));
        }
        loop {
            let mut h = [0u8; RECORD_LEN];
            c.read_exact(&mut h)?;
            match parse_record(&h).map_err(StreamError::Corrupt)? {
                Record::Data { file_off, len } => c.splice_to(len, &f, file_off, &pipe)?,
                Record::HeadEnd => return Ok(()),
                Record::End => return Err(StreamError::Corrupt("a post-copy stream ended before its image was whole".into())),
            }
        }
    })();
    drop(f);
    let head = head.and_then(|()| {
        ckpt::image::ImageFile::open(&tmp).map_err(|e| StreamError::Corrupt(format!("the post-copy image is not valid: {e}")))?;
        std::fs::rename(&tmp, dest).map_err(|e| StreamError::File { path: dest.to_path_buf(), source: e })
    });
    if let Err(e) = head {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    w.write_msg(&Msg::ImageReceived { job, size: c.total, path: proto::msg::OsBytes::from(dest) }, &[]).map_err(StreamError::Frame)?;
    // the body, restarted from the image, hands over its page faults
    let uffd = accept_faults(listener).map_err(|e| StreamError::Corrupt(format!("the restored body did not hand over its page faults: {e}")))?;
    serve_pages(&mut c, w, &uffd)?;
    drop(uffd);
    match c.r.read_header_only::<Msg>()? {
        Msg::ImageSealed { bytes } if bytes == c.total && c.left == 0 => Ok(c.total),
        Msg::ImageSealed { bytes } => Err(StreamError::Corrupt(format!("{} bytes received, {bytes} sent", c.total))),
        other => Err(StreamError::Unexpected { want: "ImageSealed", got: other.name() }),
    }
}

/// The userfaultfd the restorer sends on `listener`; it is told we serve its faults.
fn accept_faults(listener: &std::os::unix::net::UnixListener) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut p = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: polling our listening socket.
    if unsafe { libc::poll(&mut p, 1, BODY_WAIT.as_millis() as i32) } != 1 {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("nothing within {BODY_WAIT:?}")));
    }
    let (conn, _) = listener.accept()?;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; its pointers refer to our locals for the call.
    let mut mh: libc::msghdr = unsafe { core::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = core::mem::size_of_val(&cbuf);
    // SAFETY: receiving into our buffers.
    if unsafe { libc::recvmsg(conn.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) } != 1 {
        return Err(std::io::Error::other("no descriptor came"));
    }
    let mut fd = -1;
    // SAFETY: walking the control messages the kernel wrote into cbuf.
    unsafe {
        let cm = libc::CMSG_FIRSTHDR(&mh);
        if !cm.is_null() && (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
            fd = core::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<i32>());
        }
    }
    if fd < 0 {
        return Err(std::io::Error::other("no descriptor came"));
    }
    // SAFETY: the kernel gave us this new descriptor.
    let uffd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // poll(2) on a userfaultfd reports faults only when it is non-blocking
    // SAFETY: setting the status flags of the descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    (&conn).write_all_ack()?;
    Ok(uffd)
}

trait Ack {
    fn write_all_ack(self) -> std::io::Result<()>;
}

impl Ack for &std::os::unix::net::UnixStream {
    fn write_all_ack(self) -> std::io::Result<()> {
        use std::io::Write;
        let mut s = self;
        s.write_all(b"S")
    }
}

const UFFDIO_COPY: u64 = 0xC028_AA03;
const UFFDIO_ZEROPAGE: u64 = 0xC020_AA04;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// Put `len` bytes at `addr` of the body (pages already there are left as they are).
fn copy_in(uffd: i32, addr: u64, data: &[u8]) {
    let page = ckpt::image::PAGE as usize;
    let mut at = 0usize;
    while at < data.len() {
        let mut a = [addr + at as u64, data[at..].as_ptr() as u64, (data.len() - at) as u64, 0u64, 0u64];
        // SAFETY: UFFDIO_COPY with its five-word struct; src is our buffer.
        let r = unsafe { libc::ioctl(uffd, UFFDIO_COPY as _, a.as_mut_ptr()) };
        if r == 0 {
            return;
        }
        let copied = a[4] as i64;
        match std::io::Error::last_os_error().raw_os_error() {
            // a page that is there already (faulted and served first): skip it
            Some(libc::EEXIST) => at += copied.max(0) as usize + page,
            Some(libc::EAGAIN) | Some(libc::EINTR) => at += copied.max(0) as usize,
            // the range spans two mappings (one call fills one): page by page
            Some(libc::ENOENT) if data.len() - at > page => {
                for p in (at..data.len()).step_by(page) {
                    copy_in(uffd, addr + p as u64, &data[p..(p + page).min(data.len())]);
                }
                return;
            }
            // the body is gone, or unmapped the range: nothing to do
            e => {
                if std::env::var_os("MOS_DEBUG_LAZY").is_some() {
                    eprintln!("post-copy: UFFDIO_COPY {:#x}+{:#x}: errno {e:?}", addr + at as u64, data.len() - at);
                }
                return;
            }
        }
    }
}

fn zero_in(uffd: i32, addr: u64, len: u64) {
    let mut a = [addr, len, 0u64, 0u64];
    // SAFETY: UFFDIO_ZEROPAGE with its four-word struct.
    unsafe { libc::ioctl(uffd, UFFDIO_ZEROPAGE as _, a.as_mut_ptr()) };
}

/// Serve the body's faults and put the pushed pages in until the end record.
fn serve_pages<R: Read + AsFd, W: std::io::Write>(c: &mut Chunks<'_, R>, w: &mut proto::frame::FrameWriter<W>, uffd: &std::os::fd::OwnedFd) -> Result<(), StreamError> {
    let t0 = std::time::Instant::now();
    let mut faults = 0u32;
    let mut last = 0u128;
    use ckpt::image::live::{parse_page_record, PageRecord};
    use std::os::fd::AsRawFd;
    let u = uffd.as_raw_fd();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut p = [
            libc::pollfd { fd: u, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: c.r.get_ref().as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: polling two descriptors we hold.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(conn(std::io::Error::last_os_error()));
        }
        if p[0].revents & libc::POLLIN != 0 {
            let mut msg = [0u8; 32 * 16];
            // SAFETY: reading uffd messages into our buffer.
            let k = unsafe { libc::read(u, msg.as_mut_ptr().cast(), msg.len()) };
            for m in msg[..k.max(0) as usize].chunks_exact(32) {
                if m[0] == UFFD_EVENT_PAGEFAULT {
                    faults += 1;
                    last = t0.elapsed().as_millis();
                    let addr = u64::from_le_bytes(m[16..24].try_into().unwrap_or_default());
                    if std::env::var_os("MOS_DEBUG_LAZY").is_some() {
                        eprintln!("post-copy: fault at {addr:#x} ({} ms)", t0.elapsed().as_millis());
                    }
                    w.write_msg(&Msg::PageRequest { addr }, &[]).map_err(StreamError::Frame)?;
                }
            }
        }
        if p[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut h = [0u8; RECORD_LEN];
            c.read_exact(&mut h)?;
            match parse_page_record(&h).map_err(StreamError::Corrupt)? {
                PageRecord::End => {
                    if std::env::var_os("MOS_DEBUG_LAZY").is_some() {
                        eprintln!("post-copy: {faults} faults, the last at {last} ms, all pages at {} ms", t0.elapsed().as_millis());
                    }
                    return Ok(());
                }
                PageRecord::Pages { addr, len, zero: true } => {
                    if std::env::var_os("MOS_DEBUG_LAZY").is_some() {
                        eprintln!("post-copy: zero {addr:#x}+{len:#x}");
                    }
                    zero_in(u, addr, len)
                }
                PageRecord::Pages { addr, len, zero: false } => {
                    let mut done = 0u64;
                    while done < len {
                        let n = (len - done).min(buf.len() as u64) as usize;
                        c.read_exact(&mut buf[..n])?;
                        copy_in(u, addr + done, &buf[..n]);
                        done += n as u64;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt::image::live::{record_header, END};
    use proto::frame::{encode_header, Limits};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// How the test's chunks travel.
    #[derive(Clone, Copy, PartialEq)]
    enum Wire {
        Plain,
        /// lz4 where a chunk shrinks, plain where not (as the sender does)
        Lz4,
        /// lz4 with every compressed body spoiled
        Lz4Spoiled,
    }

    /// `stream` sent as chunks of `chunk` bytes, sealed as `sealed` (None: what was
    /// sent), into a file in a temp dir.
    fn through(stream: &[u8], chunk: usize, sealed: Option<u64>) -> (Result<u64, StreamError>, tempfile::TempDir) {
        through_as(stream, chunk, sealed, Wire::Plain)
    }

    fn through_as(stream: &[u8], chunk: usize, sealed: Option<u64>, wire: Wire) -> (Result<u64, StreamError>, tempfile::TempDir) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let data = stream.to_vec();
        let tx = std::thread::spawn(move || {
            let mut s = TcpStream::connect(a).unwrap();
            let lim = Limits::default();
            for c in data.chunks(chunk) {
                let mut h = Vec::new();
                let packed = if wire == Wire::Plain { None } else { proto::spliced::lz4_chunk(c) };
                if let Some(mut packed) = packed {
                    if wire == Wire::Lz4Spoiled {
                        let k = packed.len() / 2;
                        packed[k] ^= 0xff;
                        packed.truncate(k + 1);
                    }
                    encode_header(&Msg::ImageChunkLz4 { len: packed.len() as u32, raw: c.len() as u32 }, &mut h, &lim).unwrap();
                    s.write_all(&h).unwrap();
                    let _ = s.write_all(&packed);
                } else {
                    encode_header(&Msg::ImageChunk { len: c.len() as u32 }, &mut h, &lim).unwrap();
                    let _ = s.write_all(&h);
                    let _ = s.write_all(c);
                }
            }
            let mut h = Vec::new();
            encode_header(&Msg::ImageSealed { bytes: sealed.unwrap_or(data.len() as u64) }, &mut h, &lim).unwrap();
            let _ = s.write_all(&h);
        });
        let (c, _) = l.accept().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut r = FrameReader::new(c);
        let res = recv_live_to_file(&mut r, &dir.path().join("x.mosimg"));
        drop(r);
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

    #[test]
    fn lz4_chunks_of_a_live_stream_are_inflated_in_place() {
        // a whole live image (header, metadata, pages, trailer) as records, compressed:
        // it arrives as the same image file the plain stream makes
        let dir = tempfile::tempdir().unwrap();
        let meta = ckpt::image::ImageMeta::minimal(vec![ckpt::image::Region { start: 0x10000, end: 0x10000 + 3 * 4096, prot: 3, kind: ckpt::image::RegionKind::Anon, path: String::new(), file_off: 0, extents: vec![ckpt::image::Extent { off: 0, len: 3 * 4096, file_off: ckpt::image::live::LIVE_DATA_OFF }], vm_flags: 0 }]);
        let pages: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let (hdr, mbytes) = ckpt::image::live_head(&meta, ckpt::image::live::LIVE_DATA_OFF + pages.len() as u64).unwrap();
        let mut head = hdr.encode().to_vec();
        head.extend_from_slice(&mbytes);
        let trailer = ckpt::image::trailer_bytes(&[ckpt::image::live::UNCHECKED]);
        let data_end = ckpt::image::live::LIVE_DATA_OFF + pages.len() as u64;
        let s = stream(&[(ckpt::image::live::LIVE_DATA_OFF, pages.clone()), (data_end, trailer), (0, head)]);
        let (r, d) = through_as(&s, 5000, None, Wire::Lz4);
        let n = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, s.len() as u64);
        let img = ckpt::image::ImageFile::open(&d.path().join("x.mosimg")).unwrap();
        let got = std::fs::read(d.path().join("x.mosimg")).unwrap();
        let at = ckpt::image::live::LIVE_DATA_OFF as usize;
        assert_eq!(&got[at..at + pages.len()], &pages[..]);
        drop((img, dir));
        // a spoiled compressed chunk is refused and leaves nothing
        let (r, d) = through_as(&s, 5000, None, Wire::Lz4Spoiled);
        assert!(matches!(r, Err(StreamError::Corrupt(ref m)) if m.contains("lz4")), "{r:?}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
