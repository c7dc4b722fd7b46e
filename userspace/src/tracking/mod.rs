//! The kernel side seen from userspace: loading and pinning the programs ([`load`], [`pins`]),
//! typed access to their maps ([`maps`], read in bulk by [`batch`]), the kernel structure layout they are loaded with
//! ([`layout`]), the events they emit ([`events`]) and their diagnostics ([`kernel_log`]);
//! carrying an older version's live tracking over on upgrade ([`migrate`]); the in-kernel
//! kill ([`reap`]); the runs the kernel skipped of a program ([`skips`]); the `bpf(2)` commands aya does
//! not expose ([`raw`]).

mod batch;
pub mod events;
pub mod kernel_log;
pub mod layout;
pub mod load;
pub mod maps;
pub mod migrate;
pub mod pins;
mod raw;
pub mod reap;
pub mod skips;

pub use kernel_log::{KernelLog, KernelLogLevel};
pub use load::{arm_doom, load, Doom, LoadOptions, LoadOutcome, LoadReport};
pub use maps::{open_pinned, Tracking};
pub use pins::{unload, PinPaths, PIN_DIR_ENV};
