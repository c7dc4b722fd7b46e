//! Reads of kernel structures at offsets found in BTF by userspace (aya-ebpf has no CO-RE).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    Global,
};
use bpfkill_common::{tag_flags, ExeKey, KernelLayout, Tag};

/// Structure offsets for the running kernel, set by the loader.
#[unsafe(no_mangle)]
pub static LAYOUT: Global<KernelLayout> = Global::new(KernelLayout {
    task_pid: 0,
    task_tgid: 0,
    task_start_boottime: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_signal: 0,
    task_exit_code: 0,
    signal_live: 0,
    bprm_filename: 0,
    exit_has_group_dead: 0,
    ns_per_tick: 0,
    task_state: 0,
    task_exit_state: 0,
    task_comm: 0,
    task_cred: 0,
    cred_euid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    task_thread_pid: 0,
    pid_level: 0,
    pid_numbers: 0,
    upid_size: 0,
    upid_ns: 0,
    pidns_inum: 0,
    signal_sid_pid: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_exe_file: 0,
    bprm_file: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    signal_flags: 0,
    signal_pgid_pid: 0,
    log_level: 0,
});

/// Error from a kernel read (the helper's negative errno).
pub type ReadError = i64;

/// A `struct task_struct *`.
#[derive(Clone, Copy)]
pub struct Task(pub *const u8);

/// Reads a `T` at byte offset `off` of kernel address `base`.
#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, off: u32) -> Result<T, ReadError> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one is an error, not UB.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }.map_err(|e| e as ReadError)
}

/// Loads a `T` at byte offset `off` of `base`, a BTF-typed kernel pointer: a task iterator's
/// task, or a pointer member loaded from one with this function. No helper call: LAYOUT
/// lives in frozen read-only data, so the verifier knows `off` as a constant, checks it
/// against the kernel's BTF (a member of that size must be there), and emits a fault-safe
/// direct load (a NULL or stale pointer reads as zero instead of faulting).
///
/// Only for programs whose pointers the verifier types (the iterators); `off` must be a
/// LAYOUT field, never a computed value.
#[inline(always)]
pub unsafe fn load_at<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: the caller passes a BTF-typed pointer and a LAYOUT offset; the verifier checks
    // the access against BTF and the kernel protects the load.
    unsafe { core::ptr::read_volatile(base.wrapping_add(off as usize) as *const T) }
}

/// A task iterator's context: its output (`seq_file`) and its task, None at the end of the
/// walk.
#[inline(always)]
pub fn iter_task(ctx: *mut core::ffi::c_void) -> Option<(*mut core::ffi::c_void, *const u8)> {
    // struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }
    // SAFETY: the iterator's context has this layout; the verifier checks both loads.
    let (meta, task) = unsafe {
        let fields = ctx as *const *const u8;
        (
            core::ptr::read_volatile(fields),
            core::ptr::read_volatile(fields.add(1)),
        )
    };
    if meta.is_null() || task.is_null() {
        return None;
    }
    // struct bpf_iter_meta { struct seq_file *seq; ... }
    // SAFETY: as above.
    let seq = unsafe { core::ptr::read_volatile(meta as *const *mut core::ffi::c_void) };
    Some((seq, task))
}

impl Task {
    /// The task running this program.
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: the helper has no preconditions.
        Task(unsafe { bpf_get_current_task() } as *const u8)
    }

    #[inline(always)]
    pub fn tgid(self, l: &KernelLayout) -> Result<u32, ReadError> {
        unsafe { read_at::<u32>(self.0, l.task_tgid) }
    }

    #[inline(always)]
    pub fn start_ns(self, l: &KernelLayout) -> Result<u64, ReadError> {
        unsafe { read_at::<u64>(self.0, l.task_start_boottime) }
    }

    #[inline(always)]
    pub fn group_leader(self, l: &KernelLayout) -> Result<Task, ReadError> {
        unsafe { read_at::<*const u8>(self.0, l.task_group_leader) }.map(Task)
    }

    #[inline(always)]
    pub fn real_parent(self, l: &KernelLayout) -> Result<Task, ReadError> {
        unsafe { read_at::<*const u8>(self.0, l.task_real_parent) }.map(Task)
    }

    /// Start time of the thread group (its leader's `start_boottime`), the value behind
    /// field 22 of /proc/PID/stat.
    #[inline(always)]
    pub fn process_start_ns(self, l: &KernelLayout) -> Result<u64, ReadError> {
        self.group_leader(l)?.start_ns(l)
    }

    #[inline(always)]
    pub fn exit_code(self, l: &KernelLayout) -> Result<u32, ReadError> {
        unsafe { read_at::<u32>(self.0, l.task_exit_code) }
    }

    /// True when the task's thread group is exiting already (a fatal signal was delivered:
    /// `signal->flags & SIGNAL_GROUP_EXIT`).
    #[inline(always)]
    pub fn group_exiting(self, l: &KernelLayout) -> Result<bool, ReadError> {
        const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;
        let signal = unsafe { read_at::<*const u8>(self.0, l.task_signal) }?;
        Ok(unsafe { read_at::<u32>(signal, l.signal_flags) }? & SIGNAL_GROUP_EXIT != 0)
    }

    /// Number of live threads in the task's thread group (`signal->live`).
    #[inline(always)]
    pub fn live_threads(self, l: &KernelLayout) -> Result<i32, ReadError> {
        let signal = unsafe { read_at::<*const u8>(self.0, l.task_signal) }?;
        unsafe { read_at::<i32>(signal, l.signal_live) }
    }
}

