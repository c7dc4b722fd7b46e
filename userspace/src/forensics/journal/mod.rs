//! The history journal: every fork/exec/exit of a tracked process, on disk.
//!
//! The daemon appends one JSON object per line (JSON Lines) to `DIR/events.jsonl`; `bpfkill log`
//! reads it back ([`read_all`]) or follows it ([`Follower`]).
//!
//! - Append-only, buffered, flushed by the daemon after each ring-buffer batch.
//! - Size-based rotation by rename: `events.jsonl` → `events.jsonl.1` (newest rotated) → … →
//!   `events.jsonl.{keep}` (oldest); older files are dropped. A reader holding an fd keeps a valid
//!   file across a rotation.
//! - Torn-tail tolerant: a partial last line (crash mid-write) is skipped with a warning by readers,
//!   and a new [`Writer`] terminates it before appending, so later records start on a fresh line.
//! - One writer per directory, enforced by an exclusive `flock` on `DIR/journal.lock`.

mod files;
mod reader;
mod record;
#[cfg(test)]
mod tests;
mod writer;

pub use files::{ensure_dir_or_absent, JournalConfig, ACTIVE_FILE, LOCK_FILE};
pub use reader::{read_all, Filter, Follower, ReadOutcome};
pub use record::{Record, EVENT_JOURNAL_LOST, EVENT_LOST};
pub use writer::{Degraded, Writer};
