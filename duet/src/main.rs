//! `duet`: the one binary. Every role of the service (signaling, SFU with
//! its TURN relay, standalone TURN) and `up`, which runs them all in one
//! process with embedded defaults.

mod observability;
mod roles;
mod shutdown;

use duet::{cli, secret, telemetry};

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse_from_env() {
        Ok(cli) => cli,
        Err(cli::CliError::Clap(e)) => {
            // --help and --version are not errors.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("duet: {}", cli::one_line(&e));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("duet: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(roles::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("duet: {}", format_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn format_chain(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}
