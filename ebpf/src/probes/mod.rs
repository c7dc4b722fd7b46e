//! One program per hook, each a thin entry that runs its `try_` function through [`run`].
mod doom;
mod exec;
mod exit;
mod fork;
mod reap;
mod snapshot;

use aya_ebpf::programs::RawTracePointContext;
use aya_log_ebpf::{error, warn};
use bpfkill_common::stat;

use crate::{kernel::ReadError, maps::count, preempt};

/// Runs a tracepoint program's body with preemption off (see `preempt`), so that the kernel
/// does not skip this program's runs on the CPU while this one waits preempted. Returns the
/// program's return value: a failed kernel read is counted and logged, never fatal.
#[inline(always)]
fn run(ctx: &RawTracePointContext, hook: &str, body: impl FnOnce() -> Result<(), ReadError>) -> i32 {
    preempt::disable();
    let outcome = body();
    if let Err(e) = outcome {
        count(stat::READ_ERRORS);
        warn!(
            ctx,
            "{}: a kernel read failed (error {}): does a BTF offset not fit this kernel?", hook, e
        );
    }
    preempt::enable();
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
