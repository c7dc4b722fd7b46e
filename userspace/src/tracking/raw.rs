//! `bpf(2)` commands aya 0.14 does not expose, issued directly: the attribute layouts are
//! the kernel's `union bpf_attr` members (include/uapi/linux/bpf.h). Used for the batched
//! tag-map read ([`super::batch`]), the skipped-run count ([`super::skips`]) and attaching
//! the pinned doom program ([`super::load::arm_doom`]), where aya's `from_pin` would first
//! probe the kernel's features: a score of system calls before a kill's first signal.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

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
    // SAFETY: the attribute layout of BPF_OBJ_GET; `path` outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr) }?;
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
    // SAFETY: the attribute layout of BPF_RAW_TRACEPOINT_OPEN; `name` outlives the call.
    let fd = unsafe { bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr) }?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Issues `bpf(2)` command `cmd` with `attr`; the command's result (a new descriptor, or 0).
///
/// # Safety
/// `attr` has the layout of the `union bpf_attr` member `cmd` reads, and every pointer in it
/// is valid for what the kernel reads or writes there during the call.
pub(super) unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: as the caller promises; `attr` lives through the call.
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
