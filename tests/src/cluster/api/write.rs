//! Creates, updates, patches and deletes: the object metadata the server owns (uid,
//! creationTimestamp, generation, resourceVersion, deletionTimestamp), optimistic
//! concurrency on `resourceVersion`, status/main-resource separation, finalizers and
//! graceful Pod deletion.

use serde_json::{Value, json};

use super::Server;
use super::admit::Attempt;
use super::error::{ApiError, Subject};
use super::http::Request;
use super::read::{key_of, not_found, present, scale_of};
use super::resources::ResourceType;
use super::store::ObjectKey;
use super::{apply, meta, patch, proto};
use crate::cluster::contract::Operation;

/// How long a Pod's containers get between SIGTERM and SIGKILL when neither the delete
/// nor the Pod says (`terminationGracePeriodSeconds`'s default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

fn subject<'a>(rtype: &'a ResourceType, name: &'a str) -> Subject<'a> {
    Subject {
        group: &rtype.group,
        resource: &rtype.plural,
        name,
    }
}

fn parse_body(request: &Request) -> Result<Value, ApiError> {
    let content_type = request.content_type();
    if content_type == proto::PROTOBUF {
        return proto::decode(&request.body);
    }
    if !content_type.contains("json") && !content_type.contains("yaml") {
        return Err(ApiError::unsupported_body(content_type));
    }
    let value: Value = if request.content_type().contains("yaml") {
        serde_norway::from_slice(&request.body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?
    } else {
        serde_json::from_slice(&request.body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(value)
}

/// Checks `apiVersion`/`kind` of a body against the path, and its namespace.
fn check_identity(request: &Request, object: &mut Value) -> Result<(), ApiError> {
    let rtype = &request.target.rtype;
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != rtype.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind {kind:?} of the body does not match the resource {:?} ({})",
            rtype.plural, rtype.kind
        )));
    }
    object["apiVersion"] = json!(rtype.api_version());
    object["kind"] = json!(rtype.kind);
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match (
        &request.target.namespace,
        meta::meta_str(object, "namespace"),
    ) {
        (Some(path_ns), Some(body_ns)) if !body_ns.is_empty() && body_ns != path_ns => {
            Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({path_ns})"
            )))
        }
        (Some(path_ns), _) => {
            object["metadata"]["namespace"] = json!(path_ns);
            Ok(())
        }
        (None, _) => {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            Ok(())
        }
    }
}

/// `POST` on a collection.
pub(crate) async fn create(server: &Server, request: &Request) -> Result<(u16, Value), ApiError> {
    if request.target.name.is_some() {
        return Err(ApiError::method_not_allowed("POST on an object"));
    }
    let object = parse_body(request)?;
    create_object(server, request, object)
        .await
        .map(|o| (201, o))
}

/// Creates `object` (also the create of a server-side apply to a missing object).
async fn create_object(
    server: &Server,
    request: &Request,
    mut object: Value,
) -> Result<Value, ApiError> {
    check_identity(request, &mut object)?;
    let rtype = &request.target.rtype;
    let name = object_name(&object)?;
    if let Some(ns) = &request.target.namespace {
        check_namespace(server, ns)?;
    }
    object["metadata"]["name"] = json!(name);
    prepare_new(rtype, &mut object);
    if request.content_type() != "application/apply-patch+yaml" {
        apply::record_update(
            None,
            &mut object,
            &request.manager(),
            request.target.subresource.as_deref(),
            rtype.status,
        );
    }
    let attempt = Attempt {
        server,
        request,
        operation: Operation::Create,
    };
    let object = attempt.admit(object, None).await?;
    if request.query.dry_run {
        return Ok(present(rtype, object));
    }
    let key = key_of(&request.target, &name);
    server
        .store
        .put(&key, object, None)
        .map(|o| present(rtype, o))
        .map_err(|_| ApiError::already_exists(subject(rtype, &name)))
}

fn object_name(object: &Value) -> Result<String, ApiError> {
    match (
        meta::meta_str(object, "name"),
        meta::meta_str(object, "generateName"),
    ) {
        (Some(name), _) if !name.is_empty() => Ok(name.to_owned()),
        (_, Some(prefix)) if !prefix.is_empty() => {
            Ok(format!("{prefix}{}", meta::random_suffix(5)))
        }
        _ => Err(ApiError::new(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
        )),
    }
}

fn check_namespace(server: &Server, namespace: &str) -> Result<(), ApiError> {
    let ns = server
        .store
        .get(&ObjectKey::new("", "namespaces", "", namespace))
        .ok_or_else(|| {
            ApiError::not_found(Subject {
                group: "",
                resource: "namespaces",
                name: namespace,
            })
        })?;
    if ns.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        ));
    }
    Ok(())
}

