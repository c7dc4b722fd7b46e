//! The kill (the bare form and `bpfkill kill`).

use std::io::Write;

use bpfkill::{
    config::{self, Config},
    kill::{
        self,
        resolve::{Discovery, Target},
        schedule::Schedule,
        KillRequest,
    },
    sys::signal::Signal,
    text::escape,
    tracking::{PinPaths, Tracking},
    Error,
};

use super::{args::KillArgs, exit};

/// The configuration, for a kill: a broken one is said on stderr but never blocks a kill.
fn configured(name: &str) -> Option<config::ServiceConfig> {
    let (path, required) = config::main_path(None);
    match Config::load(&path, required) {
        Ok(c) => c.services.get(name).cloned(),
        Err(e) => {
            eprintln!(
                "bpfkill: warning: configuration ignored: {}",
                escape(&e.to_string())
            );
            None
        }
    }
}

pub fn run(paths: &PinPaths, args: &KillArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    let Some(target) = args.target() else {
        return Err(Error::Usage(
            "nothing to signal: give --service NAME, --pid PID or --pidfile FILE".into(),
        )
        .into());
    };
    let explicit = args.schedule()?;
    let service_config = match &target {
        Target::Service(name) => configured(name),
        Target::Process(_) => None,
    };
    // A plain kill takes the service's configured `stop` (or `signal`).
    let schedule = match (explicit, &service_config) {
        (Some(s), _) => s,
        (None, Some(c)) => c.default_schedule()?.unwrap_or(Schedule::once(Signal::TERM)),
        (None, None) => Schedule::once(Signal::TERM),
    };
    let request = KillRequest {
        target,
        whom: args.whom,
        cgroup: args.cgroup.clone(),
        schedule,
        dry_run: args.dry_run,
        discovery: Discovery {
            pidfile: service_config.as_ref().and_then(|c| c.pidfile.clone()),
            unit: service_config.as_ref().and_then(|c| c.unit.clone()),
        },
    };
    let mut tracking = Tracking::open(paths)?;
    let report = kill::kill(&mut tracking, &request)?;
    if let Some(found) = &report.found {
        eprintln!("bpfkill: {}", escape(found));
    }
    let code = exit::of_verdict(report.verdict());
    if args.json {
        report.write_json(code, out)?;
    } else {
        report.write_human(out)?;
    }
    Ok(code)
}
