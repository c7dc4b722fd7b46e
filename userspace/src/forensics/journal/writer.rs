//! The journal's single writer: buffered appends, size-based rotation by rename, and a fresh
//! line after a torn tail. A journal that cannot be written (a full disk, a read-only or
//! vanished directory) degrades instead of failing: records are counted, not written, until
//! [`Writer::try_resume`] finds it writable again and writes one `journal-lost` record that
//! says how many are missing, since when and why.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    time::SystemTime,
};

use super::{
    files::{active_path, last_byte, rotated_files, rotated_path, JournalConfig, BUF_SIZE, LOCK_FILE},
    record::Record,
};
use crate::{
    error::{Error, Result},
    sys::files,
};

/// Why the journal stopped writing, and what it has not written since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// The write error.
    pub reason: String,
    /// When writing stopped.
    pub since: SystemTime,
    /// Records not written since (an upper bound: buffered records of the failed write count,
    /// though part of them may have reached the file).
    pub dropped: u64,
}

/// Appends records to the journal. Holds the directory's writer lock while alive.
#[derive(Debug)]
pub struct Writer {
    cfg: JournalConfig,
    /// Held for the `flock`.
    _lock: File,
    /// The active file; None while degraded.
    out: Option<BufWriter<File>>,
    /// Bytes in the active file, buffered ones included.
    size: u64,
    /// Records appended since the last successful flush.
    pending: u64,
    /// Set while the journal cannot be written.
    degraded: Option<Degraded>,
    /// Records not written since this writer opened.
    dropped: u64,
}

impl Writer {
    /// Creates the directory (mode 0700) if needed, takes the writer lock, and opens the active
    /// file for appending, terminating a torn last record first.
    pub fn open(cfg: &JournalConfig) -> Result<Writer> {
        let dir = &cfg.dir;
        super::files::ensure_dir_or_absent(dir)?;
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
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        files::ensure_regular(&lock, "journal lock", &lock_path)?;
        if let Err(e) = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(Error::AlreadyRunning(format!(
                    "another bpfkill daemon is writing the journal in {}",
                    dir.display()
                )));
            }
            return Err(Error::io(format!("locking {}", lock_path.display()), e));
        }
        let (file, size) = open_active(dir)?;
        Ok(Writer {
            cfg: cfg.clone(),
            _lock: lock,
            out: Some(BufWriter::with_capacity(BUF_SIZE, file)),
            size,
            pending: 0,
            degraded: None,
            dropped: 0,
        })
    }

    /// Why the journal is not being written, when it is not.
    pub fn degraded(&self) -> Option<&Degraded> {
        self.degraded.as_ref()
    }

    /// Records not written since this writer opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Stops writing after a write error: the buffer is discarded (writing it later could
    /// tear a line in the middle), the records in it and all later ones are counted.
    fn degrade(&mut self, e: Error) {
        if let Some(out) = self.out.take() {
            // into_parts: the buffer is dropped unwritten.
            drop(out.into_parts());
        }
        tracing::error!("journal: {e}; events are counted, not written, until it is writable again");
        self.dropped += self.pending;
        self.degraded = Some(Degraded {
            reason: e.to_string(),
            since: SystemTime::now(),
            dropped: self.pending,
        });
        self.pending = 0;
    }

    /// When degraded: reopens the active file (terminating a torn last line) and writes a
    /// `journal-lost` record of what was not written. Returns what the degraded spell lost
    /// when writing resumed; None when it was not degraded or still cannot write.
    pub fn try_resume(&mut self) -> Option<Degraded> {
        let spell = self.degraded.clone()?;
        let (file, size) = open_active(&self.cfg.dir).ok()?;
        self.out = Some(BufWriter::with_capacity(BUF_SIZE, file));
        self.size = size;
        self.degraded = None;
        let mut rec = Record::journal_lost(spell.dropped, spell.since, SystemTime::now());
        rec.error = Some(spell.reason.clone());
        self.append(&rec).ok()?;
        self.flush().ok()?;
        if self.degraded.is_some() {
            // The record itself did not fit: it is counted with the next spell's.
            return None;
        }
        tracing::warn!(
            "journal: writable again; {} record(s) were not written since {}",
            spell.dropped,
            humantime::format_rfc3339_seconds(spell.since)
        );
        Some(spell)
    }

    /// The configuration this writer was opened with.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// Buffers one record, rotating first when it would push the active file past `max_bytes`.
    /// A write error degrades the journal (see [`Self::try_resume`]) rather than failing; the
    /// error returned is only a record that cannot be serialised.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let line = record.to_json_line()?;
        if self.degraded.is_some() {
            self.count_dropped(1);
            return Ok(());
        }
        self.pending += 1;
        if let Err(e) = self.write_line(&line) {
            self.degrade(e);
        }
        Ok(())
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
        if let Some(d) = self.degraded.as_mut() {
            d.dropped += n;
        }
    }

    fn write_line(&mut self, line: &[u8]) -> Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.cfg.max_bytes {
            self.rotate()?;
        }
        let path = active_path(&self.cfg.dir);
        let out = self.out.as_mut().ok_or_else(|| {
            Error::io(
                format!("writing {}", path.display()),
                io::ErrorKind::NotFound.into(),
            )
        })?;
        out.write_all(line)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.size += len;
        Ok(())
    }

    /// Writes buffered records out to the file (visible to readers; not fsync'd, see
    /// [`Self::sync`]). A write error degrades the journal.
    pub fn flush(&mut self) -> Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        match out.flush() {
            Ok(()) => self.pending = 0,
            Err(e) => {
                let e = Error::io(format!("writing {}", active_path(&self.cfg.dir).display()), e);
                self.degrade(e);
            }
        }
        Ok(())
    }

    /// Flushes and fsyncs the data to disk (nothing while degraded).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if let Some(out) = self.out.as_ref() {
            if let Err(e) = out.get_ref().sync_data() {
                let e = Error::io(format!("syncing {}", active_path(&self.cfg.dir).display()), e);
                self.degrade(e);
            }
        }
        Ok(())
    }

    /// Flushes, shifts `.1`→`.2` … (dropping what falls beyond `keep`), renames the active file
    /// to `.1`, and opens a fresh active file.
    pub fn rotate(&mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()
                .map_err(|e| Error::io(format!("writing {}", active_path(&self.cfg.dir).display()), e))?;
        }
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
        self.out = Some(BufWriter::with_capacity(BUF_SIZE, file));
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
    // Never through a link, and never blocking on a FIFO put in its place.
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::Usage(format!(
                "journal file {} is a symbolic link, not a regular file",
                path.display()
            )),
            _ => Error::io(format!("opening {}", path.display()), e),
        })?;
    files::ensure_regular(&file, "journal file", &path)?;
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
