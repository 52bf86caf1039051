//! Syscall User Dispatch: the trampolines (assembly), switching SUD on per thread,
//! installing the SIGSYS handler, and the handler's entry, [`sigsys_handler`], which
//! sends each trapped call to [`super::dispatch::dispatch`] or runs it natively through a
//! trampoline; and [`fast_call`], the same dispatch entered from a libc hook without a
//! trap.
//!
//! Runs in the SIGSYS handler (everything but [`learn_text`], which the manager thread
//! runs at start-up): no allocation, no locks, no panics, no std I/O; raw system calls
//! only.

use super::call::Channels;
use super::dispatch::{dispatch, Act};
use super::homefd::is_remote;
use super::{report_exit, selftest, sigsys_bit, release_chan, went_away, ENOSYS};
use crate::rt::syscall::r;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};


/// Call sites that can have a native trampoline.
const NTRAMP: usize = 1024;
/// Distinct sites of clone/clone3 calls.
const NCLONE: usize = 16;

// Trampolines: `syscall; jmp *ret[i]` (8 bytes each), clone trampolines that also switch
// SUD on in the new thread (32 bytes each), and a no-return one.
global_asm!(
    ".text",
    ".p2align 6",
    ".globl mos_sud_tramp",
    ".hidden mos_sud_tramp",
    "mos_sud_tramp:",
    ".set mos_sud_i, 0",
    ".rept 1024",
    "syscall",
    "jmp *mos_sud_ret+8*mos_sud_i(%rip)",
    ".set mos_sud_i, mos_sud_i+1",
    ".endr",
    ".globl mos_sud_tramp_end",
    ".hidden mos_sud_tramp_end",
    "mos_sud_tramp_end:",
    ".p2align 7",
    ".globl mos_sud_clone",
    ".hidden mos_sud_clone",
    "mos_sud_clone:",
    ".set mos_sud_k, 0",
    ".rept 16",
    ".p2align 7",
    "syscall",
    "test %rax, %rax",
    "jnz 1f",
    "mov %rsp, %r11",
    "and $-16, %rsp",
    "push %r11",
    "push %rdi",
    "push %rsi",
    "push %rdx",
    "push %r8",
    "push %r9",
    "push %r10",
    "sub $8, %rsp",
    "call {child}",
    "add $8, %rsp",
    "pop %r10",
    "pop %r9",
    "pop %r8",
    "pop %rdx",
    "pop %rsi",
    "pop %rdi",
    "pop %rsp",
    "xor %eax, %eax",
    "1:",
    "jmp *mos_sud_clone_ret+8*mos_sud_k(%rip)",
    ".set mos_sud_k, mos_sud_k+1",
    ".endr",
    ".p2align 4",
    ".globl mos_sud_noret",
    ".hidden mos_sud_noret",
    "mos_sud_noret:",
    "syscall",
    "ud2",
    ".section .bss.mos_sud,\"aw\",@nobits",
    ".p2align 3",
    ".globl mos_sud_ret",
    ".hidden mos_sud_ret",
    "mos_sud_ret:",
    ".zero 8*1024",
    ".globl mos_sud_clone_ret",
    ".hidden mos_sud_clone_ret",
    "mos_sud_clone_ret:",
    ".zero 8*16",
    ".text",
    child = sym mos_sud_child_entry,
    options(att_syntax)
);

extern "C" {
    fn mos_sud_tramp();
    fn mos_sud_clone();
    fn mos_sud_noret();
    static mos_sud_ret: [AtomicU64; NTRAMP];
    static mos_sud_clone_ret: [AtomicU64; NCLONE];
}

/// What every thread's SUD is switched on with: the selector, always "block" (the kernel
/// reads it at this address on every system call), and the shim's own text, the allowed
/// range (learnt at start-up).
struct SudRange {
    selector: AtomicU8,
    text_start: AtomicU64,
    text_len: AtomicU64,
}
static SUD_RANGE: SudRange = SudRange { selector: AtomicU8::new(1), text_start: AtomicU64::new(0), text_len: AtomicU64::new(0) };

// ---------------------------------------------------------------- enabling

const PR_SET_SYSCALL_USER_DISPATCH: i64 = 59;
const PR_SYS_DISPATCH_ON: u64 = 1;

