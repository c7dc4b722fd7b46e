//! `bpfkill status`: exit 0 only when tracking is live (and, with `--daemon`, a daemon runs
//! and is ready); 1 when degraded.

use std::io::Write;

use bpfkill::{forensics::status, tracking::PinPaths};

use super::exit;

pub fn run(paths: &PinPaths, json: bool, require_daemon: bool, out: &mut impl Write) -> anyhow::Result<u8> {
    let s = status::gather(paths)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &s)?;
        writeln!(out)?;
    } else {
        status::write_human(&s, out)?;
    }
    Ok(if require_daemon && s.daemon.is_none() {
        exit::NOT_LOADED
    } else {
        match s.health {
            "ok" => exit::OK,
            "degraded" => exit::DEGRADED,
            _ => exit::NOT_LOADED,
        }
    })
}
