//! `bpfkill log`: the journal's history, optionally followed.

use std::{
    io::{BufWriter, Write},
    path::Path,
};

use bpfkill::{
    forensics::{journal, log},
    lineage::registry,
};

use super::exit;

pub fn run(
    dir: &Path,
    service: Option<String>,
    pid: Option<u32>,
    since: Option<String>,
    json: bool,
    follow: bool,
    stdout: &mut impl Write,
) -> anyhow::Result<u8> {
    if let Some(name) = &service {
        registry::validate_name(name)?;
    }
    let filter = journal::Filter {
        service,
        pid,
        since_ns: since.as_deref().map(log::parse_since).transpose()?,
    };
    let format = if json {
        log::Format::Json
    } else {
        log::Format::Human
    };
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    if follow {
        log::follow(dir, &filter, format, &mut out)?;
    } else {
        log::show(dir, &filter, format, &mut out)?;
    }
    out.flush()?;
    Ok(exit::OK)
}
