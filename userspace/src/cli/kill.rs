//! The kill (the bare form and `bpfkill kill`).

use std::io::Write;

use bpfkill::{
    kill::{self, KillRequest},
    tracking::{PinPaths, Tracking},
    Error,
};

use super::{args::KillArgs, exit};

pub fn run(paths: &PinPaths, args: &KillArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    let Some(target) = args.target() else {
        return Err(Error::Usage(
            "nothing to signal: give --service NAME, --pid PID or --pidfile FILE".into(),
        )
        .into());
    };
    let request = KillRequest {
        target,
        whom: args.whom,
        cgroup: args.cgroup.clone(),
        schedule: args.schedule()?,
        dry_run: args.dry_run,
    };
    let mut tracking = Tracking::open(paths)?;
    let report = kill::kill(&mut tracking, &request)?;
    let code = exit::of_verdict(report.verdict());
    if args.json {
        report.write_json(code, out)?;
    } else {
        report.write_human(out)?;
    }
    Ok(code)
}
