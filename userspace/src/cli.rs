//! The command line: parsing, dispatch to the library stages, printing, exit codes.

use std::{ffi::OsString, io::Write, path::PathBuf};

use anyhow::Context as _;
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::{
    adopt,
    candidates::Whom,
    daemon,
    error::{exit, Error},
    journal::{self, JournalConfig},
    kill, log, ps, run,
    schedule::{self, Schedule},
    service::Target,
    signal::Signal,
    status,
    tracking::{self, PinPaths, Tracking},
};

const EXIT_CODES: &str = "\
Exit codes:
  0   every target was signalled (by bpfkill, or by the kernel during a SIGKILL)
  1   nothing matched (no live process of the service, unknown service)
  2   some targets could not be signalled
  3   survivors remain after the timeout or retry schedule
  64  usage error (bad option, signal, service name or input)
  69  tracking is not loaded (start `bpfkill daemon` or `bpfkill load`)
  70  internal or operating-system failure
  77  permission denied (bpfkill needs root)
`bpfkill run` exits with its command's status (126/127 when it cannot be executed).";

/// Kill a service and every process it ever spawned, tracked in the kernel with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "bpfkill",
    version,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    override_usage = "bpfkill [-s SIGNAL] (--service NAME | --pid PID | --pidfile FILE) [OPTIONS]\n       bpfkill <COMMAND> [ARGS]"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    kill: KillArgs,

    /// List signal names and numbers.
    #[arg(short = 'l', long = "list-signals")]
    list_signals: bool,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    s.parse::<Signal>().map_err(|e| e.to_string())
}

/// Options of the kill (the default action, and `bpfkill kill`).
#[derive(Debug, Args, Clone)]
struct KillArgs {
    /// Signal to send: SIGKILL, KILL, kill, 9, SIGRTMIN+3, RTMIN+3 ...
    #[arg(short = 's', long = "signal", value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal)]
    signal: Signal,

    /// Service whose processes to signal.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["pid", "pidfile"])]
    service: Option<String>,

    /// A tracked process: signal it and its tagged descendants.
    #[arg(long, value_name = "PID", conflicts_with = "pidfile")]
    pid: Option<u32>,

    /// Read the tracked process's PID from a pidfile (root-owned, not group/world-writable).
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// Which processes: the main one, all, or only those that escaped.
    #[arg(long = "kill-whom", visible_alias = "kill-who", value_enum, default_value_t = Whom::All)]
    whom: Whom,

    /// A cgroup dedicated to the service, as extra evidence (never a shared or root cgroup).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,

    /// Print what would be signalled, with each process's evidence; signal nothing.
    #[arg(long)]
    dry_run: bool,

    /// Block until every signalled process is gone.
    #[arg(long, conflicts_with_all = ["timeout", "retry"])]
    wait: bool,

    /// Send the signal, wait this long (10s, 500ms), then SIGKILL the survivors.
    #[arg(long, value_name = "DURATION", conflicts_with = "retry")]
    timeout: Option<String>,

    /// start-stop-daemon style schedule: TERM/30/KILL/5 (signal/seconds/...; `forever` repeats).
    #[arg(long, value_name = "SCHEDULE")]
    retry: Option<String>,

    /// One JSON object per process, then a summary object.
    #[arg(long)]
    json: bool,
}

impl KillArgs {
    fn target(&self) -> Option<Target> {
        match (&self.service, self.pid, &self.pidfile) {
            (Some(s), _, _) => Some(Target::Service(s.clone())),
            (_, Some(p), _) => Some(Target::Pid(p)),
            (_, _, Some(f)) => Some(Target::Pidfile(f.clone())),
            _ => None,
        }
    }

    fn schedule(&self) -> crate::Result<Schedule> {
        Ok(if let Some(r) = &self.retry {
            Schedule::parse_retry(r, self.signal)?
        } else if let Some(t) = &self.timeout {
            Schedule::timeout(self.signal, schedule::parse_duration(t)?)
        } else if self.wait {
            Schedule::wait_forever(self.signal)
        } else {
            Schedule::once(self.signal)
        })
    }
}

/// Options of a fresh load.
#[derive(Debug, Args, Clone)]
struct LoadArgs {
    /// Capacity of the tag map (processes tracked at once); fixed when the map is created.
    #[arg(long, value_name = "N", default_value_t = bpfkill_common::DEFAULT_MAX_TAGS)]
    max_tags: u32,
}

