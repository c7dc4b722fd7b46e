//! Process identity: a PID number plus its start time. Tags carry the start time the kernel
//! recorded; /proc reports it in clock ticks (field 22 of /proc/PID/stat). A process is the
//! tagged one only when the two name the same tick, so a recycled PID number never matches.
//! Every process bpfkill signals is opened as a pidfd first and checked after opening, so the
//! signal goes to exactly the process that was checked.

use std::{os::fd::OwnedFd, sync::OnceLock};

use procfs::process::{Process, Stat};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::error::{Error, Result};

/// Clock ticks per second of /proc times (`sysconf(_SC_CLK_TCK)`, USER_HZ).
pub fn ticks_per_second() -> u64 {
    static TPS: OnceLock<u64> = OnceLock::new();
    *TPS.get_or_init(|| procfs::ticks_per_second().max(1))
}

/// Nanoseconds per /proc clock tick.
pub fn ns_per_tick() -> u64 {
    1_000_000_000 / ticks_per_second()
}

/// Converts a kernel start time (ns since boot) to /proc clock ticks.
pub fn ns_to_ticks(ns: u64) -> u64 {
    ns / ns_per_tick()
}

/// Converts /proc clock ticks to ns since boot (tick precision).
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(ns_per_tick())
}

/// `/proc/PID/stat` of a process, or None when it does not exist.
pub fn stat(pid: u32) -> Option<Stat> {
    Process::new(pid as i32).ok()?.stat().ok()
}

/// Start time of `pid` in /proc ticks, or None when it does not exist.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.starttime)
}

/// True when the process has exited, though it still has a /proc entry: a zombie with no
/// live thread. (A leader that exited before its other threads shows `Z` too, but its process
/// lives on in them.)
pub fn is_dead(stat: &Stat) -> bool {
    matches!(stat.state, 'Z' | 'X' | 'x') && stat.num_threads <= 1
}

/// True when a tag's start time names the process whose /proc start time is `ticks`.
pub fn matches(tag_start_ns: u64, ticks: u64) -> bool {
    ns_to_ticks(tag_start_ns) == ticks
}

/// What became of a tagged PID.
#[derive(Debug)]
pub enum Identity {
    /// The tagged process is alive; the pidfd refers to it.
    Alive {
        /// Opened before the check, so it names the process that was checked.
        pidfd: OwnedFd,
        /// Its /proc stat, read after the pidfd was opened.
        stat: Box<Stat>,
    },
    /// No process has that number any more.
    Gone,
    /// Another process holds the number now (its start time differs).
    Recycled {
        /// Start time of the process that holds the number.
        found_ticks: u64,
    },
}

/// Opens `pid` as a pidfd and checks that it is the process whose start time is
/// `tag_start_ns`.
pub fn open_verified(pid: u32, tag_start_ns: u64) -> Result<Identity> {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return Ok(Identity::Gone);
    };
    let pidfd = match pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(Identity::Gone),
        // EINVAL: the number belongs to a thread, not a process: not ours.
        Err(rustix::io::Errno::INVAL) => return Ok(Identity::Gone),
        Err(e) => return Err(Error::io(format!("pidfd_open({pid})"), e.into())),
    };
    // Read after opening: if this still shows the tagged start time, the pidfd (which pins
    // the process it was opened on) refers to the tagged process.
    let Some(stat) = stat(pid) else {
        return Ok(Identity::Gone);
    };
    if !matches(tag_start_ns, stat.starttime) {
        return Ok(Identity::Recycled {
            found_ticks: stat.starttime,
        });
    }
    Ok(Identity::Alive {
        pidfd,
        stat: Box::new(stat),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversion_round_trips() {
        let t = ns_per_tick();
        assert!(matches(ticks_to_ns(1234), 1234));
        assert!(matches(ticks_to_ns(1234) + t - 1, 1234));
        assert!(!matches(ticks_to_ns(1234) + t, 1234));
    }

    #[test]
    fn own_start_time_matches_itself() {
        let me = std::process::id();
        let ticks = start_ticks(me).expect("own stat");
        match open_verified(me, ticks_to_ns(ticks)).expect("open self") {
            Identity::Alive { stat, .. } => assert_eq!(stat.pid as u32, me),
            other => panic!("expected alive, got {other:?}"),
        }
        match open_verified(me, ticks_to_ns(ticks + 1)).expect("open self") {
            Identity::Recycled { found_ticks } => assert_eq!(found_ticks, ticks),
            other => panic!("expected recycled, got {other:?}"),
        }
    }
}
