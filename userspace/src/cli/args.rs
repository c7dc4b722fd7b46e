//! The command line's definition (clap): the bare kill form, its options, and one variant per
//! command. Parsing helpers for values clap does not know live here too.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use bpfkill::{
    kill::{
        candidates::Whom,
        resolve::Target,
        schedule::{self, Schedule},
    },
    sys::{pidfile::PidSource, signal::Signal},
    tracking,
};
use clap::{
    builder::{PossibleValuesParser, TypedValueParser},
    ArgAction, Args, FromArgMatches, Parser, Subcommand,
};

use super::exit;

/// Kill a service and every process it ever spawned, tracked in the kernel with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "bpfkill",
    version,
    after_help = exit::HELP,
    args_conflicts_with_subcommands = true,
    override_usage = "bpfkill [-s SIGNAL] (--service NAME | --pid PID | --pidfile FILE) [OPTIONS]\n       bpfkill <COMMAND> [ARGS]"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub options: Options,
}

/// The options outside every command: the bare form's (the kill), and the global ones.
#[derive(Debug, Args)]
pub struct Options {
    #[command(flatten)]
    pub kill: KillArgs,

    /// List signal names and numbers.
    #[arg(short = 'l', long = "list-signals")]
    pub list_signals: bool,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log lines as text (timestamped, coloured only on a terminal) or as one JSON object per
    /// line, for log shippers.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

impl Cli {
    /// Parses the command line. One that names no command and asks for no help or version
    /// (the bare kill) is parsed against the bare form's options alone: a kill, whose signals
    /// should go out at once, does not wait for every command's definition to be built (a
    /// fifth of a millisecond of its start). Any other, and any the bare form's options
    /// refuse, is parsed against the whole definition, which also words every error.
    pub fn parse_args() -> Result<Self, clap::Error> {
        Self::parse_from_args(std::env::args_os().collect())
    }

    fn parse_from_args(args: Vec<OsString>) -> Result<Self, clap::Error> {
        if args.iter().skip(1).all(is_bare_form_word) {
            if let Ok(options) = parse_bare(&args) {
                return Ok(Self {
                    command: None,
                    options,
                });
            }
        }
        Self::try_parse_from(args)
    }
}

/// Parses a command line against the bare form's options alone.
fn parse_bare(args: &[OsString]) -> Result<Options, clap::Error> {
    Options::augment_args(clap::Command::new("bpfkill"))
        .try_get_matches_from(args)
        .and_then(|m| Options::from_arg_matches(&m))
}

/// True for a word the bare form's options may take as they are: not a command's name (or
/// alias) nor `help`, and no help or version flag (`-h`, `--help`, `-V`, `--version`, or a
/// cluster of short flags holding `h` or `V`).
fn is_bare_form_word(word: &OsString) -> bool {
    let Some(w) = word.to_str() else {
        return false;
    };
    if Command::has_subcommand(w) || w == "help" || w == "--help" || w == "--version" {
        return false;
    }
    !(w.starts_with('-') && !w.starts_with("--") && w.contains(['h', 'V']))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain text.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    s.parse::<Signal>().map_err(|e| e.to_string())
}

fn parse_whom(s: &str) -> Result<Whom, String> {
    s.parse::<Whom>().map_err(|e| e.to_string())
}

/// Options of the kill (the default action, and `bpfkill kill`).
#[derive(Debug, Args, Clone)]
pub struct KillArgs {
    /// Signal to send: SIGKILL, KILL, kill, 9, SIGRTMIN+3, RTMIN+3 ...
    /// (Default SIGTERM, or the service's configured `stop`/`signal`.)
    #[arg(short = 's', long = "signal", value_name = "SIGNAL", value_parser = parse_signal)]
    pub signal: Option<Signal>,

    /// Service whose processes to signal.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["pid", "pidfile"])]
    pub service: Option<String>,

    /// A tracked process: signal it and its tagged descendants.
    #[arg(long, value_name = "PID", conflicts_with = "pidfile")]
    pub pid: Option<u32>,

