//! The HTTP side: authentication, fault injection, path parsing into a resource
//! target, and dispatch to discovery, reads, watches and writes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::table::{self, IncludeObject};
use super::{Server, logs, openapi, rbac, read, watch, write};
use crate::cluster::contract::UserInfo;

/// What a resource path names.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) rtype: ResourceType,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

/// The query parameters the server acts on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query {
    pub(crate) watch: bool,
    pub(crate) resource_version: Option<String>,
    pub(crate) timeout_seconds: Option<u64>,
    pub(crate) bookmarks: bool,
    pub(crate) selectors: Selectors,
    pub(crate) dry_run: bool,
    pub(crate) field_manager: Option<String>,
    pub(crate) force: bool,
    pub(crate) include_object: IncludeObject,
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query::default();
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let truthy = value == "true" || value == "1";
            match key.as_ref() {
                "watch" => q.watch = truthy,
                "resourceVersion" if !value.is_empty() => {
                    q.resource_version = Some(value.into_owned())
                }
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "timeoutSeconds: {value:?} is not a number of seconds"
                        ))
                    })?);
                }
                "allowWatchBookmarks" => q.bookmarks = truthy,
                "labelSelector" => q.selectors.labels = LabelSelector::parse(&value)?,
                "fieldSelector" => q.selectors.fields = FieldSelector::parse(&value)?,
                "dryRun" if value == "All" => q.dry_run = true,
                "dryRun" => {
                    return Err(ApiError::bad_request(format!(
                        "dryRun: unsupported value {value:?} (only \"All\")"
                    )));
                }
                "fieldManager" => q.field_manager = Some(value.into_owned()),
                "force" => q.force = truthy,
                "includeObject" => {
                    q.include_object = match value.as_ref() {
                        "Object" => IncludeObject::Object,
                        "None" => IncludeObject::None,
                        _ => IncludeObject::Metadata,
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// One authenticated request against a resource.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) target: Target,
    pub(crate) query: Query,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) user: UserInfo,
}

impl Request {
    /// The `Content-Type` without parameters.
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map_or("application/json", str::trim)
    }

    /// Whether the client asked for a server-side Table.
    pub(crate) fn wants_table(&self) -> bool {
        table::wanted(
            self.headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// The field manager: the query's, else one derived from the user agent as the
    /// apiserver does (`kubectl`, `kube-rs` ...).
    pub(crate) fn manager(&self) -> String {
        if let Some(m) = &self.query.field_manager {
            return m.clone();
        }
        let agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        agent.split('/').next().unwrap_or("unknown").to_owned()
    }
}

/// A JSON response.
pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(err: &ApiError) -> Response {
    let mut response = json_response(err.code, &err.status());
    if err.code == 429 {
        // As the apiserver's priority and fairness: clients wait a second and retry.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// The largest request body, as the apiserver's (3 MiB): larger is `413`.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The one handler: every request comes here.
pub(crate) async fn handle(
    State(server): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        let err = ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "the request body is larger than the limit of {MAX_BODY_BYTES} bytes, or could not be read"
            ),
        );
        return error_response(&err);
    };
    match route(&server, method, &uri, headers, body).await {
        Ok(response) => response,
        Err(err) => error_response(&err),
    }
}

fn authenticate(server: &Server, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    server
        .user_of(token.trim())
        .ok_or_else(ApiError::unauthorized)
}

