//! Process identity: a PID number plus its start time. Tags carry the start time the kernel
//! recorded; /proc reports it in clock ticks (field 22 of /proc/PID/stat). A process is the
//! tagged one only when the two name the same tick, so a recycled PID number never matches.
//! Every process bpfkill signals is opened as a pidfd first and checked after opening, so the
//! signal goes to exactly the process that was checked.

use std::os::fd::OwnedFd;

use procfs::process::Stat;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::{
    error::{Error, Result},
    sys::{clock::ns_to_ticks, procs::stat},
};

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
    use crate::sys::{clock::ticks_to_ns, procs::start_ticks};

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
