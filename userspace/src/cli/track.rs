//! `bpfkill track`: adopt a running process and its descendants.

use std::{io::Write, path::PathBuf};

use bpfkill::{
    lineage::adopt,
    sys::pidfile::PidSource,
    tracking::{PinPaths, Tracking},
    Error,
};

use super::exit;

pub fn run(
    paths: &PinPaths,
    service: &str,
    pid: Option<u32>,
    pidfile: Option<PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let root = match (pid, pidfile) {
        (Some(p), _) => PidSource::Pid(p),
        (None, Some(f)) => PidSource::Pidfile(f),
        (None, None) => return Err(Error::Usage("track needs --pid or --pidfile".into()).into()),
    };
    let mut tracking = Tracking::open(paths)?;
    let report = adopt::track(&mut tracking, service, &root)?;
    writeln!(
        out,
        "{service}: tracking PID {} and {} descendant(s) ({} adopted now, {} already tagged by the kernel)",
        report.root,
        report.adopted.len().saturating_sub(1) + report.already_tagged,
        report.adopted.len(),
        report.already_tagged
    )?;
    Ok(exit::OK)
}
