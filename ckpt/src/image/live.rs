//! Live-migration image streams (pre-copy, `mos migrate --live`).
//!
//! A live image is an ordinary image file (format.rs: header, metadata, page data,
//! trailer) whose page data is sparse: every tracked range of the process's memory has a
//! fixed place in the file, chosen when the copy starts ([`LiveLayout`]), so a page sent
//! while the process runs and sent again after it was written lands on the same bytes.
//! The stream that builds it is a sequence of records, each a [`RECORD_LEN`]-byte header
//! (`file_off u64 | len u64`, little endian) followed by `len` bytes for that offset of
//! the file, after an 8-byte [`STREAM_MAGIC`], and ended by a record whose `file_off` is
//! [`END`]. The receiver writes each record where it says; the head (header and metadata)
//! and the trailer come last, from the frozen snapshot. Pages copied while the process
//! ran were read live, so a live image has no per-region CRC: its trailer says
//! [`UNCHECKED`] for them (header, metadata and trailer keep their hashes).

use super::format::PAGE;

/// The first bytes of a live stream.
pub const STREAM_MAGIC: &[u8; 8] = b"MOSLIVE1";
/// Bytes of one record header.
pub const RECORD_LEN: usize = 16;
/// The `file_off` of the record that ends a stream.
pub const END: u64 = u64::MAX;
/// Where a live image's page data starts (its metadata must fit below).
pub const LIVE_DATA_OFF: u64 = 1 << 30;
/// The highest file offset a live stream may write (16 TiB: ext4's limit for a sparse
/// file, where a node whose memory is limited keeps received images).
pub const LIVE_MAX_FILE: u64 = 1 << 44;
/// A region checksum in the trailer that means "not checksummed" (CRC-32s fit in u32).
pub const UNCHECKED: u64 = u64::MAX;
/// A region checksum that means "its pages come after the restart" (post-copy: the
/// region is in the image without data; a restorer maps it empty and hands its page
/// faults to the node's shadowd, which fetches them from the source). Such an image
/// cannot be restarted without that.
pub const LAZY: u64 = u64::MAX - 1;

/// Post-copy (`mos migrate --lazy`): the record after which the image file is whole
/// (head, trailer and every eager region) and the body may start; what follows are page
/// records whose `file_off` is the address of the pages, and zero records.
pub const LAZY_HEAD_END: u64 = u64::MAX - 1;
/// In a post-copy page record's length: the pages are zeros, no bytes follow.
pub const ZERO_PAGES: u64 = 1 << 63;

pub fn record_header(file_off: u64, len: u64) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[..8].copy_from_slice(&file_off.to_le_bytes());
    b[8..].copy_from_slice(&len.to_le_bytes());
    b
}

/// One record header as the receiver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Data { file_off: u64, len: u64 },
    End,
    /// Post-copy: the image file is whole; pages follow.
    HeadEnd,
}

/// A post-copy page record: `len` bytes for address `addr` follow, or (`zero`) the
/// pages are zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRecord {
    Pages { addr: u64, len: u64, zero: bool },
    End,
}

/// Decode a post-copy page record, refusing one outside user space or not page aligned.
pub fn parse_page_record(b: &[u8; RECORD_LEN]) -> Result<PageRecord, String> {
    let addr = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let raw = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    if addr == END {
        return if raw == 0 { Ok(PageRecord::End) } else { Err(format!("end record with length {raw}")) };
    }
    let (zero, len) = (raw & ZERO_PAGES != 0, raw & !ZERO_PAGES);
    let ok = addr.is_multiple_of(PAGE) && len.is_multiple_of(PAGE) && len > 0 && len <= 1 << 30 && addr.checked_add(len).is_some_and(|e| e <= 1 << 47);
    if !ok {
        return Err(format!("page record {addr:#x} of {len} bytes is not page aligned user memory"));
    }
    Ok(PageRecord::Pages { addr, len, zero })
}

