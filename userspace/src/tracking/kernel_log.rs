//! The kernel programs' own diagnostics (aya-log): a full map, a kernel read that failed, a
//! rule that matched. Their level is fixed when the programs are loaded (`--kernel-log`);
//! below it every log statement is dead code the verifier removes, so the default (`off`)
//! costs the hot path nothing. The daemon forwards the records to its log under the target
//! `kernel`.

use std::str::FromStr;

use aya::programs::links::PinnedLink;
use aya_log::EbpfLogger;
use bpfkill_common::{kernel_log, programs};

use super::PinPaths;
use crate::error::{Error, Result};

/// A kernel log level ([`kernel_log`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelLogLevel(pub u32);

impl KernelLogLevel {
    /// Its name: off, error, warn, info or debug.
    pub fn name(self) -> &'static str {
        kernel_log::NAMES
            .get(self.0 as usize)
            .copied()
            .unwrap_or("unknown")
    }

    /// True when no diagnostics are compiled in.
    pub fn is_off(self) -> bool {
        self.0 == kernel_log::OFF
    }
}

impl FromStr for KernelLogLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let s = if s == "warning" { "warn" } else { s.as_str() };
        kernel_log::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self(i as u32))
            .ok_or_else(|| {
                format!(
                    "unknown kernel log level {s:?}: use {}",
                    kernel_log::NAMES.join(", ")
                )
            })
    }
}

impl std::fmt::Display for KernelLogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Forwards aya-log records to `tracing` under the target `kernel`.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "kernel", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "kernel", "{msg}"),
            log::Level::Info => tracing::info!(target: "kernel", "{msg}"),
            log::Level::Debug | log::Level::Trace => tracing::debug!(target: "kernel", "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// The reader of the kernel programs' log ring buffer. It must stay alive for as long as
/// records are read; [`KernelLog::flush`] forwards what is there.
pub struct KernelLog(EbpfLogger<Forward>);

impl KernelLog {
    /// Opens the log of the pinned tracking programs (the ring buffer their fork program
    /// writes, shared by all of them).
    pub fn open(paths: &PinPaths) -> Result<Self> {
        let (prog, _) = programs::FORK;
        let link = PinnedLink::from_pin(paths.link(prog))
            .map_err(|e| Error::pin(format!("open the pinned link of {prog}"), e))?;
        let info = aya::programs::links::FdLink::from(link)
            .info()
            .map_err(|e| Error::ebpf(format!("read the link of {prog}"), e))?;
        let logger = EbpfLogger::init_from_id_with_logger(info.program_id(), Forward)
            .map_err(|e| Error::ebpf("open the kernel programs' log", e))?;
        Ok(Self(logger))
    }

    /// Forwards every record waiting in the ring buffer.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

impl std::os::fd::AsRawFd for KernelLog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_print() {
        for (i, name) in kernel_log::NAMES.iter().enumerate() {
            let level: KernelLogLevel = name.parse().unwrap();
            assert_eq!(level, KernelLogLevel(i as u32));
            assert_eq!(level.to_string(), *name);
        }
        assert_eq!(
            "Warning".parse::<KernelLogLevel>(),
            Ok(KernelLogLevel(kernel_log::WARN))
        );
        assert!("loud"
            .parse::<KernelLogLevel>()
            .unwrap_err()
            .contains("off, error"));
    }
}
