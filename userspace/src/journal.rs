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

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    events::{Kind, TrackedEvent},
    signal::Signal,
};

/// Name of the active journal file.
pub const ACTIVE_FILE: &str = "events.jsonl";
/// Name of the writer's lock file.
pub const LOCK_FILE: &str = "journal.lock";

/// Write-buffer size; whole records are written, never split, unless larger than this.
const BUF_SIZE: usize = 64 * 1024;

/// One journal entry: the on-disk format and the `--json` output of `bpfkill log`.
///
/// Every key is always emitted (null when absent), in declaration order, so the field set is stable.
/// Missing keys are tolerated when reading (`#[serde(default)]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// RFC 3339 UTC, microseconds (`2026-11-24T00:12:03.123456Z`).
    pub time: String,
    /// Unix epoch ns, for filtering and sorting.
    pub time_ns: u64,
    /// `fork`, `exec`, `exit` or `lost`.
    pub event: String,
    /// Service name.
    pub service: String,
    /// Service id.
    pub service_id: u32,
    /// The process.
    pub pid: u32,
    /// Its parent at the time.
    pub ppid: u32,
    /// Its creator; null when unknown.
    pub creator_pid: Option<u32>,
    /// comm at the event.
    pub comm: String,
    /// Executable (exec events).
    pub exe: Option<String>,
    /// Arguments (exec events), when known.
    pub argv: Option<Vec<String>>,
    /// Exit code of a normal exit.
    pub exit_code: Option<i32>,
    /// Killing signal's name (`SIGKILL`).
    pub signal: Option<String>,
    /// Number of events lost (`lost` records only).
    pub lost: Option<u64>,
}

/// `event` of a record saying events were lost.
pub const EVENT_LOST: &str = "lost";

/// Unix epoch ns of a wall-clock time (0 before the epoch, saturating far in the future).
fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Converts a `CLOCK_BOOTTIME` timestamp (what the kernel programs record) to wall-clock time.
pub fn wall_time_of_boot_ns(boot_ns: u64) -> SystemTime {
    let to_ns = |ts: rustix::time::Timespec| {
        u64::try_from(ts.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            + u64::try_from(ts.tv_nsec).unwrap_or(0)
    };
    let real = to_ns(rustix::time::clock_gettime(rustix::time::ClockId::Realtime));
    let boot = to_ns(rustix::time::clock_gettime(rustix::time::ClockId::Boottime));
    let wall_ns = real.saturating_sub(boot).saturating_add(boot_ns);
    UNIX_EPOCH + Duration::from_nanos(wall_ns)
}

impl Record {
    /// An empty record of `event` at `time`.
    pub fn new(event: &str, time: SystemTime) -> Record {
        Record {
            time: humantime::format_rfc3339_micros(time).to_string(),
            time_ns: epoch_ns(time),
            event: event.to_string(),
            ..Record::default()
        }
    }

    /// The record of a kernel event of service `service`, at wall-clock `time`
    /// (see [`wall_time_of_boot_ns`]). `exe` is the exec'd file name; `argv` is left for the
    /// caller to fill in when it can read it.
    pub fn from_event(ev: &TrackedEvent, service: &str, time: SystemTime) -> Record {
        Record {
            service: service.to_string(),
            service_id: ev.service_id,
            pid: ev.pid,
            ppid: ev.ppid,
            creator_pid: (ev.creator_pid != 0).then_some(ev.creator_pid),
            comm: ev.comm.clone(),
            exe: ev.filename.clone(),
            exit_code: ev.exit_code,
            signal: ev.signal.map(Signal::name_of),
            ..Record::new(ev.kind.name(), time)
        }
    }

    /// A record saying `count` events were lost because the ring buffer was full.
    pub fn lost(count: u64, time: SystemTime) -> Record {
        Record {
            lost: Some(count),
            ..Record::new(EVENT_LOST, time)
        }
    }

    /// Whether this is a `lost` record.
    pub fn is_lost(&self) -> bool {
        self.event == EVENT_LOST
    }

    /// One JSON line, newline included.
    pub fn to_json_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self)
            .map_err(|e| Error::io("serializing a journal record", io::Error::from(e)))?;
        line.push(b'\n');
        Ok(line)
    }

    /// One readable line (no trailing newline).
    pub fn human(&self) -> String {
        if self.is_lost() {
            return format!(
                "{} lost {} events (ring buffer full)",
                self.time,
                self.lost.unwrap_or(0)
            );
        }
        let service = if self.service.is_empty() {
            format!("#{}", self.service_id)
        } else {
            self.service.clone()
        };
        let mut s = format!("{} {} {} pid={}", self.time, service, self.event, self.pid);
        if self.event == Kind::Fork.name() {
            s.push_str(&format!(" ppid={}", self.ppid));
            match self.creator_pid {
                Some(c) => s.push_str(&format!(" creator={c}")),
                None => s.push_str(" creator=?"),
            }
            s.push_str(&format!(" comm={}", self.comm));
        } else if self.event == Kind::Exec.name() {
            s.push_str(&format!(" exe={}", self.exe.as_deref().unwrap_or("?")));
            if let Some(argv) = &self.argv {
                s.push_str(&format!(" argv=\"{}\"", quote_argv(argv)));
            }
        } else if self.event == Kind::Exit.name() {
            match (&self.signal, self.exit_code) {
                (Some(sig), _) => s.push_str(&format!(" killed by {sig}")),
                (None, Some(code)) => s.push_str(&format!(" code={code}")),
                (None, None) => s.push_str(" code=?"),
            }
            s.push_str(&format!(" comm={}", self.comm));
        } else if !self.comm.is_empty() {
            s.push_str(&format!(" comm={}", self.comm));
        }
        s
    }
}

