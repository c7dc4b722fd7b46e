//! The `bpfkill` binary: parse, run, map the outcome to an exit code, report an error once.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS, // e.g. `bpfkill ps | head`
        Err(e) => {
            eprintln!("bpfkill: {}", bpfkill::text::escape(&message(&e)));
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<bpfkill::Error>())
                .map_or(cli::exit::SOFTWARE, cli::exit::of_error);
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line, each said once: the chain stops at the library's
/// error, whose message already carries its own causes.
fn message(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for c in e.chain() {
        parts.push(c.to_string());
        if c.is::<bpfkill::Error>() {
            break;
        }
    }
    parts.join(": ")
}

/// Whether the error is a write to a closed pipe: the reader has all it wanted.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
