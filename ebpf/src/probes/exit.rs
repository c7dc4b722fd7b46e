//! `sched_process_exit(struct task_struct *p[, bool group_dead])`: fires for every exiting
//! thread. A process is gone only when its last thread exits (the leader may exit first), so
//! the tag is removed when the thread group's live count reaches zero.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use bpfkill_common::{event_kind, stat, Ghost};

use crate::{
    event::{emit, EventInfo},
    kernel::{ReadError, Task, LAYOUT},
    maps::{count, GHOSTS, TAGS},
};

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn bpfkill_exit(ctx: RawTracePointContext) -> i32 {
    super::finish(&ctx, HOOK, try_exit(&ctx))
}

const HOOK: &str = "exit";

fn try_exit(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    let layout = LAYOUT.load();
    if layout.task_tgid == 0 {
        return super::no_layout(ctx, HOOK);
    }
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(tag) = (unsafe { TAGS.get(&pid) }).copied() else {
        return Ok(());
    };
    let task = Task::current();
    let group_dead = if layout.exit_has_group_dead != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        task.live_threads(&layout)? == 0
    };
    if !group_dead {
        return Ok(());
    }
    // Two threads may both see a dead group; only the one that removes the tag reports.
    if TAGS.remove(&pid).is_err() {
        return Ok(());
    }
    count(stat::EXITS);
    let status = task.exit_code(&layout).unwrap_or(0);
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let ghost = Ghost {
        service_id: tag.service_id,
        exit_status: status,
        start_ns: tag.start_ns,
        creator_pid: tag.creator_pid,
        flags: tag.flags,
        creator_start_ns: tag.creator_start_ns,
        exit_ns: now,
    };
    // Best effort: the LRU map evicts old ghosts rather than failing.
    let _ = GHOSTS.insert(&pid, &ghost, 0);

    let info = EventInfo {
        kind: event_kind::EXIT,
        pid,
        creator_pid: tag.creator_pid,
        service_id: tag.service_id,
        exit_status: status,
        prev_service_id: 0,
        time_ns: now,
        start_ns: tag.start_ns,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        clone_flags: 0,
    };
    emit(task, &layout, &info, None);
    Ok(())
}