#[derive(Debug, Args)]
struct JournalArgs {
    /// Directory of the history journal.
    #[arg(
        long,
        value_name = "DIR",
        env = "BPFKILL_JOURNAL_DIR",
        default_value = "/var/lib/bpfkill"
    )]
    journal_dir: PathBuf,
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
    fn options(&self) -> tracking::LoadOptions {
        tracking::LoadOptions {
            max_tags: self.max_tags,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Signal every live process of a service (same as the bare form).
    Kill(KillArgs),
    /// Register a service, tag this process as its main process, and exec COMMAND.
    Run {
        /// Service name.
        #[arg(long, value_name = "NAME")]
        service: String,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
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
    },
    /// Show the history of tracked processes (fork, exec, exit; exited ones included) from the
    /// journal the daemon writes.
    Log {
        /// Only this service.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Only events of this process.
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
        /// Only events since then: a duration back from now (1h, 30min) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// One JSON object per line (fields are stable; see README).
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Load and pin tracking, then exit (tracking stays live).
    Load(LoadArgs),
    /// Detach the programs and remove every pin.
    Unload,
}

fn init_logging(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line and runs it; returns the exit code.
pub fn main() -> anyhow::Result<u8> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line: clap's first line, without its multi-line usage and tips.
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut msg = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            if msg.ends_with(':') {
                msg = format!("{msg} {}", lines.next().unwrap_or_default());
            }
            eprintln!("bpfkill: {msg} (see --help)");
            return Ok(exit::USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return Ok(exit::OK);
        }
    };
    init_logging(cli.verbose, matches!(cli.command, Some(Command::Daemon { .. })));
    let paths = PinPaths::from_env();
    let mut stdout = std::io::stdout().lock();

    if cli.list_signals {
        for sig in Signal::all() {
            writeln!(stdout, "{:>2} {}", sig.number(), sig.name())?;
        }
        return Ok(exit::OK);
    }
    match cli.command {
        None => do_kill(&paths, &cli.kill, &mut stdout),
        Some(Command::Kill(args)) => do_kill(&paths, &args, &mut stdout),
        Some(Command::Run { service, command }) => {
            let tracking = Tracking::open(&paths)?;
            match run::run(tracking, &service, &command)? {}
        }
        Some(Command::Track {
            service,
            pid,
            pidfile,
        }) => {
            let root = match (pid, pidfile) {
                (Some(p), _) => adopt::Root::Pid(p),
                (None, Some(f)) => adopt::Root::Pidfile(f),
                (None, None) => return Err(Error::Usage("track needs --pid or --pidfile".into()).into()),
            };
            let mut tracking = Tracking::open(&paths)?;
            let report = adopt::track(&mut tracking, &service, &root)?;
            writeln!(
                stdout,
                "{service}: tracking PID {} and {} descendant(s) ({} adopted now, {} already tagged by the kernel)",
                report.root,
                report.adopted.len().saturating_sub(1) + report.already_tagged,
                report.adopted.len(),
                report.already_tagged
            )?;
            Ok(exit::OK)
        }
        Some(Command::Ps {
            service,
            tree,
            escaped,
            json,
        }) => {
            let tracking = Tracking::open(&paths)?;
            let query = ps::Query {
                service: service.as_deref(),
                escaped_only: escaped,
            };
            let entries = ps::list(&tracking, &paths, &query)?;
            use std::io::IsTerminal;
            let terminal = std::io::stdout().is_terminal();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut stdout);
            if json {
                // Indented for a person at a terminal, compact for a program.
                ps::write_json(&entries, terminal, &mut out)?;
            } else if tree {
                let colour = terminal && std::env::var_os("NO_COLOR").is_none();
                ps::write_tree(&tracking, &entries, colour, &mut out)?;
            } else {
                ps::write_table(&entries, &mut out)?;
            }
            out.flush()?;
            // The process ends now: freeing 10,000 entries one by one would only delay it.
            std::mem::forget(entries);
            Ok(exit::OK)
        }
        Some(Command::Status { json }) => {
            let s = status::gather(&paths);
            if json {
                serde_json::to_writer_pretty(&mut stdout, &s)?;
                writeln!(stdout)?;
            } else {
                status::write_human(&s, &mut stdout)?;
            }
            Ok(if s.live { exit::OK } else { exit::NOT_LOADED })
        }
        Some(Command::Daemon {
            load,
            journal,
            journal_max_size,
            journal_keep,
            no_journal,
        }) => {
            let opts = daemon::Options {
                load: load.options(),
                journal: (!no_journal).then_some(JournalConfig {
                    dir: journal.journal_dir,
                    max_bytes: journal_max_size,
                    keep: journal_keep,
                }),
            };
            daemon::run(&paths, &opts)?;
            Ok(exit::OK)
        }
        Some(Command::Log {
            service,
            pid,
            since,
            json,
            follow,
            journal,
        }) => {
            let filter = journal::Filter {
                service,
                pid,
                since_ns: since.as_deref().map(log::parse_since).transpose()?,
            };
            let format = if json {
                log::Format::Json
            } else {
                log::Format::Human
            };
            let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut stdout);
            if follow {
                log::follow(&journal.journal_dir, &filter, format, &mut out)?;
            } else {
                log::show(&journal.journal_dir, &filter, format, &mut out)?;
            }
            out.flush()?;
            Ok(exit::OK)
        }
        Some(Command::Load(args)) => {
            match tracking::load(&paths, &args.options()).context("load tracking")? {
                tracking::LoadOutcome::Adopted => {
                    writeln!(stdout, "tracking already live under {}", paths.root().display())?
                }
                tracking::LoadOutcome::Loaded { attached } => writeln!(
                    stdout,
                    "tracking loaded ({attached} program(s) attached), pinned under {}",
                    paths.root().display()
                )?,
            }
            Ok(exit::OK)
        }
        Some(Command::Unload) => {
            if tracking::unload(&paths)? {
                writeln!(
                    stdout,
                    "tracking unloaded; pins under {} removed",
                    paths.root().display()
                )?;
            } else {
                writeln!(stdout, "nothing pinned under {}", paths.root().display())?;
            }
            Ok(exit::OK)
        }
    }
}

fn do_kill(paths: &PinPaths, args: &KillArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    let Some(target) = args.target() else {
        return Err(Error::Usage(
            "nothing to signal: give --service NAME, --pid PID or --pidfile FILE".into(),
        )
        .into());
    };
    let request = kill::KillRequest {
        target,
        whom: args.whom,
        cgroup: args.cgroup.clone(),
        schedule: args.schedule()?,
        dry_run: args.dry_run,
    };
    let mut tracking = Tracking::open(paths)?;
    let report = kill::kill(&mut tracking, &request)?;
    if args.json {
        report.write_json(out)?;
    } else {
        report.write_human(out)?;
    }
    Ok(report.exit_code())
}
