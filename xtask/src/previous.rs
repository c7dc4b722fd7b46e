//! The previous kernel-side layout's bpfkill, built from git, so the suite can test an
//! upgrade against real pins of that layout (`tests/tests/upgrade.rs`): the last commit whose
//! `ABI_VERSION` was the previous one is exported with `git archive` and built with its own
//! lock file into `target/previous/v{ABI}/`. Built once per machine: the binary is kept in
//! the user's cache (`$XDG_CACHE_HOME` or `~/.cache`, `bpfkill-xtask/previous-v{ABI}-COMMIT`),
//! so a fresh clone (every CI run) reuses it instead of spending minutes on a build of a
//! fixed commit; a copy under `target/` is what the suite runs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Environment variable that gives the tests the previous layout's binary.
pub const ENV: &str = "BPFKILL_PREVIOUS_BIN";

/// ABI version of the previous layout.
pub const ABI: u32 = 5;

/// The last commit of ABI v5 (v6 added the fork backstop: the unseen map, its LSM programs
/// and two counters).
pub const COMMIT: &str = "4bb3f9d0220312855e86cc9a621ce7df352d9f09";

/// Builds (or reuses) the previous layout's debug binary. None, said on stderr, when the
/// commit is not in this clone (a shallow one): the upgrade test then skips with that reason.
pub fn build(root: &Path) -> Result<Option<PathBuf>> {
    let dir = root.join("target/previous").join(format!("v{ABI}"));
    let bin = dir.join("bpfkill");
    let stamp = dir.join("commit");
    if bin.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == COMMIT) {
        return Ok(Some(bin));
    }
    let cached = cache_dir().map(|d| d.join(format!("previous-v{ABI}-{COMMIT}")).join("bpfkill"));
    if let Some(cached) = cached.as_ref().filter(|c| c.is_file()) {
        fs::create_dir_all(&dir)?;
        fs::copy(cached, &bin).with_context(|| format!("copy {}", cached.display()))?;
        fs::write(&stamp, COMMIT)?;
        eprintln!("note: the ABI v{ABI} bpfkill comes from {}", cached.display());
        return Ok(Some(bin));
    }
    let reachable = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["cat-file", "-e", &format!("{COMMIT}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        eprintln!("note: commit {COMMIT} (ABI v{ABI}) is not in this clone; the upgrade test skips");
        return Ok(None);
    }
    let src = dir.join("src");
    if src.exists() {
        fs::remove_dir_all(&src).with_context(|| format!("remove {}", src.display()))?;
    }
    fs::create_dir_all(&src)?;
    eprintln!("+ git archive {COMMIT} | tar -x -C {}", src.display());
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", COMMIT])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(archive.stdout.take().expect("piped"))
        .status()
        .context("spawn tar")?;
    if !archive.wait()?.success() || !tar.success() {
        bail!("exporting {COMMIT} failed");
    }
    let target = dir.join("target");
    crate::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", &target)
            // No debug info, and dependencies unoptimised: the old tree's own profile
            // (optimised dependencies) took 7 minutes of CI here, for a binary only the
            // upgrade test runs.
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .args(["--config", "profile.dev.package.\"*\".opt-level=0"])
            .args(["build", "--locked", "-p", "bpfkill", "--bin", "bpfkill"]),
    )
    .with_context(|| format!("build bpfkill at {COMMIT} (ABI v{ABI})"))?;
    fs::copy(target.join("debug/bpfkill"), &bin)
        .with_context(|| format!("copy the ABI v{ABI} binary to {}", bin.display()))?;
    fs::write(&stamp, COMMIT)?;
    if let Some(cached) = cached {
        // Written beside, then renamed: a cache entry is whole or absent.
        let keep = || -> std::io::Result<()> {
            let parent = cached.parent().expect("a file in a directory");
            fs::create_dir_all(parent)?;
            let part = parent.join("bpfkill.part");
            fs::copy(&bin, &part)?;
            fs::rename(&part, &cached)
        };
        if let Err(e) = keep() {
            eprintln!(
                "note: the ABI v{ABI} bpfkill was not cached in {}: {e}",
                cached.display()
            );
        }
    }
    Ok(Some(bin))
}

/// The user's cache directory for xtask's builds: `$XDG_CACHE_HOME/bpfkill-xtask`, else
/// `$HOME/.cache/bpfkill-xtask`.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("bpfkill-xtask"))
}
