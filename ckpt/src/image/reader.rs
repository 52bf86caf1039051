//! Validating image reader. Decoding is a pure function of the bytes: every problem is a
//! typed error that names what is wrong, checked in the order magic, version,
//! architecture, size, checksums.

use super::format::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a mos image (bad magic)")]
    NotAnImage,
    #[error(
        "image format version {0} is newer than this mos supports (up to {VERSION}); upgrade mos"
    )]
    NewerVersion(u32),
    #[error("image format version {0} is not supported")]
    BadVersion(u32),
    #[error("image is for architecture {0} ({1}), this machine is x86_64")]
    WrongArch(&'static str, u32),
    #[error("image header checksum mismatch (corrupt header)")]
    HeaderChecksum,
    #[error("image is truncated: {have} bytes, expected {want}")]
    Truncated { have: u64, want: u64 },
    #[error(
        "image is larger than its header says ({have} bytes, expected {want}): trailing garbage"
    )]
    TooLong { have: u64, want: u64 },
    #[error("metadata checksum mismatch (corrupt image)")]
    MetaChecksum,
    #[error("corrupt metadata: {0}")]
    BadMeta(String),
    #[error("trailer corrupt (checksum or magic mismatch)")]
    BadTrailer,
    #[error("page data checksum mismatch in region {start:#x}-{end:#x} {path}")]
    DataChecksum { start: u64, end: u64, path: String },
    #[error("inconsistent image: {0}")]
    Inconsistent(String),
}

pub struct ImageFile {
    pub file: File,
    pub header: Header,
    pub meta: ImageMeta,
    pub region_hashes: Vec<u64>,
    pub size: u64,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Decode and check the fixed header.
pub fn decode_header(b: &[u8]) -> Result<Header, ImageError> {
    if b.len() < 8 || &b[0..8] != MAGIC {
        return Err(ImageError::NotAnImage);
    }
    if b.len() < HEADER_LEN {
        return Err(ImageError::Truncated {
            have: b.len() as u64,
            want: HEADER_LEN as u64,
        });
    }
    let version = u32_at(b, 8);
    if version > VERSION {
        return Err(ImageError::NewerVersion(version));
    }
    if version != VERSION {
        return Err(ImageError::BadVersion(version));
    }
    let arch = u32_at(b, 12);
    if arch != ARCH_X86_64 {
        return Err(ImageError::WrongArch(arch_name(arch), arch));
    }
    if xxh3_64(&b[0..56]) != u64_at(b, 56) {
        return Err(ImageError::HeaderChecksum);
    }
    let h = Header {
        version,
        arch,
        meta_len: u64_at(b, 16),
        meta_hash: u64_at(b, 24),
        data_off: u64_at(b, 32),
        data_len: u64_at(b, 40),
        page_size: u32_at(b, 48),
    };
    if h.page_size as u64 != PAGE
        || !h.data_off.is_multiple_of(PAGE)
        || h.data_off < HEADER_LEN as u64 + h.meta_len
    {
        return Err(ImageError::Inconsistent(
            "header fields out of range".into(),
        ));
    }
    Ok(h)
}

impl ImageFile {
    /// Open and check header, metadata and trailer (not the page data: see `verify_data`).
    pub fn open(path: &Path) -> Result<ImageFile, ImageError> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut hb = vec![0u8; HEADER_LEN.min(size as usize)];
        file.read_exact_at(&mut hb, 0)?;
        let header = decode_header(&hb)?;
        let min = header.data_off + header.data_len + trailer_len(0);
        if size < min {
            return Err(ImageError::Truncated {
                have: size,
                want: min,
            });
        }
        let mut mb = vec![0u8; header.meta_len as usize];
        file.read_exact_at(&mut mb, HEADER_LEN as u64)?;
        if xxh3_64(&mb) != header.meta_hash {
            return Err(ImageError::MetaChecksum);
        }
        let meta: ImageMeta =
            postcard::from_bytes(&mb).map_err(|e| ImageError::BadMeta(e.to_string()))?;
        let want = header.data_off + header.data_len + trailer_len(meta.regions.len());
        if size < want {
            return Err(ImageError::Truncated { have: size, want });
        }
        if size > want {
            return Err(ImageError::TooLong { have: size, want });
        }
        let tl = trailer_len(meta.regions.len()) as usize;
        let mut tb = vec![0u8; tl];
        file.read_exact_at(&mut tb, header.data_off + header.data_len)?;
        let n = meta.regions.len();
        if &tb[tl - 8..] != TAIL_MAGIC
            || u64_at(&tb, n * 8) != n as u64
            || xxh3_64(&tb[..n * 8 + 8]) != u64_at(&tb, n * 8 + 8)
        {
            return Err(ImageError::BadTrailer);
        }
        let region_hashes = (0..n).map(|i| u64_at(&tb, i * 8)).collect();
        let img = ImageFile {
            file,
            header,
            meta,
            region_hashes,
            size,
        };
        img.check_consistency()?;
        Ok(img)
    }

