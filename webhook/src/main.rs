//! `kruntimes-webhook`: parses flags, sets up logging and the crypto provider, and runs
//! the server from the library.

use std::process::ExitCode;

use clap::Parser;
use kruntimes_webhook::server::{Args, LogFormat, run};

/// mimalloc rather than glibc malloc: a review is thousands of small allocations
/// (decoded strings, field paths, the answer), and with glibc they were about a third of
/// the webhook's CPU under load (docs/benchmarks.md has the before and after).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("kruntimes-webhook: a rustls crypto provider was already installed");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kruntimes-webhook: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kruntimes-webhook: {e:#}");
            ExitCode::from(2)
        }
    }
}
