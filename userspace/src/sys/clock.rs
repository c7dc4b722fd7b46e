//! Clocks: the kernel records start times and events in `CLOCK_BOOTTIME` nanoseconds, /proc
//! reports start times in clock ticks (USER_HZ), and people read wall-clock time. Every
//! conversion between the three lives here.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustix::time::{clock_gettime, ClockId, Timespec};

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

/// True when two boot-time ns values fall in the same /proc tick (what /proc can tell apart).
pub fn same_tick(a_ns: u64, b_ns: u64) -> bool {
    ns_to_ticks(a_ns) == ns_to_ticks(b_ns)
}

fn ns_of(t: Timespec) -> u64 {
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// `CLOCK_BOOTTIME` now, in ns (the clock of the kernel programs' timestamps).
pub fn boot_now_ns() -> u64 {
    ns_of(clock_gettime(ClockId::Boottime))
}

/// Wall-clock ns since the Unix epoch at boot-time 0: add a boot-time ns value to get its
/// wall-clock time. Read once per call; callers converting many values keep it.
pub fn boot_epoch_ns() -> u64 {
    let real = ns_of(clock_gettime(ClockId::Realtime));
    real.saturating_sub(boot_now_ns())
}

/// Wall-clock ns since the Unix epoch of the kernel's recorded boot time (`btime` in
/// /proc/stat, whole seconds, as procps uses it): unlike [`boot_epoch_ns`] it is the same
/// in every process, so process start times shown by two runs agree to the digit. Falls back
/// to [`boot_epoch_ns`] when /proc/stat has no `btime`.
pub fn boot_time_ns() -> u64 {
    static BOOT: OnceLock<u64> = OnceLock::new();
    *BOOT.get_or_init(|| {
        procfs::boot_time_secs()
            .map(|s| s.saturating_mul(1_000_000_000))
            .unwrap_or_else(|_| boot_epoch_ns())
    })
}

/// The wall-clock time of a `CLOCK_BOOTTIME` timestamp.
pub fn boot_to_wall(boot_ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(boot_epoch_ns().saturating_add(boot_ns))
}

/// Unix epoch ns of a wall-clock time (0 before the epoch, saturating far in the future).
pub fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversion_round_trips() {
        let t = ns_per_tick();
        assert_eq!(ns_to_ticks(ticks_to_ns(1234)), 1234);
        assert_eq!(ns_to_ticks(ticks_to_ns(1234) + t - 1), 1234);
        assert_eq!(ns_to_ticks(ticks_to_ns(1234) + t), 1235);
        assert!(same_tick(ticks_to_ns(7), ticks_to_ns(7) + t - 1));
    }

    #[test]
    fn the_recorded_boot_time_is_within_a_second_of_the_clocks() {
        let (stable, now) = (boot_time_ns(), boot_epoch_ns());
        assert!(stable.abs_diff(now) < 1_500_000_000, "{stable} vs {now}");
        assert_eq!(boot_time_ns(), stable);
    }

    #[test]
    fn boot_time_maps_to_now() {
        let wall = boot_to_wall(boot_now_ns());
        let skew = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "{skew:?}");
    }
}
