//! bpfkill: kill a service and every process it ever spawned.
//!
//! The kernel programs (crate `bpfkill-ebpf`) tag every process created by a tagged process
//! with its creator's service. Userspace follows the product's flow, one module per stage:
//!
//! - [`tracking`]: load/attach/pin/adopt the programs and open the pinned maps
//! - [`service`]: resolve a service name to its id
//! - [`candidates`]: collect the processes of a service, with evidence
//! - [`identity`]: verify each one (pidfd + start time against the tag)
//! - [`signal`]: parse and send signals
//! - [`wait`] and [`schedule`]: wait for the targets, escalate
//! - [`kill`]: the pipeline; [`report`]: its output and exit code
//!
//! with [`cgroup`] and [`escape`] as sources of evidence.
//!
//! plus the commands around it: [`run`], [`adopt`] (`track`), [`ps`], [`status`], [`daemon`]
//! (which writes the [`journal`]) and [`log`] (which reads it).

pub mod adopt;
pub mod candidates;
pub mod cgroup;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod escape;
pub mod events;
pub mod guard;
pub mod identity;
pub mod journal;
pub mod kill;
pub mod layout;
pub mod log;
pub mod mounts;
pub mod ps;
pub mod report;
pub mod run;
pub mod schedule;
pub mod service;
pub mod signal;
pub mod snapshot;
pub mod status;
pub mod tracking;
pub mod wait;

pub use error::{Error, Result};
