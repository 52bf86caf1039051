//! Where a stop-and-copy image lands on the target ([`Landing`]): its file, with memory
//! for about all of it allocated before the source freezes the process, and (in memory)
//! mapped, so the frozen stream is received straight into pages already there: one
//! copy, the one the wire needs, and no page allocation while the process is frozen.
//! Measured on this kind of machine (a virtual machine whose freed memory goes back to
//! its host), a first touch of 4 GiB took 1 to 7.5 s, and 2 GiB crossed the loopback
//! wire in 0.35 s.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use proto::stream::StreamError;
use proto::FrameReader;

/// How long after an image arrived its mapping here is let go (its restart runs first).
const UNMAP_LATER: std::time::Duration = std::time::Duration::from_secs(2);

/// An image's temp file (`.partial` beside its final name), its first `reserve` bytes
/// allocated and, in memory, mapped. Removed if dropped before [`Landing::receive`]
/// succeeded.
pub struct Landing {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    map: Option<Mapped>,
    done: bool,
}

/// A shared writable mapping of the landing file's first `len` bytes.
struct Mapped {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping belongs to one Landing, and is used only through its `&mut self`.
unsafe impl Send for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: addr and len are what mmap returned, and no slice into the mapping
        // outlives the call in Landing::receive that made it.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

fn file_err(p: &Path) -> impl Fn(std::io::Error) -> StreamError + '_ {
    move |e| StreamError::File { path: p.to_path_buf(), source: e }
}

