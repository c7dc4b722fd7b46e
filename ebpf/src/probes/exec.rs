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
    kernel::{read_bprm_filename, ReadError, Task, LAYOUT},
    maps::{count, reserve_event, TAGS},
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bpfkill_exec(ctx: RawTracePointContext) -> i32 {
    match try_exec(&ctx) {
        Ok(()) => 0,
        Err(_) => {
            count(stat::READ_ERRORS);
            0
        }
    }
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
        ((*tag).service_id, (*tag).creator_pid, (*tag).start_ns)
    };
    count(stat::EXECS);

    let Some(mut entry) = reserve_event() else {
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    let ppid = Task::current()
        .real_parent(&layout)
        .and_then(|p| p.tgid(&layout))
        .unwrap_or(0);
    // SAFETY: `ev` points at a reserved, exclusively owned record.
    unsafe {
        (*ev).kind = event_kind::EXEC;
        (*ev).pid = pid;
        (*ev).ppid = ppid;
        (*ev).creator_pid = creator_pid;
        (*ev).service_id = service_id;
        (*ev).exit_status = 0;
        (*ev).time_ns = bpf_ktime_get_boot_ns();
        (*ev).start_ns = start_ns;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).clone_flags = 0;
        (*ev).comm = bpf_get_current_comm().unwrap_or_default();
        if read_bprm_filename(ctx.arg::<*const u8>(2), &layout, &mut (*ev).filename).is_err() {
            (*ev).filename[0] = 0;
        }
    }
    entry.submit(0);
    Ok(())
}