/// The identity (device, inode) of the file a `struct linux_binprm *` executes.
#[inline(always)]
pub fn bprm_exe_key(bprm: *const u8, l: &KernelLayout) -> Result<ExeKey, ReadError> {
    let file = unsafe { read_at::<*const u8>(bprm, l.bprm_file) }?;
    let inode = unsafe { read_at::<*const u8>(file, l.file_inode) }?;
    let ino = unsafe { read_at::<u64>(inode, l.inode_ino) }?;
    let sb = unsafe { read_at::<*const u8>(inode, l.inode_sb) }?;
    let dev = unsafe { read_at::<u32>(sb, l.sb_dev) }?;
    Ok(ExeKey {
        dev: u64::from(dev),
        ino,
    })
}

/// Reads the `filename` of a `struct linux_binprm *` into `dst`.
#[inline(always)]
pub fn read_bprm_filename(bprm: *const u8, l: &KernelLayout, dst: &mut [u8]) -> Result<(), ReadError> {
    let name = unsafe { read_at::<*const u8>(bprm, l.bprm_filename) }?;
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name, dst) }
        .map(|_| ())
        .map_err(|e| e as ReadError)
}

/// True when `actual_ns` (a running process's start) is the start recorded in `tag`: exactly
/// for tags the kernel wrote, at /proc's clock-tick precision for tags written from /proc.
#[inline(always)]
pub fn is_tagged_start(actual_ns: u64, tag: &Tag, l: &KernelLayout) -> bool {
    let tick = l.ns_per_tick as u64;
    if tag.flags & tag_flags::START_FROM_PROC == 0 || tick == 0 {
        return actual_ns == tag.start_ns;
    }
    actual_ns / tick == tag.start_ns / tick
}

/// One field of [`LAYOUT`], read without copying the whole layout onto the 512-byte stack.
macro_rules! layout {
    ($field:ident) => {{
        let base = &$crate::kernel::LAYOUT as *const aya_ebpf::Global<bpfkill_common::KernelLayout>
            as *const bpfkill_common::KernelLayout;
        // SAFETY: Global is repr(transparent) over the layout; the volatile read keeps the
        // compiler from folding the placeholder value the loader overrides.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*base).$field)) }
    }};
}
pub(crate) use layout;

/// The tag of process `tgid`, whose leader is an iterator's `task`: its tag, or for a live
/// process whose fork run the kernel skipped, the tag recovered now from the fork backstop's
/// record ([`crate::maps::recover`]).
#[inline(always)]
pub fn tag_or_recovered(task: *const u8, tgid: u32) -> Option<Tag> {
    // SAFETY: the value is copied out at once.
    if let Some(tag) = unsafe { crate::maps::TAGS.get(&tgid) } {
        return Some(*tag);
    }
    // SAFETY: task is the iterator's (BTF-typed) task; the offsets are LAYOUT's.
    let (exit_state, start): (u32, u64) = unsafe {
        (
            load_at(task, layout!(task_exit_state)),
            load_at(task, layout!(task_start_boottime)),
        )
    };
    // A process past its exit is not tagged again (its exit run has gone by).
    if exit_state != 0 || !crate::maps::recover(task as u64, tgid, start) {
        return None;
    }
    // SAFETY: as above.
    unsafe { crate::maps::TAGS.get(&tgid) }.copied()
}
