//! How many times the kernel skipped a program: `bpf_prog_info.recursion_misses` (Linux 5.12).
//!
//! A tracing program is not re-entered on a CPU: when a run of it is preempted (possible on
//! preemptible kernels: `PREEMPT`, `PREEMPT_LAZY`, `PREEMPT_RT`, or `preempt=full`) and
//! another task on that CPU hits the same tracepoint, the kernel skips that run and counts
//! it. A skipped fork run leaves a child untagged (the /proc walk and the cgroup still see
//! it), a skipped exit run leaves a stale tag (see [`super::Tracking::forget_if_exited`]).
//! `status` reports the counts so that such a miss is never silent.
//!
//! aya 0.14 keeps `bpf_prog_info` private, so the two commands are issued here; the
//! attribute layouts are the kernel's `union bpf_attr` members (include/uapi/linux/bpf.h).
//! The doom program is attached through the same raw commands (see `load::arm_doom`): aya's
//! `from_pin` probes the kernel's features first, a score of system calls before a kill's
//! first signal.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::programs::links::{FdLink, PinnedLink};
use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
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

/// The `BPF_OBJ_*` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `raw_tracepoint` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
}

/// The pinned object (a program) at `pin`.
pub(super) fn open_pinned(pin: &Path) -> std::io::Result<OwnedFd> {
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `program` to raw tracepoint `name`; closing the returned descriptor detaches it.
pub(super) fn raw_tracepoint_open(program: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    let name =
        std::ffi::CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = RawTracepointAttr {
        name: name.as_ptr() as u64,
        prog_fd: program.as_raw_fd() as u32,
    };
    let fd = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is the layout the command reads, and lives through the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut get).ok()?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: a plain C struct of integers, for which all zeroes is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: prog.as_fd().as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    // The kernel writes back how much of the struct it knows.
    let known = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    (attr.info_len as usize >= known).then_some(info.recursion_misses)
}
