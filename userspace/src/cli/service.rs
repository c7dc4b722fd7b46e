//! The configuration and the service registry: `check-config`, `reload`, `forget`.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use bpfkill::{
    config::{self, Config},
    lineage::registry,
    text::Escaped,
    tracking::{PinPaths, Tracking},
    Error,
};
use bpfkill_common::{daemon_flags, user::c_str};

use super::exit;

/// `check-config [PATH]`: parse and validate, load nothing.
pub fn check(path: Option<&Path>, out: &mut impl Write) -> anyhow::Result<u8> {
    let (path, required) = config::main_path(path);
    let config = Config::load(&path, required)?;
    if config.files.is_empty() {
        writeln!(
            out,
            "no configuration ({} does not exist): no rules",
            Escaped(&path.display().to_string())
        )?;
    }
    for f in &config.files {
        writeln!(out, "{}: ok", Escaped(&f.display().to_string()))?;
    }
    writeln!(
        out,
        "{} service(s): {}",
        config.services.len(),
        config.services.keys().cloned().collect::<Vec<_>>().join(", ")
    )?;
    Ok(exit::OK)
}

/// How long `reload` waits for the daemon to answer.
const RELOAD_LIMIT: Duration = Duration::from_secs(30);

/// `reload`: SIGHUP to the pin directory's daemon, then its verdict.
pub fn reload(paths: &PinPaths, out: &mut impl Write) -> anyhow::Result<u8> {
    let tracking = Tracking::open(paths)?;
    let Some(before) = tracking.running_daemon() else {
        return Err(Error::Usage(format!(
            "no bpfkill daemon runs for {}: nothing to reload",
            paths.root().display()
        ))
        .into());
    };
    let pid = rustix::process::Pid::from_raw(before.pid as i32)
        .ok_or_else(|| Error::Usage("the daemon's PID is invalid".into()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .map_err(|e| Error::io(format!("signal the daemon (PID {})", before.pid), e.into()))?;
    // The daemon answers by rewriting its state: a new generation, or a failed reload.
    let deadline = Instant::now() + RELOAD_LIMIT;
    loop {
        let now = tracking.daemon_state();
        if now.loaded_unix_ns != before.loaded_unix_ns {
            if now.flags & daemon_flags::RELOAD_FAILED != 0 {
                writeln!(
                    out,
                    "reload failed, the previous rules stay: {}",
                    Escaped(&c_str(&now.error))
                )?;
                return Ok(exit::CONFIG);
            }
            writeln!(out, "reloaded (configuration #{})", now.generation)?;
            return Ok(exit::OK);
        }
        if Instant::now() >= deadline || tracking.running_daemon().is_none() {
            return Err(Error::Usage(format!(
                "the daemon (PID {}) did not answer the reload",
                before.pid
            ))
            .into());
        }
        // The daemon has no event for "state rewritten": a short poll with a deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `forget --service NAME`.
pub fn forget(paths: &PinPaths, name: &str, out: &mut impl Write) -> anyhow::Result<u8> {
    let mut tracking = Tracking::open(paths)?;
    let svc = registry::forget(&mut tracking, name)?;
    writeln!(
        out,
        "{} forgotten (its history stays in the journal)",
        Escaped(&svc.name)
    )?;
    Ok(exit::OK)
}
