//! Library errors and the stable exit codes they map to.

use std::{io, path::PathBuf};

/// Stable exit codes (documented in `--help` and README).
pub mod exit {
    /// Every target was signalled (and is gone, when waiting was asked for).
    pub const OK: u8 = 0;
    /// Nothing matched: no live process of the service or PID.
    pub const NOTHING_MATCHED: u8 = 1;
    /// Some targets could not be signalled.
    pub const PARTIAL: u8 = 2;
    /// Survivors remain after the timeout or retry schedule.
    pub const SURVIVORS: u8 = 3;
    /// Bad command line or input.
    pub const USAGE: u8 = 64;
    /// Tracking is not loaded.
    pub const NOT_LOADED: u8 = 69;
    /// Internal or operating-system failure.
    pub const SOFTWARE: u8 = 70;
    /// Not permitted (bpfkill needs root).
    pub const NO_PERMISSION: u8 = 77;
    /// `run`: the command could not be executed (as in shells).
    pub const CANNOT_EXECUTE: u8 = 126;
    /// `run`: the command was not found (as in shells).
    pub const NOT_FOUND: u8 = 127;
}

/// Errors from the bpfkill library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No tracking pins exist.
    #[error("tracking is not loaded (nothing pinned under {}); start it with `bpfkill daemon` or `bpfkill load`", .0.display())]
    NotLoaded(PathBuf),
    /// The named service was never registered.
    #[error("unknown service {0:?} (see `bpfkill status` for the registered services)")]
    UnknownService(String),
    /// Bad input from the user.
    #[error("{0}")]
    Usage(String),
    /// A guard rail refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// The process is not tracked by bpfkill.
    #[error("PID {0} is not tracked by bpfkill (see `bpfkill ps`)")]
    NotTracked(u32),
    /// The process does not exist.
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    /// The operation needs privileges bpfkill does not have.
    #[error("{0}: permission denied (bpfkill needs root: CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_KILL)")]
    Permission(String),
    /// The kernel lacks something bpfkill needs.
    #[error("unsupported kernel: {0}")]
    Unsupported(String),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A BPF map operation failed.
    #[error("{context}: {source}")]
    Map {
        /// What was being done.
        context: String,
        /// The map error.
        #[source]
        source: aya::maps::MapError,
    },
    /// `run` could not exec its command.
    #[error("cannot run {program}: {source}")]
    Exec {
        /// The command.
        program: String,
        /// Why exec failed.
        #[source]
        source: io::Error,
    },
    /// Loading or attaching the kernel programs failed.
    #[error("{0}")]
    Ebpf(String),
}

impl Error {
    /// Wraps an I/O error with what was being done; EPERM/EACCES become [`Error::Permission`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::Permission(context),
            _ => Error::Io { context, source },
        }
    }

    /// Wraps a map error with what was being done.
    pub fn map(context: impl Into<String>, source: aya::maps::MapError) -> Self {
        let context = context.into();
        if let aya::maps::MapError::SyscallError(e) = &source {
            if matches!(e.io_error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return Error::Permission(context);
            }
        }
        Error::Map { context, source }
    }

    /// The exit code this error maps to.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotLoaded(_) => exit::NOT_LOADED,
            Error::Usage(_) | Error::Refused(_) => exit::USAGE,
            Error::UnknownService(_) | Error::NoSuchProcess(_) | Error::NotTracked(_) => {
                exit::NOTHING_MATCHED
            }
            Error::Permission(_) => exit::NO_PERMISSION,
            Error::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => exit::NOT_FOUND,
            Error::Exec { .. } => exit::CANNOT_EXECUTE,
            Error::Unsupported(_) | Error::Io { .. } | Error::Map { .. } | Error::Ebpf(_) => exit::SOFTWARE,
        }
    }
}

/// Result with the library error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
