//! `iter/task`: the in-kernel kill. Reading the pinned iterator visits every task once and
//! sends SIGKILL, with the `bpf_send_signal_task` kfunc (Linux 6.13+), to the thread group of
//! every live tagged leader (or one the fork backstop recorded, tagged now) whose service (or tag) is doomed, unless it is spared, after
//! checking its exact start time against its tag: one read(2) kills a whole service, each
//! process identified as surely as a pidfd and a /proc start time would. Each process
//! signalled is written to the iterator's output with its tag ([`Reaped`]), for the report.
//!
//! aya 0.14 cannot resolve kfuncs, so the call is a raw instruction whose BTF id the loader
//! patches in from the running kernel's BTF (`KFUNC_PLACEHOLDER`); where the kernel lacks the
//! kfunc, this program is never loaded.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, generated::bpf_seq_write};
use bpfkill_common::{programs::KFUNC_PLACEHOLDER, Reaped, SIGKILL};

use crate::{
    kernel::{is_tagged_start, iter_task, layout, load_at, tag_or_recovered, LAYOUT},
    maps::is_doomed,
};

/// `enum pid_type`'s `PIDTYPE_TGID`: the whole thread group.
const PIDTYPE_TGID: u64 = 1;

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn bpfkill_reap(ctx: *mut c_void) -> i32 {
    let Some((seq, task)) = iter_task(ctx) else {
        return 0;
    };
    // SAFETY: task is the iterator's (BTF-typed) task; the offsets are LAYOUT's.
    let (pid, tgid): (u32, u32) = unsafe {
        (
            load_at(task, layout!(task_pid)),
            load_at(task, layout!(task_tgid)),
        )
    };
    if pid != tgid || tgid <= 2 {
        return 0; // a thread (its leader signals the group), PID 1 or kthreadd
    }
    let Some(tag) = tag_or_recovered(task, tgid) else {
        return 0;
    };
    // SAFETY: no preconditions.
    if !is_doomed(&tag, unsafe { bpf_ktime_get_boot_ns() }) {
        return 0;
    }
    let l = LAYOUT.load();
    // SAFETY: as above; the leader's own start time is the process's.
    let start: u64 = unsafe { load_at(task, layout!(task_start_boottime)) };
    if l.task_tgid == 0 || !is_tagged_start(start, &tag, &l) {
        return 0;
    }
    // SAFETY: task is a trusted, non-NULL task pointer, as the kfunc requires.
    if unsafe { send_signal_task(task, SIGKILL) } == 0 {
        let rec = Reaped {
            pid: tgid,
            reserved: 0,
            tag,
        };
        let size = core::mem::size_of::<Reaped>() as u32;
        // SAFETY: seq is the iterator's seq_file; the record lives on this stack.
        unsafe { bpf_seq_write(seq as *mut _, &rec as *const Reaped as *const c_void, size) };
    }
    0
}

/// `int bpf_send_signal_task(struct task_struct *task, int sig, enum pid_type type, u64
/// value)`: a kfunc call (`BPF_JMP|BPF_CALL`, src_reg `BPF_PSEUDO_KFUNC_CALL`), whose
/// immediate the loader replaces with the kfunc's BTF id.
#[inline(always)]
unsafe fn send_signal_task(task: *const u8, sig: u32) -> i64 {
    let ret: i64;
    // SAFETY: the arguments are in r1..r4 as the BPF calling convention wants; r0..r5 are
    // clobbered by the call. The instruction bytes: code 0x85, regs 0x20 (src 2, dst 0),
    // off 0, imm the placeholder.
    unsafe {
        core::arch::asm!(
            ".byte 0x85, 0x20, 0x00, 0x00",
            ".4byte {placeholder}",
            placeholder = const KFUNC_PLACEHOLDER,
            inlateout("r1") task => _,
            inlateout("r2") u64::from(sig) => _,
            inlateout("r3") PIDTYPE_TGID => _,
            inlateout("r4") 0u64 => _,
            lateout("r0") ret,
            lateout("r5") _,
            options(nostack),
        );
    }
    ret
}
