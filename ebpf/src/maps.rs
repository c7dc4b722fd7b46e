//! Maps shared by every probe. All are pinned by name, so they outlive the loading process
//! and a restarted daemon adopts them.

use crate::kernel::Task;
use aya_ebpf::{
    helpers::generated::bpf_send_signal,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use bpfkill_common::{
    stat, tag_flags, DaemonState, ExeKey, Ghost, KernelLayout, LeaveKey, ServiceRecord, ServiceStats, Tag,
    COMM_LEN, DEFAULT_MAX_TAGS, EVENTS_BYTES, MAX_GHOSTS, MAX_RULES, MAX_SERVICES, MAX_UNSEEN, SIGKILL,
};

/// Every live tagged process, keyed by tgid. Userspace may resize it at load time.
#[map(name = "BPFKILL_TAGS")]
pub static TAGS: HashMap<u32, Tag> = HashMap::pinned(DEFAULT_MAX_TAGS, 0);

/// Service registry, keyed by service id. Written by userspace only.
#[map(name = "BPFKILL_SERVICES")]
pub static SERVICES: HashMap<u32, ServiceRecord> = HashMap::pinned(MAX_SERVICES, 0);

/// Recently exited tagged processes (lineage through dead creators).
#[map(name = "BPFKILL_GHOSTS")]
pub static GHOSTS: LruHashMap<u32, Ghost> = LruHashMap::pinned(MAX_GHOSTS, 0);

/// Services being SIGKILLed as a whole, with the boot-time ns at which the doom expires.
#[map(name = "BPFKILL_DOOMED_SERVICES")]
pub static DOOMED_SERVICES: HashMap<u32, u64> = HashMap::pinned(MAX_SERVICES, 0);

/// The layout the programs were loaded with (for userspace: status, the doom program).
#[map(name = "BPFKILL_LAYOUT")]
pub static LAYOUT_MAP: Array<KernelLayout> = Array::pinned(1, 0);

/// Counters, indexed by `bpfkill_common::stat`.
#[map(name = "BPFKILL_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stat::COUNT, 0);

/// fork/exec/exit events for the daemon.
#[map(name = "BPFKILL_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// The running daemon's state (written by userspace only).
#[map(name = "BPFKILL_DAEMON")]
pub static DAEMON: Array<DaemonState> = Array::pinned(1, 0);

/// Exe rules: the service whose root a process becomes when it execs this file.
#[map(name = "BPFKILL_RULES")]
pub static RULES: HashMap<ExeKey, u32> = HashMap::pinned(MAX_RULES, 0);

/// Name rules: the service whose root a process becomes when an exec gives it this name.
#[map(name = "BPFKILL_COMM_RULES")]
pub static COMM_RULES: HashMap<[u8; COMM_LEN], u32> = HashMap::pinned(MAX_RULES, 0);

/// Boundary rules: a process of the service that execs this file leaves it.
#[map(name = "BPFKILL_LEAVE_RULES")]
pub static LEAVE_RULES: HashMap<LeaveKey, u32> = HashMap::pinned(MAX_RULES, 0);

/// Per-service counters, keyed by service id.
#[map(name = "BPFKILL_SVC_STATS")]
pub static SERVICE_STATS: PerCpuHashMap<u32, ServiceStats> = PerCpuHashMap::pinned(MAX_SERVICES, 0);

/// New processes of tagged creators that the fork program has not tagged (yet), keyed by the
/// address of their task, written by the fork backstop (see `probes/backstop.rs`).
#[map(name = "BPFKILL_UNSEEN")]
pub static UNSEEN: HashMap<u64, Tag> = HashMap::pinned(MAX_UNSEEN, 0);

/// Tags process `tgid`, whose leader task is at `leader` and started at `start_ns`, from the
/// fork backstop's record of it, when the fork program's run that should have tagged it was
/// skipped: true when a tag was written. Callers look the tag up again (a map value pointer
/// is not handed across this call).
#[inline(never)]
pub fn recover(leader: u64, tgid: u32, start_ns: u64) -> bool {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(mut tag) = (unsafe { UNSEEN.get(&leader) }).copied() else {
        return false;
    };
    let _ = UNSEEN.remove(&leader);
    tag.start_ns = start_ns;
    tag.flags |= tag_flags::RECOVERED;
    if TAGS.insert(&tgid, &tag, 0).is_err() {
        count(stat::TAGS_FULL);
        count_for_service(tag.service_id, ServiceCounter::Untagged);
        return false;
    }
    count(stat::FORKS_RECOVERED);
    true
}

/// [`recover`] for the current process (`tgid`), untagged: true when a tag was written.
#[inline(always)]
pub fn recover_current(tgid: u32) -> Result<bool, crate::kernel::ReadError> {
    let layout = crate::kernel::LAYOUT.load();
    let leader = Task::current().group_leader(&layout)?;
    Ok(recover(leader.0 as u64, tgid, leader.start_ns(&layout)?))
}

/// Which per-service counter.
pub enum ServiceCounter {
    /// A child that could not be tagged.
    Untagged,
    /// A process killed in the kernel.
    KernelKill,
}

/// Adds one to a counter of service `service_id` (this CPU's slot).
#[inline(always)]
pub fn count_for_service(service_id: u32, which: ServiceCounter) {
    match SERVICE_STATS.get_ptr_mut(&service_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        Some(p) => unsafe {
            match which {
                ServiceCounter::Untagged => (*p).untagged += 1,
                ServiceCounter::KernelKill => (*p).kernel_kills += 1,
            }
        },
        None => {
            let mut first = ServiceStats::default();
            match which {
                ServiceCounter::Untagged => first.untagged = 1,
                ServiceCounter::KernelKill => first.kernel_kills = 1,
            }
            let _ = SERVICE_STATS.insert(&service_id, &first, 0);
        }
    }
}

/// SIGKILLs the current process, whose tag is at `tag`, unless it is dying already (killed
/// by bpfkill's own signal, say: then the kill is not the kernel's to claim). The first kill
/// of a process is counted (globally and for its service) and marked in its tag, so a
/// process is counted once however many of its threads the kernel kills.
#[inline(always)]
pub fn kill_current(tag: *mut Tag, layout: &KernelLayout) {
    if Task::current().group_exiting(layout).unwrap_or(false) {
        return;
    }
    // SAFETY: the helper signals the current process; no preconditions.
    if unsafe { bpf_send_signal(SIGKILL) } != 0 {
        return;
    }
    // SAFETY: a map value pointer, valid for the program's run.
    unsafe {
        if (*tag).flags & tag_flags::KILL_COUNTED == 0 {
            (*tag).flags |= tag_flags::KILL_COUNTED;
            count(stat::DOOM_KILLS);
            count_for_service((*tag).service_id, ServiceCounter::KernelKill);
        }
    }
}

/// Adds one to counter `idx`.
#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// True when the process with this tag must die in the kernel now: its tag is doomed, or its
/// service is doomed (and the doom has not expired), and it is not spared.
#[inline(always)]
pub fn is_doomed(tag: &Tag, now_ns: u64) -> bool {
    if tag.flags & tag_flags::SPARED != 0 {
        return false;
    }
    if tag.flags & tag_flags::DOOMED != 0 {
        return true;
    }
    // SAFETY: the value is read by copy.
    match unsafe { DOOMED_SERVICES.get(&tag.service_id) } {
        Some(&expiry) => now_ns < expiry,
        None => false,
    }
}