    /// Read the tracked process's PID from a pidfile (root-owned, not group/world-writable).
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Which processes: the main one, all, or only those that escaped.
    #[arg(
        long = "kill-whom",
        visible_alias = "kill-who",
        default_value = "all",
        value_parser = PossibleValuesParser::new(Whom::NAMES).try_map(|s| parse_whom(&s))
    )]
    pub whom: Whom,

    /// A cgroup dedicated to the service, as extra evidence (never a shared or root cgroup).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Print what would be signalled, with each process's evidence; signal nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Block until every signalled process is gone.
    #[arg(long, conflicts_with_all = ["timeout", "retry"])]
    pub wait: bool,

    /// Send the signal, wait this long (10s, 500ms), then SIGKILL the survivors.
    #[arg(long, value_name = "DURATION", conflicts_with = "retry")]
    pub timeout: Option<String>,

    /// start-stop-daemon style schedule: TERM/30/KILL/5 (signal/seconds/...; `forever` repeats).
    #[arg(long, value_name = "SCHEDULE")]
    pub retry: Option<String>,

    /// One JSON object per process, then a summary object.
    #[arg(long)]
    pub json: bool,
}

impl KillArgs {
    /// What the options name, if anything.
    pub fn target(&self) -> Option<Target> {
        match (&self.service, self.pid, &self.pidfile) {
            (Some(s), _, _) => Some(Target::Service(s.clone())),
            (_, Some(p), _) => Some(Target::Process(PidSource::Pid(p))),
            (_, _, Some(f)) => Some(Target::Process(PidSource::Pidfile(f.clone()))),
            _ => None,
        }
    }

    /// The escalation schedule the options ask for; None for a plain kill (no signal, no
    /// wait), which takes the service's configured default when it has one.
    pub fn schedule(&self) -> bpfkill::Result<Option<Schedule>> {
        let sig = self.signal.unwrap_or(Signal::TERM);
        Ok(Some(if let Some(r) = &self.retry {
            Schedule::parse_retry(r, sig)?
        } else if let Some(t) = &self.timeout {
            Schedule::timeout(sig, schedule::parse_duration(t)?)
        } else if self.wait {
            Schedule::wait_forever(sig)
        } else if self.signal.is_some() {
            Schedule::once(sig)
        } else {
            return Ok(None);
        }))
    }
}

/// The daemon's socket for ordinary users.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// Where ordinary users reach the daemon (default /run/bpfkill/bpfkill.sock for the default
    /// pin directory, one named after the pin directory otherwise).
    #[arg(long, value_name = "PATH", env = "BPFKILL_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Only members of this group may use the socket (mode 0660); every local user may
    /// otherwise (every request is checked against the caller's credentials).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// No socket: only root uses bpfkill.
    #[arg(long, conflicts_with_all = ["socket", "socket_group"])]
    pub no_socket: bool,
}

/// `bpfkill log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only this service.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Only events of this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only events since then: a duration back from now (1h, 30min) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// One JSON object per line (fields are stable; see README).
    #[arg(long)]
    pub json: bool,
    /// Keep printing new events as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub journal: JournalArgs,
}

/// `bpfkill run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Service name. Required to exec a service; a job without it gets a unique
    /// `job-PID-TICKS` (`-v` prints it).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Job: when COMMAND exits, stop everything it spawned (--signal, then SIGKILL after
    /// --grace), however it left (double fork, setsid, env -i, rename); exit with COMMAND's
    /// status (128+N when signal N killed it).
    #[arg(long, conflicts_with = "keep_running")]
    pub kill_on_exit: bool,
    /// Job: when COMMAND exits, list on stderr what it left running and signal nothing (the
    /// service stays registered with them): a leak check for test suites.
    #[arg(long)]
    pub keep_running: bool,
    /// Job: stop the whole tree after this long (90s, 30m, 1h); exit status 124, as
    /// timeout(1).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub time_limit: Option<Duration>,
    /// Job: the wait between the signal and SIGKILL when the tree is stopped [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<Duration>,
    /// Job: the signal that stops the tree [default: SIGTERM].
    #[arg(short = 's', long = "signal", value_name = "SIGNAL", value_parser = parse_signal)]
    pub signal: Option<Signal>,
    /// Job: refuse to run untracked (tracking not loaded, or not allowed) instead of running
    /// COMMAND with a warning that nothing will be cleaned up.
    #[arg(long)]
    pub require_tracking: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// True for a job (bpfkill stays COMMAND's parent).
    pub fn is_job(&self) -> bool {
        self.kill_on_exit || self.keep_running || self.time_limit.is_some()
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    schedule::parse_duration(s).map_err(|e| e.to_string())
}