/// Decode a record header, refusing one that would write outside a live image.
pub fn parse_record(b: &[u8; RECORD_LEN]) -> Result<Record, String> {
    let file_off = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    if file_off == END {
        return if len == 0 { Ok(Record::End) } else { Err(format!("end record with length {len}")) };
    }
    if file_off == LAZY_HEAD_END {
        return if len == 0 { Ok(Record::HeadEnd) } else { Err(format!("head-end record with length {len}")) };
    }
    match file_off.checked_add(len) {
        Some(e) if e <= LIVE_MAX_FILE => Ok(Record::Data { file_off, len }),
        _ => Err(format!("record at offset {file_off:#x} of {len} bytes lies outside a live image (limit {LIVE_MAX_FILE:#x})")),
    }
}

/// Where each tracked range of memory lives in the image file: ranges in the order they
/// were registered, each page aligned, packed from [`LIVE_DATA_OFF`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveLayout {
    /// (start, end, file offset of start)
    pub ranges: Vec<(u64, u64, u64)>,
    /// The first file offset after every range.
    pub next: u64,
}

impl LiveLayout {
    pub fn new() -> Self {
        LiveLayout { ranges: Vec::new(), next: LIVE_DATA_OFF }
    }

    /// Give [start, end) a place; false when the file would grow past [`LIVE_MAX_FILE`].
    pub fn add(&mut self, start: u64, end: u64) -> bool {
        debug_assert!(start.is_multiple_of(PAGE) && end.is_multiple_of(PAGE) && end > start);
        match self.next.checked_add(end - start) {
            Some(n) if n <= LIVE_MAX_FILE / 2 => {
                self.ranges.push((start, end, self.next));
                self.next = n;
                true
            }
            _ => false,
        }
    }

    /// The tracked range holding `addr`: (start, end, file offset of start).
    pub fn find(&self, addr: u64) -> Option<(u64, u64, u64)> {
        // ranges are registered in address order
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        self.ranges.get(i).copied().filter(|r| r.0 <= addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_record(&record_header(LIVE_DATA_OFF, 8192)), Ok(Record::Data { file_off: LIVE_DATA_OFF, len: 8192 }));
        assert_eq!(parse_record(&record_header(END, 0)), Ok(Record::End));
        assert!(parse_record(&record_header(END, 1)).is_err());
        assert!(parse_record(&record_header(LIVE_MAX_FILE, 1)).is_err());
        assert!(parse_record(&record_header(u64::MAX - 2, 4)).is_err());
        assert_eq!(parse_record(&record_header(LAZY_HEAD_END, 0)), Ok(Record::HeadEnd));
        assert_eq!(parse_page_record(&record_header(0x7000, 4096 | ZERO_PAGES)), Ok(PageRecord::Pages { addr: 0x7000, len: 4096, zero: true }));
        assert_eq!(parse_page_record(&record_header(0x7000, 8192)), Ok(PageRecord::Pages { addr: 0x7000, len: 8192, zero: false }));
        assert!(parse_page_record(&record_header(0x7001, 4096)).is_err());
        assert!(parse_page_record(&record_header(1 << 47, 4096)).is_err());
        assert!(parse_page_record(&record_header(0x7000, 0)).is_err());
    }

    #[test]
    fn layout_packs_ranges_and_finds_them() {
        let mut l = LiveLayout::new();
        assert!(l.add(0x1000, 0x3000));
        assert!(l.add(0x7f00_0000_0000, 0x7f00_0000_4000));
        assert_eq!(l.find(0x1000), Some((0x1000, 0x3000, LIVE_DATA_OFF)));
        assert_eq!(l.find(0x2fff), Some((0x1000, 0x3000, LIVE_DATA_OFF)));
        assert_eq!(l.find(0x3000), None);
        assert_eq!(l.find(0x7f00_0000_1000), Some((0x7f00_0000_0000, 0x7f00_0000_4000, LIVE_DATA_OFF + 0x2000)));
        assert_eq!(l.next, LIVE_DATA_OFF + 0x6000);
        assert!(!l.add(0x1_0000_0000, 0x1_0000_0000 + LIVE_MAX_FILE));
    }
}
