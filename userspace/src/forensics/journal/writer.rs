//! The journal's single writer: buffered appends, size-based rotation by rename, and a fresh
//! line after a torn tail.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use super::{
    files::{active_path, last_byte, rotated_files, rotated_path, JournalConfig, BUF_SIZE, LOCK_FILE},
    record::Record,
};
use crate::{
    error::{Error, Result},
    sys::files,
};

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
    // Never through a link, and never blocking on a FIFO put in its place.
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
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
