//! libc symbol hooks. One shape for all: decide "handle here" or "bypass", and a bypass
//! calls the original symbol with the original arguments. Hooks never allocate.
//!
//! - pid virtualisation: `getpid()` returns the pid the process had when it was first
//!   started; `kill`/`sigqueue` to that pid reach the current real pid.
//! - the trigger and freeze signals stay ours: the application's `sigaction`/`signal`
//!   on them are recorded as its view (and the trigger's is chained, see signals.rs);
//!   masks never block the freeze signal.

use crate::signals::{app_action, app_action_slot, set_app_action};
use crate::rt::user;
use ckpt::sys::KSigAction;


fn to_real_pid(pid: libc::pid_t) -> libc::pid_t {
    let v = crate::identity::vpid();
    if v != 0 && pid == v {
        crate::identity::real_pid()
    } else {
        pid
    }
}

type Sigaction = unsafe extern "C" fn(i32, *const libc::sigaction, *mut libc::sigaction) -> i32;
type Sigmask = unsafe extern "C" fn(i32, *const libc::sigset_t, *mut libc::sigset_t) -> i32;
type Sigsuspend = unsafe extern "C" fn(*const libc::sigset_t) -> i32;
type Sigqueue = unsafe extern "C" fn(libc::pid_t, i32, libc::sigval) -> i32;
type PthreadKill = unsafe extern "C" fn(libc::pthread_t, i32) -> i32;
type InotifyAdd = unsafe extern "C" fn(i32, *const libc::c_char, u32) -> i32;
type Madvise = unsafe extern "C" fn(*mut libc::c_void, usize, i32) -> i32;

/// madvise: DONTFORK and WIPEONFORK advice is noted, so that a checkpoint looks for such
/// mappings (`state::memory::fork_advised`); every call goes on to glibc's.
#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut libc::c_void, len: usize, advice: i32) -> i32 {
    if advice == libc::MADV_DONTFORK || advice == libc::MADV_WIPEONFORK {
        crate::state::memory::note_fork_advice();
    }
    crate::state::memory::anonymize_lazy_image_pages(addr as u64, len as u64, advice);
    let f = real!(madvise, Madvise);
    // SAFETY: glibc's own function with the caller's arguments.
    unsafe { f(addr, len, advice) }
}
type InotifyRm = unsafe extern "C" fn(i32, i32) -> i32;

/// inotify_add_watch: the path of each watch is noted for a checkpoint (`state::inotify`).
#[no_mangle]
pub unsafe extern "C" fn inotify_add_watch(fd: i32, path: *const libc::c_char, mask: u32) -> i32 {
    let f = real!(inotify_add_watch, InotifyAdd);
    // SAFETY: glibc's own function with the caller's arguments.
    let wd = unsafe { f(fd, path, mask) };
    if wd >= 0 && !path.is_null() {
        // the path the kernel just read for the call (through rt::user, as every read of
        // the application's memory)
        if let Some(n) = crate::rt::user::cstr_len(path as u64, 4096) {
            crate::state::inotify::added(fd, wd, crate::rt::user::bytes(path as u64, n));
        }
    }
    wd
}

/// inotify_rm_watch: the watch's noted path is forgotten.
#[no_mangle]
pub unsafe extern "C" fn inotify_rm_watch(fd: i32, wd: i32) -> i32 {
    let f = real!(inotify_rm_watch, InotifyRm);
    // SAFETY: glibc's own function with the caller's arguments.
    let r = unsafe { f(fd, wd) };
    if r == 0 {
        crate::state::inotify::removed(fd, wd);
    }
    r
}
type Syscall7 = unsafe extern "C" fn(i64, i64, i64, i64, i64, i64, i64) -> i64;
type Signal = unsafe extern "C" fn(i32, libc::sighandler_t) -> libc::sighandler_t;

#[no_mangle]
pub extern "C" fn getpid() -> libc::pid_t {
    match crate::identity::vpid() {
        0 => ckpt::sys::getpid_real(),
        v => v,
    }
}

