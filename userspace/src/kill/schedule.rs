//! Escalation schedules: what to send, and how long to wait for the targets to go, in order.
//! `--wait`, `--timeout` and start-stop-daemon style `--retry` all become a [`Schedule`].

use std::time::Duration;

use crate::{
    error::{Error, Result},
    sys::signal::Signal,
};

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send a signal to every live target (new ones included).
    Send(Signal),
    /// Wait for every signalled target to exit: for this long, or forever.
    Wait(Option<Duration>),
}

/// A list of steps. A schedule that ends with a wait reports survivors (exit code 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Send once, do not wait.
    pub fn once(sig: Signal) -> Self {
        Self {
            steps: vec![Step::Send(sig)],
        }
    }

    /// Send, then wait until every target is gone.
    pub fn wait_forever(sig: Signal) -> Self {
        Self {
            steps: vec![Step::Send(sig), Step::Wait(None)],
        }
    }

    /// Send, wait up to `t`, SIGKILL the survivors, wait up to `t` again.
    pub fn timeout(sig: Signal, t: Duration) -> Self {
        Self {
            steps: vec![
                Step::Send(sig),
                Step::Wait(Some(t)),
                Step::Send(Signal::KILL),
                Step::Wait(Some(t)),
            ],
        }
    }

    /// True when the schedule waits for the targets to go.
    pub fn waits(&self) -> bool {
        matches!(self.steps.last(), Some(Step::Wait(_)))
    }

    /// Parses a start-stop-daemon style schedule: `TERM/30/KILL/5`, `-TERM/30/-9/5`,
    /// `TERM/500ms/forever`... A lone timeout `N` means `SIGNAL/N/KILL/N`. Timeouts are seconds
    /// or durations with units (`500ms`, `2s`, `1m`). `forever` repeats the rest of the
    /// schedule (the steps before it) until the targets are gone.
    pub fn parse_retry(text: &str, default_signal: Signal) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("invalid --retry schedule {text:?}: {why}"));
        let items: Vec<&str> = text.split('/').map(str::trim).collect();
        if items.iter().any(|i| i.is_empty()) {
            return Err(bad("empty item"));
        }
        if items.len() == 1 {
            let t = parse_timeout(items[0]).ok_or_else(|| bad("a lone item must be a timeout"))?;
            return Ok(Self::timeout(default_signal, t));
        }
        let mut steps = Vec::new();
        let mut forever = false;
        for (i, item) in items.iter().enumerate() {
            if item.eq_ignore_ascii_case("forever") {
                if i + 1 != items.len() {
                    return Err(bad("`forever` must come last"));
                }
                forever = true;
            } else if let Some(t) = parse_timeout(item) {
                steps.push(Step::Wait(Some(t)));
            } else {
                let name = item.strip_prefix('-').unwrap_or(item);
                let sig: Signal = name
                    .parse()
                    .map_err(|_| bad(&format!("{item:?} is neither a signal nor a timeout")))?;
                steps.push(Step::Send(sig));
            }
        }
        if !steps.iter().any(|s| matches!(s, Step::Send(_))) {
            return Err(bad("no signal"));
        }
        if forever {
            // The steps repeat until the targets are gone: a bounded number of rounds is
            // unrolled; the last wait is unbounded.
            let round = steps.clone();
            for _ in 0..63 {
                steps.extend_from_slice(&round);
            }
            steps.push(Step::Wait(None));
        }
        Ok(Self { steps })
    }
}

/// A timeout item: a bare number of seconds, or a duration with units.
fn parse_timeout(item: &str) -> Option<Duration> {
    if let Ok(secs) = item.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if item.starts_with(|c: char| c.is_ascii_digit()) {
        return humantime::parse_duration(item).ok();
    }
    None
}

/// Parses a `--timeout` duration (`10s`, `500ms`, or seconds).
pub fn parse_duration(text: &str) -> Result<Duration> {
    parse_timeout(text.trim())
        .ok_or_else(|| Error::Usage(format!("invalid duration {text:?} (e.g. 10s, 500ms, 2m)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Step = |s| Step::Wait(Some(Duration::from_secs(s)));

    #[test]
    fn start_stop_daemon_forms() {
        let s = Schedule::parse_retry("TERM/30/KILL/5", Signal::TERM).unwrap();
        assert_eq!(
            s.steps,
            vec![Step::Send(Signal::TERM), S(30), Step::Send(Signal::KILL), S(5)]
        );
        let s = Schedule::parse_retry("-HUP/1/-9/2", Signal::TERM).unwrap();
        assert_eq!(s.steps[0], Step::Send("HUP".parse().unwrap()));
        assert_eq!(s.steps[2], Step::Send(Signal::KILL));
        let s = Schedule::parse_retry("5", Signal::INT_FOR_TESTS).unwrap();
        assert_eq!(
            s.steps,
            vec![
                Step::Send(Signal::INT_FOR_TESTS),
                S(5),
                Step::Send(Signal::KILL),
                S(5)
            ]
        );
        let s = Schedule::parse_retry("TERM/500ms", Signal::TERM).unwrap();
        assert_eq!(s.steps[1], Step::Wait(Some(Duration::from_millis(500))));
        assert!(s.waits());
    }

    #[test]
    fn forever_repeats_and_ends_unbounded() {
        let s = Schedule::parse_retry("TERM/1/forever", Signal::TERM).unwrap();
        assert_eq!(s.steps.last(), Some(&Step::Wait(None)));
        assert_eq!(
            s.steps.iter().filter(|st| matches!(st, Step::Send(_))).count(),
            64
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "TERM//5", "FOO/5", "5/10", "forever/TERM", "TERM/x"] {
            let err = Schedule::parse_retry(bad, Signal::TERM).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{bad}");
        }
        assert!(parse_duration("10s").is_ok());
        assert!(parse_duration("ten").is_err());
    }
}
