//! `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): every entry of a hash map in one system call per
//! chunk, where aya 0.14's iterator makes two per entry (next key, then lookup). A kill
//! reads the whole tag map, and the service registry to resolve its target, before it
//! signals anything, so this is on its critical path.
//!
//! aya 0.14 does not wrap the command: it is issued through [`super::raw`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// The `bpf(2)` command number of `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The batch member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    /// Where the walk resumes (NULL: from the start).
    in_batch: u64,
    /// Where the kernel writes the resume token.
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room in `keys`/`values`; out: entries written.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries per call for a large map (the tags): more than any hash bucket holds, so the
/// kernel never answers ENOSPC.
pub const CHUNK: usize = 4096;
/// Entries per call for a small map (the service registry): still far more than a bucket
/// holds, and buffers small enough that a read costs no page faults worth counting (4096
/// service records are half a megabyte, faulted in afresh by each of a kill's lookups).
pub const SMALL_CHUNK: usize = 256;

/// Reads every (key, value) of the hash map `map` (keys `u32`, values `V` of the map's value
/// size; at most `chunk` entries per call: [`CHUNK`] or [`SMALL_CHUNK`]). Err when the kernel
/// lacks the command (before 5.6) or refuses it; the caller then walks the map key by key.
/// Entries added or removed during the read may or may not be seen; none is seen twice.
pub fn lookup_all<V: Copy + Default>(map: BorrowedFd<'_>, chunk: usize) -> std::io::Result<Vec<(u32, V)>> {
    let mut keys = vec![0u32; chunk];
    let mut values = vec![V::default(); chunk];
    // The hash map's token is a bucket index (a u32); a u64 leaves room.
    let mut token: u64 = 0;
    let mut out = Vec::new();
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let mut next: u64 = 0;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &token as *const u64 as u64 },
            out_batch: &mut next as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` is the kernel's batch layout; the key and value buffers hold `chunk`
        // entries of the map's key and value size and outlive the call; the tokens are u64s
        // the kernel writes at most 4 bytes of.
        let ret = unsafe { super::raw::bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let err = ret.err();
        let n = (attr.count as usize).min(chunk);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match err {
            None => token = next,
            // The end of the map (with the last entries written).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
    }
    unreachable!("the loop ends at the map's end or on an error")
}
