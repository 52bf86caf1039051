//! A stop-and-copy image sent over several TCP connections at once ("lanes"): the image's
//! bytes are cut into stripes of [`STRIPE`] bytes, stripe `s` goes on lane `s % lanes`,
//! each lane carries its stripes in order as bare bytes (no framing), and the receiver
//! puts them where they belong. The image's length is told at the end (on the main
//! connection); a lane that ended short or long is found then ([`lane_len`]).
//!
//! Why: one loopback connection moves data fed from memory the CPU has not touched
//! lately (a frozen process's) at a third of what it moves from a hot 1 MiB buffer; two
//! connections share the kernel's per-connection work out over both CPUs. Measured on
//! this 2-vCPU machine, a 2 GiB migration's frozen stream: 0.77-0.88 s over one
//! connection, 0.70-0.78 s over two or three. (A C test of the same pattern within one
//! process: 0.75 s -> 0.48 s; across processes, as a migration is, the sender pays
//! ~450 ns more per page on its first touch of each page of a fork's copied page
//! tables.)
//!
//! A stop-and-copy migration's pages are now sent by the frozen process itself (the shim's
//! dump/xfer.rs), from its warm page tables. The frozen time moved only a little
//! (0.67-0.78 s), as the receiver's copy into memory it has not touched lately (4 KiB
//! pages) is the floor: a bare C program doing nothing but that transfer (two lanes, two
//! sender processes, receiver threads into a populated /dev/shm mapping) takes 0.71-0.76 s
//! on this machine, 0.54-0.64 s into a huge-page tmpfs. Splicing the pages by reference
//! (no copy on the source) measured no faster and was dropped: the socket would hold
//! pages the manager may write before the target has read them.

/// Bytes of image per stripe.
pub const STRIPE: u64 = 4 << 20;

/// Most lanes a migration opens.
pub const MAX_LANES: usize = 8;

/// Which lane stripe `s` travels on.
pub fn lane_of(stripe: u64, lanes: usize) -> usize {
    (stripe % lanes as u64) as usize
}

/// How many bytes of an image `total` bytes long travel on lane `k` of `lanes`.
pub fn lane_len(total: u64, k: usize, lanes: usize) -> u64 {
    let lanes = lanes as u64;
    let k = k as u64;
    let full = total / STRIPE;
    let tail = total % STRIPE;
    // full stripes k, k + lanes, ... below `full`
    let mine = if full > k { (full - k).div_ceil(lanes) } else { 0 };
    let last = if tail > 0 && full % lanes == k { tail } else { 0 };
    mine * STRIPE + last
}

/// Where lane `k`'s byte `n` goes in the image (and how many bytes from there on belong to
/// the same stripe).
pub fn lane_at(n: u64, k: usize, lanes: usize) -> (u64, u64) {
    let j = n / STRIPE;
    let within = n % STRIPE;
    let stripe = j * lanes as u64 + k as u64;
    (stripe * STRIPE + within, STRIPE - within)
}

/// A piece of the image: `len` bytes at `ptr`, which go at image offset `at`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Piece {
    pub at: u64,
    pub ptr: *const u8,
    pub len: usize,
}

