//! `bpfkill log`: the history of tracked processes from the journal the daemon writes,
//! including processes that have long exited, optionally followed live.

use std::{
    io::{self, Write},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::journal::{self, Filter, Record};
use crate::{
    error::{Error, Result},
    text::Escaped,
};

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One readable line per record.
    Human,
    /// One JSON object per line.
    Json,
}

/// Parses `--since`: a duration back from now (`90s`, `1h`, `2days`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<u64> {
    let t = match humantime::parse_duration(text) {
        Ok(d) => SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            Error::Usage(format!(
                "invalid --since {text:?}: give a duration such as 1h or 30min, or a time such as 2026-11-24T10:00:00Z"
            ))
        })?,
    };
    Ok(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64))
}

fn write_record(r: &Record, format: Format, out: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Human => writeln!(out, "{}", r.human()),
        Format::Json => {
            serde_json::to_writer(&mut *out, r)?;
            writeln!(out)
        }
    }
}

fn warn_skipped(skipped: &[String]) {
    for s in skipped {
        eprintln!("bpfkill: warning: journal: {s}");
    }
}

/// Prints the matching history; returns how many records were printed.
pub fn show(dir: &Path, filter: &Filter, format: Format, out: &mut impl Write) -> Result<usize> {
    journal::ensure_dir_or_absent(dir)?;
    let outcome = journal::read_all(dir)?;
    warn_skipped(&outcome.skipped);
    if !dir.join(journal::ACTIVE_FILE).exists() {
        eprintln!(
            "bpfkill: no journal in {} (the journal is written by `bpfkill daemon`)",
            Escaped(&dir.display().to_string())
        );
    }
    let mut n = 0;
    for r in outcome.records.iter().filter(|r| filter.matches(r)) {
        write_record(r, format, out).map_err(|e| Error::io("write the log", e))?;
        n += 1;
    }
    out.flush().map_err(|e| Error::io("write the log", e))?;
    Ok(n)
}

/// Prints the matching history, then follows the journal, printing new records as the daemon
/// writes them, until interrupted or stdout closes.
pub fn follow(dir: &Path, filter: &Filter, format: Format, out: &mut impl Write) -> Result<()> {
    journal::ensure_dir_or_absent(dir)?;
    // Start following before reading, so nothing written in between is missed (a record may
    // then show twice; the follower's first batch drops what the history already printed).
    let changes = Changes::watch(dir);
    let mut follower = journal::Follower::new(dir)?;
    let outcome = journal::read_all(dir)?;
    warn_skipped(&outcome.skipped);
    let last_printed = outcome.records.last().map(|r| r.time_ns).unwrap_or(0);
    for r in outcome.records.iter().filter(|r| filter.matches(r)) {
        if write_record(r, format, out).is_err() {
            return Ok(());
        }
    }
    let mut first = true;
    loop {
        if out.flush().is_err() {
            return Ok(()); // the reader went away (e.g. `| head`)
        }
        let batch = follower.poll()?;
        warn_skipped(&follower.take_skipped());
        for r in batch.iter().filter(|r| filter.matches(r)) {
            if first && r.time_ns <= last_printed {
                continue;
            }
            if write_record(r, format, out).is_err() {
                return Ok(());
            }
        }
        first = false;
        changes.wait();
    }
}

/// Wakes the follower when the journal directory changes (inotify), so new records print as
/// soon as they are written; without inotify, a short timer.
struct Changes {
    inotify: Option<std::os::fd::OwnedFd>,
}

impl Changes {
    /// A longest wait with inotify (a file replaced in a way inotify does not report, such
    /// as a journal directory mounted over, is still noticed).
    const CEILING: Duration = Duration::from_secs(1);
    /// The timer without inotify.
    const TICK: Duration = Duration::from_millis(100);

    fn watch(dir: &Path) -> Changes {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .and_then(|fd| {
                inotify::add_watch(
                    &fd,
                    dir,
                    WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::MOVED_TO,
                )?;
                Ok(fd)
            })
            .map_err(|e| tracing::debug!("log --follow: no inotify ({e}), polling"))
            .ok();
        Changes { inotify }
    }

    /// Blocks until the directory changes (or the ceiling passes), then consumes the
    /// notifications.
    fn wait(&self) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let Some(fd) = &self.inotify else {
            std::thread::sleep(Self::TICK);
            return;
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let ceiling = Timespec {
            tv_sec: Self::CEILING.as_secs() as i64,
            tv_nsec: 0,
        };
        if poll(&mut fds, Some(&ceiling)).unwrap_or(0) == 0 {
            return;
        }
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        // Non-blocking: reads until the queue is empty (or fails for any other reason).
        while rustix::io::read(fd, &mut buf).is_ok_and(|(done, _)| !done.is_empty()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_times() {
        let hour_ago = parse_since("1h").unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(now - hour_ago >= 3_600_000_000_000 && now - hour_ago < 3_700_000_000_000);
        assert_eq!(parse_since("1970-01-01T00:00:10Z").unwrap(), 10_000_000_000);
        assert!(matches!(parse_since("yesterday-ish"), Err(Error::Usage(_))));
    }
}
