//! Preemption off for a tracking program's run, where the kernel has the
//! `bpf_preempt_disable`/`bpf_preempt_enable` kfuncs (Linux 6.10+).
//!
//! The kernel never re-enters a tracing program on a CPU: a run that starts while another
//! run of the same program is still in progress on that CPU is skipped (and counted in the
//! program's `recursion_misses`). On a preemptible kernel whose tracepoints are preemptible
//! (Debian's 7.x kernels: `PREEMPT_LAZY`, tracepoints under SRCU), a preempted run keeps its
//! CPU's slot until it is scheduled again, and every fork, exec or exit on that CPU meanwhile
//! goes untracked: a fork bomb on two CPUs lost hundreds of children that way. Turning
//! preemption off as the program's first act leaves only the few instructions between the
//! kernel's recursion check and that call preemptible.
//!
//! aya 0.14 cannot resolve kfuncs: each call is a raw instruction with a placeholder
//! immediate, which the loader replaces with the kfunc's BTF id, or the whole call with
//! `r0 = 0` on a kernel without it (`userspace/src/tracking/kfuncs.rs`).

use bpfkill_common::programs::{PREEMPT_DISABLE_PLACEHOLDER, PREEMPT_ENABLE_PLACEHOLDER};

/// A kfunc call without arguments whose immediate is `$placeholder` (`BPF_JMP|BPF_CALL`,
/// src_reg `BPF_PSEUDO_KFUNC_CALL`: bytes 0x85, 0x20, off 0, imm); r0..r5 are clobbered by
/// the call. Not `nomem`, so no memory access moves across it.
macro_rules! kfunc_call {
    ($placeholder:expr) => {
        // SAFETY: a call without arguments; the clobbered registers are declared.
        unsafe {
            core::arch::asm!(
                ".byte 0x85, 0x20, 0x00, 0x00",
                ".4byte {placeholder}",
                placeholder = const $placeholder,
                lateout("r0") _, lateout("r1") _, lateout("r2") _,
                lateout("r3") _, lateout("r4") _, lateout("r5") _,
                options(nostack),
            )
        }
    };
}

/// `void bpf_preempt_disable(void)`.
#[inline(always)]
pub fn disable() {
    kfunc_call!(PREEMPT_DISABLE_PLACEHOLDER);
}

/// `void bpf_preempt_enable(void)`: every path out of a program that called [`disable`]
/// must call it (the verifier checks).
#[inline(always)]
pub fn enable() {
    kfunc_call!(PREEMPT_ENABLE_PLACEHOLDER);
}
