//! `bpfkill load` and `bpfkill unload`.

use std::io::Write;

use anyhow::Context as _;
use bpfkill::tracking::{self, PinPaths};

use super::{args::LoadArgs, exit};

pub fn load(paths: &PinPaths, args: &LoadArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    let report = tracking::load(paths, &args.options()).context("load tracking")?;
    for m in &report.migrations {
        writeln!(out, "{m}")?;
    }
    match report.outcome {
        tracking::LoadOutcome::Adopted => {
            writeln!(out, "tracking already live under {}", paths.root().display())?
        }
        tracking::LoadOutcome::Loaded { attached } => writeln!(
            out,
            "tracking loaded ({attached} program(s) attached), pinned under {}",
            paths.root().display()
        )?,
    }
    Ok(exit::OK)
}

pub fn unload(paths: &PinPaths, out: &mut impl Write) -> anyhow::Result<u8> {
    if tracking::unload(paths)? {
        writeln!(
            out,
            "tracking unloaded; pins under {} removed",
            paths.root().display()
        )?;
    } else {
        writeln!(out, "nothing pinned under {}", paths.root().display())?;
    }
    Ok(exit::OK)
}
