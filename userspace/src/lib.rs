//! bpfkill: kill a service and every process it ever spawned.
//!
//! The kernel programs (crate `bpfkill-ebpf`) tag every process created by a tagged process
//! with its creator's service. The library follows the product's data path, one folder per
//! stage, each importing only from the folders before it:
//!
//! - [`sys`]: the operating system (pidfd identity, guard rails, signals, cgroups, /proc,
//!   pidfiles, clocks, mounts), no product logic
//! - [`tracking`]: the kernel side seen from userspace (load, pins, maps, BTF layout, events)
//! - [`lineage`]: who created whom (service registry, creator tree, escape reasons, `track`,
//!   `run`)
//! - [`kill`]: resolve → candidates (tags ∪ cgroup ∪ /proc) → verify → signal → doom →
//!   wait/escalate → report
//! - [`forensics`]: `ps`, the journal, `log`, `status`
//! - [`job`]: `run` as a job: the command under tracking, its tree stopped when it exits or
//!   its time runs out
//! - [`config`]: the host's declared services (`/etc/bpfkill/config.toml`, `conf.d/`)
//! - [`daemon`]: the long-running service: applies the config's rules, adopts running
//!   matches, consumes the kernel's events, reloads on SIGHUP
//! - [`text`]: escaping of attacker-controlled names in everything people read
//!
//! The command line (clap, exit codes, logging set-up) is the binary's, not the library's.

pub mod config;
pub mod daemon;
pub mod error;
pub mod forensics;
pub mod job;
pub mod kill;
pub mod lineage;
pub mod sys;
pub mod text;
pub mod tracking;

pub use error::{Error, Result};