async fn route(
    server: &Arc<Server>,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user = authenticate(server, &headers)?;
    let query = Query::parse(uri.query())?;
    server.requests.record(&user.username, &method, query.watch);
    if !query.watch {
        server.faults.check()?;
    }
    let path = uri.path().trim_end_matches('/');
    if let Some(doc) = discovery(server, path)? {
        rbac::authorize_path(&server.store, &user, path)?;
        return if method == Method::GET {
            Ok(json_response(200, &doc))
        } else {
            Err(ApiError::method_not_allowed(path))
        };
    }
    let target = parse_target(server, path)?;
    if method != Method::GET && method != Method::HEAD {
        server
            .requests
            .record_write_to(&user.username, &target.rtype.plural);
    }
    rbac::authorize(
        &server.store,
        &user,
        &rbac::Attributes {
            verb: rbac::verb(&method, target.name.is_some(), query.watch),
            group: &target.rtype.group,
            resource: &target.rtype.plural,
            subresource: target.subresource.as_deref(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
        },
    )?;
    // Only reads span namespaces: a write to a namespaced resource names its namespace.
    if method != Method::GET && target.rtype.namespaced && target.namespace.is_none() {
        return Err(ApiError::no_route(path));
    }
    let request = Request {
        method,
        target,
        query,
        headers,
        body,
        user,
    };
    if request.target.subresource.as_deref() == Some("log") {
        return if request.method == Method::GET {
            logs::serve(server, &request, uri.query())
        } else {
            Err(ApiError::method_not_allowed(path))
        };
    }
    match request.method.clone() {
        Method::GET if request.query.watch => {
            watch::serve(server.clone(), request).map(Body::into_response)
        }
        Method::GET => read::get_or_list(server, &request).map(|v| json_response(200, &v)),
        Method::POST => write::create(server, &request)
            .await
            .map(|(code, v)| json_response(code, &v)),
        Method::PUT => write::update(server, &request)
            .await
            .map(|v| json_response(200, &v)),
        Method::PATCH => write::patch(server, &request)
            .await
            .map(|(code, v)| json_response(code, &v)),
        Method::DELETE => write::delete(server, &request)
            .await
            .map(|(code, v)| json_response(code, &v)),
        _ => Err(ApiError::method_not_allowed(path)),
    }
}

/// The discovery document at `path`, if it is a discovery path.
fn discovery(server: &Server, path: &str) -> Result<Option<Value>, ApiError> {
    let types = server.types();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let doc = match segments.as_slice() {
        ["version"] => {
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kruntimes-test-cluster", "platform": "linux/amd64"})
        }
        ["healthz" | "readyz" | "livez"] => return Ok(Some(json!("ok"))),
        ["api"] => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        }
        ["api", "v1"] => resources::resource_list(&types, "v1"),
        ["openapi", "v3"] => openapi::root(&types),
        ["openapi", "v3", ..] => {
            openapi::group_version(&types, path).ok_or_else(|| ApiError::no_route(path))?
        }
        ["apis"] => resources::group_list(&types),
        ["apis", group] => {
            resources::group(&types, group).ok_or_else(|| ApiError::no_route(path))?
        }
        ["apis", group, version] => {
            let gv = format!("{group}/{version}");
            if !types.iter().any(|t| t.api_version() == gv) {
                return Err(ApiError::no_route(path));
            }
            resources::resource_list(&types, &gv)
        }
        _ => return Ok(None),
    };
    Ok(Some(doc))
}

/// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...` into a target.
fn parse_target(server: &Server, path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let types = server.types();
    let find = |plural: &str| {
        types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    };
    let namespaced_path = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && find(rest[2]).is_some_and(|t| t.namespaced);
    let (namespace, rest) = if namespaced_path {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Err(ApiError::no_route(path)),
    };
    let rtype = find(plural).ok_or_else(|| ApiError::no_route(path))?;
    if namespace.is_some() != rtype.namespaced && name.is_some() {
        return Err(ApiError::no_route(path));
    }
    match subresource.as_deref() {
        None => {}
        Some("status") if rtype.status => {}
        Some("scale") if rtype.scale.is_some() => {}
        Some("log") if rtype.group.is_empty() && rtype.plural == "pods" => {}
        Some(_) => return Err(ApiError::no_route(path)),
    }
    Ok(Target {
        rtype,
        namespace,
        name,
        subresource,
    })
}
