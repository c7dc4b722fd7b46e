//! `sys_exit(struct pt_regs *regs, long ret)`, attached only while a SIGKILL is in progress.
//! It runs in the context of the task returning to user space, including a new child's very
//! first return from fork/clone, so a doomed process is killed before it runs another user
//! instruction (an untagged one whose fork run the kernel skipped is tagged from the fork
//! backstop's record first). The tag's start time is checked against the running process, so a stale tag
//! never kills a process that merely reuses its PID number.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use aya_log_ebpf::debug;

use crate::{
    kernel::{is_tagged_start, ReadError, Task, LAYOUT},
    maps::{is_doomed, kill_current, recover_current, TAGS},
};

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bpfkill_doom(ctx: RawTracePointContext) -> i32 {
    super::finish(&ctx, "doom", try_doom(&ctx))
}

fn try_doom(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if pid <= 1 {
        return Ok(());
    }
    let mut tag_ptr = TAGS.get_ptr_mut(&pid);
    if tag_ptr.is_none() && recover_current(pid)? {
        tag_ptr = TAGS.get_ptr_mut(&pid);
    }
    let Some(tag_ptr) = tag_ptr else {
        return Ok(());
    };
    // SAFETY: a map value pointer, valid for the program's run.
    let tag = unsafe { *tag_ptr };
    // SAFETY: no preconditions.
    if !is_doomed(&tag, unsafe { bpf_ktime_get_boot_ns() }) {
        return Ok(());
    }
    let layout = LAYOUT.load();
    if layout.task_tgid == 0 || !is_tagged_start(Task::current().process_start_ns(&layout)?, &tag, &layout) {
        return Ok(());
    }
    kill_current(tag_ptr, &layout);
    debug!(
        ctx,
        "pid {} of doomed service {} killed returning from a system call", pid, tag.service_id
    );
    Ok(())
}