/// argv joined by spaces, with `"` and `\` escaped (for inside double quotes).
fn quote_argv(argv: &[String]) -> String {
    let joined = argv.join(" ");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

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

fn active_path(dir: &Path) -> PathBuf {
    dir.join(ACTIVE_FILE)
}

fn rotated_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{ACTIVE_FILE}.{n}"))
}

/// The rotated files present in `dir`, by index, ascending (newest first). Missing dir → empty.
fn rotated_files(dir: &Path) -> Result<Vec<usize>> {
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
fn open_if_exists(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// (device, inode) of an open file.
fn identity_of(file: &File, path: &Path) -> Result<(u64, u64)> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
    Ok((meta.dev(), meta.ino()))
}

/// The last byte of `file` (None when empty).
fn last_byte(file: &File, len: u64, path: &Path) -> Result<Option<u8>> {
    if len == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, len - 1)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(Some(b[0]))
}

/// Parses one line (without its newline). `Ok(None)` for a blank line, `Err(())` for garbage.
fn parse_line(line: &[u8]) -> std::result::Result<Option<Record>, ()> {
    let text = std::str::from_utf8(line).map_err(|_| ())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|_| ())
}

/// Appends records to the journal. Holds the directory's writer lock while alive.
#[derive(Debug)]
pub struct Writer {
    cfg: JournalConfig,
    /// Held for the `flock`.
    _lock: File,
    out: BufWriter<File>,
    /// Bytes in the active file, buffered ones included.
    size: u64,
}

