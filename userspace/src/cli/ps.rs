//! `bpfkill ps`: the live listing, as a table, a tree or JSON.

use std::io::{BufWriter, IsTerminal, Write};

use bpfkill::{
    forensics::ps::{self, render},
    job::protocol::Request,
    lineage::registry,
    tracking::{PinPaths, Tracking},
    Error,
};

use super::{exit, through_daemon};

pub fn run(
    paths: &PinPaths,
    service: Option<&str>,
    tree: bool,
    wide: bool,
    escaped: bool,
    json: bool,
    stdout: &mut impl Write,
) -> anyhow::Result<u8> {
    let tracking = match Tracking::open(paths) {
        Ok(t) => t,
        Err(Error::Permission(why)) => {
            // An ordinary user: its own jobs, through the daemon.
            let req = Request::Ps {
                service: service.map(str::to_string),
                json,
            };
            let resp = through_daemon(paths, &req, why)?;
            stdout.write_all(resp.output.as_bytes())?;
            return Ok(exit::OK);
        }
        Err(e) => return Err(e.into()),
    };
    let query = ps::Query {
        service,
        escaped_only: escaped,
    };
    let entries = ps::list(&tracking, paths, &query)?;
    for svc in registry::list(&tracking) {
        let untagged = tracking.service_stats(svc.id).untagged;
        if untagged > 0 && service.is_none_or(|n| n == svc.name) {
            eprintln!("bpfkill: {}", registry::untagged_warning(&svc.name, untagged));
        }
    }
    let terminal = std::io::stdout().is_terminal();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    if json {
        // Indented for a person at a terminal, compact for a program.
        render::write_json(&entries, terminal, &mut out)?;
    } else if tree {
        let colour = terminal && std::env::var_os("NO_COLOR").is_none();
        render::write_tree(&tracking, &entries, colour, &mut out)?;
    } else {
        render::write_table(&entries, wide, &mut out)?;
    }
    out.flush()?;
    // The process ends now: freeing 10,000 entries one by one would only delay it.
    std::mem::forget(entries);
    Ok(exit::OK)
}
