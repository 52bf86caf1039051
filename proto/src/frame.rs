//! Framing: how one message travels on a byte stream.
//!
//! A frame is
//!
//! ```text
//! +----------------+---------------------------+------------------------+
//! | u32 LE  hlen   | postcard header (hlen B)  | bulk (header.bulk_len) |
//! +----------------+---------------------------+------------------------+
//! ```
//!
//! The header is a serde value ([`WireHeader`], normally [`crate::Msg`]) and states how many
//! raw bulk bytes follow it. Bulk bytes (page data, read/write buffers) are copied as they
//! are, never re-encoded. Both lengths are checked against [`Limits`] before anything is
//! allocated, so a hostile length costs the peer its connection, not us our memory.
//!
//! This module owns the byte layout and its limits. It never interprets a message: that is
//! [`crate::msg`]'s job. Decoding is a pure function ([`decode_frame`]); the stream reader
//! uses the same checks.
//!
//! Error rule: after any [`FrameError`] returned by a [`FrameReader`], except
//! [`FrameError::Idle`], the stream is out of step and the connection must be dropped. The
//! [`FrameWriter`] checks a frame completely before writing its first byte, so its
//! validation errors ([`FrameError::HeaderTooLarge`], [`FrameError::BulkTooLarge`],
//! [`FrameError::BulkLenMismatch`], [`FrameError::Encode`]) leave the stream usable.

use std::io::{self, IoSlice, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of the length prefix in front of every header.
pub const LEN_PREFIX: usize = 4;
/// Default largest accepted header (postcard bytes, without the prefix).
pub const DEFAULT_MAX_HEADER: u32 = 64 * 1024;
/// Default largest accepted bulk payload of one frame.
pub const DEFAULT_MAX_BULK: u64 = 1 << 30;

/// A value that can be the header of a frame: it knows how many raw bytes follow it.
pub trait WireHeader: Serialize + DeserializeOwned {
    /// Number of bulk bytes that follow this header on the wire.
    fn bulk_len(&self) -> u64;
}

/// Size limits a reader or writer enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest header in bytes (the length prefix excluded).
    pub max_header: u32,
    /// Largest bulk payload of one frame in bytes.
    pub max_bulk: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: DEFAULT_MAX_HEADER,
            max_bulk: DEFAULT_MAX_BULK,
        }
    }
}

impl Limits {
    /// Limits for talking to a peer that has not authenticated yet: small headers, no bulk.
    pub const HANDSHAKE: Limits = Limits {
        max_header: 4096,
        max_bulk: 0,
    };

    fn check_header(&self, len: u64) -> Result<(), FrameError> {
        if len > u64::from(self.max_header) {
            return Err(FrameError::HeaderTooLarge {
                len,
                max: self.max_header,
            });
        }
        Ok(())
    }

    fn check_bulk(&self, len: u64) -> Result<(), FrameError> {
        if len > self.max_bulk {
            return Err(FrameError::BulkTooLarge {
                len,
                max: self.max_bulk,
            });
        }
        Ok(())
    }
}

