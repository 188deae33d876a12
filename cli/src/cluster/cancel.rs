//! `krt cancel [run/]NAME | workflow/NAME`: sets `spec.cancel: true`; the controller
//! cancels the Run (or every running step of the Workflow) and it ends `Cancelled`.

use clap::Args;

use super::{Cluster, ClusterArgs, ClusterError, wait};

/// Arguments of `krt cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// `NAME` or `run/NAME` for a Run, `workflow/NAME` for a Workflow.
    #[arg(value_name = "[run/]NAME|workflow/NAME", required = true)]
    targets: Vec<String>,
    /// Cluster access.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Runs `krt cancel`.
pub fn run(args: CancelArgs) -> i32 {
    let access = args.cluster.clone();
    super::block_on("cancel", &access, |cluster| async move {
        cancel(&cluster, &args.targets).await
    })
}

/// The kind and name `target` names: a bare name is a Run.
pub fn parse_target(target: &str) -> Result<(&'static str, &str), ClusterError> {
    let (kind, name) = match target.split_once('/') {
        None => ("Run", target),
        Some(("run" | "runs" | "krun" | "run.kruntimes.io", name)) => ("Run", name),
        Some(("workflow" | "workflows" | "workflow.kruntimes.io", name)) => ("Workflow", name),
        Some((other, _)) => {
            return Err(ClusterError::BadInput(format!(
                "{target:?}: {other:?} is not run or workflow (krt cancel [run/]NAME or workflow/NAME)"
            )));
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(ClusterError::BadInput(format!(
            "{target:?}: expected [run/]NAME or workflow/NAME"
        )));
    }
    Ok((kind, name))
}

/// Cancels every target; all are checked before the first is cancelled.
pub async fn cancel(cluster: &Cluster, targets: &[String]) -> Result<i32, ClusterError> {
    let parsed = targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<Result<Vec<_>, _>>()?;
    for (kind, name) in parsed {
        wait::request_cancel(cluster, kind, name).await?;
        println!("{}/{name} cancel requested", kind.to_lowercase());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn a_bare_name_is_a_run() {
        assert_eq!(parse_target("x").unwrap(), ("Run", "x"));
        assert_eq!(parse_target("run/x").unwrap(), ("Run", "x"));
        assert_eq!(parse_target("workflow/w").unwrap(), ("Workflow", "w"));
        assert!(parse_target("pod/x").is_err());
        assert!(parse_target("run/").is_err());
        assert!(parse_target("run/a/b").is_err());
    }
}
