//! Sockets whose writes never raise SIGPIPE.
//!
//! Writing to a socket whose peer has gone raises SIGPIPE, which kills a process that has not
//! ignored it. Rust binaries ignore it at startup, so the daemons are safe; the shim is not:
//! it runs inside someone else's program, with that program's signal dispositions. std's
//! `TcpStream::write` passes `MSG_NOSIGNAL`, but its `write_vectored` (used by
//! [`crate::FrameWriter`]) is a plain `writev`, and every write of a `UnixStream` is plain.
//! [`NoSigPipe`] sends with `MSG_NOSIGNAL` always, so a dead peer is an `EPIPE` error and
//! nothing else. Code that writes to sockets from inside an application must use it.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use rustix::net::{send, sendmsg, SendAncillaryBuffer, SendFlags};

use crate::auth::TimeoutStream;

/// A socket (`TcpStream`, `UnixStream`, or anything with a socket fd) whose writes use
/// `send`/`sendmsg` with `MSG_NOSIGNAL`. Reads pass through.
#[derive(Debug)]
pub struct NoSigPipe<S>(pub S);

impl<S> NoSigPipe<S> {
    /// Wrap a socket.
    pub fn new(socket: S) -> Self {
        NoSigPipe(socket)
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.0
    }

    /// Give the socket back.
    pub fn into_inner(self) -> S {
        self.0
    }
}

impl<S: AsFd> AsFd for NoSigPipe<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl<S: Read> Read for NoSigPipe<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.0.read_vectored(bufs)
    }
}

impl<S: AsFd> Write for NoSigPipe<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(send(self.0.as_fd(), buf, SendFlags::NOSIGNAL)?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut no_control = SendAncillaryBuffer::default();
        Ok(sendmsg(
            self.0.as_fd(),
            bufs,
            &mut no_control,
            SendFlags::NOSIGNAL,
        )?)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Sockets have no user-space buffer.
        Ok(())
    }
}

impl<S: TimeoutStream + AsFd> TimeoutStream for NoSigPipe<S> {
    fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.0.read_timeout()
    }
    fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.0.write_timeout()
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.0.set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.0.set_write_timeout(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameReader, FrameWriter, Msg};
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_pass_through_and_a_dead_peer_is_epipe() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut w = FrameWriter::new(NoSigPipe::new(a));
        w.write_msg(&Msg::ImageChunk { len: 4 }, b"data").unwrap();
        let mut r = FrameReader::new(NoSigPipe::new(b));
        let (m, bulk): (Msg, Vec<u8>) = r.read_msg().unwrap();
        assert_eq!((m, &bulk[..]), (Msg::ImageChunk { len: 4 }, &b"data"[..]));
        drop(r);
        match w.write_msg(&Msg::ImageChunk { len: 4 }, b"data") {
            Err(crate::FrameError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPIPE)),
            other => panic!("{other:?}"),
        }
    }
}
