//! Streaming image writer: header, metadata, page data, trailer, front to back.
//! Runs inside the shim's writer child: it only allocates through the global allocator
//! (the shim's scratch arena there) and writes with plain `write(2)` calls.

use super::format::*;

/// Assign page-aligned file offsets to every extent and encode the metadata.
/// Returns the header and the encoded metadata.
pub fn layout(meta: &mut ImageMeta) -> Result<(Header, Vec<u8>), postcard::Error> {
    let mut data_off = page_up(HEADER_LEN as u64 + 4096);
    loop {
        let mut off = data_off;
        for r in meta.regions.iter_mut() {
            for e in r.extents.iter_mut() {
                e.file_off = off;
                off += e.len;
            }
        }
        let bytes = postcard::to_allocvec(meta)?;
        if HEADER_LEN as u64 + bytes.len() as u64 <= data_off {
            let hdr = Header {
                version: VERSION,
                arch: ARCH_X86_64,
                meta_len: bytes.len() as u64,
                meta_hash: xxhash_rust::xxh3::xxh3_64(&bytes),
                data_off,
                data_len: off - data_off,
                page_size: PAGE as u32,
            };
            return Ok((hdr, bytes));
        }
        data_off = page_up(HEADER_LEN as u64 + bytes.len() as u64);
    }
}

/// The checksum of one region's saved bytes, as the trailer records it.
pub fn region_hash<'a>(r: &Region, mem: &dyn Fn(u64, usize) -> &'a [u8]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    for e in &r.extents {
        let mut done = 0u64;
        while done < e.len {
            let n = ((e.len - done) as usize).min(CHUNK);
            h.update(mem(r.start + e.off + done, n));
            done += n as u64;
        }
    }
    h.finalize() as u64
}

/// Writes an image to a file descriptor. The caller owns the fd.
pub struct ImageWriter {
    fd: i32,
    pos: u64,
    hashes: Vec<u64>,
    /// `fd` is a pipe: page data goes in by vmsplice (referenced, not copied).
    by_reference: bool,
}

const CHUNK: usize = 4 << 20;

impl ImageWriter {
    pub fn new(fd: i32) -> Self {
        ImageWriter {
            fd,
            pos: 0,
            hashes: Vec::new(),
            by_reference: false,
        }
    }

    /// A writer into a pipe that hands the pipe page data by reference (vmsplice): the
    /// pipe's reader gets the very pages, with no copy. Sound only when the memory is
    /// never written again by anyone who could change what the reader sees: the image
    /// writer's copy-on-write snapshot (a write by the application copies the page for
    /// the application; the pipe keeps the snapshot's).
    pub fn into_pipe_by_reference(fd: i32) -> Self {
        ImageWriter { by_reference: true, ..Self::new(fd) }
    }

    fn vmsplice_all(&mut self, mut buf: &[u8]) -> Result<(), i32> {
        while !buf.is_empty() {
            let iov = libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: buf.len() };
            // SAFETY: one iovec over a readable slice; the pages stay referenced by the
            // pipe (see into_pipe_by_reference for why their content cannot change).
            let n = unsafe { crate::sc!(libc::SYS_vmsplice, self.fd, &iov as *const libc::iovec, 1usize, 0u32) } as isize;
            if n < 0 {
                let e = crate::sys::errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(libc::EIO);
            }
            buf = &buf[n as usize..];
            self.pos += n as u64;
        }
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    fn write_all(&mut self, mut buf: &[u8]) -> Result<(), i32> {
        while !buf.is_empty() {
            // Raw syscall, not libc's write(): glibc's cancellation wrapper flips a flag in
            // the calling thread's descriptor, which may be memory this write is saving.
            // SAFETY: buf is a valid readable slice; fd is owned by the caller.
            let n =
                unsafe { crate::sc!(libc::SYS_write, self.fd, buf.as_ptr(), buf.len()) } as isize;
            if n < 0 {
                let e = crate::sys::errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(libc::EIO);
            }
            buf = &buf[n as usize..];
            self.pos += n as u64;
        }
        Ok(())
    }

    /// Header, metadata and padding up to the data offset.
    pub fn write_head(&mut self, hdr: &Header, meta: &[u8]) -> Result<(), i32> {
        self.write_all(&hdr.encode())?;
        self.write_all(meta)?;
        let pad = hdr.data_off - self.pos;
        let zeros = [0u8; 4096];
        let mut left = pad as usize;
        while left > 0 {
            let n = left.min(zeros.len());
            self.write_all(&zeros[..n])?;
            left -= n;
        }
        Ok(())
    }