/// The metadata and status a new object starts with.
fn prepare_new(rtype: &ResourceType, object: &mut Value) {
    // The one built-in default clients rely on: a Secret without a type is Opaque.
    if rtype.group.is_empty()
        && rtype.plural == "secrets"
        && object
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        object["type"] = json!("Opaque");
    }
    if let Some(m) = object["metadata"].as_object_mut() {
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(field);
        }
        m.insert("uid".to_owned(), json!(meta::uid()));
        m.insert("creationTimestamp".to_owned(), json!(meta::now()));
        m.insert("generation".to_owned(), json!(1));
    }
    if rtype.status {
        match (rtype.group.as_str(), rtype.plural.as_str()) {
            ("", "pods") => object["status"] = json!({"phase": "Pending"}),
            ("", "namespaces") => object["status"] = json!({"phase": "Active"}),
            ("apiextensions.k8s.io", _) => object["status"] = crd_status(object),
            _ => {
                if let Some(m) = object.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
}

/// A CRD's status as the apiserver sets it once it serves the CRD: its names accepted,
/// `Established`, the storage version stored.
fn crd_status(crd: &Value) -> Value {
    let now = meta::now();
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": super::resources::storage_version(crd).into_iter().collect::<Vec<_>>(),
    })
}

/// `PUT` on an object or its `status`/`scale`.
pub(crate) async fn update(server: &Server, request: &Request) -> Result<Value, ApiError> {
    let name = request
        .target
        .name
        .clone()
        .ok_or_else(|| ApiError::method_not_allowed("PUT on a collection"))?;
    let mut body = parse_body(request)?;
    let old = server
        .store
        .get(&key_of(&request.target, &name))
        .ok_or_else(|| not_found(&request.target, &name))?;
    if request.target.subresource.as_deref() == Some("scale") {
        return update_scale(server, request, old, &body).await;
    }
    check_identity(request, &mut body)?;
    if let Some(body_name) = meta::meta_str(&body, "name").filter(|n| !n.is_empty() && *n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let expected = meta::meta_str(&body, "resourceVersion").map(str::to_owned);
    update_object(server, request, old, body, expected.as_deref()).await
}

async fn update_scale(
    server: &Server,
    request: &Request,
    old: Value,
    scale: &Value,
) -> Result<Value, ApiError> {
    let rtype = &request.target.rtype;
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid",
                "spec.replicas: Required value: a Scale must say spec.replicas",
            )
        })?;
    let paths = rtype
        .scale
        .clone()
        .ok_or_else(|| ApiError::no_route("scale"))?;
    let mut new = old.clone();
    meta::set_path(&mut new, &paths.spec_replicas, json!(replicas));
    let expected = meta::meta_str(scale, "resourceVersion").map(str::to_owned);
    let mut main = request.clone();
    main.target.subresource = None;
    let stored = update_object(server, &main, old, new, expected.as_deref()).await?;
    scale_of(rtype, &stored)
}

/// The update pipeline shared by `PUT` and `PATCH`: `expected` is the
/// `resourceVersion` the client based its change on, if it sent one.
pub(crate) async fn update_object(
    server: &Server,
    request: &Request,
    old: Value,
    mut new: Value,
    expected: Option<&str>,
) -> Result<Value, ApiError> {
    let rtype = &request.target.rtype;
    let name = meta::meta_str(&old, "name").unwrap_or("").to_owned();
    let old_rv = meta::meta_str(&old, "resourceVersion")
        .unwrap_or("")
        .to_owned();
    if expected.is_some_and(|rv| rv != old_rv) {
        return Err(ApiError::conflict(
            subject(rtype, &name),
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    new = separate_status(rtype, request.target.subresource.as_deref(), &old, new);
    keep_server_fields(&old, &mut new)?;
    if request.content_type() != "application/apply-patch+yaml" {
        apply::record_update(
            Some(&old),
            &mut new,
            &request.manager(),
            request.target.subresource.as_deref(),
            rtype.status,
        );
    }
    let attempt = Attempt {
        server,
        request,
        operation: Operation::Update,
    };
    let mut new = attempt.admit(new, Some(&old)).await?;
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    new["metadata"]["generation"] = json!(if meta::spec_changed(&old, &new) {
        generation + 1
    } else {
        generation
    });
    if unchanged(&old, &new) || request.query.dry_run {
        return Ok(present(
            rtype,
            if request.query.dry_run { new } else { old },
        ));
    }
    let key = key_of(&request.target, &name);
    if removable(server, rtype, &new) {
        return remove(server, &key, &old_rv, rtype, &name);
    }
    server
        .store
        .put(&key, new, Some(&old_rv))
        .map(|o| present(rtype, o))
        .map_err(|_| ApiError::conflict(subject(rtype, &name), "the object has been modified; please apply your changes to the latest version and try again"))
}

/// On the main resource status is the stored one; on `/status` everything else is.
fn separate_status(
    rtype: &ResourceType,
    subresource: Option<&str>,
    old: &Value,
    new: Value,
) -> Value {
    if !rtype.status {
        return new;
    }
    if subresource == Some("status") {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if merged["status"].is_null()
            && let Some(m) = merged.as_object_mut()
        {
            m.remove("status");
        }
        merged["metadata"]["managedFields"] = new
            .pointer("/metadata/managedFields")
            .cloned()
            .unwrap_or(Value::Null);
        return merged;
    }
    let mut new = new;
    match old.get("status") {
        Some(status) => new["status"] = status.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
    }
    new
}

/// Fields only the server sets keep their stored values; a deleting object takes no
/// new finalizers.
fn keep_server_fields(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if new
        .pointer("/metadata/managedFields")
        .is_some_and(Value::is_null)
        && let Some(m) = new["metadata"].as_object_mut()
    {
        m.remove("managedFields");
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let before = meta::finalizers(old);
        if let Some(added) = meta::finalizers(new)
            .into_iter()
            .find(|f| !before.contains(f))
        {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{added:?}]"
                ),
            ));
        }
    }
    Ok(())
}

