//! The one place an event record is filled. A probe says what happened ([`EventInfo`]);
//! [`emit`] reserves a ring-buffer record, fills every field (the parent of the process from
//! its task, the current comm, the exec'd filename when there is one) and submits it, or
//! counts a loss when the ring buffer is full.

use aya_ebpf::helpers::bpf_get_current_comm;
use bpfkill_common::{stat, Event, KernelLayout};

use crate::{
    kernel::{read_bprm_filename, Task},
    maps::{count, EVENTS},
};

/// What a probe reports; everything else in the record is filled by [`emit`].
pub struct EventInfo {
    /// `bpfkill_common::event_kind`.
    pub kind: u32,
    /// The process the event is about.
    pub pid: u32,
    /// Its creator (0 when unknown).
    pub creator_pid: u32,
    /// Its service.
    pub service_id: u32,
    /// Raw wait status (exits), else 0.
    pub exit_status: u32,
    /// The service before a match, else 0.
    pub prev_service_id: u32,
    /// Boot-time ns of the event.
    pub time_ns: u64,
    /// The process's start time.
    pub start_ns: u64,
    /// cgroup v2 id of the current task.
    pub cgroup_id: u64,
    /// Clone flags (forks), else 0.
    pub clone_flags: u64,
}

/// Submits the event about `task` (whose real parent is reported as `ppid`); `bprm` is the
/// `struct linux_binprm *` of an exec, whose filename the record carries.
#[inline(always)]
pub fn emit(task: Task, layout: &KernelLayout, info: &EventInfo, bprm: Option<*const u8>) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(stat::EVENTS_LOST);
        return;
    };
    let ppid = task.real_parent(layout).and_then(|p| p.tgid(layout)).unwrap_or(0);
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned record.
    unsafe {
        (*ev).kind = info.kind;
        (*ev).pid = info.pid;
        (*ev).ppid = ppid;
        (*ev).creator_pid = info.creator_pid;
        (*ev).service_id = info.service_id;
        (*ev).exit_status = info.exit_status;
        (*ev).prev_service_id = info.prev_service_id;
        (*ev).reserved = 0;
        (*ev).time_ns = info.time_ns;
        (*ev).start_ns = info.start_ns;
        (*ev).cgroup_id = info.cgroup_id;
        (*ev).clone_flags = info.clone_flags;
        (*ev).comm = bpf_get_current_comm().unwrap_or_default();
        (*ev).filename[0] = 0;
        if let Some(bprm) = bprm {
            if read_bprm_filename(bprm, layout, &mut (*ev).filename).is_err() {
                (*ev).filename[0] = 0;
            }
        }
    }
    entry.submit(0);
}
