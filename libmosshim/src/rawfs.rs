//! File reading for the manager and the writer child without libc's stdio or opendir
//! (both allocate with the application's malloc). Raw syscalls, our allocator.

use std::io;

fn open(path: &str, flags: i32) -> io::Result<i32> {
    let c =
        std::ffi::CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe {
        ckpt::sc!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            0,
        )
    } as i32;
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

pub fn read_to_string(path: &str) -> io::Result<String> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 16384];
    loop {
        // SAFETY: reading into our stack buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            let e = io::Error::last_os_error();
            // SAFETY: closing our fd.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Numeric entries of a /proc directory (tids, fds), via getdents64.
pub fn list_dir_numbers(path: &str) -> io::Result<Vec<u64>> {
    let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: getdents64 into our buffer.
        let n = unsafe { ckpt::sc!(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: closing our fd.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(v) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
                out.push(v);
            }
            off += reclen;
        }
    }
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    Ok(out)
}
