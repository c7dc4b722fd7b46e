//! The kfunc calls in the kernel object, aimed at the running kernel before it is loaded.
//!
//! aya 0.14 does not resolve kfuncs: the programs call placeholder immediates
//! (`bpfkill_common::programs::*_PLACEHOLDER`), and [`patch`] writes each kfunc's BTF id from
//! the running kernel's BTF into a copy of the object. What a kernel without a kfunc gets:
//! - `bpf_preempt_disable`/`bpf_preempt_enable` (Linux 6.10+, around every tracking run, see
//!   `ebpf/src/preempt.rs`): the calls become `r0 = 0`, so the programs run as before.
//! - `bpf_send_signal_task` (Linux 6.13+, the in-kernel kill, see [`super::reap`]): the call
//!   stays as it is and the reap program is never loaded; kills signal from userspace.

use aya_obj::btf::BtfKind;
use bpfkill_common::programs::{KFUNC_PLACEHOLDER, PREEMPT_DISABLE_PLACEHOLDER, PREEMPT_ENABLE_PLACEHOLDER};

/// The kfunc the reap program calls.
pub const SEND_SIGNAL_TASK: &str = "bpf_send_signal_task";
/// The kfuncs every tracking program calls first and last.
pub const PREEMPT_DISABLE: &str = "bpf_preempt_disable";
const PREEMPT_ENABLE: &str = "bpf_preempt_enable";

/// An object file copy, 8-byte aligned as the ELF reader wants, with its kfunc calls patched.
pub struct Patched {
    words: Vec<u64>,
    len: usize,
    /// The reap program's call reaches `bpf_send_signal_task`: it may be loaded.
    pub kernel_kill: bool,
    /// The tracking programs turn preemption off for their runs.
    pub preempt_guard: bool,
}

impl Patched {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// `object` with its kfunc calls aimed at the kernel whose BTF is `btf`; without BTF (a kill
/// loading its doom program, which does not parse it) every optional call becomes a no-op.
pub fn patch(object: &[u8], btf: Option<&aya::Btf>) -> Patched {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: the buffer holds at least object.len() bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    let id = |name: &str| btf.and_then(|b| b.id_by_type_name_kind(name, BtfKind::Func).ok());

    let guard_ids = id(PREEMPT_DISABLE).zip(id(PREEMPT_ENABLE));
    let mut preempt_guard = true;
    for (placeholder, which) in [(PREEMPT_DISABLE_PLACEHOLDER, 0), (PREEMPT_ENABLE_PLACEHOLDER, 1)] {
        let sites = call_sites(bytes, placeholder);
        if sites.is_empty() {
            preempt_guard = false;
        }
        for at in sites {
            match guard_ids {
                Some(ids) => set_imm(bytes, at, if which == 0 { ids.0 } else { ids.1 }),
                None => bytes[at..at + 8].copy_from_slice(&MOV_R0_0),
            }
        }
    }
    preempt_guard &= guard_ids.is_some();

    let kernel_kill = match (&call_sites(bytes, KFUNC_PLACEHOLDER)[..], id(SEND_SIGNAL_TASK)) {
        ([at], Some(id)) => {
            set_imm(bytes, *at, id);
            true
        }
        ([_], None) => false,
        (_, _) => {
            tracing::warn!(
                "the kernel kill's call site is not in the object once; kills signal from userspace"
            );
            false
        }
    };
    Patched {
        words,
        len: object.len(),
        kernel_kill,
        preempt_guard,
    }
}

/// `r0 = 0` (`BPF_ALU64|BPF_MOV|BPF_K`): what a call to a kfunc the kernel lacks becomes;
/// the call clobbered r0..r5 anyway.
const MOV_R0_0: [u8; 8] = [0xb7, 0, 0, 0, 0, 0, 0, 0];

/// Byte offsets of the kfunc calls with immediate `placeholder`: code `BPF_JMP|BPF_CALL`,
/// src_reg `BPF_PSEUDO_KFUNC_CALL`, off 0.
fn call_sites(bytes: &[u8], placeholder: u32) -> Vec<usize> {
    let mut call = [0x85, 0x20, 0, 0, 0, 0, 0, 0];
    call[4..].copy_from_slice(&placeholder.to_le_bytes());
    bytes
        .windows(call.len())
        .enumerate()
        .filter(|(_, w)| *w == call)
        .map(|(i, _)| i)
        .collect()
}

fn set_imm(bytes: &mut [u8], at: usize, id: u32) {
    bytes[at + 4..at + 8].copy_from_slice(&id.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(placeholder: u32) -> Vec<u8> {
        let mut c = vec![0x85, 0x20, 0, 0];
        c.extend_from_slice(&placeholder.to_le_bytes());
        c
    }

    #[test]
    fn without_the_kernels_btf_the_guard_calls_become_no_ops_and_the_kill_stays_out() {
        let mut object = vec![0u8; 8];
        for p in [
            PREEMPT_DISABLE_PLACEHOLDER,
            KFUNC_PLACEHOLDER,
            PREEMPT_ENABLE_PLACEHOLDER,
        ] {
            object.extend(call(p));
        }
        let patched = patch(&object, None);
        assert!(!patched.preempt_guard && !patched.kernel_kill);
        let b = patched.bytes();
        assert_eq!(&b[8..16], &MOV_R0_0);
        assert_eq!(&b[16..24], &call(KFUNC_PLACEHOLDER)[..]);
        assert_eq!(&b[24..32], &MOV_R0_0);
        assert_eq!(b.len(), object.len());
    }
}