/// An update that changes nothing but bookkeeping (`resourceVersion`, the times of
/// `managedFields` entries) is not written (no new `resourceVersion`, no watch event),
/// as on a real apiserver. A change of ownership alone is written.
fn unchanged(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            for entry in m
                .get_mut("managedFields")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    };
    strip(old) == strip(new)
}

/// Whether a deleting object may go now: no finalizers left and, for a Pod the node
/// runs, the node has stopped it (it sets `deletionGracePeriodSeconds` to 0).
fn removable(server: &Server, rtype: &ResourceType, object: &Value) -> bool {
    if object.pointer("/metadata/deletionTimestamp").is_none()
        || !meta::finalizers(object).is_empty()
    {
        return false;
    }
    !waits_for_node(server, rtype, object)
        || object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(0)
}

fn waits_for_node(server: &Server, rtype: &ResourceType, object: &Value) -> bool {
    pod_on_node(
        server,
        rtype.group.is_empty() && rtype.plural == "pods",
        object,
    )
}

fn pod_on_node(server: &Server, is_pod: bool, object: &Value) -> bool {
    server.graceful_pods
        && is_pod
        && object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
}

fn remove(
    server: &Server,
    key: &ObjectKey,
    rv: &str,
    rtype: &ResourceType,
    name: &str,
) -> Result<Value, ApiError> {
    server
        .store
        .remove(key, rv)
        .map(|o| present(rtype, o))
        .map_err(|_| ApiError::conflict(subject(rtype, name), "the object has been modified; please apply your changes to the latest version and try again"))
}

/// Whether a deletion of `object` must wait (finalizers, or a Pod the node runs and
/// has not stopped yet) instead of removing it at once.
pub(crate) fn must_wait(server: &Server, is_pod: bool, object: &Value) -> bool {
    let stopped = object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        == Some(0)
        && object.pointer("/metadata/deletionTimestamp").is_some();
    !meta::finalizers(object).is_empty() || (pod_on_node(server, is_pod, object) && !stopped)
}

/// `PATCH` on an object or its `status`/`scale`; a server-side apply to a missing
/// object creates it.
/// How many times a patch is applied again to the latest object when a write raced
/// it, as kube-apiserver's update loop does; a client's own `resourceVersion`
/// precondition still fails every time.
pub(super) const PATCH_RETRIES: usize = 5;

