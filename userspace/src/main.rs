use std::process::ExitCode;

fn main() -> ExitCode {
    match bpfkill::cli::main() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bpfkill: {e:#}");
            let code = e
                .downcast_ref::<bpfkill::Error>()
                .map_or(bpfkill::error::exit::SOFTWARE, |e| e.exit_code());
            ExitCode::from(code)
        }
    }
}
