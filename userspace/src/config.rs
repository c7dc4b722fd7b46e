//! The host's named services: `/etc/bpfkill/config.toml` and `conf.d/*.toml` beside it,
//! merged in name order (a later file's table for a service replaces an earlier one's).
//!
//! ```toml
//! [services.crond]
//! exe = "/usr/sbin/cron"        # match at exec, in the kernel (a list is allowed)
//! comm = "cron"                 # or by the name exec gives the process
//! pidfile = "/run/crond.pid"    # or adopt the process a pidfile names
//! unit = "cron.service"         # or a systemd unit's MainPID and cgroup
//! stop = "TERM/30/KILL/5"       # the default kill schedule for `bpfkill --service crond`
//! leave_exe = ["/bin/bash"]     # a process of the service that execs one of these leaves it
//! ```
//!
//! Unknown keys are errors; every error names the file, the line and the reason.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    error::{Error, Result},
    kill::schedule::Schedule,
    lineage::registry,
    sys::{files, signal::Signal},
};

/// The default main configuration file.
pub const DEFAULT_PATH: &str = "/etc/bpfkill/config.toml";
/// Environment variable naming the main configuration file.
pub const PATH_ENV: &str = "BPFKILL_CONFIG";
/// Largest configuration file read.
const MAX_BYTES: u64 = 1 << 20;

/// One path or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Paths {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

fn paths<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<PathBuf>, D::Error> {
    Ok(match Paths::deserialize(d)? {
        Paths::One(p) => vec![p],
        Paths::Many(v) => v,
    })
}

/// One service's table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Executables whose exec makes a process the root of this service (matched by device
    /// and inode in the kernel, so through any path or link).
    #[serde(default, deserialize_with = "paths")]
    pub exe: Vec<PathBuf>,
    /// The name (`comm`, at most 15 bytes) whose exec makes a process the root of this
    /// service.
    pub comm: Option<String>,
    /// A pidfile naming the service's main process (adopted at start and reload).
    pub pidfile: Option<PathBuf>,
    /// A systemd unit whose MainPID is the main process and whose cgroup is the service's.
    pub unit: Option<String>,
    /// The default kill schedule (`--retry` syntax) of a plain `bpfkill --service NAME`.
    pub stop: Option<String>,
    /// The default signal of a plain `bpfkill --service NAME` (when `stop` is not set).
    pub signal: Option<String>,
    /// Executables where a process leaves this service when it execs them (for example the
    /// login shells of sshd). Default: none.
    #[serde(default, deserialize_with = "paths")]
    pub leave_exe: Vec<PathBuf>,
}

impl ServiceConfig {
    /// The kill schedule this service asks for by default, if any.
    pub fn default_schedule(&self) -> Result<Option<Schedule>> {
        let signal = self.signal.as_deref().map(str::parse::<Signal>).transpose()?;
        match (&self.stop, signal) {
            (Some(stop), sig) => Ok(Some(Schedule::parse_retry(stop, sig.unwrap_or(Signal::TERM))?)),
            (None, Some(sig)) => Ok(Some(Schedule::once(sig))),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    services: BTreeMap<String, ServiceConfig>,
}

/// The merged configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Services by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// The main configuration file to use: `explicit`, else `$BPFKILL_CONFIG`, else the default.
/// The flag says whether it was named (a named file must exist).
pub fn main_path(explicit: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), true);
    }
    match std::env::var_os(PATH_ENV) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn config_error(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Parses and validates one file's text.
fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, ServiceConfig>> {
    let parsed: FileConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        // toml's message is several lines (with a caret drawing): keep its first sentence.
        let reason = e.message().lines().next().unwrap_or("invalid TOML").to_string();
        config_error(path, line, reason)
    })?;
    for (name, svc) in &parsed.services {
        let line = text
            .find(&format!("[services.{name}]"))
            .or_else(|| text.find(&format!("[services.\"{name}\"]")))
            .map(|at| line_of(text, at));
        validate(name, svc)
            .map_err(|reason| config_error(path, line, format!("service {name:?}: {reason}")))?;
    }
    Ok(parsed.services)
}

