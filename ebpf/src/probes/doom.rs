//! `sys_exit(struct pt_regs *regs, long ret)`, attached only while a SIGKILL is in progress.
//! It runs in the context of the task returning to user space, including a new child's very
//! first return from fork/clone, so a doomed process is killed before it runs another user
//! instruction.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use bpfkill_common::{stat, tag_flags};

use crate::maps::{count, TAGS};

const SIGKILL: u32 = 9;

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bpfkill_doom(_ctx: RawTracePointContext) -> i32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only the flags are read, by value.
    let doomed = unsafe { TAGS.get(&pid) }.is_some_and(|t| t.flags & tag_flags::DOOMED != 0);
    // SAFETY: the helper signals the current process; no preconditions.
    if doomed && unsafe { bpf_send_signal(SIGKILL) } == 0 {
        count(stat::DOOM_KILLS);
    }
    0
}
