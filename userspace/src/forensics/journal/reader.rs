//! Reading the journal back: everything at once ([`read_all`]), or following the active file
//! across rotations ([`Follower`]); torn or garbage lines are skipped with a warning.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::{
    files::{
        active_path, file_name_of, identity_of, last_byte, open_if_exists, parse_line, rotated_files,
        rotated_path, ACTIVE_FILE, BUF_SIZE,
    },
    record::Record,
};
use crate::error::{Error, Result};

/// What [`read_all`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Records, oldest first.
    pub records: Vec<Record>,
    /// One warning per line that could not be parsed.
    pub skipped: Vec<String>,
}

/// Reads every record of the journal in `cfg_dir`, oldest first (oldest rotated file first, the
/// active file last). Unparsable lines are skipped with a warning; a missing journal is empty.
pub fn read_all(cfg_dir: &Path) -> Result<ReadOutcome> {
    // Open newest first and drop duplicates by inode: a rotation during the opens then can only
    // make us see a file twice (deduplicated) or lose the oldest, never lose the newest records.
    let mut files: Vec<(PathBuf, File)> = Vec::new();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut paths = vec![active_path(cfg_dir)];
    paths.extend(
        rotated_files(cfg_dir)?
            .into_iter()
            .map(|n| rotated_path(cfg_dir, n)),
    );
    for path in paths {
        let Some(file) = open_if_exists(&path)? else {
            continue;
        };
        let id = identity_of(&file, &path)?;
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        files.push((path, file));
    }
    let mut out = ReadOutcome::default();
    for (path, file) in files.into_iter().rev() {
        read_file(&path, file, &mut out)?;
    }
    Ok(out)
}

fn read_file(path: &Path, file: File, out: &mut ReadOutcome) -> Result<()> {
    let name = file_name_of(path);
    let mut reader = BufReader::with_capacity(BUF_SIZE, file);
    let mut line = Vec::with_capacity(512);
    let mut number = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        match parse_line(body) {
            Ok(Some(record)) => out.records.push(record),
            Ok(None) => {}
            Err(()) => out
                .skipped
                .push(format!("{name}: line {number} is torn or corrupt, skipped")),
        }
    }
}

/// Follows the active journal file like `tail -F`, across rotations. Call [`Follower::poll`] on a
/// timer; it never blocks.
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    /// The followed file, its (dev, ino), and the offset read up to.
    file: Option<(File, (u64, u64))>,
    pos: u64,
    /// Bytes of an incomplete last line.
    pending: Vec<u8>,
    /// Discard bytes up to the first newline (we started in the middle of a line).
    skip_partial: bool,
    skipped: Vec<String>,
}

impl Follower {
    /// Starts following at the current end of the active file (or at the start of the file
    /// when it does not exist yet).
    pub fn new(dir: &Path) -> Result<Follower> {
        let mut follower = Follower {
            dir: dir.to_path_buf(),
            file: None,
            pos: 0,
            pending: Vec::new(),
            skip_partial: false,
            skipped: Vec::new(),
        };
        let path = active_path(dir);
        if let Some(file) = open_if_exists(&path)? {
            let len = file
                .metadata()
                .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?
                .len();
            follower.skip_partial = last_byte(&file, len, &path)?.is_some_and(|b| b != b'\n');
            follower.pos = len;
            let id = identity_of(&file, &path)?;
            follower.file = Some((file, id));
        }
        Ok(follower)
    }

