//! How many times the kernel skipped a program: `bpf_prog_info.recursion_misses` (Linux 5.12).
//!
//! A tracing program is not re-entered on a CPU: when a run of it is preempted (possible on
//! preemptible kernels: `PREEMPT`, `PREEMPT_LAZY`, `PREEMPT_RT`, or `preempt=full`) and
//! another task on that CPU hits the same tracepoint, the kernel skips that run and counts
//! it. A skipped fork run leaves a child untagged (the /proc walk and the cgroup still see
//! it), a skipped exit run leaves a stale tag (see [`super::Tracking::forget_if_exited`]).
//! `status` reports the counts so that such a miss is never silent.
//!
//! aya 0.14 keeps `bpf_prog_info` private, so the two commands are issued here (through
//! [`super::raw`]).

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::programs::links::{FdLink, PinnedLink};

use super::raw;
use aya_obj::generated::bpf_prog_info;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `BPF_*_GET_FD_BY_ID` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The `info` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The runs the kernel skipped of the program attached through the pinned link `link`, or
/// None when it cannot tell (no such link, or a kernel before 5.12, whose shorter
/// `bpf_prog_info` has no such field).
pub fn skipped_runs(link: &Path) -> Option<u64> {
    let link = FdLink::from(PinnedLink::from_pin(link).ok()?);
    let prog_id = link.info().ok()?.program_id();
    let mut get = GetIdAttr {
        id: prog_id,
        ..Default::default()
    };
    // SAFETY: the attribute layout of the command, without pointers.
    let fd = unsafe { raw::bpf(BPF_PROG_GET_FD_BY_ID, &mut get) }.ok()?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: a plain C struct of integers, for which all zeroes is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: prog.as_fd().as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: the attribute layout of the command; `info` outlives the call and is as large
    // as `info_len` says.
    unsafe { raw::bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.ok()?;
    // The kernel writes back how much of the struct it knows.
    let known = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    (attr.info_len as usize >= known).then_some(info.recursion_misses)
}