impl Landing {
    /// Make `dest`'s temp file and allocate `reserve` bytes of it (`mapped`: the file is
    /// in memory; map it too, page tables filled). Fails if there is no room for them.
    pub fn prepare(dest: &Path, reserve: u64, mapped: bool) -> Result<Landing, StreamError> {
        let tmp = dest.with_extension("partial");
        if let Some(dir) = dest.parent() {
            proto::stream::private_dir_all(dir).map_err(file_err(dir))?;
        }
        // read and write: a shared writable mapping needs both; owner only
        let file = proto::stream::private_file(&tmp).map_err(file_err(&tmp))?;
        let mut l = Landing { tmp, dest: dest.to_path_buf(), file, map: None, done: false };
        if reserve == 0 {
            return Ok(l);
        }
        let len = usize::try_from(reserve).map_err(|_| StreamError::Corrupt(format!("a reservation of {reserve} bytes")))?;
        let off = libc::off_t::try_from(reserve).map_err(|_| StreamError::Corrupt(format!("a reservation of {reserve} bytes")))?;
        // SAFETY: fallocate on an fd we own, no pointers.
        let rc = unsafe { libc::fallocate(l.file.as_fd().as_raw_fd(), 0, 0, off) };
        if rc != 0 {
            return Err(file_err(&l.tmp)(std::io::Error::last_os_error()));
        }
        if mapped {
            // SAFETY: a new shared mapping of our own file, where the kernel puts it; the
            // file is `len` bytes long (fallocate above), so every page of it is backed.
            let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, l.file.as_fd().as_raw_fd(), 0) };
            if addr == libc::MAP_FAILED {
                return Err(file_err(&l.tmp)(std::io::Error::last_os_error()));
            }
            l.map = Some(Mapped { addr: addr.cast(), len });
        }
        Ok(l)
    }

    /// Receive the stream's chunks (into the mapping while they fit, through a buffer
    /// past it) until it is sealed with the right size; then give the file that size
    /// (what was allocated and not used goes back) and its final name. Returns the size.
    pub fn receive<R: Read + AsFd>(self, r: &mut FrameReader<R>) -> Result<u64, StreamError> {
        let total = {
            let mut sink = Sink { map: self.map.as_ref(), rest: proto::spliced::BufferedFile { file: &self.file, path: &self.tmp, buf: Vec::new() } };
            proto::spliced::recv_chunks(r, &mut sink)?
        };
        self.finish(total)
    }

    /// Receive an image striped over `lanes` (`ckpt::image::lanes`): one thread per lane
    /// puts its bytes where they belong (into the mapping while they fit, the file past
    /// it), while `r`, the main connection, brings only the seal with the image's size.
    /// Each lane must then have brought exactly its share. Then as [`Landing::receive`].
    pub fn receive_laned<R: Read + AsFd>(mut self, r: &mut FrameReader<R>, lanes: Vec<std::net::TcpStream>) -> Result<u64, StreamError> {
        let n = lanes.len();
        let main = r.get_ref().as_fd().as_raw_fd();
        let total = {
            let map = self.map.as_mut();
            let maplen = map.as_ref().map_or(0, |m| m.len);
            let all: &mut [u8] = match map {
                // SAFETY: the whole live mapping, borrowed (through `self.map`) for this
                // block only; it is cut below into disjoint stripes, one owner each.
                Some(m) => unsafe { std::slice::from_raw_parts_mut(m.addr, m.len) },
                None => &mut [],
            };
            let mut stripes: Vec<Vec<&mut [u8]>> = (0..n).map(|_| Vec::new()).collect();
            for (s, c) in all.chunks_mut(ckpt::image::lanes::STRIPE as usize).enumerate() {
                stripes[ckpt::image::lanes::lane_of(s as u64, n)].push(c);
            }
            let (file, path) = (&self.file, self.tmp.as_path());
            std::thread::scope(|sc| {
                let threads: Vec<_> = lanes
                    .into_iter()
                    .zip(stripes)
                    .enumerate()
                    .map(|(k, (sock, mine))| {
                        sc.spawn(move || {
                            let got = recv_lane(sock, k, n, mine, maplen as u64, file, path);
                            if got.is_err() {
                                // wake the main connection's reader: this image is lost
                                // SAFETY: shutdown of a socket fd the caller owns for this call.
                                unsafe { libc::shutdown(main, libc::SHUT_RD) };
                            }
                            got
                        })
                    })
                    .collect();
                let sealed = proto::spliced::recv_seal(r);
                let got: Vec<Result<u64, StreamError>> = threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(StreamError::Corrupt("a lane's thread panicked".into())))).collect();
                // a lane's own error says more than the main connection's end it caused
                for (k, g) in got.iter().enumerate() {
                    if let Err(e) = g {
                        return Err(StreamError::Corrupt(format!("lane {k}: {e}")));
                    }
                }
                let total = sealed?;
                for (k, g) in got.into_iter().enumerate() {
                    let (have, want) = (g.unwrap_or(0), ckpt::image::lanes::lane_len(total, k, n));
                    if have != want {
                        return Err(StreamError::Corrupt(format!("lane {k} of {n} brought {have} bytes of an image of {total}, not its {want}")));
                    }
                }
                Ok(total)
            })?
        };
        self.finish(total)
    }

    /// The image is whole, `total` bytes: let the mapping go later, give the file that
    /// size and its final name.
    fn finish(mut self, total: u64) -> Result<u64, StreamError> {
        // Unmapping 2 GiB (half a million page-table entries) takes ~80 ms of a core,
        // and the process is frozen until its restart here has run: another thread does
        // it once the restart is under way. The file's pages stay in the file (the body
        // maps them); truncating it below unmaps only the unused tail.
        if let Some(m) = self.map.take() {
            let _ = std::thread::Builder::new().name("unmap".into()).spawn(move || {
                std::thread::sleep(UNMAP_LATER);
                drop(m)
            });
        }
        self.file.set_len(total).map_err(file_err(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(file_err(&self.dest))?;
        self.done = true;
        Ok(total)
    }
}

/// Most bytes one lane may bring (an image is at most this big; a peer sending more is
/// refused rather than filling the disk).
const LANE_MAX: u64 = 1 << 40;

/// Lane `k` of `n`: its bytes, until the peer ends it, into its stripes of the mapping
/// (`mine`, in order), past the mapping (`maplen`) into the file. The bytes it brought.
fn recv_lane(mut sock: std::net::TcpStream, k: usize, n: usize, mut mine: Vec<&mut [u8]>, maplen: u64, file: &File, path: &Path) -> Result<u64, StreamError> {
    use std::os::unix::fs::FileExt;
    let mut got = 0u64;
    let mut buf = Vec::new();
    loop {
        let (at, room) = ckpt::image::lanes::lane_at(got, k, n);
        if got > LANE_MAX {
            return Err(StreamError::Corrupt(format!("more than {LANE_MAX} bytes")));
        }
        let r = if at < maplen {
            let j = (got / ckpt::image::lanes::STRIPE) as usize;
            let within = (got % ckpt::image::lanes::STRIPE) as usize;
            match mine.get_mut(j) {
                Some(stripe) => proto::spliced::recv_some(sock.as_fd(), &mut stripe[within..]),
                None => return Err(StreamError::Corrupt(format!("stripe {j} of lane {k} is not in the mapping"))),
            }
        } else {
            buf.resize((room as usize).min(1 << 20), 0);
            match sock.read(&mut buf) {
                Ok(0) => Ok(0),
                Ok(m) => file.write_all_at(&buf[..m], at).map(|()| m).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                }),
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(0) => return Ok(got),
            Ok(m) => got += m as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // (recv_some's word for the peer ending the lane; whether early is told later)
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(got),
            Err(e) => return Err(proto::spliced::conn(e)),
        }
    }
}

