//! `krt get runs|runtimes|workflows [NAME]`: kubectl-like tables (`-o wide` adds
//! columns), or the objects as JSON, YAML or `kind/name` lines.

use clap::{Args, ValueEnum};
use kruntimes_api::v1alpha1::{Run, Runtime, Workflow};
use kube::api::{Api, ListParams};
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Request;
use super::{Cluster, ClusterArgs, ClusterError};

/// The kinds `krt get` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Runs (also `run`, `krun`).
    #[value(alias = "run", alias = "krun")]
    Runs,
    /// Runtimes (also `runtime`).
    #[value(alias = "runtime")]
    Runtimes,
    /// Workflows (also `workflow`).
    #[value(alias = "workflow")]
    Workflows,
}

/// How `krt get` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The table with more columns.
    Wide,
    /// JSON (a `List` for several objects).
    Json,
    /// YAML (a `List` for several objects).
    Yaml,
    /// `kind/name`, one per line.
    Name,
}

/// Arguments of `krt get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    kind: Kind,
    /// One object by name (default: all).
    name: Option<String>,
    /// Output format (default: a table).
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Format>,
    /// No header line in the table.
    #[arg(long)]
    no_headers: bool,
    /// Only objects whose labels match this selector (`app=web,tier!=db`).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
    /// Every namespace (a NAMESPACE column first).
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "name")]
    all_namespaces: bool,
    /// Cluster access.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Runs `krt get`.
pub fn run(args: GetArgs) -> i32 {
    let access = args.cluster.clone();
    super::block_on("get", &access, |cluster| async move {
        get(&cluster, &args).await
    })
}

/// One object as a table row, and its name for `-o name`.
trait Listed:
    kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
{
    const RESOURCE: &'static str;
    const KIND: &'static str;
    fn headers(wide: bool) -> Vec<&'static str>;
    fn row(&self, wide: bool) -> Vec<String>;
}

/// Lists (or gets) and prints; returns the exit status.
pub async fn get(cluster: &Cluster, args: &GetArgs) -> Result<i32, ClusterError> {
    match args.kind {
        Kind::Runs => print_kind::<Run>(cluster, args).await,
        Kind::Runtimes => print_kind::<Runtime>(cluster, args).await,
        Kind::Workflows => print_kind::<Workflow>(cluster, args).await,
    }
}

async fn print_kind<K: Listed>(cluster: &Cluster, args: &GetArgs) -> Result<i32, ClusterError> {
    let namespace = (!args.all_namespaces).then_some(cluster.namespace.as_str());
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(cluster.client.clone(), ns),
        None => Api::all(cluster.client.clone()),
    };
    let request = Request {
        verb: if args.name.is_some() { "get" } else { "list" },
        resource: K::RESOURCE,
        kind: K::KIND,
        name: args.name.as_deref(),
        namespace,
    };
    let objects = match &args.name {
        Some(name) => vec![
            api.get(name)
                .await
                .map_err(|e| cluster.error(&request, e))?,
        ],
        None => {
            let mut params = ListParams::default();
            if let Some(selector) = &args.selector {
                params = params.labels(selector);
            }
            api.list(&params)
                .await
                .map_err(|e| cluster.error(&request, e))?
                .items
        }
    };
    let text = render(
        &objects,
        args.output,
        args.no_headers,
        args.all_namespaces,
        args.name.is_some(),
    )?;
    print!("{text}");
    if objects.is_empty() && args.output.is_none_or(|f| f == Format::Wide) {
        match namespace {
            Some(ns) => eprintln!("No resources found in namespace {ns}."),
            None => eprintln!("No resources found."),
        }
    }
    Ok(0)
}

/// The text `krt get` prints for `objects`.
fn render<K: Listed>(
    objects: &[K],
    format: Option<Format>,
    no_headers: bool,
    all_namespaces: bool,
    single: bool,
) -> Result<String, ClusterError> {
    let value = |objects: &[K]| -> Result<serde_json::Value, ClusterError> {
        let encoded =
            serde_json::to_value(objects).map_err(|e| ClusterError::Platform(e.to_string()))?;
        Ok(match (single, encoded) {
            (true, serde_json::Value::Array(mut items)) if items.len() == 1 => items.remove(0),
            (_, items) => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
        })
    };
    match format {
        Some(Format::Json) => {
            let text = serde_json::to_string_pretty(&value(objects)?)
                .map_err(|e| ClusterError::Platform(e.to_string()))?;
            Ok(format!("{text}\n"))
        }
        Some(Format::Yaml) => serde_norway::to_string(&value(objects)?)
            .map_err(|e| ClusterError::Platform(e.to_string())),
        Some(Format::Name) => Ok(objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}\n",
                    K::KIND.to_lowercase(),
                    o.meta().name.as_deref().unwrap_or("")
                )
            })
            .collect()),
        Some(Format::Wide) | None => {
            let wide = format == Some(Format::Wide);
            let mut rows = Vec::new();
            if !no_headers && !objects.is_empty() {
                let mut headers: Vec<String> =
                    K::headers(wide).into_iter().map(str::to_owned).collect();
                if all_namespaces {
                    headers.insert(0, "NAMESPACE".into());
                }
                rows.push(headers);
            }
            for object in objects {
                let mut row = object.row(wide);
                if all_namespaces {
                    row.insert(0, object.meta().namespace.clone().unwrap_or_default());
                }
                rows.push(row);
            }
            Ok(table(&rows))
        }
    }
}

