//! A minimal OpenAPI v3 discovery: `/openapi/v3` lists a document per group version,
//! and each document has, per resource, the `PATCH` operation with its
//! `x-kubernetes-group-version-kind` and the `fieldValidation` query parameter. That is
//! what kubectl reads to learn that the server validates fields itself, so that
//! `kubectl apply`/`create` skip client-side schema validation (which would need the
//! full OpenAPI v2 document, not served). The documents carry no schemas.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: every served group version.
pub(crate) fn root(types: &[ResourceType]) -> Value {
    let mut paths = Map::new();
    for t in types {
        let path = gv_path(&t.group, &t.version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`, or `None` for another path.
pub(crate) fn group_version(types: &[ResourceType], path: &str) -> Option<Value> {
    let rest = path.strip_prefix("/openapi/v3/")?;
    let selected: Vec<&ResourceType> = types
        .iter()
        .filter(|t| gv_path(&t.group, &t.version) == rest)
        .collect();
    if selected.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for t in selected {
        let scope = if t.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let operation = json!({
            "patch": {
                "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean"}}
                ],
                "responses": {"200": {"description": "OK"}}
            }
        });
        paths.insert(format!("/{rest}/{scope}{}/{{name}}", t.plural), operation);
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "kruntimes-test-cluster", "version": "v1"}, "paths": paths}),
    )
}
