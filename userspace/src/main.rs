use std::process::ExitCode;

fn main() -> ExitCode {
    match bpfkill::cli::main() {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS, // e.g. `bpfkill ps | head`
        Err(e) => {
            eprintln!("bpfkill: {e:#}");
            let code = e
                .downcast_ref::<bpfkill::Error>()
                .map_or(bpfkill::error::exit::SOFTWARE, |e| e.exit_code());
            ExitCode::from(code)
        }
    }
}

/// Whether the error is a write to a closed pipe: the reader has all it wanted.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<bpfkill::Error>().is_some_and(|b| {
                std::error::Error::source(b)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}
