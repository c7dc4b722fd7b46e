//! `bpfkill run`: exec COMMAND as a service's main process (returns only when it cannot be
//! run), or run it as a job and report what it left behind.

use std::{io::Write, time::Duration};

use bpfkill::{
    job::{self, JobOptions, JobOutcome},
    lineage::run,
    sys::signal::Signal,
    text::escape,
    tracking::{PinPaths, Tracking},
    Error,
};

use super::args::RunArgs;

/// A job's default wait between its signal and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

pub fn run(paths: &PinPaths, args: &RunArgs, verbose: u8) -> anyhow::Result<u8> {
    if !args.is_job() {
        if args.grace.is_some() || args.signal.is_some() || args.require_tracking {
            return Err(Error::Usage(
                "--grace, --signal and --require-tracking are for a job: add --kill-on-exit, --keep-running or --time-limit".into(),
            )
            .into());
        }
        let Some(service) = &args.service else {
            return Err(Error::Usage(
                "run needs --service NAME (or --kill-on-exit, --keep-running or --time-limit to run a job)"
                    .into(),
            )
            .into());
        };
        let tracking = Tracking::open(paths)?;
        match run::run(tracking, service, &args.command)? {}
    }
    let opts = JobOptions {
        service: args.service.clone(),
        kill_on_exit: args.kill_on_exit,
        signal: args.signal.unwrap_or(Signal::TERM),
        grace: args.grace.unwrap_or(DEFAULT_GRACE),
        time_limit: args.time_limit,
        require_tracking: args.require_tracking,
    };
    let outcome = job::run(paths, &args.command, &opts)?;
    report(&outcome, verbose, &mut std::io::stderr().lock())?;
    Ok(outcome.exit_code())
}

/// What the job left, on stderr: nothing unless something needs saying (or `-v`).
fn report(outcome: &JobOutcome, verbose: u8, err: &mut impl Write) -> std::io::Result<()> {
    let Some(name) = outcome.service.as_deref().map(escape) else {
        return Ok(());
    };
    if verbose > 0 {
        writeln!(err, "bpfkill: job {name}: the command ended ({})", outcome.status)?;
    }
    if let Some(cleanup) = &outcome.cleanup {
        if verbose > 0 || cleanup.survivors > 0 {
            writeln!(
                err,
                "bpfkill: job {name}: {} process(es) signalled, {} survivor(s)",
                cleanup.signalled, cleanup.survivors
            )?;
        }
    }
    if outcome.leftovers > 0 {
        let how = if outcome.cleanup.is_some() {
            "still running after the cleanup"
        } else {
            "left running"
        };
        writeln!(
            err,
            "bpfkill: job {name}: {} process(es) {how}:",
            outcome.leftovers
        )?;
        err.write_all(outcome.leftovers_table.as_bytes())?;
        writeln!(err, "bpfkill: stop them with: bpfkill -s KILL --service {name}")?;
    }
    Ok(())
}
