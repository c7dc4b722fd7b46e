//! The kill (the bare form and `bpfkill kill`).

use std::{io::Write, path::PathBuf};

use bpfkill::{
    config::{self, Config},
    job::protocol::Request,
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

use super::{args::KillArgs, exit, through_daemon};

/// The configuration, for a kill: `BPFKILL_CONFIG`, else the one the running daemon loaded
/// (`daemon --config PATH`), else the default. A broken one is said on stderr but never
/// blocks a kill.
fn configured(name: &str, daemon_config: Option<PathBuf>) -> Option<config::ServiceConfig> {
    let (path, required) = match daemon_config {
        Some(p) if std::env::var_os(config::PATH_ENV).is_none() => (p, false),
        _ => config::main_path(None),
    };
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
    let tracking = Tracking::open(paths);
    let daemon_config = tracking
        .as_ref()
        .ok()
        .and_then(Tracking::running_daemon)
        .map(|d| PathBuf::from(bpfkill_common::user::c_str(&d.config).into_owned()))
        .filter(|p| !p.as_os_str().is_empty());
    let service_config = match &target {
        Target::Service(name) => configured(name, daemon_config),
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
        for_user: None,
        // --json and -v report every process's full evidence, read before any signal.
        evidence_first: args.json || tracing::enabled!(tracing::Level::INFO),
    };
    let mut tracking = match tracking {
        Ok(t) => t,
        Err(Error::Permission(why)) => return through_daemon_kill(paths, args, &request, why, out),
        Err(e) => return Err(e.into()),
    };
    let report = kill::kill(&mut tracking, &request)?;
    if let Some(found) = &report.found {
        eprintln!("bpfkill: {}", escape(found));
    }
    let code = exit::of_verdict(report.verdict());
    // One write per 8 KiB, not one per process line.
    let mut out = std::io::BufWriter::new(out);
    if args.json {
        report.write_json(code, &mut out)?;
    } else {
        report.write_human(&mut out)?;
    }
    out.flush()?;
    Ok(code)
}

/// An ordinary user's kill of one of its jobs, through the daemon: a signal, and with
/// `--timeout` a SIGKILL of the survivors after it.
fn through_daemon_kill(
    paths: &PinPaths,
    args: &KillArgs,
    request: &KillRequest,
    why: String,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let Target::Service(service) = &request.target else {
        return Err(Error::Forbidden(format!(
            "{why}: permission denied (an ordinary user signals only its own jobs, by --service NAME)"
        ))
        .into());
    };
    if args.retry.is_some() || args.wait || args.dry_run || args.cgroup.is_some() {
        return Err(
            Error::Usage("through the daemon a kill takes -s SIGNAL and --timeout only".into()).into(),
        );
    }
    let timeout_ms = args
        .timeout
        .as_deref()
        .map(bpfkill::kill::schedule::parse_duration)
        .transpose()?
        .map(|d| d.as_millis() as u64);
    let req = Request::Kill {
        service: service.clone(),
        signal: args.signal.unwrap_or(Signal::TERM).number(),
        timeout_ms,
        json: args.json,
    };
    let resp = through_daemon(paths, &req, why)?;
    out.write_all(resp.output.as_bytes())?;
    Ok(resp.verdict.map_or(exit::OK, exit::of_verdict))
}
