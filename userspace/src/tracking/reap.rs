//! The in-kernel kill (Linux 6.13+): the `bpfkill_reap` task iterator sends SIGKILL to every
//! doomed, tagged process whose exact start time matches its tag, with the
//! `bpf_send_signal_task` kfunc, in one read(2) for a whole service.
//!
//! aya 0.14 does not resolve kfuncs: the program calls a placeholder immediate, and
//! [`patched_object`] writes the kfunc's BTF id from the running kernel's BTF into a copy of
//! the object before it is loaded. A kernel without the kfunc gets no reap program, and kills
//! signal from userspace.

use std::{fs::File, io::Read};

use aya_obj::btf::BtfKind;
use bpfkill_common::{
    programs::{KFUNC_PLACEHOLDER, REAP},
    user::read_record,
    Reaped,
};

use super::pins::PinPaths;
use crate::error::{Error, Result};

/// The kfunc the reap program calls.
pub const KFUNC: &str = "bpf_send_signal_task";

/// Environment variable that turns the in-kernel kill off for one bpfkill process (the
/// benchmark and the tests compare both paths).
pub const DISABLE_ENV: &str = "BPFKILL_NO_KERNEL_KILL";

/// An object file copy, 8-byte aligned as the ELF reader wants.
pub struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// `object` with its reap program's kfunc call aimed at this kernel's
/// `bpf_send_signal_task`; None when the kernel has no such kfunc (before 6.13) or the
/// object holds no single placeholder call.
pub fn patched_object(object: &[u8], btf: &aya::Btf) -> Option<Object> {
    let id = btf.id_by_type_name_kind(KFUNC, BtfKind::Func).ok()?;
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: the buffer holds at least object.len() bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    // code BPF_JMP|BPF_CALL, src_reg BPF_PSEUDO_KFUNC_CALL, off 0, imm the placeholder.
    let mut call = [0x85, 0x20, 0, 0, 0, 0, 0, 0];
    call[4..].copy_from_slice(&KFUNC_PLACEHOLDER.to_le_bytes());
    let at: Vec<usize> = bytes
        .windows(call.len())
        .enumerate()
        .filter(|(_, w)| *w == call)
        .map(|(i, _)| i)
        .collect();
    let [at] = at[..] else {
        tracing::warn!("the kernel kill's call site is not in the object once; kills signal from userspace");
        return None;
    };
    bytes[at + 4..at + 8].copy_from_slice(&id.to_le_bytes());
    Some(Object {
        words,
        len: object.len(),
    })
}

/// True when the reap iterator is pinned (and not turned off by [`DISABLE_ENV`]).
pub fn available(paths: &PinPaths) -> bool {
    std::env::var_os(DISABLE_ENV).is_none() && paths.link(REAP.0).exists()
}

/// Runs the reap iterator once: every doomed, tagged, unspared process whose start time
/// matches is sent SIGKILL. Returns them with their tags.
pub fn reap(paths: &PinPaths) -> Result<Vec<Reaped>> {
    let pin = paths.link(REAP.0);
    let failed = |e| Error::io(format!("run the kernel kill {}", pin.display()), e);
    let mut file = File::open(&pin).map_err(failed)?;
    // The iterator runs as it is read, a buffer (a page or more) per read(2): read in large
    // chunks, so the kill is not spread over many small reads.
    let mut out = Vec::with_capacity(1 << 16);
    loop {
        if out.capacity() - out.len() < 1 << 14 {
            out.reserve(1 << 16);
        }
        let len = out.len();
        out.resize(out.capacity(), 0);
        let n = file.read(&mut out[len..]).map_err(failed)?;
        out.truncate(len + n);
        if n == 0 {
            break;
        }
    }
    Ok(out
        .chunks_exact(std::mem::size_of::<Reaped>())
        .filter_map(read_record::<Reaped>)
        .collect())
}