    /// One region's extents, in order; `mem(addr, len)` gives the bytes to save. With
    /// `hash` false the region's checksum must come later through `set_hashes`.
    pub fn write_region<'a>(
        &mut self,
        r: &Region,
        mem: &dyn Fn(u64, usize) -> &'a [u8],
        hash: bool,
    ) -> Result<(), i32> {
        let mut h = crc32fast::Hasher::new();
        for e in &r.extents {
            debug_assert_eq!(e.file_off, self.pos);
            let mut done = 0u64;
            while done < e.len {
                let n = ((e.len - done) as usize).min(CHUNK);
                let bytes = mem(r.start + e.off + done, n);
                if hash {
                    h.update(bytes);
                }
                if self.by_reference {
                    self.vmsplice_all(bytes)?;
                } else {
                    self.write_all(bytes)?;
                }
                done += n as u64;
            }
        }
        self.hashes.push(h.finalize() as u64);
        Ok(())
    }

    /// Replace the per-region checksums (computed elsewhere, e.g. in parallel).
    pub fn set_hashes(&mut self, hashes: Vec<u64>) {
        self.hashes = hashes;
    }

    pub fn write_trailer(&mut self) -> Result<(), i32> {
        let t = trailer_bytes(&self.hashes);
        self.write_all(&t)
    }

    /// One record of a live stream (`live.rs`): its header, then `data` (by reference
    /// into a pipe when the writer was made so, else copied).
    pub fn write_record(&mut self, file_off: u64, data: &[u8]) -> Result<(), i32> {
        self.write_all(&super::live::record_header(file_off, data.len() as u64))?;
        if self.by_reference {
            self.vmsplice_all(data)
        } else {
            self.write_all(data)
        }
    }

    /// One record of a live stream whose bytes are copied (memory that may be reused
    /// before the reader takes it).
    pub fn write_record_copied(&mut self, file_off: u64, data: &[u8]) -> Result<(), i32> {
        self.write_all(&super::live::record_header(file_off, data.len() as u64))?;
        self.write_all(data)
    }

    /// Raw bytes into the stream (a record header made elsewhere).
    pub fn write_all_raw(&mut self, b: &[u8]) -> Result<(), i32> {
        self.write_all(b)
    }

    /// A live stream's first bytes.
    pub fn write_live_magic(&mut self) -> Result<(), i32> {
        self.write_all(super::live::STREAM_MAGIC)
    }

    /// The record that ends a live stream.
    pub fn write_live_end(&mut self) -> Result<(), i32> {
        self.write_all(&super::live::record_header(super::live::END, 0))
    }
}

/// The trailer for these region checksums.
pub fn trailer_bytes(hashes: &[u64]) -> Vec<u8> {
    let mut t = Vec::with_capacity(hashes.len() * 8 + 24);
    for h in hashes {
        t.extend_from_slice(&h.to_le_bytes());
    }
    t.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
    let th = xxhash_rust::xxh3::xxh3_64(&t);
    t.extend_from_slice(&th.to_le_bytes());
    t.extend_from_slice(TAIL_MAGIC);
    t
}

/// Header and metadata of a live image whose page data lies where `meta`'s extents say
/// (from [`super::live::LIVE_DATA_OFF`] up to `data_end`).
pub fn live_head(meta: &ImageMeta, data_end: u64) -> Result<(Header, Vec<u8>), String> {
    let bytes = postcard::to_allocvec(meta).map_err(|e| e.to_string())?;
    if HEADER_LEN as u64 + bytes.len() as u64 > super::live::LIVE_DATA_OFF {
        return Err(format!("metadata of {} bytes does not fit a live image", bytes.len()));
    }
    let hdr = Header {
        version: VERSION,
        arch: ARCH_X86_64,
        meta_len: bytes.len() as u64,
        meta_hash: xxhash_rust::xxh3::xxh3_64(&bytes),
        data_off: super::live::LIVE_DATA_OFF,
        data_len: data_end - super::live::LIVE_DATA_OFF,
        page_size: PAGE as u32,
    };
    Ok((hdr, bytes))
}
