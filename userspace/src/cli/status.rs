//! `bpfkill status`: exit 0 only when tracking is live.

use std::io::Write;

use bpfkill::{forensics::status, tracking::PinPaths};

use super::exit;

pub fn run(paths: &PinPaths, json: bool, out: &mut impl Write) -> anyhow::Result<u8> {
    let s = status::gather(paths)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &s)?;
        writeln!(out)?;
    } else {
        status::write_human(&s, out)?;
    }
    Ok(if !s.live || !s.ready {
        exit::NOT_LOADED
    } else if s.daemon.as_ref().is_some_and(|d| d.reload_error.is_some()) {
        exit::DEGRADED
    } else {
        exit::OK
    })
}
