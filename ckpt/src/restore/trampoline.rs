//! The restorer's last instructions: create a thread or jump into a saved context.
//! No-libc zone: these run after the address space has been rebuilt, with the
//! application's TLS, so they use only raw syscalls and registers.

use core::arch::global_asm;

global_asm!(
    ".text",
    ".p2align 4",
    ".globl mos_restore_clone",
    ".hidden mos_restore_clone",
    ".type mos_restore_clone,@function",
    // mos_restore_clone(flags, stack, ptid, ctid, tls, ctx, entry) -> child tid (parent)
    "mos_restore_clone:",
    "push r12",
    "push r13",
    "mov r12, r9",
    "mov r13, [rsp + 24]",
    "mov r10, rcx",
    "mov eax, 56",
    "syscall",
    "test rax, rax",
    "jnz 2f",
    "mov rdi, r12",
    "jmp r13",
    "2:",
    "pop r13",
    "pop r12",
    "ret",
    ".size mos_restore_clone, . - mos_restore_clone",
    ".p2align 4",
    ".globl mos_restore_clone3",
    ".hidden mos_restore_clone3",
    ".type mos_restore_clone3,@function",
    // mos_restore_clone3(args, size, ctx, entry) -> child tid (parent); the child starts
    // on args.stack + args.stack_size and jumps to entry(ctx)
    "mos_restore_clone3:",
    "push r12",
    "push r13",
    "mov r12, rdx",
    "mov r13, rcx",
    "mov eax, 435",
    "syscall",
    "test rax, rax",
    "jnz 2f",
    "mov rdi, r12",
    "jmp r13",
    "2:",
    "pop r13",
    "pop r12",
    "ret",
    ".size mos_restore_clone3, . - mos_restore_clone3",
    ".p2align 4",
    ".globl mos_restore_jump",
    ".hidden mos_restore_jump",
    ".type mos_restore_jump,@function",
    // mos_restore_jump(ctx, fs_base, entry) -> !
    "mos_restore_jump:",
    "mov r12, rdi",
    "mov r13, rdx",
    "mov eax, 158",
    "mov edi, 0x1002",
    "syscall",
    "mov rdi, r12",
    "jmp r13",
    ".size mos_restore_jump, . - mos_restore_jump",
);

/// clone3's argument (`struct clone_args`, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

extern "C" {
    pub fn mos_restore_clone(
        flags: u64,
        stack: u64,
        ptid: u64,
        ctid: u64,
        tls: u64,
        ctx: u64,
        entry: u64,
    ) -> i64;
    pub fn mos_restore_clone3(args: *const CloneArgs, size: u64, ctx: u64, entry: u64) -> i64;
    pub fn mos_restore_jump(ctx: u64, fs_base: u64, entry: u64) -> !;
}