impl Writer {
    /// Creates the directory (mode 0700) if needed, takes the writer lock, and opens the active
    /// file for appending, terminating a torn last record first.
    pub fn open(cfg: &JournalConfig) -> Result<Writer> {
        let dir = &cfg.dir;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating journal directory {}", dir.display()), e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        if let Err(e) = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            let e = io::Error::from(e);
            let what = if e.kind() == io::ErrorKind::WouldBlock {
                format!(
                    "another bpfkill daemon is writing the journal in {}",
                    dir.display()
                )
            } else {
                format!("locking {}", lock_path.display())
            };
            return Err(Error::io(what, e));
        }
        let (file, size) = open_active(dir)?;
        Ok(Writer {
            cfg: cfg.clone(),
            _lock: lock,
            out: BufWriter::with_capacity(BUF_SIZE, file),
            size,
        })
    }

    /// The configuration this writer was opened with.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// Buffers one record, rotating first when it would push the active file past `max_bytes`.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let line = record.to_json_line()?;
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.cfg.max_bytes {
            self.rotate()?;
        }
        self.out
            .write_all(&line)
            .map_err(|e| Error::io(format!("writing {}", active_path(&self.cfg.dir).display()), e))?;
        self.size += len;
        Ok(())
    }

    /// Writes buffered records out to the file (visible to readers; not fsync'd, see [`Self::sync`]).
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io(format!("writing {}", active_path(&self.cfg.dir).display()), e))
    }

    /// Flushes and fsyncs the data to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", active_path(&self.cfg.dir).display()), e))
    }

    /// Flushes, shifts `.1`→`.2` … (dropping what falls beyond `keep`), renames the active file
    /// to `.1`, and opens a fresh active file.
    pub fn rotate(&mut self) -> Result<()> {
        self.flush()?;
        let dir = self.cfg.dir.clone();
        let keep = self.cfg.keep;
        let active = active_path(&dir);
        // Files beyond `keep` (e.g. left by a larger earlier `keep`) go first.
        for n in rotated_files(&dir)?.into_iter().filter(|&n| n > keep) {
            remove_if_exists(&rotated_path(&dir, n))?;
        }
        if keep == 0 {
            remove_if_exists(&active)?;
        } else {
            for n in (1..keep).rev() {
                let from = rotated_path(&dir, n);
                let to = rotated_path(&dir, n + 1);
                match fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(
                            format!("renaming {} to {}", from.display(), to.display()),
                            e,
                        ))
                    }
                }
            }
            let to = rotated_path(&dir, 1);
            fs::rename(&active, &to)
                .map_err(|e| Error::io(format!("renaming {} to {}", active.display(), to.display()), e))?;
        }
        let (file, size) = open_active(&dir)?;
        // Replacing the BufWriter drops the old one, whose buffer is already empty.
        self.out = BufWriter::with_capacity(BUF_SIZE, file);
        self.size = size;
        // Best effort: make the renames durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Opens (creating) the active file for appending; terminates a torn last line. Returns the file
