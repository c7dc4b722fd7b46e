//! `bpfkill daemon`: load or adopt tracking, journal its events in the foreground.

use bpfkill::{daemon, forensics::journal::JournalConfig, tracking::PinPaths};

use super::{
    args::{JournalArgs, LoadArgs},
    exit,
};

pub fn run(
    paths: &PinPaths,
    load: &LoadArgs,
    journal: JournalArgs,
    max_bytes: u64,
    keep: usize,
    no_journal: bool,
) -> anyhow::Result<u8> {
    let opts = daemon::Options {
        load: load.options(),
        journal: (!no_journal).then_some(JournalConfig {
            dir: journal.journal_dir,
            max_bytes,
            keep,
        }),
    };
    daemon::run(paths, &opts)?;
    Ok(exit::OK)
}
