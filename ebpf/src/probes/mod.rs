//! One program per hook, each a thin entry that hands its `try_` function's outcome to
//! [`finish`].
mod doom;
mod exec;
mod exit;
mod fork;
mod snapshot;

use bpfkill_common::stat;

use crate::{kernel::ReadError, maps::count};

/// A tracepoint program's return value; a failed kernel read is counted, never fatal.
#[inline(always)]
fn finish(outcome: Result<(), ReadError>) -> i32 {
    if outcome.is_err() {
        count(stat::READ_ERRORS);
    }
    0
}
