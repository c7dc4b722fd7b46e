//! Exit codes: the one place that maps the library's errors and a kill's verdict to numbers
//! (documented in `--help` and README).

use bpfkill::{kill::report::Verdict, Error};

/// Every target was signalled (and is gone, when waiting was asked for).
pub const OK: u8 = 0;
/// Nothing matched: no live process of the service or PID.
pub const NOTHING_MATCHED: u8 = 1;
/// `status`: tracking runs, but not as configured (the last reload failed, or the journal
/// cannot be written).
pub const DEGRADED: u8 = 1;
/// Some targets could not be signalled.
pub const PARTIAL: u8 = 2;
/// Survivors remain after the timeout or retry schedule.
pub const SURVIVORS: u8 = 3;
/// Bad command line or input.
pub const USAGE: u8 = 64;
/// A file the user named does not exist (a pidfile, a cgroup, a journal).
pub const NO_INPUT: u8 = 66;
/// A configuration file is wrong (EX_CONFIG).
pub const CONFIG: u8 = 78;
/// Tracking is not loaded.
pub const NOT_LOADED: u8 = 69;
/// `daemon`: another daemon already runs for the pin directory or writes the journal
/// (EX_TEMPFAIL).
pub const ALREADY_RUNNING: u8 = 75;
/// Internal or operating-system failure.
pub const SOFTWARE: u8 = 70;
/// Not permitted (bpfkill needs root).
pub const NO_PERMISSION: u8 = 77;
/// `run`: the command could not be executed (as in shells).
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found (as in shells).
pub const NOT_FOUND: u8 = 127;

/// The text `--help` ends with.
pub const HELP: &str = "\
Exit codes:
  0   every target was signalled (by bpfkill, or by the kernel during a SIGKILL)
  1   nothing matched (no live process of the service, unknown service)
  2   some targets could not be signalled
  3   survivors remain after the timeout or retry schedule
  64  usage error (bad option, signal, service name or input)
  66  a named file does not exist (pidfile, cgroup, journal directory)
  69  tracking is not loaded (start `bpfkill daemon` or `bpfkill load`)
  70  internal or operating-system failure
  75  `daemon`: another daemon already runs for these pins or writes this journal
  77  permission denied (bpfkill needs root)
  78  a configuration file is wrong (file, line and reason are printed)
`bpfkill run` exits with its command's status (126/127 when it cannot be executed).
`bpfkill status` exits 0 when tracking is live and the daemon (if any) has applied its
configuration, 1 when degraded (the last reload failed and the previous rules stay, or the
journal cannot be written), 69 otherwise (`--daemon`: also when no daemon runs).";

/// The exit code of a library error, by its kind.
pub fn of_error(e: &Error) -> u8 {
    match e {
        Error::NotLoaded(_) => NOT_LOADED,
        Error::AlreadyRunning(_) => ALREADY_RUNNING,
        Error::Usage(_) | Error::Refused(_) => USAGE,
        Error::NoInput(_) => NO_INPUT,
        Error::Config { .. } => CONFIG,
        Error::UnknownService(_)
        | Error::ServiceNotFound { .. }
        | Error::NoSuchProcess(_)
        | Error::NotTracked(_) => NOTHING_MATCHED,
        Error::Permission(_) | Error::Forbidden(_) => NO_PERMISSION,
        Error::NothingMatched(_) => NOTHING_MATCHED,
        Error::Remote(_) => SOFTWARE,
        Error::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound => NOT_FOUND,
        Error::Exec { .. } => CANNOT_EXECUTE,
        Error::Unsupported(_)
        | Error::Io { .. }
        | Error::Map { .. }
        | Error::Ebpf { .. }
        | Error::Object(_) => SOFTWARE,
    }
}

/// The exit code of a kill's verdict.
pub fn of_verdict(v: Verdict) -> u8 {
    match v {
        Verdict::Done => OK,
        Verdict::NothingMatched => NOTHING_MATCHED,
        Verdict::Partial => PARTIAL,
        Verdict::Survivors => SURVIVORS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_documented_codes() {
        assert_eq!(of_error(&Error::Usage("x".into())), USAGE);
        assert_eq!(of_error(&Error::NotLoaded("/x".into())), NOT_LOADED);
        assert_eq!(of_error(&Error::Permission("x".into())), NO_PERMISSION);
        let missing = Error::Exec {
            program: "x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(of_error(&missing), NOT_FOUND);
        assert_eq!(of_verdict(Verdict::Survivors), SURVIVORS);
        for code in [
            OK,
            NOTHING_MATCHED,
            PARTIAL,
            SURVIVORS,
            USAGE,
            NOT_LOADED,
            SOFTWARE,
            NO_PERMISSION,
        ] {
            assert!(HELP.contains(&format!("  {code:<2}  ")), "{code} undocumented");
        }
    }
}
