//! `bpfkill log`: the journal's history, optionally followed.

use std::io::{BufWriter, Write};

use bpfkill::{
    forensics::{journal, log},
    job::protocol::Request,
    lineage::registry,
    tracking::PinPaths,
};

use super::{args::LogArgs, exit, through_daemon};

pub fn run(paths: &PinPaths, args: &LogArgs, stdout: &mut impl Write) -> anyhow::Result<u8> {
    if let Some(name) = &args.service {
        registry::validate_name(name)?;
    }
    let filter = journal::Filter {
        service: args.service.clone(),
        pid: args.pid,
        since_ns: args.since.as_deref().map(log::parse_since).transpose()?,
    };
    let format = if args.json {
        log::Format::Json
    } else {
        log::Format::Human
    };
    let dir = &args.journal.journal_dir;
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let shown = if args.follow {
        log::follow(dir, &filter, format, &mut out)
    } else {
        log::show(dir, &filter, format, &mut out).map(|_| ())
    };
    match shown {
        // An ordinary user: the history of its own jobs, through the daemon.
        Err(bpfkill::Error::Permission(why)) if !args.follow && args.pid.is_none() => {
            let req = Request::Log {
                service: args.service.clone(),
                since: args.since.clone(),
                json: args.json,
            };
            out.write_all(through_daemon(paths, &req, why)?.output.as_bytes())?;
        }
        other => other?,
    }
    out.flush()?;
    Ok(exit::OK)
}