/// Columns padded to their widest cell, three spaces apart, as kubectl prints them.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `time` was, as kubectl says it (`45s`, `12m`, `3h`, `5d`).
pub fn age(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    let Some(time) = time else {
        return "<unknown>".into();
    };
    let seconds = k8s_openapi::jiff::Timestamp::now()
        .duration_since(time.0)
        .as_secs()
        .max(0);
    short_duration(seconds as u64)
}

/// `45s`, `12m`, `3h`, `5d`; below ten minutes, `4m30s`.
pub fn short_duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..600 if !seconds.is_multiple_of(60) => format!("{}m{}s", seconds / 60, seconds % 60),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// The time between two RFC 3339 times of a status (`-` when either is missing).
pub fn between(start: Option<&str>, end: Option<&str>) -> String {
    let parse = |t: Option<&str>| t?.parse::<k8s_openapi::jiff::Timestamp>().ok();
    match (parse(start), parse(end)) {
        (Some(start), Some(end)) => {
            let millis = end.duration_since(start).as_millis().max(0);
            if millis < 10_000 {
                format!("{:.1}s", millis as f64 / 1000.0)
            } else {
                short_duration((millis / 1000) as u64)
            }
        }
        _ => "-".into(),
    }
}

/// A phase as the API spells it; `Pending` before the controller has written one.
pub fn phase_text<P: std::fmt::Debug>(phase: Option<P>) -> String {
    phase.map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"))
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Listed for Run {
    const RESOURCE: &'static str = "runs.kruntimes.io";
    const KIND: &'static str = "Run";
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "PHASE", "RUNTIME", "EXIT CODE", "AGE"];
        if wide {
            h.extend(["POD", "QUEUED", "DURATION", "REASON"]);
        }
        h
    }
    fn row(&self, wide: bool) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let mut row = vec![
            self.metadata.name.clone().unwrap_or_default(),
            phase_text(status.phase),
            self.spec.runtime_ref.name.clone(),
            or_dash(status.exit_code),
            age(self.metadata.creation_timestamp.as_ref()),
        ];
        if wide {
            row.extend([
                or_dash(status.pod),
                between(status.queued_at.as_deref(), status.start_time.as_deref()),
                between(
                    status.start_time.as_deref(),
                    status.completion_time.as_deref(),
                ),
                or_dash(status.reason),
            ]);
        }
        row
    }
}

impl Listed for Runtime {
    const RESOURCE: &'static str = "runtimes.kruntimes.io";
    const KIND: &'static str = "Runtime";
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "READY", "BUSY", "AGE"];
        if wide {
            h.extend(["CONCURRENCY", "CONTAINER", "SELECTOR"]);
        }
        h
    }
    fn row(&self, wide: bool) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let capacity = status.capacity.clone().unwrap_or_default();
        let mut row = vec![
            self.metadata.name.clone().unwrap_or_default(),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                self.spec.replicas
            ),
            format!("{}/{}", capacity.busy, capacity.total),
            age(self.metadata.creation_timestamp.as_ref()),
        ];
        if wide {
            row.extend([
                self.spec.concurrency.to_string(),
                or_dash(self.spec.container.clone()),
                or_dash(status.selector),
            ]);
        }
        row
    }
}

impl Listed for Workflow {
    const RESOURCE: &'static str = "workflows.kruntimes.io";
    const KIND: &'static str = "Workflow";
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "PHASE", "JOBS", "AGE"];
        if wide {
            h.push("STEPS");
        }
        h
    }
    fn row(&self, wide: bool) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let jobs = status.jobs.unwrap_or_default();
        let done = jobs
            .iter()
            .filter(|j| j.phase == kruntimes_api::v1alpha1::JobPhase::Succeeded)
            .count();
        let mut row = vec![
            self.metadata.name.clone().unwrap_or_default(),
            phase_text(status.phase),
            format!("{done}/{}", self.spec.jobs.len()),
            age(self.metadata.creation_timestamp.as_ref()),
        ];
        if wide {
            let steps: usize = self.spec.jobs.iter().map(|j| j.steps.len()).sum();
            row.push(steps.to_string());
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::{between, short_duration, table};

    #[test]
    fn tables_pad_columns_like_kubectl() {
        let rows = vec![
            vec!["NAME".to_owned(), "PHASE".to_owned()],
            vec!["a-long-name".to_owned(), "Succeeded".to_owned()],
        ];
        assert_eq!(
            table(&rows),
            "NAME          PHASE\na-long-name   Succeeded\n"
        );
    }

    #[test]
    fn durations_read_as_kubectl_ages() {
        assert_eq!(short_duration(5), "5s");
        assert_eq!(short_duration(270), "4m30s");
        assert_eq!(short_duration(720), "12m");
        assert_eq!(short_duration(7200), "2h");
        assert_eq!(short_duration(200_000), "2d");
        assert_eq!(
            between(Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:01.5Z")),
            "1.5s"
        );
        assert_eq!(between(None, Some("2026-01-01T00:00:00Z")), "-");
    }
}