#[no_mangle]
pub extern "C" fn gettid() -> libc::pid_t {
    crate::tids::self_vtid()
}

#[no_mangle]
pub extern "C" fn tgkill(pid: libc::pid_t, tid: libc::pid_t, sig: i32) -> i32 {
    // SAFETY: raw tgkill with translated ids; sets errno like the libc wrapper.
    unsafe {
        ckpt::sc!(
            libc::SYS_tgkill,
            to_real_pid(pid),
            crate::tids::to_real(tid),
            sig
        ) as i32
    }
}

#[no_mangle]
pub extern "C" fn raise(sig: i32) -> i32 {
    // SAFETY: signal the calling thread by its real ids.
    unsafe {
        ckpt::sc!(
            libc::SYS_tgkill,
            crate::identity::real_pid(),
            ckpt::sys::gettid(),
            sig
        ) as i32
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_kill(th: libc::pthread_t, sig: i32) -> i32 {
    match crate::tids::real_of_pthread(th) {
        Some(rtid) => {
            // SAFETY: raw tgkill to the thread's real tid; pthread_kill returns the error.
            let r = unsafe {
                ckpt::sc!(
                    libc::SYS_tgkill,
                    crate::identity::real_pid(),
                    rtid,
                    sig
                )
            };
            if r < 0 {
                ckpt::sys::errno()
            } else {
                0
            }
        }
        None => {
            let f = real!(pthread_kill, PthreadKill);
            // SAFETY: bypass with the original arguments.
            // SAFETY: bypass to the original symbol with the caller's arguments.
            unsafe { f(th, sig) }
        }
    }
}

/// `syscall(2)` itself: ids in the few calls that carry them are translated; the rest go
/// to libc's `syscall` untouched. Declared with seven integer arguments, which is how the
/// x86_64 ABI passes `syscall(nr, ...)` (glibc's own reads six after nr).
#[no_mangle]
pub unsafe extern "C" fn syscall(
    nr: i64,
    a1: i64,
    a2: i64,
    a3: i64,
    a4: i64,
    a5: i64,
    a6: i64,
) -> i64 {
    let v = crate::identity::vpid();
    match nr {
        libc::SYS_gettid => return crate::tids::self_vtid() as i64,
        libc::SYS_getpid if v != 0 => return v as i64,
        libc::SYS_tgkill => {
            // SAFETY: same call with translated ids.
            return unsafe {
                ckpt::sc!(
                    nr,
                    to_real_pid(a1 as i32),
                    crate::tids::to_real(a2 as i32),
                    a3
                )
            };
        }
        libc::SYS_tkill => {
            // SAFETY: same call with a translated tid.
            return unsafe { ckpt::sc!(nr, crate::tids::to_real(a1 as i32), a2) };
        }
        libc::SYS_membarrier => return crate::state::membarrier::call(a1, a2, a3),
        // SAFETY: the caller's arguments, as getdents64(3) takes them.
        libc::SYS_getdents64 => return unsafe { crate::hooks_proc::getdents64(a1 as i32, a2 as *mut libc::c_void, a3 as usize) } as i64,
        libc::SYS_kill | libc::SYS_rt_sigqueueinfo => {
            // SAFETY: same call with a translated pid.
            return unsafe { ckpt::sc!(nr, to_real_pid(a1 as i32), a2, a3) };
        }
        // a pid or tid first (pid 0: the caller, unchanged)
        libc::SYS_get_robust_list
        | libc::SYS_sched_setaffinity
        | libc::SYS_sched_getaffinity
        | libc::SYS_sched_setparam
        | libc::SYS_sched_getparam
        | libc::SYS_sched_setscheduler
        | libc::SYS_sched_getscheduler
        | libc::SYS_sched_rr_get_interval
        | libc::SYS_sched_setattr
        | libc::SYS_sched_getattr
        | libc::SYS_process_vm_readv
        | libc::SYS_process_vm_writev
        | libc::SYS_pidfd_open
        | libc::SYS_prlimit64 => {
            // SAFETY: same call with a translated id.
            return unsafe { ckpt::sc!(nr, crate::tids::to_real(a1 as i32), a2, a3, a4, a5, a6) };
        }
        // two of them
        libc::SYS_kcmp | libc::SYS_rt_tgsigqueueinfo => {
            // SAFETY: same call with translated ids.
            return unsafe { ckpt::sc!(nr, crate::tids::to_real(a1 as i32), crate::tids::to_real(a2 as i32), a3, a4, a5, a6) };
        }
        // (which, who): a process or thread by id
        libc::SYS_getpriority | libc::SYS_setpriority | libc::SYS_ioprio_get | libc::SYS_ioprio_set if a1 == 0 || a1 == 1 => {
            // SAFETY: same call with a translated id (PRIO_PROCESS / IOPRIO_WHO_PROCESS).
            return unsafe { ckpt::sc!(nr, a1, crate::tids::to_real(a2 as i32), a3) };
        }
        _ => {}
    }
    let f = real!(syscall, Syscall7);
    // SAFETY: bypass with the original arguments.
    // SAFETY: bypass to the original symbol with the caller's arguments.
    unsafe { f(nr, a1, a2, a3, a4, a5, a6) }
}

#[no_mangle]
pub extern "C" fn kill(pid: libc::pid_t, sig: i32) -> i32 {
    // SAFETY: raw kill syscall; libc::syscall sets errno like kill(2).
    unsafe { ckpt::sc!(libc::SYS_kill, to_real_pid(pid), sig) as i32 }
}

#[no_mangle]
pub unsafe extern "C" fn sigqueue(pid: libc::pid_t, sig: i32, val: libc::sigval) -> i32 {
    // SAFETY: original sigqueue with the same arguments but the real pid.
    {
        let f = real!(sigqueue, Sigqueue);
        // SAFETY: bypass to the original symbol with the caller's arguments.
        unsafe { f(to_real_pid(pid), sig, val) }
    }
}

fn set_word(set: &libc::sigset_t) -> u64 {
    // SAFETY: glibc's sigset_t starts with the 64-bit word of signals 1..64.
    unsafe { *(set as *const libc::sigset_t as *const u64) }
}

fn to_kernel(a: &libc::sigaction) -> KSigAction {
    KSigAction {
        handler: a.sa_sigaction as u64,
        flags: a.sa_flags as u32 as u64,
        restorer: a.sa_restorer.map_or(0, |f| f as usize as u64),
        mask: set_word(&a.sa_mask),
    }
}

fn from_kernel(k: &KSigAction) -> libc::sigaction {
    // SAFETY: an all-zero struct sigaction is a valid value (a plain C struct: no handler,
    // no flags, an empty mask); its fields are filled below.
    let mut out: libc::sigaction = unsafe { core::mem::zeroed() };
    out.sa_sigaction = k.handler as usize;
    out.sa_flags = k.flags as i32 & !(ckpt::sys::SA_RESTORER as i32);
    // SAFETY: sa_mask is a glibc sigset_t (128 bytes) whose first 64-bit word holds
    // signals 1..64; this writes that word of our own local struct.
    unsafe { *(&mut out.sa_mask as *mut libc::sigset_t as *mut u64) = k.mask };
    out
}

#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: i32,
    act: *const libc::sigaction,
    oact: *mut libc::sigaction,
) -> i32 {
    if let Some(i) = app_action_slot(sig) {
        let old = app_action(i);
        // sigaction(2)'s contract: act and oact are null or point at a struct sigaction
        // (oact writable)
        if !act.is_null() {
            set_app_action(i, to_kernel(&user::read::<libc::sigaction>(act as u64)));
        }
        if !oact.is_null() {
            user::write::<libc::sigaction>(oact as u64, from_kernel(&old));
        }
        return 0;
    }
    // SAFETY: bypass with the original arguments.
    {
        let f = real!(sigaction, Sigaction);
        // SAFETY: bypass to the original symbol with the caller's arguments.
        unsafe { f(sig, act, oact) }
    }
}

fn signal_common(sig: i32, handler: libc::sighandler_t, flags: u64) -> Option<libc::sighandler_t> {
    let i = app_action_slot(sig)?;
    let old = app_action(i);
    set_app_action(
        i,
        KSigAction {
            handler: handler as u64,
            flags,
            restorer: 0,
            mask: 0,
        },
    );
    Some(old.handler as libc::sighandler_t)
}

#[no_mangle]
pub unsafe extern "C" fn signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t {
    match signal_common(sig, handler, libc::SA_RESTART as u64) {
        Some(old) => old,
        // SAFETY: bypass with the original arguments.
        None => {
            let f = real!(signal, Signal);
            // SAFETY: bypass to the original symbol with the caller's arguments.
            unsafe { f(sig, handler) }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t {
    match signal_common(sig, handler, libc::SA_RESTART as u64) {
        Some(old) => old,
        // SAFETY: bypass with the original arguments.
        None => {
            let f = real!(bsd_signal, Signal);
            // SAFETY: bypass to the original symbol with the caller's arguments.
            unsafe { f(sig, handler) }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sysv_signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t {
    match signal_common(sig, handler, (libc::SA_RESETHAND | libc::SA_NODEFER) as u64) {
        Some(old) => old,
        // SAFETY: bypass with the original arguments.
        None => {
            let f = real!(sysv_signal, Signal);
            // SAFETY: bypass to the original symbol with the caller's arguments.
            unsafe { f(sig, handler) }
        }
    }
}

/// Copy of `set` without the freeze signal, if it contains it.
fn without_freeze(set: *const libc::sigset_t, tmp: &mut libc::sigset_t) -> *const libc::sigset_t {
    if set.is_null() {
        return set;
    }
    // the call's contract: a non-null set points at a sigset_t
    let s = user::read::<libc::sigset_t>(set as u64);
    let bit = ckpt::sys::sigbit(crate::signals::freeze_sig());
    if set_word(&s) & bit == 0 {
        return set;
    }
    *tmp = s;
    // SAFETY: first word of the sigset.
    unsafe { *(tmp as *mut libc::sigset_t as *mut u64) &= !bit };
    tmp
}

#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: i32,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> i32 {
    // SAFETY: sigset_t is plain data.
    let mut tmp: libc::sigset_t = unsafe { core::mem::zeroed() };
    let s = if how == libc::SIG_UNBLOCK {
        set
    } else {
        without_freeze(set, &mut tmp)
    };
    // SAFETY: original with the same arguments, minus the freeze signal.
    {
        let f = real!(sigprocmask, Sigmask);
        // SAFETY: bypass to the original symbol with the caller's arguments.
        unsafe { f(how, s, old) }
    }
}

#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: i32,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> i32 {
    // SAFETY: sigset_t is plain data.
    let mut tmp: libc::sigset_t = unsafe { core::mem::zeroed() };
    let s = if how == libc::SIG_UNBLOCK {
        set
    } else {
        without_freeze(set, &mut tmp)
    };
    // SAFETY: original with the same arguments, minus the freeze signal.
    {
        let f = real!(pthread_sigmask, Sigmask);
        // SAFETY: bypass to the original symbol with the caller's arguments.
        unsafe { f(how, s, old) }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigsuspend(set: *const libc::sigset_t) -> i32 {
    // SAFETY: sigset_t is plain data.
    let mut tmp: libc::sigset_t = unsafe { core::mem::zeroed() };
    let s = without_freeze(set, &mut tmp);
    // SAFETY: original with the freeze signal removed from the mask.
    {
        let f = real!(sigsuspend, Sigsuspend);
        // SAFETY: bypass to the original symbol with the caller's arguments.
        unsafe { f(s) }
    }
}


// libc's wrappers of the calls above that name a process or thread (syscall(2) is
// handled in `syscall`): the id the application knows becomes the kernel's.
macro_rules! id_hook {
    ($name:ident, $ty:ident, ($id:ident: $idt:ty $(, $a:ident: $t:ty)*), $ret:ty) => {
        type $ty = unsafe extern "C" fn($idt $(, $t)*) -> $ret;
        #[no_mangle]
        pub unsafe extern "C" fn $name($id: $idt $(, $a: $t)*) -> $ret {
            let f = real!($name, $ty);
            // SAFETY: the caller's arguments, the id translated, passed on.
            unsafe { f(crate::tids::to_real($id) $(, $a)*) }
        }
    };
}

id_hook!(sched_setaffinity, SchedSetaffinity, (pid: libc::pid_t, size: usize, mask: *const libc::cpu_set_t), i32);
id_hook!(sched_getaffinity, SchedGetaffinity, (pid: libc::pid_t, size: usize, mask: *mut libc::cpu_set_t), i32);
id_hook!(sched_setparam, SchedSetparam, (pid: libc::pid_t, p: *const libc::sched_param), i32);
id_hook!(sched_getparam, SchedGetparam, (pid: libc::pid_t, p: *mut libc::sched_param), i32);
id_hook!(sched_setscheduler, SchedSetscheduler, (pid: libc::pid_t, policy: i32, p: *const libc::sched_param), i32);
id_hook!(sched_getscheduler, SchedGetscheduler, (pid: libc::pid_t), i32);
id_hook!(sched_rr_get_interval, SchedRrGetInterval, (pid: libc::pid_t, t: *mut libc::timespec), i32);
id_hook!(pidfd_open, PidfdOpen, (pid: libc::pid_t, flags: u32), i32);
id_hook!(prlimit, Prlimit, (pid: libc::pid_t, r: i32, new: *const libc::rlimit, old: *mut libc::rlimit), i32);
id_hook!(prlimit64, Prlimit64, (pid: libc::pid_t, r: i32, new: *const libc::rlimit64, old: *mut libc::rlimit64), i32);
id_hook!(
    process_vm_readv,
    ProcessVmReadv,
    (pid: libc::pid_t, l: *const libc::iovec, ln: libc::c_ulong, r: *const libc::iovec, rn: libc::c_ulong, flags: libc::c_ulong),
    isize
);
id_hook!(
    process_vm_writev,
    ProcessVmWritev,
    (pid: libc::pid_t, l: *const libc::iovec, ln: libc::c_ulong, r: *const libc::iovec, rn: libc::c_ulong, flags: libc::c_ulong),
    isize
);

type Prio = unsafe extern "C" fn(u32, libc::id_t) -> i32;
type SetPrio = unsafe extern "C" fn(u32, libc::id_t, i32) -> i32;

#[no_mangle]
pub unsafe extern "C" fn getpriority(which: u32, who: libc::id_t) -> i32 {
    let f = real!(getpriority, Prio);
    let who = if which == libc::PRIO_PROCESS { crate::tids::to_real(who as i32) as libc::id_t } else { who };
    // SAFETY: the caller's arguments, the id translated, passed on.
    unsafe { f(which, who) }
}

#[no_mangle]
pub unsafe extern "C" fn setpriority(which: u32, who: libc::id_t, prio: i32) -> i32 {
    let f = real!(setpriority, SetPrio);
    let who = if which == libc::PRIO_PROCESS { crate::tids::to_real(who as i32) as libc::id_t } else { who };
    // SAFETY: the caller's arguments, the id translated, passed on.
    unsafe { f(which, who, prio) }
}

type PthreadCancel = unsafe extern "C" fn(libc::pthread_t) -> i32;

/// glibc's pthread_cancel signals the tid in the thread's descriptor, which after a
/// restart with new tids is the virtual one: it runs with the real one there.
#[no_mangle]
pub unsafe extern "C" fn pthread_cancel(th: libc::pthread_t) -> i32 {
    let f = real!(pthread_cancel, PthreadCancel);
    // SAFETY: glibc's own function with the caller's thread handle.
    crate::tids::with_real_tid_in(th, || unsafe { f(th) })
}
