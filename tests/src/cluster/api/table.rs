//! Server-side printing: `kubectl get` asks for `application/json;as=Table;g=meta.k8s.io`
//! and prints the columns the server chooses. Pods show Ready, Status, Restarts, Age
//! (IP and Node with `-o wide`), Deployments Ready, Up-to-date, Available, Age,
//! Namespaces Status and Age, custom resources their CRD's `additionalPrinterColumns`
//! (simple `.a.b` paths), everything else Name and Age.

use serde_json::{Value, json};

use super::meta;
use super::resources::ResourceType;

/// What a Table row carries of its object (`includeObject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
    /// Nothing.
    None,
}

/// Whether the `Accept` header asks for a Table.
pub(crate) fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    })
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" }, "description": name, "priority": priority})
}

/// `kubectl`-style age (`42s`, `7m`, `5h`, `3d`).
fn age(object: &Value) -> String {
    let created = meta::meta_str(object, "creationTimestamp")
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let Some(created) = created else {
        return "<unknown>".to_owned();
    };
    let now = k8s_openapi::jiff::Timestamp::from_second(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    )
    .unwrap_or(created);
    let seconds = (now.as_second() - created.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn int_at(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let status = if pod.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".to_owned()
    } else {
        let reason = pod.pointer("/status/reason").and_then(Value::as_str);
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        reason.or(phase).unwrap_or("Unknown").to_owned()
    };
    let text = |p: &str| json!(pod.pointer(p).and_then(Value::as_str).unwrap_or("<none>"));
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(pod)),
        text("/status/podIP"),
        text("/spec/nodeName"),
    ]
}

fn deployment_cells(d: &Value) -> Vec<Value> {
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    vec![
        json!(format!("{}/{desired}", int_at(d, "/status/readyReplicas"))),
        json!(int_at(d, "/status/updatedReplicas")),
        json!(int_at(d, "/status/availableReplicas")),
        json!(age(d)),
    ]
}

/// The columns (after Name) and the cells of one object.
fn columns_and_cells(rtype: &ResourceType, object: &Value) -> (Vec<Value>, Vec<Value>) {
    match (rtype.group.as_str(), rtype.plural.as_str()) {
        ("", "pods") => (
            vec![
                column("Ready", "string", 0),
                column("Status", "string", 0),
                column("Restarts", "integer", 0),
                column("Age", "string", 0),
                column("IP", "string", 1),
                column("Node", "string", 1),
            ],
            pod_cells(object),
        ),
        ("apps", "deployments") => (
            vec![
                column("Ready", "string", 0),
                column("Up-to-date", "integer", 0),
                column("Available", "integer", 0),
                column("Age", "string", 0),
            ],
            deployment_cells(object),
        ),
        ("", "namespaces") => (
            vec![column("Status", "string", 0), column("Age", "string", 0)],
            vec![
                json!(
                    object
                        .pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
                json!(age(object)),
            ],
        ),
        _ if !rtype.printer_columns.is_empty() => {
            let mut columns = Vec::new();
            let mut cells = Vec::new();
            for (name, kind, path) in &rtype.printer_columns {
                let value = meta::at_path(object, path).cloned().unwrap_or(Value::Null);
                let cell = if kind == "date" {
                    json!(age(&json!({"metadata": {"creationTimestamp": value}})))
                } else {
                    value
                };
                columns.push(column(
                    name,
                    if kind == "date" { "string" } else { kind },
                    0,
                ));
                cells.push(cell);
            }
            if !rtype.printer_columns.iter().any(|(n, _, _)| n == "Age") {
                columns.push(column("Age", "string", 0));
                cells.push(json!(age(object)));
            }
            (columns, cells)
        }
        _ => (vec![column("Age", "string", 0)], vec![json!(age(object))]),
    }
}

fn row(rtype: &ResourceType, object: &Value, include: IncludeObject) -> (Vec<Value>, Value) {
    let (columns, mut cells) = columns_and_cells(rtype, object);
    cells.insert(0, json!(meta::meta_str(object, "name").unwrap_or("")));
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object.get("metadata").cloned().unwrap_or_default()});
        }
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::None => {}
    }
    let mut all = vec![column("Name", "string", 0)];
    all.extend(columns);
    (all, row)
}

/// A Table of `objects` at `resource_version`.
pub(crate) fn table(
    rtype: &ResourceType,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
) -> Value {
    let (columns, _) = row(rtype, &json!({}), include);
    let rows: Vec<Value> = objects.iter().map(|o| row(rtype, o, include).1).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version}, "columnDefinitions": columns, "rows": rows})
}
