//! The library's error type. Every variant says what kind of failure it is, so the CLI maps
//! each to an exit code by its type alone (see the binary's `cli/exit.rs`); no error is ever
//! classified by its message text.

use std::{io, path::PathBuf};

/// Errors from the bpfkill library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No tracking pins exist.
    #[error("tracking is not loaded (nothing pinned under {}); start it with `bpfkill daemon` or `bpfkill load`", .0.display())]
    NotLoaded(PathBuf),
    /// The named service was never registered.
    #[error("unknown service {0:?} (see `bpfkill status` for the registered services)")]
    UnknownService(String),
    /// A service that is neither registered nor configured, and that the init system does
    /// not know either.
    #[error(
        "unknown service {name:?}: not registered, not configured, and not found through the init system (looked at {}){}{}; make it known with `bpfkill track --service {name} --pid PID`, or a `[services.{name}]` table with exe = \"/path/to/its/binary\" in /etc/bpfkill/config.toml",
        places.join(", "),
        suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default(),
        if known.is_empty() { "; no service is known yet".to_string() } else { format!("; known services: {}", known.join(", ")) }
    )]
    ServiceNotFound {
        /// The name asked for.
        name: String,
        /// The known name closest to it.
        suggestion: Option<String>,
        /// Where the init system was asked.
        places: Vec<String>,
        /// Every registered service.
        known: Vec<String>,
    },
    /// Bad input from the user.
    #[error("{0}")]
    Usage(String),
    /// A guard rail refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// Another daemon runs for the pin directory (or writes the journal).
    #[error("{0}")]
    AlreadyRunning(String),
    /// The process is not tracked by bpfkill.
    #[error("PID {0} is not tracked by bpfkill (see `bpfkill ps`)")]
    NotTracked(u32),
    /// A file or directory the user named does not exist.
    #[error("{0}")]
    NoInput(String),
    /// A configuration file is wrong.
    #[error("{}{}: {reason}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        /// The file.
        path: PathBuf,
        /// The line, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The process does not exist.
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    /// The operation needs privileges bpfkill does not have.
    #[error("{0}: permission denied (bpfkill needs root: CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_KILL)")]
    Permission(String),
    /// Not this user's to see or signal (a request to the daemon's socket).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing matched a request to the daemon's socket.
    #[error("{0}")]
    NothingMatched(String),
    /// The daemon failed a request.
    #[error("the daemon: {0}")]
    Remote(String),
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
    #[error("{context}: {}", chain(.source))]
    Map {
        /// What was being done.
        context: String,
        /// The map error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Loading, attaching or pinning the kernel programs failed.
    #[error("{context}: {}", chain(.source.as_ref()))]
    Ebpf {
        /// What was being done.
        context: String,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded kernel object, or data the kernel wrote, is not what this build expects.
    #[error("{0}")]
    Object(String),
    /// `run` could not exec its command.
    #[error("cannot run {program}: {source}")]
    Exec {
        /// The command.
        program: String,
        /// Why exec failed.
        #[source]
        source: io::Error,
    },
}

/// An error and its causes, joined by `: ` (aya nests the errno under its own error).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// True when the error or one of its causes is one of `errnos` from the kernel.
fn has_errno(e: &(dyn std::error::Error + 'static), errnos: &[i32]) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.raw_os_error().is_some_and(|n| errnos.contains(&n)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// True for "not allowed" from a file or map operation.
fn denied(e: &(dyn std::error::Error + 'static)) -> bool {
    has_errno(e, &[libc::EPERM, libc::EACCES])
}

impl Error {
    /// Wraps an I/O error with what was being done; EPERM/EACCES become [`Error::Permission`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if denied(&source) {
            return Error::Permission(context);
        }
        Error::Io { context, source }
    }

    /// Wraps a map error with what was being done; EPERM/EACCES become [`Error::Permission`].
    pub fn map(context: impl Into<String>, source: aya::maps::MapError) -> Self {
        let context = context.into();
        if denied(&source) {
            return Error::Permission(context);
        }
        Error::Map { context, source }
    }

    /// Wraps an error of aya's loader or programs; EPERM anywhere in its causes becomes
    /// [`Error::Permission`]. (EACCES is not: the verifier rejects a program with it.)
    pub fn ebpf(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let context = context.into();
        if has_errno(&source, &[libc::EPERM]) {
            return Error::Permission(context);
        }
        Error::Ebpf {
            context,
            source: Box::new(source),
        }
    }

    /// Wraps an error of opening a pinned object (a file under bpffs); EPERM/EACCES become
    /// [`Error::Permission`].
    pub fn pin(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let context = context.into();
        if denied(&source) {
            return Error::Permission(context);
        }
        Error::Ebpf {
            context,
            source: Box::new(source),
        }
    }
}

/// Result with the library error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[test]
    fn permission_is_found_among_the_causes() {
        let e = Error::ebpf("load", Outer(io::Error::from_raw_os_error(libc::EPERM)));
        assert!(matches!(e, Error::Permission(_)), "{e:?}");
        let e = Error::ebpf("load", Outer(io::Error::from_raw_os_error(libc::EACCES)));
        assert!(
            matches!(e, Error::Ebpf { .. }),
            "a verifier rejection is no permission problem"
        );
        let e = Error::pin("open", Outer(io::Error::from_raw_os_error(libc::EACCES)));
        assert!(matches!(e, Error::Permission(_)));
        let e = Error::ebpf("load", Outer(io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(matches!(e, Error::Ebpf { .. }));
        assert!(e.to_string().starts_with("load: outer: "), "{e}");
    }
}
