//! `iter.s/task`: the task iterators behind `bpfkill ps`. Reading a pinned iterator link
//! visits every task once; for each live tagged thread-group leader of its half (even or odd
//! tgids) it writes a `TaskSnapshot` followed by the process's command line. Sleepable, so the
//! command line can be copied from the process's own memory (`bpf_copy_from_user_task`).
//!
//! A sleepable program may sleep in that copy while another instance runs on the same CPU,
//! so nothing here is kept in per-CPU scratch space: everything lives on the program's own
//! stack, which is why layout fields are read one by one and lines are copied in chunks.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::task_struct,
    helpers::generated::{bpf_copy_from_user_task, bpf_seq_write},
};
use bpfkill_common::{snapshot_flags, TaskSnapshot, SNAPSHOT_CMDLINE_MAX};

use crate::kernel::{iter_task, layout, load_at, read_at, tag_or_recovered, ReadError};

/// Command lines are copied and written in chunks of this size.
const CHUNK: usize = 128;

/// The half of the processes with even tgids.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter.s/task")]
pub fn bpfkill_snapshot_even(ctx: *mut c_void) -> i32 {
    snapshot(ctx, 0)
}

/// The half with odd tgids.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter.s/task")]
pub fn bpfkill_snapshot_odd(ctx: *mut c_void) -> i32 {
    snapshot(ctx, 1)
}

#[inline(always)]
fn snapshot(ctx: *mut c_void, parity: u32) -> i32 {
    let Some((seq, task)) = iter_task(ctx) else {
        return 0;
    };
    let _ = try_snapshot(seq, task, parity);
    0
}

#[inline(always)]
fn try_snapshot(seq: *mut c_void, task: *const u8, parity: u32) -> Result<(), ReadError> {
    if layout!(task_thread_pid) == 0 {
        return Ok(());
    }
    // SAFETY: task is the iterator's task (BTF-typed); the offsets are LAYOUT's.
    let (pid, tgid): (u32, u32) = unsafe {
        (
            load_at(task, layout!(task_pid)),
            load_at(task, layout!(task_tgid)),
        )
    };
    if pid != tgid || tgid & 1 != parity {
        return Ok(()); // a thread (the process is reported once, by its leader), or the other half
    }
    let Some(tag) = tag_or_recovered(task, tgid) else {
        return Ok(());
    };
    let mut snap = TaskSnapshot {
        tag,
        pid: tgid,
        ..TaskSnapshot::default()
    };
    fill(&mut snap, task)?;
    let (start, len) = cmdline_area(task, &mut snap.flags);
    snap.cmdline_len = len;
    let size = core::mem::size_of::<TaskSnapshot>() as u32;
    // SAFETY: seq is the iterator's seq_file; the record lives on this program's stack.
    unsafe { bpf_seq_write(seq as *mut _, &snap as *const TaskSnapshot as *const c_void, size) };
    write_cmdline(seq, task, start, len);
    Ok(())
}

/// Writes `len` bytes of the task's command line from `start`, a chunk at a time. A separate
/// BPF function, so that its buffer is not on the caller's stack frame.
#[inline(never)]
fn write_cmdline(seq: *mut c_void, task: *const u8, start: u64, len: u32) {
    if len == 0 {
        return;
    }
    // Not zeroed: the copy helper initialises it (and zeroes it when the copy fails).
    let mut chunk = core::mem::MaybeUninit::<[u8; CHUNK]>::uninit();
    // Chunk i starts at i * CHUNK; all are full but the last, of 1..=CHUNK bytes. Written so
    // that the verifier sees constants and one bounded value, not a running sum.
    let chunks = (len - 1) / CHUNK as u32 + 1;
    let last = ((len - 1) & (CHUNK as u32 - 1)) + 1;
    for i in 0..(SNAPSHOT_CMDLINE_MAX / CHUNK) as u32 {
        if i >= chunks {
            return;
        }
        let n = if i + 1 == chunks { last } else { CHUNK as u32 };
        // SAFETY: chunk holds CHUNK bytes and n is at most that; the helper faults the target
        // task's pages in (this program is sleepable) and zeroes the chunk on failure, so the
        // record keeps the length its header announced.
        unsafe {
            bpf_copy_from_user_task(
                chunk.as_mut_ptr() as *mut c_void,
                n,
                (start + u64::from(i) * CHUNK as u64) as *const c_void,
                task as *mut task_struct,
                0,
            );
            bpf_seq_write(seq as *mut _, chunk.as_ptr() as *const c_void, n);
        }
    }
}

