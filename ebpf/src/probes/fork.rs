//! `task_newtask(struct task_struct *p, u64 clone_flags)`: runs in the creator's context
//! (the task that called fork/clone, whatever CLONE_PARENT says), before the child first runs.
//! A process created by a tagged process is tagged with the creator's service.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    Global,
};
use aya_log_ebpf::{debug, warn};
use bpfkill_common::{event_kind, stat, tag_flags, Tag};

use crate::{
    event::{emit, EventInfo},
    kernel::{is_tagged_start, ReadError, Task, LAYOUT},
    maps::{
        count, count_for_service, is_doomed, kill_current, recover_current, ServiceCounter, TAGS, UNSEEN,
    },
};

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_PARENT: u64 = 0x0000_8000;

#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn bpfkill_fork(ctx: RawTracePointContext) -> i32 {
    super::finish(&ctx, HOOK, try_fork(&ctx))
}

const HOOK: &str = "fork";

/// Set at load for tests only (`BPFKILL_TEST_SKIP_FORK_RUNS`): every run ends at once, as a
/// run the kernel skips does, so the suite can check the fork backstop on any kernel that
/// has it. The verifier removes the check when it is 0 (frozen read-only data).
#[unsafe(no_mangle)]
static SKIP_FORK_RUNS: Global<u8> = Global::new(0);

fn try_fork(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    if SKIP_FORK_RUNS.load() != 0 {
        return Ok(());
    }
    let layout = LAYOUT.load();
    if layout.task_tgid == 0 {
        return super::no_layout(ctx, HOOK);
    }
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_THREAD != 0 {
        // A new thread joins its creator's process: no new identity.
        return Ok(());
    }
    let creator = (bpf_get_current_pid_tgid() >> 32) as u32;
    let child = Task(ctx.arg::<*const u8>(0));
    // The fork backstop's record of the child (written when its creator is tagged, or has
    // a record of its own): this run decides the child's tag, so the record goes.
    let recorded = UNSEEN.remove(&(child.0 as u64)).is_ok();
    let mut creator_ptr = TAGS.get_ptr_mut(&creator);
    if creator_ptr.is_none() && !recorded {
        return Ok(());
    }
    // Read once: the start of the creator's process (its leader's), for both checks below.
    let creator_start = Task::current().process_start_ns(&layout)?;
    if recorded {
        // SAFETY: a map value pointer, read at once.
        let stale_or_none = match creator_ptr {
            Some(p) => !is_tagged_start(creator_start, unsafe { &*p }, &layout),
            None => true,
        };
        // The creator's own fork run was skipped: its record becomes its tag now.
        if stale_or_none && recover_current(creator)? {
            creator_ptr = TAGS.get_ptr_mut(&creator);
        }
    }
    let Some(creator_ptr) = creator_ptr else {
        return Ok(());
    };
    // SAFETY: a map value pointer, valid for the program's run; copied before any insert.
    let creator_tag = unsafe { *creator_ptr };
    if !is_tagged_start(creator_start, &creator_tag, &layout) {
        // The entry belongs to a dead process whose PID number was reused.
        count(stat::STALE_CREATOR);
        debug!(
            ctx,
            "pid {} has a stale tag (a reused PID number): its child is not tagged", creator
        );
        return Ok(());
    }

    let pid = child.tgid(&layout)?;
    let start_ns = child.start_ns(&layout)?;
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let doomed = is_doomed(&creator_tag, now);
    let mut flags = tag_flags::FORKED;
    if clone_flags & CLONE_PARENT != 0 {
        flags |= tag_flags::CLONE_PARENT;
    }
    if doomed {
        // A kill is in progress: the creator dies now, and the child inherits the doom (the
        // doom program kills it when it returns from fork, before any user instruction).
        flags |= tag_flags::DOOMED;
        kill_current(creator_ptr, &layout);
        debug!(
            ctx,
            "pid {} of doomed service {} forked: killed, its child {} doomed",
            creator,
            creator_tag.service_id,
            pid
        );
    }
    let tag = Tag {
        service_id: creator_tag.service_id,
        flags,
        start_ns,
        creator_pid: creator,
        exec_count: 0,
        creator_start_ns: creator_start,
        cgroup_id,
        clone_flags,
        tagged_ns: now,
        // The child starts with its creator's name.
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if TAGS.insert(&pid, &tag, 0).is_err() {
        count(stat::TAGS_FULL);
        count_for_service(creator_tag.service_id, ServiceCounter::Untagged);
        warn!(
            ctx,
            "tag map full: pid {}, child of {} in service {}, is not tracked",
            pid,
            creator,
            creator_tag.service_id
        );
        return Ok(());
    }
    count(stat::FORKS_TAGGED);

    let info = EventInfo {
        kind: event_kind::FORK,
        pid,
        creator_pid: creator,
        service_id: creator_tag.service_id,
        exit_status: 0,
        prev_service_id: 0,
        time_ns: now,
        start_ns,
        cgroup_id,
        clone_flags,
    };
    emit(child, &layout, &info, None);
    Ok(())
}
