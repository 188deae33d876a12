//! The admission chain of every write: mutating admission, the CRD schema check for
//! custom resources, the server's own checks (names, CRD shape), then validating
//! admission.

use serde_json::Value;

use super::Server;
use super::error::{ApiError, Subject};
use super::http::Request;
use super::meta;
use super::resources::{self, ResourceType};
use super::store::ObjectKey;
use crate::cluster::contract::{AdmissionInput, Operation};

/// The request's identity in admission terms.
pub(crate) struct Attempt<'a> {
    pub(crate) server: &'a Server,
    pub(crate) request: &'a Request,
    pub(crate) operation: Operation,
}

impl Attempt<'_> {
    fn rtype(&self) -> &ResourceType {
        &self.request.target.rtype
    }

    fn input(&self, object: Option<&Value>, old: Option<&Value>) -> AdmissionInput {
        let rtype = self.rtype();
        let named = object.or(old);
        let name = named
            .and_then(|o| meta::meta_str(o, "name"))
            .unwrap_or("")
            .to_owned();
        let namespace = self.request.target.namespace.clone();
        let namespace_labels = if rtype.group.is_empty() && rtype.plural == "namespaces" {
            named.map(meta::labels).unwrap_or_default()
        } else {
            namespace
                .as_deref()
                .and_then(|ns| {
                    self.server
                        .store
                        .get(&ObjectKey::new("", "namespaces", "", ns))
                })
                .map(|ns| meta::labels(&ns))
                .unwrap_or_default()
        };
        let configs = |plural: &str| {
            self.server
                .store
                .list("admissionregistration.k8s.io", plural, None)
                .0
        };
        AdmissionInput {
            operation: self.operation,
            group: rtype.group.clone(),
            version: rtype.version.clone(),
            resource: rtype.plural.clone(),
            subresource: self.request.target.subresource.clone(),
            kind: rtype.kind.clone(),
            namespace,
            name,
            object: object.cloned(),
            old_object: old.cloned(),
            user: self.request.user.clone(),
            dry_run: self.request.query.dry_run,
            namespace_labels,
            mutating: configs("mutatingwebhookconfigurations"),
            validating: configs("validatingwebhookconfigurations"),
        }
    }

    /// Runs the chain on a create or update; returns the object to store.
    pub(crate) async fn admit(
        &self,
        mut object: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let rtype = self.rtype();
        if rtype.group.is_empty() && rtype.plural == "secrets" {
            merge_string_data(&mut object);
        }
        if let Some(admission) = &self.server.admission
            && let Some(mutated) = admission.mutate(&self.input(Some(&object), old)).await?
        {
            object = mutated;
        }
        if self.rtype().custom
            && let Some(schema) = &self.server.schema
        {
            let crd = self.crd()?;
            schema.check(&crd, &self.rtype().version, &mut object, old)?;
        }
        self.builtin_checks(&object)?;
        if let Some(admission) = &self.server.admission {
            admission.validate(&self.input(Some(&object), old)).await?;
        }
        Ok(object)
    }

    /// Runs validating admission on a delete.
    pub(crate) async fn admit_delete(&self, old: &Value) -> Result<(), ApiError> {
        if let Some(admission) = &self.server.admission {
            admission.validate(&self.input(None, Some(old))).await?;
        }
        Ok(())
    }

    fn crd(&self) -> Result<Value, ApiError> {
        let rtype = self.rtype();
        let name = format!("{}.{}", rtype.plural, rtype.group);
        self.server
            .store
            .get(&ObjectKey::new(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "",
                &name,
            ))
            .ok_or_else(|| ApiError::internal(format!("the CRD {name} of this resource is gone")))
    }

    fn builtin_checks(&self, object: &Value) -> Result<(), ApiError> {
        let rtype = self.rtype();
        let name = meta::meta_str(object, "name").unwrap_or("");
        let subject = Subject {
            group: &rtype.group,
            resource: &rtype.plural,
            name,
        };
        let mut causes = Vec::new();
        if let Some(problem) = meta::name_problem(name) {
            causes.push(("metadata.name".to_owned(), problem));
        }
        if rtype.group == "apiextensions.k8s.io" {
            causes.extend(crd_problems(object, name));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(subject, &rtype.kind, causes))
        }
    }
}

/// A Secret's `stringData` merged into `data` (base64, over a key of the same name) and
/// dropped, as kube-apiserver stores it before admission: readers of a stored Secret
/// only ever see `data`.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(object) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = object.remove("stringData") else {
        return;
    };
    let data = object
        .entry("data")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !data.is_object() {
        *data = Value::Object(serde_json::Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, Value::String(encoded));
        }
    }
}

/// What makes a CRD unservable: the fields discovery and routing need.
fn crd_problems(crd: &Value, name: &str) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let field = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    for (pointer, path) in [
        ("/spec/group", "spec.group"),
        ("/spec/names/plural", "spec.names.plural"),
        ("/spec/names/kind", "spec.names.kind"),
    ] {
        if field(pointer).is_none() {
            causes.push((path.to_owned(), "Required value".to_owned()));
        }
    }
    if let (Some(plural), Some(group)) = (field("/spec/names/plural"), field("/spec/group"))
        && name != format!("{plural}.{group}")
    {
        causes.push((
            "metadata.name".to_owned(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if resources::storage_version(crd).is_none() {
        causes.push((
            "spec.versions".to_owned(),
            "Invalid value: must have exactly one version marked as storage version".to_owned(),
        ));
    }
    causes
}

#[cfg(test)]
mod string_data_tests {
    use serde_json::json;

    use super::merge_string_data;

    #[test]
    fn string_data_is_merged_into_data_over_the_same_key_and_dropped() {
        let mut secret = json!({
            "data": {"kept": "a2VwdA==", "both": "b2xk"},
            "stringData": {"both": "new", "only": "text"},
        });
        merge_string_data(&mut secret);
        assert_eq!(
            secret,
            json!({"data": {"kept": "a2VwdA==", "both": "bmV3", "only": "dGV4dA=="}})
        );
        let mut untouched = json!({"data": {"k": "dg=="}});
        merge_string_data(&mut untouched);
        assert_eq!(untouched, json!({"data": {"k": "dg=="}}));
    }
}
