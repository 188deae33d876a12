//! `get` and `list`, and `/scale` reads. Lists answer every matching object in one page
//! (`limit` and `continue` are ignored) at the store's current `resourceVersion`.

use serde_json::{Value, json};

use super::Server;
use super::error::{ApiError, Subject};
use super::http::{Request, Target};
use super::resources::ResourceType;
use super::store::ObjectKey;
use super::{meta, table};

/// The stored key a target names (the target must name an object).
pub(crate) fn key_of(target: &Target, name: &str) -> ObjectKey {
    ObjectKey::new(
        &target.rtype.group,
        &target.rtype.plural,
        target.namespace.as_deref().unwrap_or(""),
        name,
    )
}

/// The error for an object that is not there.
pub(crate) fn not_found(target: &Target, name: &str) -> ApiError {
    ApiError::not_found(Subject {
        group: &target.rtype.group,
        resource: &target.rtype.plural,
        name,
    })
}

/// An object as served at the requested version (no conversion beyond `apiVersion`).
pub(crate) fn present(rtype: &ResourceType, mut object: Value) -> Value {
    object["apiVersion"] = json!(rtype.api_version());
    object["kind"] = json!(rtype.kind);
    object
}

/// `GET` of an object, its subresource, or a list.
pub(crate) fn get_or_list(server: &Server, request: &Request) -> Result<Value, ApiError> {
    let target = &request.target;
    let Some(name) = &target.name else {
        return Ok(list(server, target, request));
    };
    let object = server
        .store
        .get(&key_of(target, name))
        .ok_or_else(|| not_found(target, name))?;
    match target.subresource.as_deref() {
        Some("scale") => scale_of(&target.rtype, &object),
        _ if request.wants_table() => {
            let rv = meta::meta_str(&object, "resourceVersion")
                .unwrap_or("")
                .to_owned();
            let object = present(&target.rtype, object);
            Ok(table::table(
                &target.rtype,
                &[object],
                &rv,
                request.query.include_object,
            ))
        }
        _ => Ok(present(&target.rtype, object)),
    }
}

fn list(server: &Server, target: &Target, request: &Request) -> Value {
    let rtype = &target.rtype;
    let (objects, revision) =
        server
            .store
            .list(&rtype.group, &rtype.plural, target.namespace.as_deref());
    let items: Vec<Value> = objects
        .into_iter()
        .filter(|o| request.query.selectors.matches(o))
        .map(|o| present(rtype, o))
        .collect();
    if request.wants_table() {
        return table::table(
            rtype,
            &items,
            &revision.to_string(),
            request.query.include_object,
        );
    }
    json!({
        "apiVersion": rtype.api_version(),
        "kind": format!("{}List", rtype.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

/// The `autoscaling/v1` `Scale` of an object.
pub(crate) fn scale_of(rtype: &ResourceType, object: &Value) -> Result<Value, ApiError> {
    let paths = rtype
        .scale
        .as_ref()
        .ok_or_else(|| ApiError::no_route("scale"))?;
    let spec = meta::at_path(object, &paths.spec_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = meta::at_path(object, &paths.status_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut scale_status = json!({"replicas": status});
    let selector = match &paths.label_selector {
        // A Deployment's selector is a structure: the Scale carries it as a string.
        Some(_) if !rtype.custom => deployment_selector(object),
        Some(p) => meta::at_path(object, p)
            .and_then(Value::as_str)
            .map(str::to_owned),
        None => None,
    };
    if let Some(selector) = selector {
        scale_status["selector"] = json!(selector);
    }
    let metadata = object.get("metadata").cloned().unwrap_or_default();
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let metadata: serde_json::Map<String, Value> = metadata
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": metadata,
        "spec": {"replicas": spec},
        "status": scale_status,
    }))
}

/// A Deployment's selector as a string (`a=b,c=d`) from `spec.selector.matchLabels`.
fn deployment_selector(object: &Value) -> Option<String> {
    let labels = object.pointer("/spec/selector/matchLabels")?.as_object()?;
    Some(
        labels
            .iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
            .collect::<Vec<_>>()
            .join(","),
    )
}
