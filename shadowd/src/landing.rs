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
            std::fs::create_dir_all(dir).map_err(file_err(dir))?;
        }
        // read and write: a shared writable mapping needs both
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp).map_err(file_err(&tmp))?;
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
    pub fn receive<R: Read + AsFd>(mut self, r: &mut FrameReader<R>) -> Result<u64, StreamError> {
        let total = {
            let mut sink = Sink { map: self.map.as_ref(), rest: proto::spliced::BufferedFile { file: &self.file, path: &self.tmp, buf: Vec::new() } };
            proto::spliced::recv_chunks(r, &mut sink)?
        };
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
}