/// Options of a fresh load.
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// Capacity of the tag map (processes tracked at once); fixed when the map is created.
    #[arg(long, value_name = "N", default_value_t = bpfkill_common::DEFAULT_MAX_TAGS)]
    pub max_tags: u32,
    /// Compile the kernel programs' diagnostics in, from this level down (off, error, warn,
    /// info, debug): a full map, a failed kernel read, a rule match. Fixed when tracking is
    /// loaded; the daemon forwards them to its log (target `kernel`). Off by default, when
    /// the verifier removes every log statement.
    #[arg(long, value_name = "LEVEL", env = "BPFKILL_KERNEL_LOG")]
    pub kernel_log: Option<tracking::KernelLogLevel>,
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    /// Directory of the history journal.
    #[arg(
        long,
        value_name = "DIR",
        env = "BPFKILL_JOURNAL_DIR",
        default_value = "/var/lib/bpfkill"
    )]
    pub journal_dir: PathBuf,
}

/// Parses a size such as `4096`, `512KiB`, `16MiB` or `1GiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {text:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {text:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .filter(|&v| v >= 4096)
        .ok_or_else(|| format!("invalid size {text:?}: at least 4096 bytes"))
}

impl LoadArgs {
    /// The library's load options.
    pub fn options(&self) -> tracking::LoadOptions {
        tracking::LoadOptions {
            max_tags: self.max_tags,
            kernel_log: self.kernel_log,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Signal every live process of a service (same as the bare form).
    Kill(KillArgs),
    /// Run COMMAND as a service: exec it as the service's main process, or, as a job
    /// (--kill-on-exit, --keep-running, --time-limit), stay its parent and clean up after it.
    Run(RunArgs),
    /// Adopt a running process and its current descendants into a service.
    Track {
        /// Service name.
        #[arg(long, value_name = "NAME")]
        service: String,
        /// The process to adopt.
        #[arg(
            long,
            value_name = "PID",
            required_unless_present = "pidfile",
            conflicts_with = "pidfile"
        )]
        pid: Option<u32>,
        /// Read the PID from a pidfile (root-owned, not group/world-writable).
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
    },
    /// List the live tagged processes of a service.
    Ps {
        /// Service name (all services when omitted).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Draw the lineage as a tree, from the recorded creators (not from ppid).
        #[arg(long, conflicts_with = "json")]
        tree: bool,
        /// Spell out the escape reasons in the table instead of abbreviating them.
        #[arg(long, conflicts_with_all = ["json", "tree"])]
        wide: bool,
        /// Only processes that escaped (with their reasons).
        #[arg(long)]
        escaped: bool,
        /// Print a JSON array (field names are stable; see README).
        #[arg(long)]
        json: bool,
    },
    /// Show whether tracking is live, the kernel layout, services and drop counters.
    /// Exits 0 only when tracking is live.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit 0 only when a daemon runs for the pin directory and is ready (what init
        /// scripts wait for after starting it).
        #[arg(long)]
        daemon: bool,
    },
    /// Check what this host's kernel offers bpfkill, one line per feature with its result
    /// and what its absence costs. Uses the live tracking, or loads it into a scratch pin
    /// directory and unloads it. Exits 0 when bpfkill works here, 69 when a required
    /// feature is missing.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load (or adopt) tracking and consume its events in the foreground, writing them to the
    /// history journal.
    Daemon {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        journal: JournalArgs,
        /// Maximum size of the active journal file before it is rotated.
        #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_size)]
        journal_max_size: u64,
        /// Rotated journal files to keep.
        #[arg(long, value_name = "N", default_value_t = 4)]
        journal_keep: usize,
        /// Do not write the journal (events are only logged).
        #[arg(long)]
        no_journal: bool,
        /// The main configuration file (`conf.d/*.toml` beside it is read too).
        #[arg(long, value_name = "PATH", env = "BPFKILL_CONFIG")]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics: a bare port is loopback
        /// (`9091`), or give an address (`0.0.0.0:9091`). Off unless given.
        #[arg(long, value_name = "ADDR", value_parser = bpfkill::daemon::parse_metrics_addr)]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Validate a configuration (default /etc/bpfkill/config.toml and its conf.d) without
    /// loading anything.
    CheckConfig {
        /// The main configuration file.
        #[arg(value_name = "PATH", env = "BPFKILL_CONFIG")]
        path: Option<PathBuf>,
    },
    /// Make the running daemon reload its configuration (as SIGHUP does) and report the
    /// result.
    Reload,
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff, section 8): bpfkill(8), or a command's own page,
    /// bpfkill-COMMAND(8).
    Man {
        /// The command whose page to print.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Forget a service that has no live process (its history stays in the journal).
    Forget {
        /// Service name.
        #[arg(long, value_name = "NAME")]
        service: String,
    },
    /// Show the history of tracked processes (fork, exec, exit; exited ones included) from the
    /// journal the daemon writes.
    Log(LogArgs),
    /// Load and pin tracking, then exit (tracking stays live).
    Load(LoadArgs),
    /// Detach the programs and remove every pin.
    Unload,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    /// The bare form's own parse gives what the whole definition gives, for every line it
    /// takes; the lines it leaves (commands, help, version, errors) go to the whole one.
    #[test]
    fn the_bare_form_parses_as_the_whole_definition_does() {
        for line in [
            "bpfkill -s KILL --service crond",
            "bpfkill -sKILL --service=crond --json",
            "bpfkill --signal 9 --pid 42 --wait",
            "bpfkill --service a --timeout 5s -v -v",
            "bpfkill --service a --retry TERM/30/KILL/5 --kill-whom escaped --log-format json",
            "bpfkill --pidfile /run/x.pid --dry-run --cgroup /sys/fs/cgroup/x",
            "bpfkill -l",
            "bpfkill",
        ] {
            let args = words(line);
            assert!(args.iter().skip(1).all(is_bare_form_word), "{line}");
            let bare = parse_bare(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            let whole = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(whole.command.is_none(), "{line}");
            assert_eq!(format!("{bare:?}"), format!("{:?}", whole.options), "{line}");
        }
    }

    #[test]
    fn commands_help_version_and_errors_go_to_the_whole_definition() {
        for line in [
            "bpfkill ps",
            "bpfkill ps --tree -v",
            "bpfkill kill --service a",
            "bpfkill help",
            "bpfkill -h",
            "bpfkill -vh",
            "bpfkill --help",
            "bpfkill -V",
            "bpfkill --version",
        ] {
            let args = words(line);
            assert!(!args.iter().skip(1).all(is_bare_form_word), "{line}");
        }
        // Refused by both: the whole definition's error is the one given.
        for line in ["bpfkill --servic a", "bpfkill --service a stray", "bpfkill -s"] {
            let e = Cli::parse_from_args(words(line)).expect_err(line);
            let whole = Cli::try_parse_from(words(line)).expect_err(line);
            assert_eq!(e.to_string(), whole.to_string(), "{line}");
        }
        // --service and --pid conflict in both.
        assert!(Cli::parse_from_args(words("bpfkill --service a --pid 3")).is_err());
        let ps = Cli::parse_from_args(words("bpfkill ps -v")).expect("ps");
        assert!(matches!(ps.command, Some(Command::Ps { .. })));
        assert_eq!(ps.options.verbose, 1);
    }
}