    fn check_consistency(&self) -> Result<(), ImageError> {
        let h = &self.header;
        let mut prev_end = 0u64;
        for r in &self.meta.regions {
            if r.start % PAGE != 0 || r.end % PAGE != 0 || r.end <= r.start || r.start < prev_end {
                return Err(ImageError::Inconsistent(format!(
                    "region {:#x}-{:#x} malformed",
                    r.start, r.end
                )));
            }
            prev_end = r.end;
            for e in &r.extents {
                let ok = e.off % PAGE == 0
                    && e.len % PAGE == 0
                    && e.off + e.len <= r.end - r.start
                    && e.file_off % PAGE == 0
                    && e.file_off >= h.data_off
                    && e.file_off + e.len <= h.data_off + h.data_len;
                if !ok {
                    return Err(ImageError::Inconsistent(format!(
                        "extent of region {:#x} out of range",
                        r.start
                    )));
                }
            }
        }
        if !self.meta.threads.iter().any(|t| t.is_main) {
            return Err(ImageError::Inconsistent("no main thread".into()));
        }
        Ok(())
    }

    /// Check every region's page data against the trailer checksums.
    pub fn verify_data(&self) -> Result<(), ImageError> {
        let most = self.meta.regions.iter().map(|r| r.data_bytes()).max().unwrap_or(0);
        let mut buf = vec![0u8; most.clamp(4096, 4 << 20) as usize];
        for (r, want) in self.meta.regions.iter().zip(&self.region_hashes) {
            // a live image's pages were copied while the process ran: no checksum
            if *want == super::live::UNCHECKED || *want == super::live::LAZY {
                continue;
            }
            let total = r.data_bytes();
            // Big regions: both halves at once (CRC-32s of consecutive parts combine).
            let crc = if total >= 64 << 20 {
                let mid = (total / 2) & !(PAGE - 1);
                let (a, b) = std::thread::scope(|sc| {
                    let second = sc.spawn(|| self.crc_of(r, mid, total, &mut vec![0u8; 4 << 20]));
                    let first = self.crc_of(r, 0, mid, &mut buf);
                    (first, second.join().unwrap_or_else(|_| Err(ImageError::Inconsistent("checksum thread failed".into()))))
                });
                let mut h = a?;
                h.combine(&b?);
                h
            } else {
                self.crc_of(r, 0, total, &mut buf)?
            };
            if crc.finalize() as u64 != *want {
                return Err(ImageError::DataChecksum {
                    start: r.start,
                    end: r.end,
                    path: r.path.clone(),
                });
            }
        }
        Ok(())
    }

