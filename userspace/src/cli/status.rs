//! `bpfkill status`: exit 0 only when tracking is live (and, with `--daemon`, a daemon runs
//! and is ready); 1 when degraded. `bpfkill doctor`: 0 when bpfkill works on this host, 69
//! when a required kernel feature is missing.

use std::io::Write;

use bpfkill::{
    forensics::{doctor, status},
    tracking::PinPaths,
    Error,
};

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

pub fn doctor(paths: &PinPaths, json: bool, out: &mut impl Write) -> anyhow::Result<u8> {
    if !rustix::process::geteuid().is_root() {
        return Err(
            Error::Permission("doctor loads tracking to check the kernel: run it as root".into()).into(),
        );
    }
    let scratch = PinPaths::at(format!(
        "{}/bpfkill-doctor-{}",
        bpfkill::sys::mounts::BPFFS,
        std::process::id()
    ));
    let r = doctor::diagnose(paths, &scratch);
    if json {
        serde_json::to_writer_pretty(&mut *out, &r)?;
        writeln!(out)?;
    } else {
        doctor::write_human(&r, out)?;
    }
    Ok(if r.usable { exit::OK } else { exit::NOT_LOADED })
}