/// and its size.
fn open_active(dir: &Path) -> Result<(File, u64)> {
    let path = active_path(dir);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut size = file
        .metadata()
        .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?
        .len();
    if last_byte(&file, size, &path)?.is_some_and(|b| b != b'\n') {
        file.write_all(b"\n")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        size += 1;
    }
    Ok((file, size))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique temporary directory, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "bpfkill-journal-test-{}-{}-{}",
                std::process::id(),
                name,
                n
            ));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }

        fn cfg(&self, max_bytes: u64, keep: usize) -> JournalConfig {
            JournalConfig {
                dir: self.0.clone(),
                max_bytes,
                keep,
            }
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs) + Duration::from_micros(123_456)
    }

    fn fork(pid: u32) -> Record {
        Record {
            service: "crond".into(),
            service_id: 7,
            pid,
            ppid: 100,
            creator_pid: Some(100),
            comm: "sh".into(),
            ..Record::new("fork", at(u64::from(pid)))
        }
    }

    fn pids(records: &[Record]) -> Vec<u32> {
        records.iter().map(|r| r.pid).collect()
    }

    fn journal_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(ACTIVE_FILE))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip() {
        let t = TestDir::new("roundtrip");
        let mut exec = Record {
            exe: Some("/bin/sleep".into()),
            argv: Some(vec!["sleep".into(), "100".into()]),
            ..fork(2)
        };
        exec.event = "exec".into();
        let written = vec![fork(1), exec, Record::lost(17, at(3))];
        {
            let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
            for r in &written {
                w.append(r).unwrap();
            }
            w.flush().unwrap();
        }
        let out = read_all(&t.0).unwrap();
        assert_eq!(out.records, written);
        assert!(out.skipped.is_empty());
        let mode = fs::metadata(&t.0).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn json_format_is_stable() {
        let line = String::from_utf8(fork(1).to_json_line().unwrap()).unwrap();
        assert!(line.ends_with("}\n"));
        let keys = [
            "time",
            "time_ns",
            "event",
            "service",
            "service_id",
            "pid",
            "ppid",
            "creator_pid",
            "comm",
            "exe",
            "argv",
            "exit_code",
            "signal",
            "lost",
        ];
        let mut last = 0;
        for key in keys {
            let at = line
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} missing"));
            assert!(at >= last, "{key} out of order in {line}");
            last = at;
        }
        assert!(line.contains("\"exe\":null"));
        assert!(line.contains("\"time\":\"2023-11-14T22:13:21.123456Z\""));
        // Missing optional keys are tolerated.
        let r: Record = serde_json::from_str(r#"{"event":"exit","pid":5,"exit_code":3}"#).unwrap();
        assert_eq!((r.pid, r.exit_code, r.signal), (5, Some(3), None));
    }

    #[test]
    fn human_lines() {
        let f = fork(123);
        assert_eq!(
            f.human(),
            format!("{} crond fork pid=123 ppid=100 creator=100 comm=sh", f.time)
        );
        let mut exit = Record {
            exit_code: Some(3),
            ..fork(123)
        };
        exit.event = "exit".into();
        assert!(exit.human().contains(" crond exit pid=123 code=3"));
        exit.exit_code = None;
        exit.signal = Some(Signal::name_of(9));
        assert!(exit.human().contains(" exit pid=123 killed by SIGKILL"));
        let mut exec = Record {
            exe: Some("/bin/sleep".into()),
            argv: Some(vec!["sleep".into(), "100".into()]),
            ..fork(123)
        };
        exec.event = "exec".into();
        assert!(exec
            .human()
            .contains(" exec pid=123 exe=/bin/sleep argv=\"sleep 100\""));
        let lost = Record::lost(17, at(0));
        assert_eq!(
            lost.human(),
            format!("{} lost 17 events (ring buffer full)", lost.time)
        );
    }

    #[test]
    fn from_event_maps_fields() {
        let ev = TrackedEvent {
            kind: Kind::Exit,
            pid: 10,
            ppid: 1,
            creator_pid: 0,
            service_id: 3,
            time_ns: 5,
            start_ns: 6,
            cgroup_id: 7,
            comm: "sh".into(),
            filename: None,
            exit_code: None,
            signal: Some(9),
        };
        let r = Record::from_event(&ev, "web", at(0));
        assert_eq!(r.event, "exit");
        assert_eq!(r.creator_pid, None);
        assert_eq!(r.signal.as_deref(), Some("SIGKILL"));
        assert_eq!((r.service.as_str(), r.service_id, r.pid), ("web", 3, 10));
        let now = epoch_ns(SystemTime::now());
        let wall = epoch_ns(wall_time_of_boot_ns(0));
        assert!(wall <= now && wall > 0);
    }

    #[test]
    fn rotation_keeps_at_most_keep_plus_one_files_in_order() {
        let t = TestDir::new("rotation");
        let line_len = fork(1000).to_json_line().unwrap().len() as u64;
        let cfg = t.cfg(line_len * 3, 2);
        let mut w = Writer::open(&cfg).unwrap();
        for pid in 1000..1020 {
            w.append(&fork(pid)).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(
            journal_files(&t.0),
            vec!["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
        );
        for name in journal_files(&t.0) {
            assert!(fs::metadata(t.0.join(name)).unwrap().len() <= cfg.max_bytes);
        }
        let out = read_all(&t.0).unwrap();
        assert!(out.skipped.is_empty());
        // 20 records, 3 per file: 2 in the active file and 3 in each of the 2 rotated ones.
        assert_eq!(pids(&out.records), (1012..1020).collect::<Vec<_>>());
    }

    #[test]
    fn rotation_drops_files_beyond_a_smaller_keep() {
        let t = TestDir::new("shrink");
        let line_len = fork(1000).to_json_line().unwrap().len() as u64;
        {
            let mut w = Writer::open(&t.cfg(line_len, 4)).unwrap();
            for pid in 0..6 {
                w.append(&fork(pid)).unwrap();
            }
        }
        assert_eq!(journal_files(&t.0).len(), 5);
        let mut w = Writer::open(&t.cfg(line_len, 1)).unwrap();
        w.append(&fork(6)).unwrap();
        w.flush().unwrap();
        assert_eq!(journal_files(&t.0), vec!["events.jsonl", "events.jsonl.1"]);
        assert_eq!(pids(&read_all(&t.0).unwrap().records), vec![5, 6]);
    }

    fn write_and_tear(t: &TestDir) {
        {
            let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
            for pid in 1..=3 {
                w.append(&fork(pid)).unwrap();
            }
            w.flush().unwrap();
        }
        let path = active_path(&t.0);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
    }

    #[test]
    fn torn_tail_is_skipped_not_fatal() {
        let t = TestDir::new("torn");
        write_and_tear(&t);
        let out = read_all(&t.0).unwrap();
        assert_eq!(pids(&out.records), vec![1, 2]);
        assert_eq!(
            out.skipped,
            vec!["events.jsonl: line 3 is torn or corrupt, skipped".to_string()]
        );
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let t = TestDir::new("garbage");
        fs::create_dir_all(&t.0).unwrap();
        let mut data = fork(1).to_json_line().unwrap();
        data.extend_from_slice(b"not json\n\xff\xfe\n\n");
        data.extend_from_slice(&fork(2).to_json_line().unwrap());
        fs::write(active_path(&t.0), data).unwrap();
        let out = read_all(&t.0).unwrap();
        assert_eq!(pids(&out.records), vec![1, 2]);
        assert_eq!(out.skipped.len(), 2);
        assert!(out.skipped[0].contains("line 2"));
        assert!(out.skipped[1].contains("line 3"));
    }

    #[test]
    fn reopened_writer_starts_a_fresh_line_after_a_torn_tail() {
        let t = TestDir::new("reopen");
        write_and_tear(&t);
        {
            let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
            w.append(&fork(4)).unwrap();
            w.flush().unwrap();
        }
        let out = read_all(&t.0).unwrap();
        assert_eq!(pids(&out.records), vec![1, 2, 4]);
        assert_eq!(out.skipped.len(), 1);
        // A clean file gets no extra newline on reopen.
        let len = fs::metadata(active_path(&t.0)).unwrap().len();
        drop(Writer::open(&t.cfg(1 << 20, 2)).unwrap());
        assert_eq!(fs::metadata(active_path(&t.0)).unwrap().len(), len);
    }

    #[test]
    fn missing_journal_is_empty() {
        let t = TestDir::new("missing");
        assert_eq!(read_all(&t.0).unwrap(), ReadOutcome::default());
        let mut f = Follower::new(&t.0).unwrap();
        assert!(f.poll().unwrap().is_empty());
        // The journal appears later: followed from its start.
        let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
        w.append(&fork(1)).unwrap();
        w.flush().unwrap();
        assert_eq!(pids(&f.poll().unwrap()), vec![1]);
    }

    #[test]
    fn second_writer_fails_clearly() {
        let t = TestDir::new("lock");
        let cfg = t.cfg(1 << 20, 2);
        let w = Writer::open(&cfg).unwrap();
        let err = Writer::open(&cfg).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "another bpfkill daemon is writing the journal in {}",
                t.0.display()
            )),
            "{err}"
        );
        drop(w);
        Writer::open(&cfg).unwrap();
    }

    #[test]
    fn follower_sees_appends_and_partial_lines() {
        let t = TestDir::new("follow");
        let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
        w.append(&fork(1)).unwrap();
        w.flush().unwrap();
        let mut f = Follower::new(&t.0).unwrap();
        assert!(f.poll().unwrap().is_empty());
        w.append(&fork(2)).unwrap();
        w.append(&fork(3)).unwrap();
        assert!(f.poll().unwrap().is_empty(), "unflushed records are not visible");
        w.flush().unwrap();
        assert_eq!(pids(&f.poll().unwrap()), vec![2, 3]);
        assert!(f.poll().unwrap().is_empty());

        // A line arriving in two pieces is returned once complete.
        let line = fork(4).to_json_line().unwrap();
        let mut raw = OpenOptions::new().append(true).open(active_path(&t.0)).unwrap();
        raw.write_all(&line[..20]).unwrap();
        assert!(f.poll().unwrap().is_empty());
        raw.write_all(&line[20..]).unwrap();
        assert_eq!(pids(&f.poll().unwrap()), vec![4]);
        assert!(f.take_skipped().is_empty());

        // Started in the middle of a line: that fragment is ignored.
        raw.write_all(&line[..20]).unwrap();
        let mut g = Follower::new(&t.0).unwrap();
        raw.write_all(&line[20..]).unwrap();
        raw.write_all(&fork(5).to_json_line().unwrap()).unwrap();
        assert_eq!(pids(&g.poll().unwrap()), vec![5]);
        assert!(g.take_skipped().is_empty());
    }

    #[test]
    fn follower_crosses_rotations() {
        let t = TestDir::new("follow-rotate");
        let line_len = fork(1000).to_json_line().unwrap().len() as u64;
        let mut w = Writer::open(&t.cfg(line_len * 2, 3)).unwrap();
        w.append(&fork(1000)).unwrap();
        w.flush().unwrap();
        let mut f = Follower::new(&t.0).unwrap();
        let mut seen = Vec::new();
        // One rotation between polls.
        for pid in 1001..1004 {
            w.append(&fork(pid)).unwrap();
        }
        w.flush().unwrap();
        seen.extend(pids(&f.poll().unwrap()));
        assert_eq!(seen, vec![1001, 1002, 1003]);
        // Several rotations between polls.
        for pid in 1004..1010 {
            w.append(&fork(pid)).unwrap();
        }
        w.flush().unwrap();
        seen.extend(pids(&f.poll().unwrap()));
        assert_eq!(seen, (1001..1010).collect::<Vec<_>>());
        // Then plain appends on the new active file.
        w.append(&fork(1010)).unwrap();
        w.flush().unwrap();
        assert_eq!(pids(&f.poll().unwrap()), vec![1010]);
        assert!(f.take_skipped().is_empty());
    }

    #[test]
    fn filter_semantics() {
        let lost = Record::lost(3, at(0));
        let r = fork(42);
        assert!(Filter::default().matches(&r));
        let by_service = Filter {
            service: Some("crond".into()),
            ..Filter::default()
        };
        assert!(by_service.matches(&r));
        assert!(Filter {
            service: Some("7".into()),
            ..Filter::default()
        }
        .matches(&r));
        assert!(!Filter {
            service: Some("nginx".into()),
            ..Filter::default()
        }
        .matches(&r));
        assert!(Filter {
            pid: Some(42),
            ..Filter::default()
        }
        .matches(&r));
        assert!(!Filter {
            pid: Some(43),
            ..Filter::default()
        }
        .matches(&r));
        assert!(Filter {
            since_ns: Some(r.time_ns),
            ..Filter::default()
        }
        .matches(&r));
        assert!(!Filter {
            since_ns: Some(r.time_ns + 1),
            ..Filter::default()
        }
        .matches(&r));
        let all = Filter {
            service: Some("nginx".into()),
            pid: Some(1),
            since_ns: Some(u64::MAX),
        };
        assert!(!all.matches(&r));
        assert!(!all.matches(&lost), "since applies to losses");
        let any_time = Filter {
            since_ns: None,
            ..all
        };
        assert!(any_time.matches(&lost), "losses pass the service and pid filters");
        assert!(by_service.matches(&lost));
    }
}