    /// CRC-32 state over bytes [from, to) of a region's saved data (its extents in order).
    fn crc_of(&self, r: &Region, from: u64, to: u64, buf: &mut [u8]) -> Result<crc32fast::Hasher, ImageError> {
        let mut h = crc32fast::Hasher::new();
        let mut pos = 0u64; // position in the region's data stream
        let view = FileView::map(&self.file, self.size);
        for e in &r.extents {
            let (s, end) = (pos.max(from), (pos + e.len).min(to));
            let mut at = s;
            while at < end {
                let n = ((end - at) as usize).min(buf.len());
                let off = e.file_off + (at - pos);
                match view.as_ref().and_then(|v| v.bytes(off, n)) {
                    // the file's pages as they are (no copy: a tmpfs or cached image)
                    Some(b) => h.update(b),
                    None => {
                        self.file.read_exact_at(&mut buf[..n], off)?;
                        h.update(&buf[..n]);
                    }
                }
                at += n as u64;
            }
            pos += e.len;
            if pos >= to {
                break;
            }
        }
        Ok(h)
    }
}

/// A read-only shared mapping of a whole image file, for checksums without copies.
struct FileView {
    at: *const u8,
    len: usize,
}

impl FileView {
    fn map(f: &File, len: u64) -> Option<FileView> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: a new read-only mapping of our open file; nothing else is affected.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        (p != libc::MAP_FAILED).then_some(FileView { at: p as *const u8, len })
    }

    /// `n` bytes at `off`, if the file had them when mapped.
    fn bytes(&self, off: u64, n: usize) -> Option<&[u8]> {
        let off = usize::try_from(off).ok()?;
        let end = off.checked_add(n).filter(|&e| e <= self.len)?;
        // An image file is not changed while it is checked (it is written under a temp name
        // and renamed whole); one truncated under us would fault, as a read would fail.
        // SAFETY: [off, end) lies inside the mapping, which lives as long as self.
        Some(unsafe { core::slice::from_raw_parts(self.at.add(off), end - off) })
    }
}

impl Drop for FileView {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.at as *mut _, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{layout, ImageWriter};

    fn meta_with(regions: Vec<Region>) -> ImageMeta {
        ImageMeta::minimal(regions)
    }

    /// A synthetic image with an 80 MiB region in two extents (the parallel path) and a
    /// small one; verification passes, and a byte flipped in the second half is caught.
    #[test]
    fn big_regions_are_verified_in_two_halves() {
        let big: Vec<u8> = (0..80u64 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let small = vec![7u8; 8192];
        let base = 0x1000_0000u64;
        let r1 = Region {
            start: base,
            end: base + (100 << 20),
            prot: 3,
            kind: RegionKind::Anon,
            path: String::new(),
            file_off: 0,
            extents: vec![Extent { off: 0, len: 30 << 20, file_off: 0 }, Extent { off: 40 << 20, len: 50 << 20, file_off: 0 }],
            vm_flags: 0,
        };
        let r2 = Region { start: base + (200 << 20), end: base + (200 << 20) + 8192, prot: 3, kind: RegionKind::Anon, path: String::new(), file_off: 0, extents: vec![Extent { off: 0, len: 8192, file_off: 0 }], vm_flags: 0 };
        let mut meta = meta_with(vec![r1, r2]);
        let (hdr, mb) = layout(&mut meta).unwrap();
        let dir = std::env::temp_dir().join(format!("mos-reader-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.mosimg");
        let f = std::fs::File::create(&path).unwrap();
        use std::os::fd::AsRawFd;
        let mut w = ImageWriter::new(f.as_raw_fd());
        w.write_head(&hdr, &mb).unwrap();
        let mem = |a: u64, n: usize| -> &[u8] {
            if a >= base + (200 << 20) {
                &small[..n]
            } else {
                // extent 1 maps big[0..30M), extent 2 maps big[30M..80M)
                let off = a - base;
                let i = if off < 30 << 20 { off } else { off - (40 << 20) + (30 << 20) } as usize;
                &big[i..i + n]
            }
        };
        for r in &meta.regions {
            w.write_region(r, &mem, true).unwrap();
        }
        w.write_trailer().unwrap();
        drop(f);
        ImageFile::open(&path).unwrap().verify_data().unwrap();
        // flip one byte in the second half of the big region's data
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (hdr.data_off + (60 << 20)) as usize;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = ImageFile::open(&path).unwrap().verify_data().unwrap_err();
        assert!(matches!(err, ImageError::DataChecksum { start, .. } if start == base), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
