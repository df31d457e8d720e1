//! `vex-lens` entry point: parse arguments, run the command, map errors to exit codes.

#![forbid(unsafe_code)]

mod cli;
mod commands;

use clap::Parser;

/// jemalloc as the allocator: the service allocates and frees many small values per
/// observation (records, statements, encoded rows) on several threads, where glibc's
/// malloc spent about a fifth of the CPU (docs/performance.md, session 15).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Consensus(a) => commands::consensus::run(a),
        cli::Command::Normalise(a) => commands::consensus::run_normalise(a),
        cli::Command::Keygen(a) => commands::keygen::run(a),
        cli::Command::Keys(a) => commands::keys::run(a),
        cli::Command::Export(a) => commands::export::run(a),
        cli::Command::Verify(a) => Ok(commands::verify::run(a)),
        cli::Command::Serve(a) => commands::serve::run(a),
        cli::Command::Records(a) => commands::serve::run_records(a),
        cli::Command::Reindex(a) => commands::reindex::run(a),
        cli::Command::Compact(a) => commands::compact::run(a),
        cli::Command::Feed(c) => commands::feed::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
