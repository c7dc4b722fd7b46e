//! Opening files whose paths users give (pidfiles, the journal, configs) without being led
//! astray: a FIFO, a device, a directory or a socket is refused at once instead of blocking or
//! being read as data, and a missing file is a missing input, not an internal error.

use std::{
    fs::File,
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

use crate::error::{Error, Result};

/// What a file that is not a regular file is, for error messages.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Checks that an open file is a regular file.
pub fn ensure_regular(file: &File, what: &str, path: &Path) -> Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("{what} {}", path.display()), e))?;
    if !meta.file_type().is_file() {
        return Err(Error::Usage(format!(
            "{what} {} is {}, not a regular file",
            path.display(),
            kind_of(meta.file_type())
        )));
    }
    Ok(())
}

/// Opens a regular file for reading. The open never blocks (a FIFO is opened non-blocking,
/// then refused); `follow` false refuses a symbolic link as the last component. A missing
/// file is [`Error::NoInput`].
pub fn open_regular(path: &Path, what: &str, follow: bool) -> Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::NoInput(format!("{what} {} does not exist", path.display())),
            Some(libc::ELOOP) if !follow => {
                Error::Usage(format!("{what} {} is a symbolic link", path.display()))
            }
            _ => Error::io(format!("open {what} {}", path.display()), e),
        })?;
    ensure_regular(&file, what, path)?;
    Ok(file)
}

/// Reads at most `limit` bytes of an open file.
pub fn read_capped(file: File, limit: u64, what: &str, path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    file.take(limit)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("read {what} {}", path.display()), e))?;
    Ok(data)
}

/// The kernel's `dev_t` (`major << 20 | minor`) of a userspace `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u64 {
    (u64::from(libc::major(st_dev)) << 20) | u64::from(libc::minor(st_dev))
}

/// The kernel's identity of the file at `path` (links followed): (device, inode), as the
/// exec program reads it and the exe rules are keyed.
pub fn exe_key(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| (kernel_dev(m.dev()), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_directories_and_devices_are_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("bpfkill-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for (path, kind) in [(&fifo, "a FIFO"), (&dir, "a directory")] {
            let err = open_regular(path, "pidfile", true).unwrap_err();
            assert!(matches!(&err, Error::Usage(m) if m.contains(kind)), "{err}");
        }
        let err = open_regular(Path::new("/dev/null"), "pidfile", true).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(matches!(open_regular(&link, "x", false), Err(Error::Usage(_))));
        assert!(matches!(open_regular(&link, "x", true), Err(Error::Usage(_))));
        assert!(matches!(
            open_regular(&dir.join("none"), "x", true),
            Err(Error::NoInput(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
