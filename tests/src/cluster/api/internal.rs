//! Requests the in-process controllers make as if over HTTP: they go through the same
//! write pipeline (admission included), under a controller's identity.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use serde_json::Value;

use super::Server;
use super::error::ApiError;
use super::http::{Query, Request, Target};
use super::resources;
use super::write;
use crate::cluster::contract::UserInfo;

fn request(
    method: Method,
    plural: &str,
    group: &str,
    namespace: &str,
    name: Option<&str>,
    body: &Value,
    who: &str,
) -> Result<Request, ApiError> {
    let rtype = resources::builtin()
        .into_iter()
        .find(|t| t.plural == plural && t.group == group)
        .ok_or_else(|| ApiError::internal(format!("no built-in resource {plural}")))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Request {
        method,
        target: Target {
            rtype,
            namespace: Some(namespace.to_owned()),
            name: name.map(str::to_owned),
            subresource: None,
        },
        query: Query {
            field_manager: Some(who.to_owned()),
            ..Query::default()
        },
        headers,
        body: Bytes::from(body.to_string()),
        user: UserInfo {
            username: format!("system:serviceaccount:kube-system:{who}"),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                "system:authenticated".to_owned(),
            ],
        },
    })
}

/// Creates a namespaced built-in object.
pub(crate) async fn create(
    server: &Server,
    plural: &str,
    group: &str,
    namespace: &str,
    object: &Value,
    who: &str,
) -> Result<Value, ApiError> {
    let req = request(Method::POST, plural, group, namespace, None, object, who)?;
    write::create(server, &req).await.map(|(_, v)| v)
}

/// Deletes a namespaced built-in object (background propagation).
pub(crate) async fn delete(
    server: &Server,
    plural: &str,
    group: &str,
    namespace: &str,
    name: &str,
    who: &str,
) -> Result<Value, ApiError> {
    let req = request(
        Method::DELETE,
        plural,
        group,
        namespace,
        Some(name),
        &serde_json::json!({}),
        who,
    )?;
    write::delete(server, &req).await.map(|(_, v)| v)
}
