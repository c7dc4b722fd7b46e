//! `bpfkill run`: exec the command under tracking (returns only when it cannot be run).

use std::ffi::OsString;

use bpfkill::{
    lineage::run,
    tracking::{PinPaths, Tracking},
};

pub fn run(paths: &PinPaths, service: &str, command: &[OsString]) -> anyhow::Result<u8> {
    let tracking = Tracking::open(paths)?;
    match run::run(tracking, service, command)? {}
}