/// Send the image made of `pieces` (in order, back to back from offset 0) on `lanes`
/// (connected TCP sockets), one thread round robin: each lane sends what it can without
/// blocking, and the thread waits only when none can. Each lane is shut for writing when
/// its stripes are all sent (the receiver sees its end; other copies of the socket may
/// stay open). Returns the image's length, or the errno that stopped it.
///
/// # Safety
/// Every piece's `ptr` must be readable for `len` bytes for the whole call.
// SAFETY: (contract) callers pass pieces readable for the call; see # Safety above.
pub unsafe fn send_striped(lanes: &[i32], pieces: &[Piece]) -> Result<u64, i32> {
    let total: u64 = pieces.iter().map(|p| p.len as u64).sum();
    let n = lanes.len();
    if n == 0 || n > MAX_LANES {
        return Err(libc::EINVAL);
    }
    // each lane's next byte of its own stream, and the piece that holds it (pieces are in
    // image order and so are each lane's bytes: the index only moves forward)
    let mut sent = [0u64; MAX_LANES];
    let mut piece = [0usize; MAX_LANES];
    let want: [u64; MAX_LANES] = core::array::from_fn(|k| if k < n { lane_len(total, k, n) } else { 0 });
    let mut open = [false; MAX_LANES];
    for k in 0..n {
        open[k] = true;
        if want[k] == 0 {
            shut(lanes[k]);
            open[k] = false;
        }
    }
    loop {
        let mut moved = false;
        let mut left = 0;
        for k in 0..n {
            if !open[k] {
                continue;
            }
            let (at, room) = lane_at(sent[k], k, n);
            while piece[k] < pieces.len() && pieces[piece[k]].at + pieces[piece[k]].len as u64 <= at {
                piece[k] += 1;
            }
            let p = pieces[piece[k]];
            let off = (at - p.at) as usize;
            let len = ((p.len - off) as u64).min(room).min(want[k] - sent[k]) as usize;
            // SAFETY: inside the piece, readable by the caller's promise; a plain send.
            let r = unsafe { crate::sys::sc_ret(libc::SYS_sendto, &[lanes[k] as usize, p.ptr.add(off) as usize, len, (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as usize, 0, 0]) };
            if r > 0 {
                moved = true;
                sent[k] += r as u64;
                if sent[k] == want[k] {
                    shut(lanes[k]);
                    open[k] = false;
                    continue;
                }
            } else if r != -(libc::EAGAIN as isize) && r != -(libc::EINTR as isize) {
                return Err(if r < 0 { -r as i32 } else { libc::EPIPE });
            }
            left += 1;
        }
        if left == 0 {
            return Ok(total);
        }
        if !moved {
            let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX_LANES];
            for k in 0..n {
                if open[k] {
                    fds[k] = libc::pollfd { fd: lanes[k], events: libc::POLLOUT, revents: 0 };
                }
            }
            // SAFETY: polling our array of n pollfds (fd -1 entries are ignored).
            let r = unsafe { crate::sys::sc_ret(libc::SYS_poll, &[fds.as_mut_ptr() as usize, n, 60_000]) };
            if r == 0 {
                return Err(libc::ETIMEDOUT);
            }
            if r < 0 && r != -(libc::EINTR as isize) {
                return Err(-r as i32);
            }
            if fds[..n].iter().any(|f| f.revents & (libc::POLLERR | libc::POLLHUP) != 0) {
                return Err(libc::EPIPE);
            }
        }
    }
}

fn shut(fd: i32) {
    // SAFETY: shutdown of a socket we were given; no pointers.
    unsafe { crate::sys::sc_ret(libc::SYS_shutdown, &[fd as usize, libc::SHUT_WR as usize]) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_cover_the_image_once() {
        for total in [0, 1, STRIPE - 1, STRIPE, STRIPE + 1, 7 * STRIPE + 12345, 9 * STRIPE] {
            for lanes in 1..=4 {
                let sum: u64 = (0..lanes).map(|k| lane_len(total, k, lanes)).sum();
                assert_eq!(sum, total, "total {total}, {lanes} lanes");
                // every byte of each lane maps to a distinct image byte below total
                let mut seen = vec![false; (total / 4096 + 1) as usize];
                for k in 0..lanes {
                    let mut n = 0;
                    while n < lane_len(total, k, lanes) {
                        let (at, room) = lane_at(n, k, lanes);
                        assert_eq!(lane_of(at / STRIPE, lanes), k);
                        assert!(at < total);
                        let i = (at / 4096) as usize;
                        assert!(!seen[i]);
                        seen[i] = true;
                        n += room.min(4096);
                    }
                }
            }
        }
    }
}
