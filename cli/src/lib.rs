//! The `krt` command line: argument parsing and the commands. Each command is a thin
//! layer over `kruntimes-api` and `kruntimes-pss`, which hold every rule; the cluster
//! commands talk to the Kubernetes API with the user's own credentials ([`cluster`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod cluster;
pub mod commands;
pub mod error;
pub mod manifest;

/// Exit statuses shared by every command (documented in `docs/cli.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything passed.
    Ok = 0,
    /// Something was checked and found wrong.
    Violations = 1,
    /// The input could not be used: unreadable, unparsable, or a bad flag value.
    BadInput = 2,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status as u8)
    }
}

/// kruntimes: warm execution substrate for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "krt", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Runtime, Run and Workflow manifests against every admission rule, offline.
    Check(commands::check::CheckArgs),
    /// Print the CustomResourceDefinitions (or write one file per kind).
    Crds(commands::crds::CrdsArgs),
    /// Print manifests with runtimed injected into every Pod and pod template, offline.
    Inject(commands::inject::InjectArgs),
    /// Answer an AdmissionReview with the webhook's handlers and print the response.
    Review(commands::review::ReviewArgs),
    /// Create a Run or a Workflow in the cluster (with --wait: follow it and exit with
    /// its status), or execute one on this machine (--local).
    Run(commands::run::RunArgs),
    /// Print a Run's output (-f: follow it until the Run ends).
    Logs(cluster::logs::LogsArgs),
    /// List Runs, Runtimes or Workflows, or show one.
    Get(cluster::get::GetArgs),
    /// Show a Run, Runtime or Workflow in detail, with its Events.
    Describe(cluster::describe::DescribeArgs),
    /// Cancel Runs or Workflows (spec.cancel: true).
    Cancel(cluster::cancel::CancelArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(commands::completion::CompletionArgs),
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's own code for --help/--version is 0; anything else is bad input.
            return if e.use_stderr() {
                Status::BadInput.into()
            } else {
                Status::Ok.into()
            };
        }
    };
    run(cli)
}

/// Runs a parsed command line and returns its exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => commands::check::run(args).into(),
        Command::Crds(args) => commands::crds::run(&args).into(),
        Command::Inject(args) => commands::inject::run(&args).into(),
        Command::Review(args) => commands::review::run(&args).into(),
        Command::Run(args) => commands::run::run(args),
        Command::Logs(args) => exit(cluster::logs::run(args)),
        Command::Get(args) => exit(cluster::get::run(args)),
        Command::Describe(args) => exit(cluster::describe::run(args)),
        Command::Cancel(args) => exit(cluster::cancel::run(args)),
        Command::Completion(args) => exit(commands::completion::run(&args)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
