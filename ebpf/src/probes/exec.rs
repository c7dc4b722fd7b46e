//! `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`:
//! any process ran a new binary. When the executed file (by device and inode, however it was
//! named) or the name exec gave the process is a rule's, the process becomes the root of that
//! rule's service; when it is a boundary of the tagged process's service, the process leaves
//! it; otherwise a tagged process keeps its tag, and the exec is counted and reported.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::{info, warn};
use bpfkill_common::{event_kind, stat, tag_flags, LeaveKey, Tag};

use crate::{
    event::{emit, EventInfo},
    kernel::{bprm_exe_key, ReadError, Task, LAYOUT},
    maps::{count, count_for_service, recover_current, ServiceCounter, COMM_RULES, LEAVE_RULES, RULES, TAGS},
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bpfkill_exec(ctx: RawTracePointContext) -> i32 {
    super::finish(&ctx, HOOK, try_exec(&ctx))
}

const HOOK: &str = "exec";

fn try_exec(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    let layout = LAYOUT.load();
    if layout.task_tgid == 0 {
        return super::no_layout(ctx, HOOK);
    }
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let bprm = ctx.arg::<*const u8>(2);
    // The name exec gave it (the basename of the path passed to execve).
    let comm = bpf_get_current_comm().unwrap_or_default();
    let exe = bprm_exe_key(bprm, &layout);
    // Service ids start at 1: 0 is "no rule" and "untagged" (plain integers keep the
    // verifier's view of every path simple).
    let mut rule: u32 = 0;
    if let Ok(key) = &exe {
        // SAFETY: read by copy.
        if let Some(id) = unsafe { RULES.get(key) } {
            rule = *id;
        }
    }
    if rule == 0 {
        // SAFETY: read by copy.
        if let Some(id) = unsafe { COMM_RULES.get(&comm) } {
            rule = *id;
        }
    }
    let mut tag = TAGS.get_ptr_mut(&pid);
    if tag.is_none() && recover_current(pid)? {
        // Its fork run was skipped: tagged now from the fork backstop's record.
        tag = TAGS.get_ptr_mut(&pid);
    }
    let current: u32 = match tag {
        // SAFETY: a map value pointer, valid for the program's run.
        Some(t) => unsafe { (*t).service_id },
        None => 0,
    };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if rule != 0 && rule != current {
        let service_id = rule;
        // A rule's executable: the process becomes the root of that service's tree, whatever
        // service it belonged to (an admin restarting cron from ssh does not make cron ssh's).
        let start_ns = Task::current().process_start_ns(&layout)?;
        let new = Tag {
            service_id,
            flags: tag_flags::MAIN | tag_flags::MATCHED | tag_flags::EXECED,
            start_ns,
            creator_pid: 0,
            exec_count: 1,
            creator_start_ns: 0,
            cgroup_id,
            clone_flags: 0,
            tagged_ns: now,
            comm,
        };
        if TAGS.insert(&pid, &new, 0).is_err() {
            count(stat::TAGS_FULL);
            count_for_service(service_id, ServiceCounter::Untagged);
            warn!(
                ctx,
                "tag map full: pid {} matched a rule of service {} but is not tracked", pid, service_id
            );
            return Ok(());
        }
        info!(
            ctx,
            "pid {} matched a rule of service {} at exec (was in {})", pid, service_id, current
        );
        count(stat::EXECS);
        let info = EventInfo {
            kind: event_kind::MATCH,
            pid,
            creator_pid: 0,
            service_id,
            exit_status: 0,
            prev_service_id: current,
            time_ns: now,
            start_ns,
            cgroup_id,
            clone_flags: 0,
        };
        emit(Task::current(), &layout, &info, Some(bprm));
        return Ok(());
    }
    let Some(tag) = tag else {
        return Ok(());
    };
    // SAFETY: as above; concurrent updates of these fields by another CPU can only come from
    // the same exec'ing process.
    let (service_id, creator_pid, start_ns) =
        unsafe { ((*tag).service_id, (*tag).creator_pid, (*tag).start_ns) };
    if let Ok(exe) = exe {
        let boundary = LeaveKey {
            exe,
            service_id,
            reserved: 0,
        };
        // SAFETY: read by copy.
        if unsafe { LEAVE_RULES.get(&boundary) }.is_some() && TAGS.remove(&pid).is_ok() {
            // A boundary of the service (a login shell of sshd, say): the process leaves it.
            info!(
                ctx,
                "pid {} left service {} at exec (a boundary rule)", pid, service_id
            );
            let info = EventInfo {
                kind: event_kind::LEAVE,
                pid,
                creator_pid,
                service_id,
                exit_status: 0,
                prev_service_id: service_id,
                time_ns: now,
                start_ns,
                cgroup_id,
                clone_flags: 0,
            };
            emit(Task::current(), &layout, &info, Some(bprm));
            return Ok(());
        }
    }
    // SAFETY: as above.
    unsafe {
        (*tag).exec_count = (*tag).exec_count.wrapping_add(1);
        (*tag).flags |= tag_flags::EXECED;
        (*tag).comm = comm;
    }
    count(stat::EXECS);

    let info = EventInfo {
        kind: event_kind::EXEC,
        pid,
        creator_pid,
        service_id,
        exit_status: 0,
        prev_service_id: 0,
        time_ns: now,
        start_ns,
        cgroup_id,
        clone_flags: 0,
    };
    emit(Task::current(), &layout, &info, Some(bprm));
    Ok(())
}