/// What can go wrong reading, writing or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed (reset, broken pipe, ...).
    #[error("i/o error on frame stream: {0}")]
    Io(#[source] io::Error),
    /// The read timeout expired before the first byte of a new frame: the stream is still in
    /// step and the caller may read again.
    #[error("no frame arrived within the read timeout")]
    Idle,
    /// The read or write timeout expired in the middle of a frame.
    #[error("timed out in the middle of a frame (peer too slow or stalled)")]
    Timeout,
    /// The peer closed the connection cleanly between two frames.
    #[error("peer closed the connection")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("peer closed the connection in the middle of a frame (while reading the {part})")]
    Truncated {
        /// Which part of the frame was being read.
        part: FramePart,
    },
    /// A byte slice handed to [`decode_frame`] ends before the frame does.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// Bytes missing (at least).
        needed: u64,
    },
    /// The stated header length is above the limit.
    #[error("frame header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// Stated or encoded header length.
        len: u64,
        /// Limit in force.
        max: u32,
    },
    /// The header states a bulk payload above the limit.
    #[error("frame bulk payload of {len} bytes exceeds the limit of {max} bytes")]
    BulkTooLarge {
        /// Stated bulk length.
        len: u64,
        /// Limit in force.
        max: u64,
    },
    /// The header bytes are not a valid postcard encoding of the expected type.
    #[error("malformed frame header: {0}")]
    Decode(#[source] postcard::Error),
    /// The header decoded but did not use all its stated bytes.
    #[error("frame header has {extra} trailing bytes after the message")]
    TrailingBytes {
        /// Unused bytes.
        extra: usize,
    },
    /// The header could not be encoded (a caller's value serde cannot represent).
    #[error("cannot encode frame header: {0}")]
    Encode(#[source] postcard::Error),
    /// `write_msg` was given a bulk slice whose length differs from what the header states.
    #[error("bulk slice has {given} bytes but the header states {stated}")]
    BulkLenMismatch {
        /// Length stated by the header.
        stated: u64,
        /// Length of the slice given.
        given: usize,
    },
    /// `read_msg_into` was given a buffer smaller than the frame's bulk payload.
    #[error("frame bulk payload of {len} bytes does not fit the {buf}-byte buffer")]
    BulkExceedsBuffer {
        /// Stated bulk length.
        len: u64,
        /// Size of the caller's buffer.
        buf: usize,
    },
    /// Memory for the bulk payload could not be reserved.
    #[error("cannot allocate {len} bytes for a frame bulk payload")]
    OutOfMemory {
        /// Bytes requested.
        len: u64,
    },
}

/// Part of a frame, for [`FrameError::Truncated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePart {
    /// The 4-byte length prefix.
    LengthPrefix,
    /// The postcard header.
    Header,
    /// The raw bulk payload.
    Bulk,
}

impl std::fmt::Display for FramePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramePart::LengthPrefix => "length prefix",
            FramePart::Header => "header",
            FramePart::Bulk => "bulk payload",
        })
    }
}

impl FrameError {
    /// True for the two timeout errors ([`FrameError::Idle`], [`FrameError::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Idle | FrameError::Timeout)
    }

    /// True if the connection can still be used after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::Idle)
    }
}

fn is_timeout_kind(kind: io::ErrorKind) -> bool {
    // A socket read timeout shows as EAGAIN (WouldBlock) on Linux, TimedOut elsewhere.
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn io_error(e: io::Error, part: FramePart) -> FrameError {
    if is_timeout_kind(e.kind()) {
        FrameError::Timeout
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated { part }
    } else {
        FrameError::Io(e)
    }
}

/// Encode `header` to its postcard bytes, prefixed with their length, appended to `out`.
/// Checks the header and bulk limits; on error `out` is left as it was.
pub fn encode_header<H: WireHeader>(
    header: &H,
    out: &mut Vec<u8>,
    limits: &Limits,
) -> Result<(), FrameError> {
    limits.check_bulk(header.bulk_len())?;
    let start = out.len();
    out.extend_from_slice(&[0u8; LEN_PREFIX]);
    if let Err(e) = postcard::to_extend(header, AppendTo(out)) {
        out.truncate(start);
        return Err(FrameError::Encode(e));
    }
    let hlen = (out.len() - start - LEN_PREFIX) as u64;
    if let Err(e) = limits.check_header(hlen) {
        out.truncate(start);
        return Err(e);
    }
    // check_header bounded hlen by a u32 limit.
    out[start..start + LEN_PREFIX].copy_from_slice(&(hlen as u32).to_le_bytes());
    Ok(())
}

/// Lets postcard append to a borrowed vector (it takes its `Extend` sink by value).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Extend<u8> for AppendTo<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Encode a whole frame (prefix, header, bulk) into one vector.
pub fn encode_frame<H: WireHeader>(
    header: &H,
    bulk: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, FrameError> {
    check_bulk_slice(header, bulk)?;
    let mut out = Vec::with_capacity(64 + bulk.len());
    encode_header(header, &mut out, limits)?;
    out.extend_from_slice(bulk);
    Ok(out)
}

fn check_bulk_slice<H: WireHeader>(header: &H, bulk: &[u8]) -> Result<(), FrameError> {
    let stated = header.bulk_len();
    if stated != bulk.len() as u64 {
        return Err(FrameError::BulkLenMismatch {
            stated,
            given: bulk.len(),
        });
    }
    Ok(())
}

/// Decode header bytes (without the length prefix). The whole slice must be one value.
/// Checks the header's stated bulk length against `limits`.
pub fn decode_header<H: WireHeader>(bytes: &[u8], limits: &Limits) -> Result<H, FrameError> {
    limits.check_header(bytes.len() as u64)?;
    let (header, rest): (H, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { extra: rest.len() });
    }
    limits.check_bulk(header.bulk_len())?;
    Ok(header)
}

/// A frame decoded from a byte slice.
#[derive(Debug, PartialEq)]
pub struct DecodedFrame<'a, H> {
    /// The header.
    pub header: H,
    /// The bulk payload, borrowed from the input.
    pub bulk: &'a [u8],
    /// Bytes of the input this frame occupies; the next frame starts there.
    pub consumed: usize,
}

