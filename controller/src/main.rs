//! `kruntimes-controller`: parses its flags, sets up logging and runs the library.

use std::process::ExitCode;

use clap::Parser;
use kruntimes_controller::app;
use kruntimes_controller::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    app::init_logging(args.log_format);
    // The crypto provider of every TLS connection (to the API server and to runtimed).
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("kruntimes-controller: a TLS crypto provider was already installed");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kruntimes-controller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kruntimes-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}
