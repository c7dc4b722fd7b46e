//! BPF LSM `task_alloc(struct task_struct *task, u64 clone_flags)` and
//! `task_free(struct task_struct *task)`: the fork program's backstop.
//!
//! The kernel skips a raw tracepoint program's run on a CPU while another run of the same
//! program is under way there. Where tracepoints are preemptible (Linux 7.2 here), a run
//! preempted under a fork storm blocks every later fork on its CPU until it resumes, and a
//! skipped fork run leaves a child, and all it forks, untagged. The kernel runs LSM programs
//! without that check, so `task_alloc`, in the creator's context, records the tag a tagged
//! creator gives the new process under the address of its task (its PID is not allocated
//! yet). The fork program removes the record when it tags the child; a record it left
//! becomes a tag (`maps::recover`) when the process next forks or execs, when the doom or
//! in-kernel kill programs meet it during a SIGKILL, or when ps lists the service;
//! `task_free` removes the record of a task that is freed first.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
    },
    macros::lsm,
    programs::LsmContext,
};
use bpfkill_common::{stat, tag_flags, Tag};

use crate::{
    kernel::{is_tagged_start, ReadError, Task, LAYOUT},
    maps::{count, is_doomed, TAGS, UNSEEN},
};

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_PARENT: u64 = 0x0000_8000;

#[lsm(hook = "task_alloc")]
pub fn bpfkill_alloc(ctx: LsmContext) -> i32 {
    // Never refuses a fork: a failed kernel read only means no record.
    let _ = try_alloc(&ctx);
    0
}

fn try_alloc(ctx: &LsmContext) -> Result<(), ReadError> {
    let layout = LAYOUT.load();
    if layout.task_tgid == 0 {
        return Ok(());
    }
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let creator = (bpf_get_current_pid_tgid() >> 32) as u32;
    let current = Task::current();
    // SAFETY: the values are copied out at once.
    let tagged = unsafe { TAGS.get(&creator) }.copied();
    let creator_start = match tagged {
        Some(_) => current.process_start_ns(&layout)?,
        None => 0,
    };
    let creator_tag = match tagged {
        Some(t) if is_tagged_start(creator_start, &t, &layout) => t,
        // Untagged, or a stale tag: a creator whose own fork run was skipped has a record.
        _ => {
            let leader = current.group_leader(&layout)?.0 as u64;
            // SAFETY: as above.
            match unsafe { UNSEEN.get(&leader) }.copied() {
                Some(t) => t,
                None => return Ok(()),
            }
        }
    };
    let creator_start = match creator_start {
        0 => current.process_start_ns(&layout)?,
        s => s,
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut flags = tag_flags::FORKED;
    if clone_flags & CLONE_PARENT != 0 {
        flags |= tag_flags::CLONE_PARENT;
    }
    if is_doomed(&creator_tag, now) {
        // The fork program kills the creator; the child is killed at its first return.
        flags |= tag_flags::DOOMED;
    }
    let record = Tag {
        service_id: creator_tag.service_id,
        flags,
        start_ns: 0,
        creator_pid: creator,
        exec_count: 0,
        creator_start_ns: creator_start,
        // SAFETY: no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        clone_flags,
        tagged_ns: now,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let task: u64 = ctx.arg(0);
    if UNSEEN.insert(&task, &record, 0).is_err() {
        count(stat::UNSEEN_FULL);
    }
    Ok(())
}

#[lsm(hook = "task_free")]
pub fn bpfkill_free(ctx: LsmContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let _ = UNSEEN.remove(&task);
    0
}
