//! `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`:
//! a tagged process ran a new binary. It keeps its tag; the exec is counted and reported.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use bpfkill_common::{event_kind, stat, tag_flags};

use crate::{
    event::{emit, EventInfo},
    kernel::{ReadError, Task, LAYOUT},
    maps::{count, TAGS},
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bpfkill_exec(ctx: RawTracePointContext) -> i32 {
    super::finish(try_exec(&ctx))
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    let layout = LAYOUT.load();
    if layout.task_tgid == 0 {
        return Ok(());
    }
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(tag) = TAGS.get_ptr_mut(&pid) else {
        return Ok(());
    };
    // SAFETY: a map value pointer, valid for the program's run; concurrent updates of
    // these two counters by another CPU can only come from the same exec'ing process.
    let (service_id, creator_pid, start_ns) = unsafe {
        (*tag).exec_count = (*tag).exec_count.wrapping_add(1);
        (*tag).flags |= tag_flags::EXECED;
        // The name exec gave it (the basename of the path passed to execve).
        (*tag).comm = bpf_get_current_comm().unwrap_or_default();
        ((*tag).service_id, (*tag).creator_pid, (*tag).start_ns)
    };
    count(stat::EXECS);

    let info = EventInfo {
        kind: event_kind::EXEC,
        pid,
        creator_pid,
        service_id,
        exit_status: 0,
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
        start_ns,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        clone_flags: 0,
    };
    emit(Task::current(), &layout, &info, Some(ctx.arg::<*const u8>(2)));
    Ok(())
}
