//! Pidfiles: a PID named by a file is trusted only when the file is owned by root and not
//! writable by group or others (anyone else could point bpfkill at any process).

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::files;
use crate::error::{Error, Result};

/// A process named on the command line: by PID, or by a pidfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidSource {
    /// A PID.
    Pid(u32),
    /// A pidfile (trusted only when root-owned and not group/world-writable).
    Pidfile(PathBuf),
}

impl PidSource {
    /// The PID it names now.
    pub fn resolve(&self) -> Result<u32> {
        match self {
            PidSource::Pid(p) => Ok(*p),
            PidSource::Pidfile(path) => read_pidfile(path),
        }
    }
}

/// Reads and checks a pidfile: a regular file (a FIFO or device is refused without
/// blocking), owned by root and not writable by group or others; reached through a symbolic
/// link only when root owns the link too. Holds a positive PID as its first word.
pub fn read_pidfile(path: &Path) -> Result<u32> {
    let link = fs::symlink_metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NoInput(format!("pidfile {} does not exist", path.display())),
        _ => Error::io(format!("pidfile {}", path.display()), e),
    })?;
    if link.file_type().is_symlink() && link.uid() != 0 {
        return Err(Error::Refused(format!(
            "pidfile {} is a symbolic link not owned by root",
            path.display()
        )));
    }
    let file = files::open_regular(path, "pidfile", true)?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("pidfile {}", path.display()), e))?;
    if meta.uid() != 0 {
        return Err(Error::Refused(format!(
            "pidfile {} is not owned by root",
            path.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::Refused(format!(
            "pidfile {} is group- or world-writable",
            path.display()
        )));
    }
    let data = files::read_capped(file, 4096, "pidfile", path)?;
    let text = String::from_utf8_lossy(&data);
    let pid: u32 = text
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .filter(|p| *p > 0 && i32::try_from(*p).is_ok())
        .ok_or_else(|| Error::Usage(format!("pidfile {} does not hold a PID", path.display())))?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_checks() {
        let dir = std::env::temp_dir().join(format!("bpfkill-pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.pid");
        fs::write(&f, "1234\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let owned_by_root = fs::metadata(&f).unwrap().uid() == 0;
        if owned_by_root {
            assert_eq!(read_pidfile(&f).unwrap(), 1234);
            fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
            assert!(matches!(read_pidfile(&f), Err(Error::Refused(_))));
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(&f, "garbage").unwrap();
            assert!(matches!(read_pidfile(&f), Err(Error::Usage(_))));
        } else {
            assert!(matches!(read_pidfile(&f), Err(Error::Refused(_))));
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