/// Find the shim's executable mapping (the SUD allowed range). Manager thread, at start.
pub fn learn_text() -> bool {
    let me = sigsys_handler as *const () as u64;
    let Ok(maps) = crate::rawfs::read_to_string("/proc/self/maps") else { return false };
    for line in maps.lines() {
        let Some((range, _)) = line.split_once(' ') else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        if a <= me && me < b {
            SUD_RANGE.text_start.store(a, Ordering::Relaxed);
            SUD_RANGE.text_len.store(b - a, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Switch SUD on for the calling thread (raw calls only).
pub fn enable_thread() {
    if !went_away() {
        return;
    }
    let r = r!(libc::SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, SUD_RANGE.text_start.load(Ordering::Relaxed), SUD_RANGE.text_len.load(Ordering::Relaxed), SUD_RANGE.selector.as_ptr());
    SUD_ON.with(|f| f.set(r == 0));
}

/// First code of a thread created while remote (from a clone trampoline).
extern "C" fn mos_sud_child_entry() {
    enable_thread();
}

/// Install the SIGSYS handler (raw rt_sigaction, our restorer, SA_NODEFER).
pub fn install_handler() {
    let a = ckpt::sys::KSigAction {
        handler: sigsys_handler as *const () as u64,
        flags: (libc::SA_SIGINFO | libc::SA_NODEFER) as u64 | ckpt::sys::SA_RESTORER,
        restorer: crate::ctxasm::mos_sigreturn as *const () as u64,
        mask: !ckpt::sys::sigbit(libc::SIGSYS),
    };
    ckpt::sys::rt_sigaction(libc::SIGSYS, Some(&a), None);
}

/// No application handler may block SIGSYS (a trap while it is blocked kills the
/// process): strip it from every installed handler's mask.
pub fn strip_sigsys_from_handlers() {
    let bit = ckpt::sys::sigbit(libc::SIGSYS);
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGSYS {
            continue;
        }
        let mut old = ckpt::sys::KSigAction::default();
        if ckpt::sys::rt_sigaction(sig, None, Some(&mut old)) == 0 && old.mask & bit != 0 {
            old.mask &= !bit;
            ckpt::sys::rt_sigaction(sig, Some(&old), None);
        }
    }
}

thread_local! {
    /// The calling thread runs under Syscall User Dispatch (set by [`enable_thread`]).
    /// Only such threads forward from the libc hooks: the manager thread and the image
    /// writer's process read and write their own descriptors, whose numbers may be home
    /// fd numbers of the application.
    static SUD_ON: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// A file call the application made through one of the libc functions the shim exports
/// (`read`, `pread64`, `write`, ... see hooks_io.rs), on a home fd of a migrated body:
/// forwarded here directly, without the Syscall User Dispatch trap (a SIGSYS frame and
/// its sigreturn, about 2 us of a 9 us forwarded 4 KiB read). Everything else is as on
/// the trap path: all signals but SIGSYS are blocked while the call is forwarded, as in
/// the SIGSYS handler, and `dispatch` gets the application's mask for the waits that let
/// signals through. `None`: not such a call (the caller runs libc's own function, whose
/// system call then traps as usual).
/// Callers test [`super::away`] first: at home a hook costs one load and a branch.
#[inline(never)]
pub fn fast_call(nr: i64, a: [u64; 6]) -> Option<i64> {
    if !is_remote(a[0] as i32 as i64) || selftest() || !SUD_ON.with(|f| f.get()) {
        return None;
    }
    let block = !sigsys_bit();
    let mut app = 0u64;
    if r!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &block as *const u64, &mut app as *mut u64, 8) != 0 {
        return None;
    }
    // no register frame here: the fd calls below never use it
    let mut g = [0i64; 23];
    let mut m = app;
    let act = dispatch(&Channels, nr, a, &mut g, &mut m);
    r!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &m as *const u64, 0, 8);
    match act {
        Act::Ret(r) => Some(r),
        Act::Native => None,
    }
}

/// Claim (or find) the native trampoline for the call site returning to `ret`.
fn tramp_for(ret: u64) -> Option<u64> {
    // SAFETY: a static table defined in the asm above.
    let t = unsafe { &mos_sud_ret };
    let mut i = ((ret ^ (ret >> 12)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % NTRAMP;
    for _ in 0..NTRAMP {
        let v = t[i].load(Ordering::Acquire);
        if v == ret {
            return Some(mos_sud_tramp as *const () as u64 + 8 * i as u64);
        }
        if v == 0 && t[i].compare_exchange(0, ret, Ordering::AcqRel, Ordering::Acquire).map_or_else(|x| x == ret, |_| true) {
            return Some(mos_sud_tramp as *const () as u64 + 8 * i as u64);
        }
        i = (i + 1) % NTRAMP;
    }
    None
}

fn clone_tramp_for(ret: u64) -> Option<u64> {
    // SAFETY: a static table defined in the asm above.
    let t = unsafe { &mos_sud_clone_ret };
    for (i, s) in t.iter().enumerate() {
        let v = s.load(Ordering::Acquire);
        if v == ret || (v == 0 && s.compare_exchange(0, ret, Ordering::AcqRel, Ordering::Acquire).map_or_else(|x| x == ret, |_| true)) {
            return Some(mos_sud_clone as *const () as u64 + 128 * i as u64);
        }
    }
    None
}

/// The SIGSYS handler (Syscall User Dispatch).
pub(super) extern "C" fn sigsys_handler(_sig: i32, info: *mut libc::siginfo_t, ucv: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo (SIGSYS layout) and ucontext.
    let (nr, uc) = unsafe { (*((info as *const u8).add(24) as *const i32) as i64, &mut *(ucv as *mut libc::ucontext_t)) };
    if uc.uc_mcontext.gregs.len() < 23 {
        return;
    }
    // SAFETY: gregs has 23 entries (checked); viewing it as an array of that size.
    let g = unsafe { &mut *(uc.uc_mcontext.gregs.as_mut_ptr() as *mut [i64; 23]) };
    use libc::{REG_R10, REG_R8, REG_R9, REG_RAX, REG_RDI, REG_RDX, REG_RIP, REG_RSI};
    let a = [g[REG_RDI as usize], g[REG_RSI as usize], g[REG_RDX as usize], g[REG_R10 as usize], g[REG_R8 as usize], g[REG_R9 as usize]].map(|x| x as u64);
    // SAFETY: the first word of the saved sigset holds signals 1..64.
    let maskp = unsafe { &mut *(&mut uc.uc_sigmask as *mut libc::sigset_t as *mut u64) };
    let ret_addr = g[REG_RIP as usize] as u64;
    let native = |g: &mut [i64; 23]| {
        g[REG_RAX as usize] = nr;
        match tramp_for(ret_addr) {
            Some(t) => g[REG_RIP as usize] = t as i64,
            None => {
                // table full: run it here (signal mask and restart semantics are ours)
                // SAFETY: the application's own call with its own arguments, as it made it
                // (a call run natively needs nothing of ours; the kernel checks them).
                g[REG_RAX as usize] = unsafe { crate::rt::syscall::raw(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
            }
        }
    };
    match nr {
        libc::SYS_rt_sigreturn => {
            g[REG_RAX as usize] = nr;
            g[REG_RIP as usize] = mos_sud_noret as *const () as i64;
        }
        libc::SYS_exit_group => {
            if !selftest() {
                report_exit(((a[0] as i32) & 0xff) << 8);
            }
            g[REG_RAX as usize] = nr;
            g[REG_RIP as usize] = mos_sud_noret as *const () as i64;
        }
        libc::SYS_exit => {
            release_chan();
            g[REG_RAX as usize] = nr;
            g[REG_RIP as usize] = mos_sud_noret as *const () as i64;
        }
        libc::SYS_clone | libc::SYS_clone3 => {
            let flags = if nr == libc::SYS_clone {
                a[0]
            } else {
                // clone3's contract: a[0] points at a struct clone_args, which starts
                // with the flags word
                crate::rt::user::read::<u64>(a[0])
            };
            if selftest() && flags & libc::CLONE_VM as u64 == 0 {
                // a child process in self-test mode simply runs without SUD
                native(g);
                return;
            }
            if flags & libc::CLONE_VM as u64 == 0 || flags & libc::CLONE_VFORK as u64 != 0 {
                // a new process here would see this node's files: refused
                g[REG_RAX as usize] = ENOSYS;
                return;
            }
            match clone_tramp_for(ret_addr) {
                Some(t) => {
                    g[REG_RAX as usize] = nr;
                    g[REG_RIP as usize] = t as i64;
                }
                None => g[REG_RAX as usize] = -(libc::EAGAIN as i64),
            }
        }
        libc::SYS_rt_sigprocmask | libc::SYS_rt_sigaction | libc::SYS_rt_sigsuspend | libc::SYS_ppoll
            if selftest() =>
        {
            match dispatch(&Channels, nr, a, g, maskp) {
                Act::Ret(r) => g[REG_RAX as usize] = r,
                Act::Native => native(g),
            }
        }
        _ if selftest() => native(g),
        _ => match dispatch(&Channels, nr, a, g, maskp) {
            Act::Ret(r) => g[REG_RAX as usize] = r,
            Act::Native => native(g),
        },
    }
}