    /// Warnings about lines skipped so far (torn or corrupt), emptied by the call.
    pub fn take_skipped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.skipped)
    }

    /// The complete records appended since the last call, oldest first.
    pub fn poll(&mut self) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        let path = active_path(&self.dir);
        if self.file.is_some() {
            self.drain(&mut records)?;
        }
        let current = match open_if_exists(&path)? {
            Some(f) => {
                let id = identity_of(&f, &path)?;
                Some((f, id))
            }
            None => None,
        };
        let Some((new_file, new_id)) = current else {
            // Between a rename and the new file's creation (or no journal yet): wait.
            return Ok(records);
        };
        if self.file.as_ref().is_some_and(|(_, id)| *id == new_id) {
            return Ok(records);
        }
        // Rotated (or first appearance). Finish the old file: the writer flushed it before the
        // rename, so what is there now is all there will be.
        if let Some((_, old_id)) = self.file {
            self.drain(&mut records)?;
            self.finish_file();
            // Files rotated in between polls (more than one rotation): read them whole, oldest
            // first. If ours is no longer among them, every rotated file is newer than ours.
            let mut between = Vec::new();
            for n in rotated_files(&self.dir)? {
                let p = rotated_path(&self.dir, n);
                let Some(f) = open_if_exists(&p)? else { continue };
                let id = identity_of(&f, &p)?;
                if id == old_id {
                    break;
                }
                if id != new_id {
                    between.push((p, f));
                }
            }
            let mut out = ReadOutcome::default();
            for (p, f) in between.into_iter().rev() {
                read_file(&p, f, &mut out)?;
            }
            records.append(&mut out.records);
            self.skipped.append(&mut out.skipped);
        }
        self.file = Some((new_file, new_id));
        self.pos = 0;
        self.skip_partial = false;
        self.drain(&mut records)?;
        Ok(records)
    }

    /// Reads the followed file from `pos` to its end, emitting complete lines.
    fn drain(&mut self, records: &mut Vec<Record>) -> Result<()> {
        let Some((file, _)) = &self.file else {
            return Ok(());
        };
        let path = active_path(&self.dir);
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?
            .len();
        if len < self.pos {
            // Truncated under us: start over.
            self.pos = 0;
            self.pending.clear();
            self.skip_partial = false;
        }
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let n = file
                .read_at(&mut buf, self.pos)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                return Ok(());
            }
            self.pos += n as u64;
            let mut chunk = &buf[..n];
            if self.skip_partial {
                match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.skip_partial = false;
                        chunk = &chunk[i + 1..];
                    }
                    None => continue,
                }
            }
            self.pending.extend_from_slice(chunk);
            take_lines(&mut self.pending, &mut self.skipped, records);
        }
    }

    /// The followed file is done: an unterminated last line is torn.
    fn finish_file(&mut self) {
        if !self.pending.is_empty() && !self.skip_partial {
            self.skipped.push(format!(
                "{ACTIVE_FILE}: a torn line at the end of a rotated file was skipped"
            ));
        }
        self.pending.clear();
        self.skip_partial = false;
    }
}

/// Moves the complete lines of `pending` into `records` (warnings into `skipped`).
fn take_lines(pending: &mut Vec<u8>, skipped: &mut Vec<String>, records: &mut Vec<Record>) {
    let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in pending[..last_nl].split(|&b| b == b'\n') {
        match parse_line(line) {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(()) => skipped.push(format!("{ACTIVE_FILE}: a torn or corrupt line was skipped")),
        }
    }
    pending.drain(..=last_nl);
}

/// Which records `bpfkill log` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Service name (or numeric id).
    pub service: Option<String>,
    /// Events of this process (its own fork/exec/exit).
    pub pid: Option<u32>,
    /// Records at or after this unix epoch ns.
    pub since_ns: Option<u64>,
}

impl Filter {
    /// Whether `record` passes. `lost` records pass the service and pid filters (a loss may
    /// have hidden events of any service or process), only `since` applies to them.
    pub fn matches(&self, record: &Record) -> bool {
        if record.is_lost() {
            return self.since_ns.is_none_or(|since| record.time_ns >= since);
        }
        if let Some(service) = &self.service {
            let by_id = service.parse::<u32>().is_ok_and(|id| id == record.service_id);
            if record.service != *service && !by_id {
                return false;
            }
        }
        if self.pid.is_some_and(|pid| pid != record.pid) {
            return false;
        }
        if self.since_ns.is_some_and(|since| record.time_ns < since) {
            return false;
        }
        true
    }
}
