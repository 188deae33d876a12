//! `krt`: the kruntimes command line. Parsing and exit codes live in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    krt::main()
}
