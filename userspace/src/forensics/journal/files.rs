//! The journal's files: where they live, how rotated files are named, and the small file
//! helpers the writer and the readers share.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

use super::record::Record;
use crate::{
    error::{Error, Result},
    sys::files,
};

/// Name of the active journal file.
pub const ACTIVE_FILE: &str = "events.jsonl";
/// Name of the writer's lock file.
pub const LOCK_FILE: &str = "journal.lock";
/// Buffer size of the writer and the readers; whole records are written, never split,
/// unless larger than this.
pub(super) const BUF_SIZE: usize = 64 * 1024;

/// Where and how much history to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Journal directory.
    pub dir: PathBuf,
    /// Rotate the active file before it would exceed this many bytes.
    pub max_bytes: u64,
    /// Rotated files to keep (`events.jsonl.1` … `events.jsonl.{keep}`).
    pub keep: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: PathBuf::from("/var/lib/bpfkill"),
            max_bytes: 16 * 1024 * 1024,
            keep: 4,
        }
    }
}

pub(super) fn active_path(dir: &Path) -> PathBuf {
    dir.join(ACTIVE_FILE)
}

pub(super) fn rotated_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{ACTIVE_FILE}.{n}"))
}

/// The rotated files present in `dir`, by index, ascending (newest first). Missing dir → empty.
pub(super) fn rotated_files(dir: &Path) -> Result<Vec<usize>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                format!("reading journal directory {}", dir.display()),
                e,
            ))
        }
    };
    let prefix = format!("{ACTIVE_FILE}.");
    let mut found = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io(format!("reading journal directory {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix(&prefix).and_then(|s| s.parse::<usize>().ok()) {
            if n > 0 {
                found.push(n);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Opens `path` for reading; None when it does not exist.
/// A regular journal file: not through a link, never blocking on a FIFO.
pub(super) fn open_if_exists(path: &Path) -> Result<Option<File>> {
    match files::open_regular(path, "journal file", false) {
        Ok(f) => Ok(Some(f)),
        Err(Error::NoInput(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks that a journal directory is a directory, or does not exist yet.
pub fn ensure_dir_or_absent(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "journal directory {} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("journal directory {}", dir.display()), e)),
    }
}

pub(super) fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// (device, inode) of an open file.
pub(super) fn identity_of(file: &File, path: &Path) -> Result<(u64, u64)> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
    Ok((meta.dev(), meta.ino()))
}

/// The last byte of `file` (None when empty).
pub(super) fn last_byte(file: &File, len: u64, path: &Path) -> Result<Option<u8>> {
    if len == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, len - 1)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(Some(b[0]))
}

/// Parses one line (without its newline). `Ok(None)` for a blank line, `Err(())` for garbage.
pub(super) fn parse_line(line: &[u8]) -> std::result::Result<Option<Record>, ()> {
    let text = std::str::from_utf8(line).map_err(|_| ())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|_| ())
}
