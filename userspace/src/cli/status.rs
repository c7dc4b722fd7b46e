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
    Ok(if s.live { exit::OK } else { exit::NOT_LOADED })
}
