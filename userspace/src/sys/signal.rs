//! Signals: parsing names the way kill(1), systemctl and start-stop-daemon users write them,
//! listing them, and sending them through a pidfd.

use std::{fmt, os::fd::AsFd, str::FromStr};

use crate::error::{Error, Result};

/// Classic signals, by number (index + 1).
const NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
    "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
    "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// Aliases some tools accept.
const ALIASES: [(&str, i32); 3] = [("IOT", 6), ("POLL", 29), ("CLD", 17)];

/// A signal number, classic or real-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGKILL.
    pub const KILL: Signal = Signal(bpfkill_common::SIGKILL as i32);
    /// SIGTERM.
    pub const TERM: Signal = Signal(15);
    /// SIGINT (used by tests).
    #[cfg(test)]
    pub const INT_FOR_TESTS: Signal = Signal(2);

    /// The lowest real-time signal available to applications (glibc reserves two).
    pub fn rtmin() -> i32 {
        libc::SIGRTMIN()
    }

    /// The highest real-time signal.
    pub fn rtmax() -> i32 {
        libc::SIGRTMAX()
    }

    /// A signal from its number; None when out of range.
    pub fn from_number(n: i32) -> Option<Self> {
        ((1..=31).contains(&n) || (Self::rtmin()..=Self::rtmax()).contains(&n)).then_some(Signal(n))
    }

    /// The raw number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The name without the SIG prefix: `KILL`, `RTMIN+3`.
    pub fn short_name(self) -> String {
        match self.0 {
            n @ 1..=31 => NAMES[(n - 1) as usize].to_string(),
            n if n == Self::rtmin() => "RTMIN".into(),
            n if n == Self::rtmax() => "RTMAX".into(),
            n => format!("RTMIN+{}", n - Self::rtmin()),
        }
    }

    /// The full name: `SIGKILL`.
    pub fn name(self) -> String {
        format!("SIG{}", self.short_name())
    }

    /// Name of a signal number as the kernel reports it (for exit statuses); numbers outside
    /// the known range are printed as numbers.
    pub fn name_of(n: i32) -> String {
        Self::from_number(n)
            .map(|s| s.name())
            .unwrap_or_else(|| n.to_string())
    }

    /// Sends the signal to the process behind `pidfd`.
    pub fn send(self, pidfd: impl AsFd) -> std::io::Result<()> {
        // SAFETY: `self.0` is a valid signal number (checked by every constructor).
        let sig = unsafe { rustix::process::Signal::from_raw_unchecked(self.0) };
        rustix::process::pidfd_send_signal(pidfd, sig).map_err(Into::into)
    }

    /// Every signal, for `bpfkill -l`.
    pub fn all() -> impl Iterator<Item = Signal> {
        (1..=31).chain(Self::rtmin()..=Self::rtmax()).map(Signal)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Signal {
    type Err = Error;

    /// Accepts `SIGKILL`, `KILL`, `kill`, `9`, `SIGRTMIN+3`, `RTMIN+3`, `RTMAX-1`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Usage(format!("unknown signal {s:?} (see `bpfkill -l`)"));
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(bad);
        }
        let upper = t.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(i) = NAMES.iter().position(|n| *n == name) {
            return Ok(Signal(i as i32 + 1));
        }
        if let Some((_, n)) = ALIASES.iter().find(|(a, _)| *a == name) {
            return Ok(Signal(*n));
        }
        let rt = |base: i32, rest: &str| -> Option<Signal> {
            let n = if rest.is_empty() {
                base
            } else if let Some(off) = rest.strip_prefix('+') {
                base.checked_add(off.parse().ok()?)?
            } else if let Some(off) = rest.strip_prefix('-') {
                base.checked_sub(off.parse().ok()?)?
            } else {
                return None;
            };
            (Signal::rtmin()..=Signal::rtmax())
                .contains(&n)
                .then_some(Signal(n))
        };
        if let Some(rest) = name.strip_prefix("RTMIN") {
            return rt(Signal::rtmin(), rest).ok_or_else(bad);
        }
        if let Some(rest) = name.strip_prefix("RTMAX") {
            return rt(Signal::rtmax(), rest).ok_or_else(bad);
        }
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for s in ["SIGKILL", "KILL", "kill", "9", "SigKill", " sigkill "] {
            assert_eq!(s.parse::<Signal>().unwrap(), Signal::KILL, "{s}");
        }
        let rt3 = Signal::from_number(Signal::rtmin() + 3).unwrap();
        for s in ["SIGRTMIN+3", "RTMIN+3", "rtmin+3"] {
            assert_eq!(s.parse::<Signal>().unwrap(), rt3, "{s}");
        }
        assert_eq!("RTMAX-1".parse::<Signal>().unwrap().number(), Signal::rtmax() - 1);
        assert_eq!("TERM".parse::<Signal>().unwrap(), Signal::TERM);
    }

    #[test]
    fn rejects_unknown() {
        for s in ["SIGFOO", "0", "65", "RTMIN+99", "", "-9", "RTMIN+x"] {
            assert!(s.parse::<Signal>().is_err(), "{s}");
        }
        assert!(matches!("SIGFOO".parse::<Signal>(), Err(Error::Usage(_))));
    }

    #[test]
    fn names_round_trip() {
        for sig in Signal::all() {
            assert_eq!(sig.name().parse::<Signal>().unwrap(), sig);
        }
        assert_eq!(Signal::KILL.name(), "SIGKILL");
    }
}
