//! `kruntimes-controller`: parses its flags and runs the controller library.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "kruntimes-controller {}: the reconcilers are being built; this binary does not reconcile yet",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
