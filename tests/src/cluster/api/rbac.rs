//! Authorization as kube-apiserver's RBAC authorizer: a request is allowed when a rule
//! of a Role or ClusterRole bound to its user matches it. Members of `system:masters`
//! may do everything (as the apiserver's superuser short-cut), and every authenticated
//! user may read the discovery paths (the default `system:discovery` binding).
//!
//! Not emulated (docs/test-cluster.md, "RBAC"): aggregated ClusterRoles, the escalation
//! and bind checks on writes of RBAC objects, and the name of a single-object list or
//! watch (`fieldSelector=metadata.name=`) being matched against `resourceNames`.

use serde_json::{Value, json};

use super::error::ApiError;
use super::store::{ObjectKey, Store};
use crate::cluster::contract::UserInfo;

/// The RBAC API group.
const GROUP: &str = "rbac.authorization.k8s.io";

/// The group whose members are allowed everything.
const SUPERUSER_GROUP: &str = "system:masters";

/// The paths every authenticated user may read, as the default `system:discovery`,
/// `system:basic-user` and `system:public-info-viewer` ClusterRoles allow.
const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/openapi",
    "/openapi/*",
    "/healthz",
    "/livez",
    "/readyz",
];

/// What a resource request asks to do, as the authorizer sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub(crate) verb: &'a str,
    /// API group (`""` for core).
    pub(crate) group: &'a str,
    /// Plural resource name.
    pub(crate) resource: &'a str,
    /// `status`, `scale`, `log`, ...
    pub(crate) subresource: Option<&'a str>,
    /// The namespace, for a namespaced request.
    pub(crate) namespace: Option<&'a str>,
    /// The object's name, for a request naming one.
    pub(crate) name: Option<&'a str>,
}

/// The verb of a resource request, as the apiserver derives it from the method.
pub(crate) fn verb(method: &axum::http::Method, named: bool, watch: bool) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// Allows or refuses a resource request; the refusal is the apiserver's `403`.
pub(crate) fn authorize(
    store: &Store,
    user: &UserInfo,
    attrs: &Attributes<'_>,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == SUPERUSER_GROUP) {
        return Ok(());
    }
    let allowed = bound_rules(store, user, attrs.namespace)
        .iter()
        .any(|rule| resource_rule_matches(rule, attrs));
    if allowed {
        Ok(())
    } else {
        Err(forbidden(user, attrs))
    }
}

/// Allows or refuses a request for a non-resource path (discovery, health).
pub(crate) fn authorize_path(store: &Store, user: &UserInfo, path: &str) -> Result<(), ApiError> {
    let path = if path.is_empty() { "/" } else { path };
    if user.groups.iter().any(|g| g == SUPERUSER_GROUP)
        || DISCOVERY_URLS.iter().any(|url| url_matches(url, path))
    {
        return Ok(());
    }
    // Non-resource URLs are granted by ClusterRoles bound cluster-wide only.
    let allowed = bound_rules(store, user, None).iter().any(|rule| {
        verbs_match(rule, "get")
            && strings(rule, "nonResourceURLs")
                .iter()
                .any(|url| url_matches(url, path))
    });
    if allowed {
        return Ok(());
    }
    Err(ApiError {
        details: Some(json!({"name": "", "group": "", "kind": ""})),
        ..ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User {:?} cannot get path {path:?}",
                user.username
            ),
        )
    })
}

/// The `403` for a refused resource request, worded as kube-apiserver's.
fn forbidden(user: &UserInfo, attrs: &Attributes<'_>) -> ApiError {
    let resource = match attrs.subresource {
        Some(sub) => format!("{}/{sub}", attrs.resource),
        None => attrs.resource.to_owned(),
    };
    let scope = match attrs.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_owned(),
    };
    let reason = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.username, attrs.verb, attrs.group
    );
    let qualified = if attrs.group.is_empty() {
        attrs.resource.to_owned()
    } else {
        format!("{}.{}", attrs.resource, attrs.group)
    };
    let message = match attrs.name {
        Some(name) => format!("{qualified} {name:?} is forbidden: {reason}"),
        None => format!("{qualified} is forbidden: {reason}"),
    };
    ApiError {
        details: Some(json!({
            "name": attrs.name.unwrap_or(""),
            "group": attrs.group,
            "kind": attrs.resource,
        })),
        ..ApiError::new(403, "Forbidden", message)
    }
}

