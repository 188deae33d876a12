//! `krt logs RUN [-f] [--stream stdout|stderr]`: the Run's whole output while its pod's
//! log still holds it (the agent's records, [`super::records`]), else the tails kept in
//! its status, said to be tails. With `-f`, followed until the Run ends.

use clap::{Args, ValueEnum};

use super::output::{self, Followed, is_broken_pipe};
use super::records::{Stream, Tracker};
use super::{Cluster, ClusterArgs, ClusterError, wait};
use crate::commands::run::follow::{EXIT_BROKEN_PIPE, Output};

/// `--stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    /// stdout only.
    Stdout,
    /// stderr only.
    Stderr,
}

/// Arguments of `krt logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The Run.
    run: String,
    /// Follow the output until the Run ends.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only this stream (default: stdout to stdout and stderr to stderr).
    #[arg(long, value_enum)]
    stream: Option<StreamArg>,
    /// Cluster access.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Runs `krt logs`.
pub fn run(args: LogsArgs) -> i32 {
    let access = args.cluster.clone();
    super::block_on("logs", &access, |cluster| async move {
        let only = args.stream.map(|s| match s {
            StreamArg::Stdout => Stream::Stdout,
            StreamArg::Stderr => Stream::Stderr,
        });
        match logs(&cluster, &args.run, args.follow, only).await {
            Err(e) if is_broken_pipe(&e) => Ok(EXIT_BROKEN_PIPE),
            other => other,
        }
    })
}

/// Prints Run `name`'s output (following it with `follow`); exit status 0.
pub async fn logs(
    cluster: &Cluster,
    name: &str,
    follow: bool,
    only: Option<Stream>,
) -> Result<i32, ClusterError> {
    if follow {
        wait::follow_run(cluster, name, only, None).await?;
        return Ok(0);
    }
    let run = wait::get_run(cluster, name).await?;
    let Some(source) = output::source(cluster, &run).await? else {
        let why = if run.status.as_ref().and_then(|s| s.pod.as_ref()).is_some() {
            "the Run's pod is gone"
        } else {
            "the Run has not started"
        };
        output::write_tails(&run, only, why)?;
        return Ok(0);
    };
    let mut tracker = Tracker::new(&source.execution);
    let mut out = Output::new(None);
    let followed =
        output::follow_log(cluster, &source, &mut tracker, &mut out, false, only).await?;
    out.finish().map_err(output::write_error)?;
    let terminal = run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_terminal());
    if followed != Followed::Complete && terminal {
        if tracker.received() == [0, 0] {
            output::write_tails(&run, only, "the Run's output is not in its pod's log")?;
        } else {
            eprintln!(
                "krt logs: the log of pod {} does not hold the end of the Run's output (rotated?); the tails are in its status (krt describe run {name})",
                source.pod
            );
        }
    }
    Ok(0)
}