/// Checks one service's table; the reason when it is wrong.
fn validate(name: &str, svc: &ServiceConfig) -> std::result::Result<(), String> {
    registry::validate_name(name).map_err(|e| e.to_string())?;
    if svc.exe.is_empty() && svc.comm.is_none() && svc.pidfile.is_none() && svc.unit.is_none() {
        return Err("give at least one of exe, comm, pidfile or unit".into());
    }
    for p in svc.exe.iter().chain(&svc.leave_exe) {
        if !p.is_absolute() {
            return Err(format!("{} is not an absolute path", p.display()));
        }
    }
    if let Some(p) = &svc.pidfile {
        if !p.is_absolute() {
            return Err(format!("pidfile {} is not an absolute path", p.display()));
        }
    }
    if let Some(c) = &svc.comm {
        if c.is_empty() || c.len() > 15 || c.contains('\0') {
            return Err(format!(
                "comm {c:?} must be 1 to 15 bytes (the kernel's name length)"
            ));
        }
    }
    if let Some(u) = &svc.unit {
        if u.is_empty() || u.contains('/') {
            return Err(format!("unit {u:?} is not a unit name"));
        }
    }
    svc.default_schedule().map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads one file; None when it does not exist.
fn read(path: &Path) -> Result<Option<String>> {
    match files::open_regular(path, "configuration file", true) {
        Ok(f) => {
            let data = files::read_capped(f, MAX_BYTES, "configuration file", path)?;
            String::from_utf8(data)
                .map(Some)
                .map_err(|_| config_error(path, None, "not UTF-8 text"))
        }
        Err(Error::NoInput(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Config {
    /// Loads `main` (missing is fine unless `required`) and the `*.toml` files of the
    /// `conf.d` directory beside it, in name order.
    pub fn load(main: &Path, required: bool) -> Result<Config> {
        let mut config = Config::default();
        match read(main)? {
            Some(text) => config.merge(main, &text)?,
            None if required => {
                return Err(Error::NoInput(format!(
                    "configuration file {} does not exist",
                    main.display()
                )))
            }
            None => {}
        }
        let dir = main.parent().unwrap_or(Path::new("/")).join("conf.d");
        let mut drop_ins: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        drop_ins.sort();
        for p in drop_ins {
            if let Some(text) = read(&p)? {
                config.merge(&p, &text)?;
            }
        }
        Ok(config)
    }

    fn merge(&mut self, path: &Path, text: &str) -> Result<()> {
        for (name, svc) in parse(path, text)? {
            self.services.insert(name, svc);
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        parse(Path::new("/etc/bpfkill/config.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn drop_ins_merge_in_name_order_over_the_main_file() {
        let dir = std::env::temp_dir().join(format!("bpfkill-confd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let main = dir.join("config.toml");
        let svc = |signal: &str| format!("[services.a]\ncomm = \"a\"\nsignal = \"{signal}\"\n");
        std::fs::write(&main, svc("TERM")).unwrap();
        // Read in name order whatever order they were written in; only *.toml counts.
        std::fs::write(dir.join("conf.d/30-last.toml"), svc("KILL")).unwrap();
        std::fs::write(dir.join("conf.d/10-first.toml"), svc("HUP")).unwrap();
        std::fs::write(dir.join("conf.d/20-b.toml"), "[services.b]\ncomm = \"b\"\n").unwrap();
        std::fs::write(dir.join("conf.d/40-ignored.txt"), svc("INT")).unwrap();
        let c = Config::load(&main, true).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services["a"].signal.as_deref(), Some("KILL"));
        assert!(c.services.contains_key("b"));
    }

    #[test]
    fn a_full_table_parses() {
        let s = parse(
            Path::new("x.toml"),
            "[services.crond]\nexe = \"/usr/sbin/cron\"\ncomm = \"cron\"\nstop = \"TERM/30/KILL/5\"\n\
             [services.sshd]\nexe = [\"/usr/sbin/sshd\"]\nleave_exe = [\"/bin/bash\", \"/bin/sh\"]\n",
        )
        .unwrap();
        assert_eq!(s["crond"].exe, vec![PathBuf::from("/usr/sbin/cron")]);
        assert_eq!(s["sshd"].leave_exe.len(), 2);
        assert!(s["crond"].default_schedule().unwrap().unwrap().waits());
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = err_of("[services.crond]\nexe = \"/usr/sbin/cron\"\nexee = \"x\"\n");
        assert!(e.starts_with("/etc/bpfkill/config.toml:3: "), "{e}");
        assert!(e.contains("exee"), "{e}");
        let e = err_of("\n\n[services.x]\ncomm = \"a-name-longer-than-15\"\n");
        assert!(e.starts_with("/etc/bpfkill/config.toml:3: "), "{e}");
        assert!(e.contains("15 bytes"), "{e}");
        assert!(err_of("[services.x]\n").contains("at least one of"));
        assert!(err_of("[services.x]\nexe = \"relative/path\"\n").contains("absolute"));
        assert!(err_of("[services.x]\nexe = \"/x\"\nstop = \"NOPE/5\"\n").contains("NOPE"));
        assert!(err_of("[services.\"bad name\"]\nexe = \"/x\"\n").contains("invalid service name"));
        assert!(err_of("[services.x\nexe=1").contains(":1: "));
        assert!(!err_of("[services.x]\nexe = 5\n").contains('\n'));
    }
}