/// The rules of every role bound to `user`: cluster-wide by ClusterRoleBindings and,
/// for a namespaced request, in its namespace by RoleBindings.
fn bound_rules(store: &Store, user: &UserInfo, namespace: Option<&str>) -> Vec<Value> {
    let mut rules = Vec::new();
    let (cluster_bindings, _) = store.list(GROUP, "clusterrolebindings", None);
    for binding in cluster_bindings.iter().filter(|b| binds(b, user)) {
        if binding["roleRef"]["kind"] == "ClusterRole" {
            rules.extend(role_rules(store, "clusterroles", "", binding));
        }
    }
    if let Some(ns) = namespace {
        let (bindings, _) = store.list(GROUP, "rolebindings", Some(ns));
        for binding in bindings.iter().filter(|b| binds(b, user)) {
            match binding["roleRef"]["kind"].as_str() {
                Some("Role") => rules.extend(role_rules(store, "roles", ns, binding)),
                Some("ClusterRole") => rules.extend(role_rules(store, "clusterroles", "", binding)),
                _ => {}
            }
        }
    }
    rules
}

fn role_rules(store: &Store, resource: &str, namespace: &str, binding: &Value) -> Vec<Value> {
    let Some(name) = binding["roleRef"]["name"].as_str() else {
        return Vec::new();
    };
    store
        .get(&ObjectKey::new(GROUP, resource, namespace, name))
        .and_then(|role| role["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether a binding names `user`: as a User, one of its Groups, or the ServiceAccount
/// whose username it has (`system:serviceaccount:NS:NAME`; the subject's namespace
/// defaults to the binding's).
fn binds(binding: &Value, user: &UserInfo) -> bool {
    let binding_ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|subject| {
            let name = subject["name"].as_str().unwrap_or("");
            match subject["kind"].as_str() {
                Some("User") => user.username == name,
                Some("Group") => user.groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = subject["namespace"].as_str().unwrap_or(binding_ns);
                    user.username == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

fn strings<'a>(rule: &'a Value, field: &str) -> Vec<&'a str> {
    rule[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn verbs_match(rule: &Value, verb: &str) -> bool {
    strings(rule, "verbs")
        .iter()
        .any(|v| *v == "*" || *v == verb)
}

/// Upstream's `RuleAllows` for a resource request.
fn resource_rule_matches(rule: &Value, attrs: &Attributes<'_>) -> bool {
    verbs_match(rule, attrs.verb)
        && strings(rule, "apiGroups")
            .iter()
            .any(|g| *g == "*" || *g == attrs.group)
        && resources_match(&strings(rule, "resources"), attrs)
        && names_match(&strings(rule, "resourceNames"), attrs.name)
}

/// `*`, the exact `resource[/subresource]`, or `*/subresource`.
fn resources_match(resources: &[&str], attrs: &Attributes<'_>) -> bool {
    let combined = match attrs.subresource {
        Some(sub) => format!("{}/{sub}", attrs.resource),
        None => attrs.resource.to_owned(),
    };
    resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || attrs
                .subresource
                .is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    })
}

/// No names: any object; names: only a request naming one of them.
fn names_match(names: &[&str], name: Option<&str>) -> bool {
    names.is_empty() || name.is_some_and(|n| names.contains(&n))
}

/// `*`, the exact path, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn store_with(objects: &[Value]) -> Store {
        let store = Store::default();
        for object in objects {
            let plural = match object["kind"].as_str().unwrap() {
                "Role" => "roles",
                "ClusterRole" => "clusterroles",
                "RoleBinding" => "rolebindings",
                _ => "clusterrolebindings",
            };
            let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
            let name = object["metadata"]["name"].as_str().unwrap();
            store
                .put(
                    &ObjectKey::new(GROUP, plural, ns, name),
                    object.clone(),
                    None,
                )
                .unwrap();
        }
        store
    }

    fn role(kind: &str, ns: Option<&str>, name: &str, rules: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn binding(
        kind: &str,
        ns: Option<&str>,
        role_kind: &str,
        role: &str,
        subjects: Value,
    ) -> Value {
        json!({"kind": kind, "metadata": {"name": format!("{role}-binding"), "namespace": ns},
               "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role},
               "subjects": subjects})
    }

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            subresource: None,
            namespace: ns,
            name: None,
        }
    }

    /// jane bound in `team-a` to a Role with `rules`.
    fn jane_with(rules: Value) -> Store {
        store_with(&[
            role("Role", Some("team-a"), "r", rules),
            binding(
                "RoleBinding",
                Some("team-a"),
                "Role",
                "r",
                json!([{"kind": "User", "name": "jane"}]),
            ),
        ])
    }

    fn allowed(store: &Store, attrs: &Attributes<'_>) -> bool {
        authorize(store, &user("jane", &["system:authenticated"]), attrs).is_ok()
    }

    #[test]
    fn masters_may_do_everything_and_others_nothing_unbound() {
        let store = Store::default();
        let request = attrs("delete", "", "pods", Some("x"));
        assert!(authorize(&store, &user("admin", &["system:masters"]), &request).is_ok());
        assert!(!allowed(&store, &request));
    }

    #[test]
    fn verbs_groups_and_resources_must_all_match() {
        let store = jane_with(
            json!([{"apiGroups": ["kruntimes.io"], "resources": ["runs"], "verbs": ["get", "list"]}]),
        );
        assert!(allowed(
            &store,
            &attrs("list", "kruntimes.io", "runs", Some("team-a"))
        ));
        assert!(!allowed(
            &store,
            &attrs("create", "kruntimes.io", "runs", Some("team-a"))
        ));
        assert!(!allowed(&store, &attrs("list", "", "runs", Some("team-a"))));
        assert!(!allowed(
            &store,
            &attrs("list", "kruntimes.io", "runtimes", Some("team-a"))
        ));
    }

    #[test]
    fn wildcards_match_any_verb_group_and_resource() {
        let store = jane_with(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]));
        assert!(allowed(
            &store,
            &attrs("deletecollection", "apps", "deployments", Some("team-a"))
        ));
        let sub = Attributes {
            subresource: Some("status"),
            ..attrs("patch", "apps", "deployments", Some("team-a"))
        };
        assert!(allowed(&store, &sub), "`*` covers subresources too");
    }

    #[test]
    fn subresources_need_their_own_rule_or_a_star_prefix() {
        let store =
            jane_with(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]));
        let log = Attributes {
            subresource: Some("log"),
            ..attrs("get", "", "pods", Some("team-a"))
        };
        assert!(!allowed(&store, &log), "pods does not grant pods/log");
        let store =
            jane_with(json!([{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]));
        assert!(allowed(&store, &log));
        assert!(
            !allowed(&store, &attrs("get", "", "pods", Some("team-a"))),
            "pods/log does not grant pods"
        );
        let store =
            jane_with(json!([{"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}]));
        assert!(allowed(&store, &log));
        let status = Attributes {
            subresource: Some("status"),
            ..log
        };
        assert!(!allowed(&store, &status));
    }

    #[test]
    fn resource_names_only_match_requests_naming_one_of_them() {
        let store = jane_with(
            json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["certs"], "verbs": ["get", "list"]}]),
        );
        let named = |name| Attributes {
            name: Some(name),
            ..attrs("get", "", "secrets", Some("team-a"))
        };
        assert!(allowed(&store, &named("certs")));
        assert!(!allowed(&store, &named("other")));
        assert!(
            !allowed(&store, &attrs("list", "", "secrets", Some("team-a"))),
            "a list names no object"
        );
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace() {
        let store =
            jane_with(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]));
        assert!(!allowed(&store, &attrs("list", "", "pods", Some("team-b"))));
        assert!(
            !allowed(&store, &attrs("list", "", "pods", None)),
            "nor cluster-wide"
        );
    }

    #[test]
    fn a_role_binding_to_a_cluster_role_is_namespaced_and_a_cluster_binding_is_not() {
        let rules = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]);
        let store = store_with(&[
            role("ClusterRole", None, "reader", rules),
            binding(
                "RoleBinding",
                Some("team-a"),
                "ClusterRole",
                "reader",
                json!([{"kind": "User", "name": "jane"}]),
            ),
        ]);
        assert!(allowed(&store, &attrs("list", "", "pods", Some("team-a"))));
        assert!(!allowed(&store, &attrs("list", "", "pods", Some("team-b"))));
        assert!(!allowed(&store, &attrs("list", "", "pods", None)));
        let store = store_with(&[
            role(
                "ClusterRole",
                None,
                "reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
            ),
            binding(
                "ClusterRoleBinding",
                None,
                "ClusterRole",
                "reader",
                json!([{"kind": "User", "name": "jane"}]),
            ),
        ]);
        assert!(allowed(&store, &attrs("list", "", "pods", Some("team-b"))));
        assert!(allowed(&store, &attrs("list", "", "pods", None)));
    }

    #[test]
    fn groups_and_service_accounts_are_subjects() {
        let rules = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
        let store = store_with(&[
            role("ClusterRole", None, "reader", rules),
            binding(
                "ClusterRoleBinding",
                None,
                "ClusterRole",
                "reader",
                json!([
                    {"kind": "Group", "name": "readers"},
                    {"kind": "ServiceAccount", "name": "bot", "namespace": "ops"},
                ]),
            ),
        ]);
        let request = attrs("get", "", "pods", Some("x"));
        assert!(authorize(&store, &user("bob", &["readers"]), &request).is_ok());
        assert!(authorize(&store, &user("bob", &["writers"]), &request).is_err());
        assert!(
            authorize(
                &store,
                &user("system:serviceaccount:ops:bot", &[]),
                &request
            )
            .is_ok()
        );
        assert!(
            authorize(
                &store,
                &user("system:serviceaccount:dev:bot", &[]),
                &request
            )
            .is_err()
        );
        assert!(
            authorize(&store, &user("bot", &[]), &request).is_err(),
            "a User named like the account is not it"
        );
    }

    #[test]
    fn the_denial_is_worded_as_kube_apiservers() {
        let store = Store::default();
        let jane = user("jane", &[]);
        let err = authorize(
            &store,
            &jane,
            &attrs("create", "kruntimes.io", "runs", Some("team-a")),
        )
        .unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "runs.kruntimes.io is forbidden: User \"jane\" cannot create resource \"runs\" in API group \"kruntimes.io\" in the namespace \"team-a\""
        );
        let log = Attributes {
            subresource: Some("log"),
            name: Some("p"),
            ..attrs("get", "", "pods", Some("team-a"))
        };
        let err = authorize(&store, &jane, &log).unwrap_err();
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: User \"jane\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"team-a\""
        );
        assert_eq!(
            err.details,
            Some(json!({"name": "p", "group": "", "kind": "pods"}))
        );
        let err = authorize(&store, &jane, &attrs("list", "", "nodes", None)).unwrap_err();
        assert_eq!(
            err.message,
            "nodes is forbidden: User \"jane\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn discovery_is_open_to_every_user_and_other_paths_need_a_rule() {
        let store = Store::default();
        let jane = user("jane", &[]);
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
            "/healthz",
        ] {
            assert!(authorize_path(&store, &jane, path).is_ok(), "{path}");
        }
        let err = authorize_path(&store, &jane, "/metrics").unwrap_err();
        assert_eq!(
            err.message,
            "forbidden: User \"jane\" cannot get path \"/metrics\""
        );
        let store = store_with(&[
            role(
                "ClusterRole",
                None,
                "m",
                json!([{"nonResourceURLs": ["/met*"], "verbs": ["get"]}]),
            ),
            binding(
                "ClusterRoleBinding",
                None,
                "ClusterRole",
                "m",
                json!([{"kind": "User", "name": "jane"}]),
            ),
        ]);
        assert!(authorize_path(&store, &jane, "/metrics").is_ok());
    }

    #[test]
    fn verbs_follow_the_method_and_the_target() {
        use axum::http::Method;
        assert_eq!(verb(&Method::GET, true, false), "get");
        assert_eq!(verb(&Method::GET, false, false), "list");
        assert_eq!(verb(&Method::GET, false, true), "watch");
        assert_eq!(verb(&Method::POST, false, false), "create");
        assert_eq!(verb(&Method::PUT, true, false), "update");
        assert_eq!(verb(&Method::PATCH, true, false), "patch");
        assert_eq!(verb(&Method::DELETE, true, false), "delete");
        assert_eq!(verb(&Method::DELETE, false, false), "deletecollection");
    }
}
