//! The in-kernel kill (Linux 6.13+): the `bpfkill_reap` task iterator sends SIGKILL to every
//! doomed, tagged process whose exact start time matches its tag, with the
//! `bpf_send_signal_task` kfunc, in one read(2) for a whole service.
//!
//! The loader aims the program's kfunc call at the running kernel ([`super::kfuncs`]); a
//! kernel without the kfunc gets no reap program, and kills signal from userspace.

use std::{fs::File, io::Read};

use bpfkill_common::{programs::REAP, user::read_record, Reaped};

use super::pins::PinPaths;
use crate::error::{Error, Result};

/// Environment variable that turns the in-kernel kill off for one bpfkill process (the
/// benchmark and the tests compare both paths).
pub const DISABLE_ENV: &str = "BPFKILL_NO_KERNEL_KILL";

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