/// `PATCH` on an object (any patch type), retried on a racing write.
pub(crate) async fn patch(server: &Server, request: &Request) -> Result<(u16, Value), ApiError> {
    let mut attempt = 0;
    loop {
        match patch_once(server, request).await {
            Err(e)
                if e.code == 409
                    && e.message.contains("has been modified")
                    && attempt < PATCH_RETRIES =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn patch_once(server: &Server, request: &Request) -> Result<(u16, Value), ApiError> {
    let name = request
        .target
        .name
        .clone()
        .ok_or_else(|| ApiError::method_not_allowed("PATCH on a collection"))?;
    let content_type = request.content_type().to_owned();
    let old = server.store.get(&key_of(&request.target, &name));
    let rtype = &request.target.rtype;
    if content_type == "application/apply-patch+yaml" {
        let applied = parse_body(request)?;
        let manager = request.query.field_manager.clone().ok_or_else(|| {
            ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        })?;
        let sub = request.target.subresource.as_deref();
        if sub == Some("scale") {
            // A Scale applied: its spec.replicas is written, without field ownership.
            let old = old.ok_or_else(|| not_found(&request.target, &name))?;
            return update_scale(server, request, old, &applied)
                .await
                .map(|o| (200, o));
        }
        let merged = apply::apply(
            old.as_ref(),
            &applied,
            &manager,
            request.query.force,
            sub,
            rtype,
        )?;
        return match old {
            None if sub.is_none() => create_object(server, request, merged)
                .await
                .map(|o| (201, o)),
            None => Err(not_found(&request.target, &name)),
            Some(old) => update_object(server, request, old, merged, None)
                .await
                .map(|o| (200, o)),
        };
    }
    let old = old.ok_or_else(|| not_found(&request.target, &name))?;
    if request.target.subresource.as_deref() == Some("scale") {
        let scale = patch::apply_patch(&content_type, &scale_of(rtype, &old)?, &request.body)?;
        return update_scale(server, request, old, &scale)
            .await
            .map(|o| (200, o));
    }
    if rtype.custom && content_type == "application/strategic-merge-patch+json" {
        return Err(ApiError::unsupported_media_type(&content_type));
    }
    let new = patch::apply_patch(&content_type, &old, &request.body)?;
    let old_rv = meta::meta_str(&old, "resourceVersion").map(str::to_owned);
    let expected = meta::meta_str(&new, "resourceVersion")
        .filter(|rv| Some(*rv) != old_rv.as_deref())
        .map(str::to_owned);
    update_object(server, request, old, new, expected.as_deref())
        .await
        .map(|o| (200, o))
}

/// `DELETE` on an object.
pub(crate) async fn delete(server: &Server, request: &Request) -> Result<(u16, Value), ApiError> {
    let name = request
        .target
        .name
        .clone()
        .ok_or_else(|| ApiError::method_not_allowed("deletecollection"))?;
    if request.target.subresource.is_some() {
        return Err(ApiError::method_not_allowed("DELETE on a subresource"));
    }
    let rtype = &request.target.rtype;
    let key = key_of(&request.target, &name);
    let old = server
        .store
        .get(&key)
        .ok_or_else(|| not_found(&request.target, &name))?;
    let options: Value = if request.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&request.body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    check_preconditions(rtype, &name, &old, &options)?;
    let dry_run = request.query.dry_run
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Attempt {
        server,
        request,
        operation: Operation::Delete,
    }
    .admit_delete(&old)
    .await?;
    if dry_run {
        return Ok((200, present(rtype, old)));
    }
    let rv = meta::meta_str(&old, "resourceVersion")
        .unwrap_or("")
        .to_owned();
    let namespace = rtype.group.is_empty() && rtype.plural == "namespaces";
    if meta::finalizers(&old).is_empty() && !waits_for_node(server, rtype, &old) && !namespace {
        return remove(server, &key, &rv, rtype, &name).map(|o| (200, o));
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok((200, present(rtype, old)));
    }
    let mut marked = old.clone();
    marked["metadata"]["deletionTimestamp"] = json!(meta::now());
    let grace = if waits_for_node(server, rtype, &old) {
        pod_grace(&old, &options)
    } else {
        0
    };
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if namespace {
        marked["status"]["phase"] = json!("Terminating");
    }
    let stored = server
        .store
        .put(&key, marked, Some(&rv))
        .map_err(|_| ApiError::conflict(subject(rtype, &name), "the object has been modified; please apply your changes to the latest version and try again"))?;
    if namespace {
        super::namespaces::sweep(server, &name);
    }
    Ok((200, present(rtype, stored)))
}

pub(crate) fn pod_grace(pod: &Value, options: &Value) -> i64 {
    options
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

fn check_preconditions(
    rtype: &ResourceType,
    name: &str,
    old: &Value,
    options: &Value,
) -> Result<(), ApiError> {
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(want) = options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
        {
            let have = meta::meta_str(old, field).unwrap_or("");
            if want != have {
                return Err(ApiError::conflict(
                    subject(rtype, name),
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Stores an object at start (no admission): the type comes from its `apiVersion` and
/// `kind`.
pub(crate) fn store_initial(server: &Server, mut object: Value) -> Result<Value, ApiError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let rtype = server
        .types()
        .into_iter()
        .find(|t| t.api_version() == api_version && t.kind == kind)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no resource serves apiVersion {api_version:?} kind {kind:?}"
            ))
        })?;
    let name = object_name(&object)?;
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]["name"] = json!(name);
    let namespace = if rtype.namespaced {
        let ns = meta::meta_str(&object, "namespace")
            .unwrap_or("default")
            .to_owned();
        object["metadata"]["namespace"] = json!(ns);
        ns
    } else {
        String::new()
    };
    prepare_new(&rtype, &mut object);
    let key = ObjectKey::new(&rtype.group, &rtype.plural, &namespace, &name);
    server
        .store
        .put(&key, object, None)
        .map_err(|_| ApiError::already_exists(subject(&rtype, &name)))
}
