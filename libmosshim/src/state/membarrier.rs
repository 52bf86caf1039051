//! membarrier(2) registrations. A process registers for the expedited commands once
//! (glibc has no wrapper: `syscall(SYS_membarrier, ...)`, which the shim sees); a
//! restarted process is a new kernel process, where those commands would fail with
//! EPERM. The registrations made are noted in the shim's memory (restored with the
//! image) and made again at restart.

use core::sync::atomic::{AtomicU32, Ordering};

use ckpt::image::ImageMeta;

use super::StateKind;

/// The register commands that succeeded (their bits: each is a single bit).
static REGISTERED: AtomicU32 = AtomicU32::new(0);

/// MEMBARRIER_CMD_REGISTER_*: GLOBAL_EXPEDITED, PRIVATE_EXPEDITED,
/// PRIVATE_EXPEDITED_SYNC_CORE, PRIVATE_EXPEDITED_RSEQ (commands are single bits).
const REGISTER: u32 = 4 | 16 | 64 | 256;

/// `syscall(SYS_membarrier, cmd, flags, cpu)`, noting a successful registration.
pub fn call(cmd: i64, flags: i64, cpu: i64) -> i64 {
    // SAFETY: membarrier takes integers only.
    let r = unsafe { ckpt::sc!(libc::SYS_membarrier, cmd, flags, cpu) };
    if r == 0 && u32::try_from(cmd).is_ok_and(|c| c & REGISTER == c && c.is_power_of_two()) {
        REGISTERED.fetch_or(cmd as u32, Ordering::Relaxed);
    }
    r
}

pub struct Membarrier;

impl StateKind for Membarrier {
    fn restarted(&self, _meta: &ImageMeta) -> Result<(), String> {
        let regs = REGISTERED.load(Ordering::Relaxed);
        for bit in (0..32).map(|b| 1u32 << b).filter(|b| regs & b != 0) {
            // SAFETY: membarrier takes integers only.
            if unsafe { ckpt::sc!(libc::SYS_membarrier, bit, 0, 0) } != 0 {
                return Err(format!("membarrier registration {bit:#x} again: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    fn atfork_child(&self) {
        // registrations belong to the mm; a forked child has none
        REGISTERED.store(0, Ordering::Relaxed);
    }
}
