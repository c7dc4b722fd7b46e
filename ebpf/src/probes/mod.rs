//! One program per hook, each a thin entry that hands its `try_` function's outcome to
//! [`finish`].
mod backstop;
mod doom;
mod exec;
mod exit;
mod fork;
mod reap;
mod snapshot;

use aya_ebpf::programs::RawTracePointContext;
use aya_log_ebpf::{error, warn};
use bpfkill_common::stat;

use crate::{kernel::ReadError, maps::count};

/// A tracepoint program's return value; a failed kernel read is counted and logged, never
/// fatal.
#[inline(always)]
fn finish(ctx: &RawTracePointContext, hook: &str, outcome: Result<(), ReadError>) -> i32 {
    if let Err(e) = outcome {
        count(stat::READ_ERRORS);
        warn!(
            ctx,
            "{}: a kernel read failed (error {}): does a BTF offset not fit this kernel?", hook, e
        );
    }
    0
}

/// What a program does when it runs without a kernel layout (never set by the loader): it
/// says so and does nothing.
#[inline(always)]
fn no_layout(ctx: &RawTracePointContext, hook: &str) -> Result<(), ReadError> {
    error!(
        ctx,
        "{}: running without a kernel layout, so tracking nothing", hook
    );
    Ok(())
}
