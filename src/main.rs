//! The `saturn` command line. Only this crate knows about the terminal: it parses arguments,
//! prints results, and turns every error into a message and exit code 2.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Cranelift and egg log every function compiled and every rebuild at info: keep them out.
    let mut filter = tracing_subscriber::EnvFilter::from_env("SATURN_LOG");
    for quiet in ["cranelift_codegen=warn", "cranelift_jit=warn", "cranelift_frontend=warn", "egg=warn"] {
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