/// Decode one frame from the front of `bytes`. Pure: no I/O, never panics on any input.
pub fn decode_frame<'a, H: WireHeader>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<DecodedFrame<'a, H>, FrameError> {
    let Some(prefix) = bytes.get(..LEN_PREFIX) else {
        return Err(FrameError::Incomplete {
            needed: (LEN_PREFIX - bytes.len()) as u64,
        });
    };
    let mut len_bytes = [0u8; LEN_PREFIX];
    len_bytes.copy_from_slice(prefix);
    let hlen = u32::from_le_bytes(len_bytes);
    limits.check_header(u64::from(hlen))?;
    let rest = &bytes[LEN_PREFIX..];
    let hlen = hlen as usize;
    let Some(hbytes) = rest.get(..hlen) else {
        return Err(FrameError::Incomplete {
            needed: (hlen - rest.len()) as u64,
        });
    };
    let header: H = decode_header(hbytes, limits)?;
    let rest = &rest[hlen..];
    let blen = header.bulk_len();
    // decode_header bounded blen by max_bulk; on a 64-bit target that fits usize, and on
    // a smaller one try_from fails cleanly instead of truncating.
    let blen_usize = usize::try_from(blen).map_err(|_| FrameError::BulkTooLarge {
        len: blen,
        max: limits.max_bulk,
    })?;
    let Some(bulk) = rest.get(..blen_usize) else {
        return Err(FrameError::Incomplete {
            needed: blen - rest.len() as u64,
        });
    };
    Ok(DecodedFrame {
        header,
        bulk,
        consumed: LEN_PREFIX + hlen + blen_usize,
    })
}

