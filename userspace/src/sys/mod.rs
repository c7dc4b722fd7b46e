//! The operating system, with no product logic: process identity and pidfds, the guard
//! rails, signals, cgroups, /proc, pidfiles and other user-named files, clocks, pseudo-filesystem mounts, scheduling, resource limits.

pub mod cgroup;
pub mod clock;
pub mod files;
pub mod guard;
pub mod identity;
pub mod limits;
pub mod mounts;
pub mod pidfile;
pub mod procs;
pub mod realtime;
pub mod signal;
