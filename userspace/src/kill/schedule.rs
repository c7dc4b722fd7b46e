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

    /// Send, wait up to `t`, SIGKILL the survivors, wait for them to go (up to `t`, and at
    /// least [`KILL_REAP`]). `t` zero is no grace: the SIGKILL follows at once.
    pub fn timeout(sig: Signal, t: Duration) -> Self {
        let mut steps = vec![Step::Send(sig)];
        if !t.is_zero() {
            steps.push(Step::Wait(Some(t)));
        }
        steps.push(Step::Send(Signal::KILL));
        steps.push(Step::Wait(Some(t)));
        Self::with_reap_floor(steps)
    }

    /// A SIGKILL cannot be caught, but the kernel needs a moment to tear a process down: a
    /// wait right after a SIGKILL lasts at least [`KILL_REAP`] (it ends as soon as every
    /// target is gone), so "KILL, then wait 0" reports survivors only if they really stay.
    fn with_reap_floor(mut steps: Vec<Step>) -> Self {
        for i in 1..steps.len() {
            if let (Step::Send(Signal::KILL), Step::Wait(Some(t))) = (steps[i - 1], steps[i]) {
                steps[i] = Step::Wait(Some(t.max(KILL_REAP)));
            }
        }
        Self { steps }
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
            let t = parse_timeout(items[0])?.ok_or_else(|| bad("a lone item must be a timeout"))?;
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
            } else if let Some(t) = parse_timeout(item)? {
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
        Ok(Self::with_reap_floor(steps))
    }
}

/// The shortest wait after a SIGKILL (see [`Schedule::timeout`]).
pub const KILL_REAP: Duration = Duration::from_secs(5);

/// The longest wait a schedule accepts: anything longer is a typo, not a plan (and would
/// overflow the clock arithmetic of the wait).
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// A timeout item: a bare number of seconds, or a duration with units. `Ok(None)` when the
/// item is not a duration at all; an error when it is one, but longer than [`MAX_WAIT`].
fn parse_timeout(item: &str) -> Result<Option<Duration>> {
    let d = if !item.is_empty() && item.chars().all(|c| c.is_ascii_digit()) {
        // Seconds; more than u64 holds is still a duration, an absurd one.
        item.parse::<u64>().map_or(Duration::MAX, Duration::from_secs)
    } else if item.starts_with(|c: char| c.is_ascii_digit()) {
        match humantime::parse_duration(item) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => Duration::MAX,
            Err(_) => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    if d > MAX_WAIT {
        return Err(Error::Usage(format!(
            "duration {item:?} is too long (at most 366 days)"
        )));
    }
    Ok(Some(d))
}

/// Parses a `--timeout` duration (`10s`, `500ms`, or seconds).
pub fn parse_duration(text: &str) -> Result<Duration> {
    parse_timeout(text.trim())?
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
    fn no_grace_escalates_at_once_and_waits_for_the_kill() {
        let s = Schedule::timeout(Signal::TERM, Duration::ZERO);
        assert_eq!(
            s.steps,
            vec![
                Step::Send(Signal::TERM),
                Step::Send(Signal::KILL),
                Step::Wait(Some(KILL_REAP))
            ]
        );
        let s = Schedule::parse_retry("TERM/1/KILL/0", Signal::TERM).unwrap();
        assert_eq!(s.steps.last(), Some(&Step::Wait(Some(KILL_REAP))));
    }

    #[test]
    fn absurd_durations_are_usage_errors_not_panics() {
        for text in [
            "99999999999999999999",
            "18446744073709551615s",
            "400days",
            "9999999999999999999h",
        ] {
            assert!(matches!(parse_duration(text), Err(Error::Usage(_))), "{text}");
            assert!(
                matches!(
                    Schedule::parse_retry(&format!("TERM/{text}"), Signal::TERM),
                    Err(Error::Usage(_))
                ),
                "{text}"
            );
        }
        assert_eq!(parse_duration("366days").unwrap(), MAX_WAIT);
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