/// Writes frames to a byte stream. Not buffered: each frame goes out in one vectored write
/// where the stream accepts it (a `writev` on sockets), the header and the caller's bulk
/// slice side by side, without copying the bulk.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    limits: Limits,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    /// A writer with the default [`Limits`].
    pub fn new(inner: W) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    /// A writer with the given limits (the peer's reader limits, normally).
    pub fn with_limits(inner: W, limits: Limits) -> Self {
        FrameWriter {
            inner,
            limits,
            buf: Vec::with_capacity(256),
        }
    }

    /// Write one frame: `header`, then `bulk`, which must be exactly `header.bulk_len()`
    /// bytes. Validation happens before any byte is written; the stream is flushed.
    pub fn write_msg<H: WireHeader>(&mut self, header: &H, bulk: &[u8]) -> Result<(), FrameError> {
        check_bulk_slice(header, bulk)?;
        self.buf.clear();
        encode_header(header, &mut self.buf, &self.limits)?;
        let mut slices = [IoSlice::new(&self.buf), IoSlice::new(bulk)];
        let part = if bulk.is_empty() { 1 } else { 2 };
        write_all_vectored(&mut self.inner, &mut slices[..part]).map_err(|e| {
            if is_timeout_kind(e.kind()) {
                FrameError::Timeout
            } else {
                FrameError::Io(e)
            }
        })?;
        self.inner.flush().map_err(FrameError::Io)
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying stream, mutably. Writing to it directly breaks the framing.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Give the stream back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// `Write::write_all_vectored` is unstable; this is the same loop on stable.
fn write_all_vectored<W: Write>(w: &mut W, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "stream accepted no bytes",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bulk payloads up to this size get one exact allocation; larger ones grow as their bytes
/// actually arrive, so a peer cannot make us reserve a gigabyte by stating one.
const BULK_EAGER_ALLOC: u64 = 16 << 20;

/// Reads frames from a byte stream. It holds no read-ahead buffer: it reads exactly the
/// bytes of each frame, so the stream can be handed on (`into_inner`) between frames
/// without losing data. Wrap the stream in a `BufReader` first to save syscalls.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    limits: Limits,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// A reader with the default [`Limits`].
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    /// A reader with the given limits.
    pub fn with_limits(inner: R, limits: Limits) -> Self {
        FrameReader {
            inner,
            limits,
            buf: Vec::with_capacity(256),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Change the limits (after a handshake, for example).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream, mutably. Reading from it directly breaks the framing.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Give the stream back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Read the prefix and header of the next frame.
    fn read_header<H: WireHeader>(&mut self) -> Result<H, FrameError> {
        let mut prefix = [0u8; LEN_PREFIX];
        let got = read_full(&mut self.inner, &mut prefix);
        match got {
            Ok(n) if n == LEN_PREFIX => {}
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => {
                return Err(FrameError::Truncated {
                    part: FramePart::LengthPrefix,
                })
            }
            Err((0, e)) if is_timeout_kind(e.kind()) => return Err(FrameError::Idle),
            Err((_, e)) => return Err(io_error(e, FramePart::LengthPrefix)),
        }
        let hlen = u32::from_le_bytes(prefix);
        self.limits.check_header(u64::from(hlen))?;
        self.buf.clear();
        self.buf.resize(hlen as usize, 0);
        match read_full(&mut self.inner, &mut self.buf) {
            Ok(n) if n == self.buf.len() => {}
            Ok(_) => {
                return Err(FrameError::Truncated {
                    part: FramePart::Header,
                })
            }
            Err((_, e)) => return Err(io_error(e, FramePart::Header)),
        }
        decode_header(&self.buf, &self.limits)
    }

    fn read_bulk_exact(&mut self, dest: &mut [u8]) -> Result<(), FrameError> {
        match read_full(&mut self.inner, dest) {
            Ok(n) if n == dest.len() => Ok(()),
            Ok(_) => Err(FrameError::Truncated {
                part: FramePart::Bulk,
            }),
            Err((_, e)) => Err(io_error(e, FramePart::Bulk)),
        }
    }

    /// Read the next frame's header only. Its bulk (`header.bulk_len()` bytes) is left
    /// in the stream: the caller must take exactly that many bytes from
    /// [`get_mut`](Self::get_mut) (by splice, say) before reading the next frame.
    pub fn read_header_only<H: WireHeader>(&mut self) -> Result<H, FrameError> {
        self.read_header()
    }

    /// Read one frame: its header and its bulk payload in a new vector.
    pub fn read_msg<H: WireHeader>(&mut self) -> Result<(H, Vec<u8>), FrameError> {
        let header: H = self.read_header()?;
        let blen = header.bulk_len();
        let mut bulk = Vec::new();
        if blen == 0 {
            return Ok((header, bulk));
        }
        let total = usize::try_from(blen).map_err(|_| FrameError::OutOfMemory { len: blen })?;
        let first = blen.min(BULK_EAGER_ALLOC) as usize;
        bulk.try_reserve_exact(first)
            .map_err(|_| FrameError::OutOfMemory { len: blen })?;
        while bulk.len() < total {
            let have = bulk.len();
            // Grow geometrically, never past the stated total.
            let target = if have == 0 {
                first
            } else {
                total.min(have.saturating_mul(2))
            };
            bulk.try_reserve_exact(target - have)
                .map_err(|_| FrameError::OutOfMemory { len: blen })?;
            bulk.resize(target, 0);
            self.read_bulk_exact(&mut bulk[have..])?;
        }
        Ok((header, bulk))
    }

    /// Read one frame, its bulk payload into the front of `buf`. Returns the header and the
    /// bulk length. A payload larger than `buf` is [`FrameError::BulkExceedsBuffer`], and the
    /// connection must then be dropped (the payload is left unread).
    pub fn read_msg_into<H: WireHeader>(
        &mut self,
        buf: &mut [u8],
    ) -> Result<(H, usize), FrameError> {
        let header: H = self.read_header()?;
        let blen = header.bulk_len();
        let n = match usize::try_from(blen) {
            Ok(n) if n <= buf.len() => n,
            _ => {
                return Err(FrameError::BulkExceedsBuffer {
                    len: blen,
                    buf: buf.len(),
                })
            }
        };
        self.read_bulk_exact(&mut buf[..n])?;
        Ok((header, n))
    }
}

/// Fill `buf` from `r`, retrying on EINTR. Ok(n < len) means EOF after n bytes; on error
/// the bytes read so far are reported with it.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, (usize, io::Error)> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Msg;
    use std::io::Cursor;

    /// A message whose header states `len` bytes of bulk.
    fn chunk(len: u32) -> Msg {
        Msg::ImageChunk { len }
    }

    #[test]
    fn round_trip_through_stream_with_bulk() {
        let mut wire = Vec::new();
        let mut w = FrameWriter::new(&mut wire);
        w.write_msg(&chunk(5), b"hello").unwrap();
        w.write_msg(&Msg::ImageEnd { checksum: 42 }, &[]).unwrap();
        let mut r = FrameReader::new(Cursor::new(wire));
        let (m, bulk): (Msg, _) = r.read_msg().unwrap();
        assert_eq!(m, chunk(5));
        assert_eq!(bulk, b"hello");
        let mut buf = [0u8; 8];
        let (m, n): (Msg, _) = r.read_msg_into(&mut buf).unwrap();
        assert_eq!((m, n), (Msg::ImageEnd { checksum: 42 }, 0));
        assert!(matches!(r.read_msg::<Msg>(), Err(FrameError::Closed)));
    }

    #[test]
    fn writer_refuses_mismatched_bulk_before_writing() {
        let mut wire = Vec::new();
        let mut w = FrameWriter::new(&mut wire);
        let e = w.write_msg(&chunk(4), b"hello").unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::BulkLenMismatch {
                    stated: 4,
                    given: 5
                }
            ),
            "{e}"
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn writer_refuses_oversize_bulk_before_writing() {
        let mut wire = Vec::new();
        let limits = Limits {
            max_header: 1024,
            max_bulk: 3,
        };
        let mut w = FrameWriter::with_limits(&mut wire, limits);
        let e = w.write_msg(&chunk(5), b"hello").unwrap_err();
        assert!(
            matches!(e, FrameError::BulkTooLarge { len: 5, max: 3 }),
            "{e}"
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn writer_refuses_oversize_header() {
        let mut wire = Vec::new();
        let limits = Limits {
            max_header: 8,
            max_bulk: 0,
        };
        let mut w = FrameWriter::with_limits(&mut wire, limits);
        let e = w
            .write_msg(
                &Msg::Error {
                    msg: "x".repeat(100),
                },
                &[],
            )
            .unwrap_err();
        assert!(
            matches!(e, FrameError::HeaderTooLarge { max: 8, .. }),
            "{e}"
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn reader_rejects_oversize_length_prefix() {
        let wire = u32::MAX.to_le_bytes().to_vec();
        let mut r = FrameReader::new(Cursor::new(wire));
        let e = r.read_msg::<Msg>().unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::HeaderTooLarge {
                    len: 0xffff_ffff,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn reader_rejects_oversize_bulk_before_reading_it() {
        let wire = encode_frame(&chunk(100), &[0u8; 100], &Limits::default()).unwrap();
        let limits = Limits {
            max_header: 1024,
            max_bulk: 99,
        };
        let mut r = FrameReader::with_limits(Cursor::new(&wire[..]), limits);
        let e = r.read_msg::<Msg>().unwrap_err();
        assert!(
            matches!(e, FrameError::BulkTooLarge { len: 100, max: 99 }),
            "{e}"
        );
    }

    #[test]
    fn huge_stated_bulk_does_not_allocate_it_up_front() {
        // The header claims 1 GiB, the stream holds 10 bytes: truncated, and no 1 GiB vector.
        let mut wire = Vec::new();
        encode_header(
            &Msg::ImageChunk { len: 1 << 30 },
            &mut wire,
            &Limits::default(),
        )
        .unwrap();
        wire.extend_from_slice(&[1u8; 10]);
        let mut r = FrameReader::new(Cursor::new(wire));
        let e = r.read_msg::<Msg>().unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::Truncated {
                    part: FramePart::Bulk
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn large_bulk_grows_to_exact_size() {
        let n = (BULK_EAGER_ALLOC as usize) * 2 + 12345;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let wire = encode_frame(
            &Msg::ImageChunk { len: n as u32 },
            &data,
            &Limits::default(),
        )
        .unwrap();
        let mut r = FrameReader::new(Cursor::new(wire));
        let (_, bulk): (Msg, _) = r.read_msg().unwrap();
        assert_eq!(bulk.len(), n);
        assert!(bulk == data);
    }

    #[test]
    fn truncation_is_reported_by_part() {
        let wire = encode_frame(&chunk(5), b"hello", &Limits::default()).unwrap();
        let cases = [
            (2, FramePart::LengthPrefix),
            (LEN_PREFIX + 1, FramePart::Header),
            (wire.len() - 1, FramePart::Bulk),
        ];
        for (cut, part) in cases {
            let mut r = FrameReader::new(Cursor::new(&wire[..cut]));
            match r.read_msg::<Msg>() {
                Err(FrameError::Truncated { part: p }) => assert_eq!(p, part),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn read_into_small_buffer_is_an_error() {
        let wire = encode_frame(&chunk(5), b"hello", &Limits::default()).unwrap();
        let mut r = FrameReader::new(Cursor::new(wire));
        let mut buf = [0u8; 4];
        let e = r.read_msg_into::<Msg>(&mut buf).unwrap_err();
        assert!(
            matches!(e, FrameError::BulkExceedsBuffer { len: 5, buf: 4 }),
            "{e}"
        );
    }

    #[test]
    fn trailing_header_bytes_are_rejected() {
        let mut wire = Vec::new();
        encode_header(&Msg::AuthOk, &mut wire, &Limits::default()).unwrap();
        wire.push(0);
        let hlen = (wire.len() - LEN_PREFIX) as u32;
        wire[..LEN_PREFIX].copy_from_slice(&hlen.to_le_bytes());
        let e = decode_frame::<Msg>(&wire, &Limits::default()).unwrap_err();
        assert!(matches!(e, FrameError::TrailingBytes { extra: 1 }), "{e}");
    }

    #[test]
    fn decode_frame_reports_incomplete_input() {
        let wire = encode_frame(&chunk(5), b"hello", &Limits::default()).unwrap();
        for cut in 0..wire.len() {
            let e = decode_frame::<Msg>(&wire[..cut], &Limits::default()).unwrap_err();
            assert!(
                matches!(e, FrameError::Incomplete { needed } if needed > 0),
                "cut {cut}: {e}"
            );
        }
        let f = decode_frame::<Msg>(&wire, &Limits::default()).unwrap();
        assert_eq!(f.consumed, wire.len());
        assert_eq!(f.bulk, b"hello");
    }

    /// A writer that takes at most 3 bytes per call and ignores all but the first slice, as
    /// the default `write_vectored` does: the vectored loop must still write everything.
    struct Dribble(Vec<u8>);
    impl Write for Dribble {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(3);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_vectored_writes_complete_the_frame() {
        let mut w = FrameWriter::new(Dribble(Vec::new()));
        w.write_msg(&chunk(11), b"hello world").unwrap();
        let wire = w.into_inner().0;
        let f = decode_frame::<Msg>(&wire, &Limits::default()).unwrap();
        assert_eq!(f.header, chunk(11));
        assert_eq!(f.bulk, b"hello world");
    }

    /// A reader whose every read fails with WouldBlock, as a socket whose timeout expired.
    struct Stalled<'a>(&'a [u8]);
    impl Read for Stalled<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.0.len()).min(1);
            b[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn timeout_between_frames_is_idle_and_inside_a_frame_is_fatal() {
        let mut r = FrameReader::new(Stalled(&[]));
        assert!(matches!(r.read_msg::<Msg>(), Err(FrameError::Idle)));
        let wire = encode_frame(&chunk(5), b"hello", &Limits::default()).unwrap();
        for cut in 1..wire.len() {
            let mut r = FrameReader::new(Stalled(&wire[..cut]));
            let e = r.read_msg::<Msg>().unwrap_err();
            assert!(matches!(e, FrameError::Timeout), "cut {cut}: {e}");
            assert!(!e.is_recoverable());
        }
    }
}
