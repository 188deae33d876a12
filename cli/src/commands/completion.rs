//! `krt completion bash|zsh|fish`: the shell completion script, from the command
//! line's own definition (so it always matches the flags).

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `krt completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: `bash`, `zsh` or `fish`.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    shell: String,
}

/// Prints the completion script for the shell.
pub fn run(args: &CompletionArgs) -> i32 {
    let shell = match args.shell.as_str() {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    let mut command = crate::Cli::command();
    clap_complete::generate(shell, &mut command, "krt", &mut std::io::stdout());
    0
}
