//! Context save/resume and the raw fork used for checkpoints. No-libc zone: asm only.
//!
//! `mos_ctx_park(ctx, f)` saves the callee-saved registers, the caller's stack pointer and
//! return address into `ctx`, calls `f(ctx)` and returns 0. In a restored process the
//! restorer jumps to `mos_ctx_resume_entry` with rdi = ctx: it runs the function in
//! [`RESUMED_HOOK`] (the shim sets it to `state::threads::mos_thread_resumed` at start-up:
//! this layer calls up only through that pointer) on the saved stack, restores the
//! registers and "returns" from `mos_ctx_park` (or `mos_ctx_fork`) with `RESUMED`.
//!
//! `mos_ctx_fork(ctx, child, stack_top)` saves the same context and forks with a raw
//! `clone(0)` (no SIGCHLD, no atfork handlers, no malloc locks): the parent gets the child
//! pid, the child switches to `stack_top` and calls `child()`, which must not return.

use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

/// What a restored thread runs first, on its saved stack, before it "returns" from its
/// park: an `extern "C" fn(*mut ThreadCtx)`, set once at start-up (the image carries it).
static RESUMED_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Start-up: what a restored thread runs first (`state::threads::mos_thread_resumed`).
pub fn set_resumed_hook(f: extern "C" fn(*mut ckpt::ctx::ThreadCtx)) {
    RESUMED_HOOK.store(f as *const () as usize, Ordering::Release);
}

/// The resume entry's call: through [`RESUMED_HOOK`] (atomics only: a restored thread
/// runs it before anything else).
extern "C" fn resumed_via_hook(ctx: *mut ckpt::ctx::ThreadCtx) {
    let f = RESUMED_HOOK.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: the shim stored an `extern "C" fn(*mut ThreadCtx)` there at start-up.
        let f: extern "C" fn(*mut ckpt::ctx::ThreadCtx) = unsafe { core::mem::transmute::<usize, extern "C" fn(*mut ckpt::ctx::ThreadCtx)>(f) };
        f(ctx);
    }
}

global_asm!(
    ".text",
    ".p2align 4",
    ".globl mos_ctx_park",
    ".hidden mos_ctx_park",
    ".type mos_ctx_park,@function",
    "mos_ctx_park:",
    "mov [rdi + 0], rbx",
    "mov [rdi + 8], rbp",
    "mov [rdi + 16], r12",
    "mov [rdi + 24], r13",
    "mov [rdi + 32], r14",
    "mov [rdi + 40], r15",
    "lea rax, [rsp + 8]",
    "mov [rdi + 48], rax",
    "mov rax, [rsp]",
    "mov [rdi + 56], rax",
    "push rbx",
    "mov rbx, rdi",
    "call rsi",
    "pop rbx",
    "xor eax, eax",
    "ret",
    "",
    ".p2align 4",
    ".globl mos_ctx_fork",
    ".hidden mos_ctx_fork",
    ".type mos_ctx_fork,@function",
    "mos_ctx_fork:",
    "mov [rdi + 0], rbx",
    "mov [rdi + 8], rbp",
    "mov [rdi + 16], r12",
    "mov [rdi + 24], r13",
    "mov [rdi + 32], r14",
    "mov [rdi + 40], r15",
    "lea rax, [rsp + 8]",
    "mov [rdi + 48], rax",
    "mov rax, [rsp]",
    "mov [rdi + 56], rax",
    "mov r13, rdi",
    "mov r12, rdx",
    "mov r9, rsi",
    "mov eax, 56",
    "xor edi, edi",
    "xor esi, esi",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "syscall",
    "test rax, rax",
    "jz 3f",
    "mov r12, [r13 + 16]",
    "mov r13, [r13 + 24]",
    "ret",
    "3:",
    "mov rsp, r12",
    "and rsp, -16",
    "xor ebp, ebp",
    "call r9",
    "ud2",
    "",
    ".p2align 4",
    ".globl mos_ctx_resume_entry",
    ".hidden mos_ctx_resume_entry",
    ".type mos_ctx_resume_entry,@function",
    "mos_ctx_resume_entry:",
    "mov rbx, rdi",
    "mov rsp, [rbx + 48]",
    "sub rsp, 1024",
    "and rsp, -16",
    "mov rdi, rbx",
    "call {resumed}",
    "mov rdi, rbx",
    "mov rbp, [rdi + 8]",
    "mov r12, [rdi + 16]",
    "mov r13, [rdi + 24]",
    "mov r14, [rdi + 32]",
    "mov r15, [rdi + 40]",
    "mov rsp, [rdi + 48]",
    "mov rcx, [rdi + 56]",
    "mov rbx, [rdi + 0]",
    "movabs rax, {resumed_val}",
    "jmp rcx",
    "",
    ".p2align 4",
    ".globl mos_sigreturn",
    ".hidden mos_sigreturn",
    ".type mos_sigreturn,@function",
    "mos_sigreturn:",
    "mov eax, 15",
    "syscall",
    "ud2",
    resumed = sym resumed_via_hook,
    resumed_val = const ckpt::ctx::RESUMED,
);

extern "C" {
    pub fn mos_ctx_park(
        ctx: *mut ckpt::ctx::ThreadCtx,
        f: extern "C" fn(*mut ckpt::ctx::ThreadCtx),
    ) -> u64;
    pub fn mos_ctx_fork(
        ctx: *mut ckpt::ctx::ThreadCtx,
        child: extern "C" fn() -> !,
        stack_top: usize,
    ) -> i64;
    pub fn mos_ctx_resume_entry();
    pub fn mos_sigreturn();
}
