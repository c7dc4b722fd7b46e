//! `bpfkill daemon`: load or adopt tracking, journal its events in the foreground.

use std::path::Path;

use bpfkill::{config, daemon, forensics::journal::JournalConfig, tracking::PinPaths};

use super::{
    args::{JournalArgs, LoadArgs, SocketArgs},
    exit,
};

pub fn run(
    paths: &PinPaths,
    load: &LoadArgs,
    journal: JournalArgs,
    (max_bytes, keep, no_journal): (u64, usize, bool),
    config_path: Option<&Path>,
    metrics: Option<std::net::SocketAddr>,
    socket: SocketArgs,
) -> anyhow::Result<u8> {
    let opts = daemon::Options {
        config: config::main_path(config_path),
        load: load.options(),
        journal: (!no_journal).then_some(JournalConfig {
            dir: journal.journal_dir,
            max_bytes,
            keep,
        }),
        metrics,
        socket: daemon::SocketOptions {
            path: socket.socket,
            group: socket.socket_group,
            off: socket.no_socket,
        },
        exit_code: exit::of_verdict,
    };
    daemon::run(paths, &opts)?;
    Ok(exit::OK)
}
