//! The command line: clap definitions ([`args`]), one file per command, and the one mapping
//! from errors and verdicts to exit codes ([`exit`]). Binary only: the library has no clap,
//! anyhow or tracing-subscriber.

mod args;
mod daemon;
mod docs;
pub mod exit;
mod kill;
mod load;
mod log;
mod ps;
mod run;
mod service;
mod status;
mod track;

use std::io::Write;

use self::args::{Cli, Command, LogFormat};
use bpfkill::{sys::signal::Signal, tracking::PinPaths};

/// Parses the command line and runs it; returns the exit code.
pub fn main() -> anyhow::Result<u8> {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("bpfkill: {} (see --help)", bpfkill::text::escape(&one_line(&e)));
            return Ok(exit::USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return Ok(exit::OK);
        }
    };
    init_logging(
        cli.options.verbose,
        matches!(cli.command, Some(Command::Daemon { .. })),
        cli.options.log_format,
    );
    let paths = PinPaths::from_env();
    let mut stdout = std::io::stdout().lock();

    if cli.options.list_signals {
        for sig in Signal::all() {
            writeln!(stdout, "{:>2} {}", sig.number(), sig.name())?;
        }
        return Ok(exit::OK);
    }
    match cli.command {
        None => kill::run(&paths, &cli.options.kill, &mut stdout),
        Some(Command::Kill(args)) => kill::run(&paths, &args, &mut stdout),
        Some(Command::Run(args)) => run::run(&paths, &args, cli.options.verbose),
        Some(Command::Track {
            service,
            pid,
            pidfile,
        }) => track::run(&paths, &service, pid, pidfile, &mut stdout),
        Some(Command::Ps {
            service,
            tree,
            wide,
            escaped,
            json,
        }) => ps::run(&paths, service.as_deref(), tree, wide, escaped, json, &mut stdout),
        Some(Command::Status { json, daemon }) => status::run(&paths, json, daemon, &mut stdout),
        Some(Command::Doctor { json }) => status::doctor(&paths, json, &mut stdout),
        Some(Command::Daemon {
            load,
            journal,
            journal_max_size,
            journal_keep,
            no_journal,
            config,
            metrics,
            socket,
        }) => daemon::run(
            &paths,
            &load,
            journal,
            (journal_max_size, journal_keep, no_journal),
            config.as_deref(),
            metrics,
            socket,
        ),
        Some(Command::CheckConfig { path }) => service::check(path.as_deref(), &mut stdout),
        Some(Command::Reload) => service::reload(&paths, &mut stdout),
        Some(Command::Forget { service }) => service::forget(&paths, &service, &mut stdout),
        Some(Command::Log(args)) => log::run(&paths, &args, &mut stdout),
        Some(Command::Load(args)) => load::load(&paths, &args, &mut stdout),
        Some(Command::Unload) => load::unload(&paths, &mut stdout),
        Some(Command::Completions { shell }) => docs::completions(shell, &mut stdout),
        Some(Command::Man { command }) => docs::man(command.as_deref(), &mut stdout),
    }
}

/// clap's error on one line: its first line, without the multi-line usage and tips.
fn one_line(e: &clap::Error) -> String {
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
    msg
}

/// Logs to stderr: timestamped text, coloured only when stderr is a terminal (a log file or
/// the system journal gets no escape codes), or JSON lines.
fn init_logging(verbose: u8, daemon: bool, format: LogFormat) {
    use std::io::IsTerminal;
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    // The kernel programs' records were filtered when they were loaded (`--kernel-log`):
    // whatever arrives is shown.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},kernel=debug")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

/// Sends an ordinary user's request to the daemon: the answer, or `Error::Permission(why)`
/// (the reason this user cannot act directly) when no daemon serves the socket.
fn through_daemon(
    paths: &PinPaths,
    req: &bpfkill::job::protocol::Request,
    why: String,
) -> anyhow::Result<bpfkill::job::protocol::Response> {
    let Some(mut client) = bpfkill::job::protocol::Client::connect(paths)? else {
        return Err(bpfkill::Error::Permission(why).into());
    };
    Ok(client.call(req)?.into_result()?)
}