/// Fills in the process's facts. Fields reached through BTF-typed pointers are direct loads
/// ([`load_at`]); what sits behind a computed offset (the task's own PID namespace level) or
/// is kept as an opaque key (the exe file) goes through bpf_probe_read_kernel.
fn fill(snap: &mut TaskSnapshot, task: *const u8) -> Result<(), ReadError> {
    // SAFETY (every load_at): task is the iterator's task and every other base a pointer
    // member loaded from it, so all are BTF-typed; the offsets are LAYOUT's. NULL pointers
    // read as zero.
    unsafe {
        let parent: *const u8 = load_at(task, layout!(task_real_parent));
        snap.ppid = load_at(parent, layout!(task_tgid));
        snap.state = load_at(task, layout!(task_state));
        snap.exit_state = load_at(task, layout!(task_exit_state));
        snap.start_ns = load_at(task, layout!(task_start_boottime));
        snap.comm = load_at(task, layout!(task_comm));
        let cred: *const u8 = load_at(task, layout!(task_cred));
        snap.euid = load_at(cred, layout!(cred_euid));
        let signal: *const u8 = load_at(task, layout!(task_signal));
        snap.live_threads = load_at(signal, layout!(signal_live));
        let sid_pid: *const u8 = load_at(signal, layout!(signal_sid_pid));
        if !sid_pid.is_null() {
            // upid numbers[0].nr: the number in the initial namespace.
            snap.sid = load_at(sid_pid, layout!(pid_numbers));
        }
        let pgid_pid: *const u8 = load_at(signal, layout!(signal_pgid_pid));
        if !pgid_pid.is_null() {
            snap.pgid = load_at(pgid_pid, layout!(pid_numbers));
        }
        let css: *const u8 = load_at(task, layout!(task_cgroups));
        let cgrp: *const u8 = load_at(css, layout!(css_set_dfl_cgrp));
        let kn: *const u8 = load_at(cgrp, layout!(cgroup_kn));
        snap.cgroup_id = load_at(kn, layout!(kernfs_node_id));
        let tpid: *const u8 = load_at(task, layout!(task_thread_pid));
        let level: u32 = load_at(tpid, layout!(pid_level));
        snap.pidns = if level == 0 {
            // The initial namespace's numbers[0]: a constant offset.
            let ns: *const u8 = load_at(tpid, layout!(pid_numbers) + layout!(upid_ns));
            load_at(ns, layout!(pidns_inum))
        } else {
            // numbers[level] is at a computed offset, which the verifier cannot check
            // against BTF: read it with the helper.
            let upid = layout!(pid_numbers) + (level & 31) * layout!(upid_size);
            let ns: *const u8 = read_at(tpid, upid + layout!(upid_ns))?;
            read_at(ns, layout!(pidns_inum))?
        };
        let mm: *const u8 = load_at(task, layout!(task_mm));
        if !mm.is_null() {
            // Copied as a number (a key), not loaded as a typed pointer.
            snap.exe_key = read_at(mm, layout!(mm_exe_file)).unwrap_or(0);
        }
    }
    Ok(())
}

/// Where the command line lives in the task's memory, and how much of it to copy.
fn cmdline_area(task: *const u8, flags: &mut u32) -> (u64, u32) {
    // SAFETY: task is BTF-typed and mm a pointer member of it; NULL reads as zero.
    let mm: *const u8 = unsafe { load_at(task, layout!(task_mm)) };
    if mm.is_null() {
        *flags |= snapshot_flags::NO_CMDLINE;
        return (0, 0);
    }
    // SAFETY: as above.
    let (start, end): (u64, u64) = unsafe {
        (
            load_at(mm, layout!(mm_arg_start)),
            load_at(mm, layout!(mm_arg_end)),
        )
    };
    if end <= start {
        *flags |= snapshot_flags::NO_CMDLINE;
        return (0, 0);
    }
    let mut len = end - start;
    if len > SNAPSHOT_CMDLINE_MAX as u64 {
        len = SNAPSHOT_CMDLINE_MAX as u64;
        *flags |= snapshot_flags::CMDLINE_TRUNCATED;
    }
    (start, len as u32)
}