/// The chunks' bytes into the mapping while they fit, into the file past it.
struct Sink<'a> {
    map: Option<&'a Mapped>,
    rest: proto::spliced::BufferedFile<'a>,
}

impl Sink<'_> {
    /// The mapped bytes from `at` on, at most `n` of them (None past the mapping).
    fn mapped(&mut self, at: u64, n: usize) -> Option<&mut [u8]> {
        let m = self.map?;
        let at = usize::try_from(at).ok().filter(|a| *a < m.len)?;
        let n = n.min(m.len - at);
        // SAFETY: at + n <= m.len, inside the live mapping (it outlives the Sink, which
        // borrows it); the slice borrows the Sink mutably, so no other slice of it lives.
        Some(unsafe { std::slice::from_raw_parts_mut(m.addr.add(at), n) })
    }
}

impl proto::spliced::ChunkSink for Sink<'_> {
    fn recv(&mut self, sock: std::os::fd::BorrowedFd<'_>, at: u64, left: usize) -> Result<usize, StreamError> {
        match self.mapped(at, left) {
            // straight into the memory made ready for it
            Some(dst) => proto::spliced::recv_some(sock, dst).map_err(proto::spliced::conn),
            None => self.rest.recv(sock, at, left),
        }
    }

    fn put(&mut self, at: u64, data: &[u8]) -> Result<(), StreamError> {
        match self.mapped(at, data.len()) {
            Some(dst) => {
                let n = dst.len();
                dst.copy_from_slice(&data[..n]);
                if n < data.len() {
                    self.rest.put(at + n as u64, &data[n..])?;
                }
                Ok(())
            }
            None => self.rest.put(at, data),
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if !self.done {
            self.map = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{FrameWriter, Msg};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// `chunks` sent as a stream sealed as `sealed` bytes (None: what was sent; the
    /// connection cut before the seal if `cut`), received into a Landing that made
    /// `reserve` bytes ready (mapped); the result and the directory.
    fn land(chunks: &[Vec<u8>], sealed: Option<u64>, cut: bool, reserve: u64) -> (Result<u64, StreamError>, tempfile::TempDir) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let owned = chunks.to_vec();
        let sender = std::thread::spawn(move || {
            let mut w = FrameWriter::new(TcpStream::connect(a).unwrap());
            let mut n = 0u64;
            for c in &owned {
                w.write_msg(&Msg::ImageChunk { len: c.len() as u32 }, c).unwrap();
                n += c.len() as u64;
            }
            if !cut {
                w.write_msg(&Msg::ImageSealed { bytes: sealed.unwrap_or(n) }, &[]).unwrap();
            }
        });
        let (c, _) = l.accept().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let landing = Landing::prepare(&dir.path().join("img"), reserve, true).unwrap();
        let got = landing.receive(&mut FrameReader::new(c));
        sender.join().unwrap();
        (got, dir)
    }

    #[test]
    fn an_image_lands_whole_in_memory_made_ready_and_past_it() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<Vec<u8>> = data.chunks(700_001).map(|c| c.to_vec()).collect();
        // less made ready than comes (the rest through a buffer), and more (given back)
        for reserve in [1 << 20, 8 << 20] {
            let (got, dir) = land(&chunks, None, false, reserve);
            assert_eq!(got.unwrap(), data.len() as u64);
            assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), data, "reserve {reserve}");
            assert!(!dir.path().join("img.partial").exists());
        }
    }

    #[test]
    fn a_short_or_missealed_stream_leaves_no_image() {
        let chunks = vec![vec![5u8; 300_000]];
        let (got, dir) = land(&chunks, Some(299_999), false, 1 << 20);
        assert!(matches!(got, Err(StreamError::Corrupt(_))), "{got:?}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
        let (got, dir) = land(&chunks, None, true, 1 << 20);
        assert!(got.is_err(), "{got:?}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
    }

    /// `data` striped over `n` lanes by the shim's own sender (its first `sent` bytes;
    /// all if None), the main connection sealed as `sealed` bytes (None: data's
    /// length), received into a Landing with `reserve` bytes made ready.
    fn land_laned(data: &[u8], n: usize, sent: Option<usize>, sealed: Option<u64>, reserve: u64) -> (Result<u64, StreamError>, tempfile::TempDir) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let owned = data[..sent.unwrap_or(data.len())].to_vec();
        let seal = sealed.unwrap_or(data.len() as u64);
        let sender = std::thread::spawn(move || {
            let mut main = FrameWriter::new(TcpStream::connect(a).unwrap());
            let lanes: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(a).unwrap()).collect();
            let fds: Vec<i32> = lanes.iter().map(|s| s.as_raw_fd()).collect();
            let pieces = [ckpt::image::lanes::Piece { at: 0, ptr: owned.as_ptr(), len: owned.len() }];
            // SAFETY: the one piece is our own buffer, alive for the call.
            unsafe { ckpt::image::lanes::send_striped(&fds, &pieces) }.unwrap();
            main.write_msg(&Msg::ImageSealed { bytes: seal }, &[]).unwrap();
            drop(lanes);
        });
        let (c, _) = l.accept().unwrap();
        let lanes: Vec<TcpStream> = (0..n).map(|_| l.accept().unwrap().0).collect();
        let dir = tempfile::tempdir().unwrap();
        let landing = Landing::prepare(&dir.path().join("img"), reserve, true).unwrap();
        let got = landing.receive_laned(&mut FrameReader::new(c), lanes);
        sender.join().unwrap();
        (got, dir)
    }

    #[test]
    fn an_image_over_lanes_lands_whole() {
        let stripe = ckpt::image::lanes::STRIPE as usize;
        let data: Vec<u8> = (0..(3 * stripe + 12_345) as u32).map(|i| (i * 13 % 251) as u8).collect();
        for (n, reserve) in [(1, 16 << 20), (2, 5 << 20), (3, 16 << 20), (2, 1 << 20)] {
            let (got, dir) = land_laned(&data, n, None, None, reserve);
            assert_eq!(got.unwrap(), data.len() as u64, "{n} lanes, reserve {reserve}");
            assert!(std::fs::read(dir.path().join("img")).unwrap() == data, "{n} lanes, reserve {reserve}: bytes differ");
            assert!(!dir.path().join("img.partial").exists());
        }
    }

    #[test]
    fn a_lane_short_or_long_leaves_no_image() {
        let stripe = ckpt::image::lanes::STRIPE as usize;
        let data = vec![9u8; 2 * stripe + 100];
        // the lanes carry less than the seal says (a lane ended early)
        let (got, dir) = land_laned(&data, 2, Some(2 * stripe), None, 16 << 20);
        let e = format!("{:?}", got.unwrap_err());
        assert!(e.contains("lane 0 of 2 brought"), "{e}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
        // more than the seal says
        let (got, dir) = land_laned(&data, 2, None, Some(2 * stripe as u64), 16 << 20);
        assert!(matches!(got, Err(StreamError::Corrupt(_))), "{got:?}");
        assert!(!dir.path().join("img").exists() && !dir.path().join("img.partial").exists());
    }
}
