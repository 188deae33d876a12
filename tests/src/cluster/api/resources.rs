//! The resource types the server serves: a fixed table of built-in ones and one per
//! version of each stored `CustomResourceDefinition`, and the legacy discovery documents
//! built from them (`/api`, `/apis`, `/apis/GROUP/VERSION` as `APIResourceList`).

use serde_json::{Value, json};

/// Where `/scale` reads and writes a resource's replica counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON path of the desired replicas (`.spec.replicas`).
    pub spec_replicas: String,
    /// JSON path of the observed replicas (`.status.replicas`).
    pub status_replicas: String,
    /// JSON path of the label selector string, if any.
    pub label_selector: Option<String>,
}

/// One served resource type (one version of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    /// Served version.
    pub version: String,
    /// Plural name (`pods`).
    pub plural: String,
    /// Singular name (`pod`).
    pub singular: String,
    /// Kind (`Pod`).
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`po`).
    pub short_names: Vec<String>,
    /// Has a `/status` subresource: status is ignored on main-resource writes.
    pub status: bool,
    /// Has a `/scale` subresource, with these paths.
    pub scale: Option<ScalePaths>,
    /// Custom resource: schema-checked through its CRD.
    pub custom: bool,
    /// Discovery categories (`all` for what `kubectl get all` lists).
    pub categories: Vec<String>,
    /// A CRD version's `additionalPrinterColumns`: name, type, JSON path.
    pub printer_columns: Vec<(String, String, String)>,
}

impl ResourceType {
    /// `apiVersion` of this type's objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Where objects of this type are stored: group and plural, not the version, so
    /// that every served version of a CRD sees the same objects.
    pub fn store_key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }
}

/// One built-in type: group, version, plural, kind, namespaced, short names, status
/// subresource, scale subresource.
type BuiltinRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    bool,
);

/// The built-in types.
const BUILTIN: &[BuiltinRow] = &[
    (
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
    ),
    ("", "v1", "pods", "Pod", true, &["po"], true, false),
    ("", "v1", "services", "Service", true, &["svc"], true, false),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    ("", "v1", "secrets", "Secret", true, &[], false, false),
    (
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
    ),
    ("", "v1", "events", "Event", true, &["ev"], false, false),
    ("", "v1", "nodes", "Node", false, &["no"], true, false),
    (
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
    ),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        false,
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        false,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        false,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
    ),
];

/// The built-in resource types.
pub fn builtin() -> Vec<ResourceType> {
    BUILTIN
        .iter()
        .map(
            |&(group, version, plural, kind, namespaced, short, status, scale)| ResourceType {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: plural.to_owned(),
                singular: kind.to_lowercase(),
                kind: kind.to_owned(),
                namespaced,
                short_names: short.iter().map(|s| (*s).to_owned()).collect(),
                status,
                scale: scale.then(|| ScalePaths {
                    spec_replicas: ".spec.replicas".to_owned(),
                    status_replicas: ".status.replicas".to_owned(),
                    label_selector: Some(".status.selector".to_owned()),
                }),
                custom: false,
                categories: if matches!(plural, "pods" | "services" | "deployments") {
                    vec!["all".to_owned()]
                } else {
                    Vec::new()
                },
                printer_columns: Vec::new(),
            },
        )
        .collect()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The served versions of a stored CRD, one type each. A CRD missing its names or
/// group yields nothing (the schema check or the CRD's own validation refuses it).
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let (Some(group), Some(plural), Some(kind)) = (
        str_at(crd, "/spec/group"),
        str_at(crd, "/spec/names/plural"),
        str_at(crd, "/spec/names/kind"),
    ) else {
        return Vec::new();
    };
    let singular =
        str_at(crd, "/spec/names/singular").map_or_else(|| kind.to_lowercase(), str::to_owned);
    let namespaced = str_at(crd, "/spec/scope") != Some("Cluster");
    let short_names: Vec<String> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let categories: Vec<String> = crd
        .pointer("/spec/names/categories")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    versions
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|v| {
            let version = v.get("name")?.as_str()?;
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: str_at(s, "/specReplicasPath")
                    .unwrap_or(".spec.replicas")
                    .to_owned(),
                status_replicas: str_at(s, "/statusReplicasPath")
                    .unwrap_or(".status.replicas")
                    .to_owned(),
                label_selector: str_at(s, "/labelSelectorPath").map(str::to_owned),
            });
            Some(ResourceType {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: plural.to_owned(),
                singular: singular.clone(),
                kind: kind.to_owned(),
                namespaced,
                short_names: short_names.clone(),
                status: v.pointer("/subresources/status").is_some(),
                scale,
                custom: true,
                categories: categories.clone(),
                printer_columns: printer_columns(v),
            })
        })
        .collect()
}

fn printer_columns(version: &Value) -> Vec<(String, String, String)> {
    let columns = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array);
    columns
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let field = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
            Some((
                field("name")?,
                field("type").unwrap_or_else(|| "string".to_owned()),
                field("jsonPath")?,
            ))
        })
        .collect()
}

/// The storage version of a CRD (the one with `storage: true`), else its first.
pub fn storage_version(crd: &Value) -> Option<String> {
    let versions = crd.pointer("/spec/versions")?.as_array()?;
    versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned))
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// `APIResourceList` for one group version.
pub fn resource_list(types: &[ResourceType], group_version: &str) -> Value {
    let mut resources = Vec::new();
    for t in types.iter().filter(|t| t.api_version() == group_version) {
        resources.push(json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
            "shortNames": t.short_names,
            "categories": t.categories,
        }));
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `APIGroupList` (`/apis`): every non-core group with its versions, the first as
/// preferred.
pub fn group_list(types: &[ResourceType]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) if !versions.contains(&t.version) => {
                versions.push(t.version.clone())
            }
            Some(_) => {}
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups.iter().map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `APIGroup` for one group (`/apis/GROUP`), or `None` when nothing is served in it.
pub fn group(types: &[ResourceType], group: &str) -> Option<Value> {
    let mut versions: Vec<String> = Vec::new();
    for t in types.iter().filter(|t| t.group == group) {
        if !versions.contains(&t.version) {
            versions.push(t.version.clone());
        }
    }
    (!versions.is_empty()).then(|| {
        let mut doc = group_doc(group, &versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first()})
}
