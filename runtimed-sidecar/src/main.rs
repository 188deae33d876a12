//! `runtimed`: not implemented yet; says so instead of pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "runtimed {}: runtimed is not implemented yet in this release; see docs/roadmap.md",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
