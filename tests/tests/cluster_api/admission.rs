//! Admission and schema checks are called through their traits with the inputs the
//! contract promises, and their answers shape what is stored or refused.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kruntimes_e2e::cluster::api::ApiConfig;
use kruntimes_e2e::cluster::contract::{Admission, AdmissionInput, Denial, Operation, SchemaCheck};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::harness::{Cluster, admin_users, crd_dir};

/// One call: step, operation, resource, subresource, the namespace's `team` label.
type Call = (String, Operation, String, Option<String>, Option<String>);

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn record(&self, step: &str, input: &AdmissionInput) {
        let team = input.namespace_labels.get("team").cloned();
        self.calls.lock().unwrap().push((
            step.to_owned(),
            input.operation,
            input.resource.clone(),
            input.subresource.clone(),
            team,
        ));
    }
}

impl Admission for Recorder {
    fn mutate<'a>(
        &'a self,
        input: &'a AdmissionInput,
    ) -> BoxFuture<'a, Result<Option<Value>, Denial>> {
        self.record("mutate", input);
        Box::pin(async move {
            if input.resource != "configmaps" || input.subresource.is_some() {
                return Ok(None);
            }
            let mut object = input.object.clone().unwrap_or_default();
            object["metadata"]["labels"]["mutated"] = json!("yes");
            Ok(Some(object))
        })
    }

    fn validate<'a>(&'a self, input: &'a AdmissionInput) -> BoxFuture<'a, Result<(), Denial>> {
        self.record("validate", input);
        Box::pin(async move {
            let labels = input
                .object
                .as_ref()
                .and_then(|o| o.pointer("/metadata/labels/deny"));
            if labels.is_some()
                || input.name == "undeletable" && input.operation == Operation::Delete
            {
                return Err(Denial {
                    code: 403,
                    reason: "Forbidden".to_owned(),
                    message: "admission webhook \"test.example.com\" denied the request: no"
                        .to_owned(),
                    causes: vec![
                        json!({"field": "metadata.labels", "message": "no", "reason": "FieldValueForbidden"}),
                    ],
                });
            }
            Ok(())
        })
    }
}

struct Pruner;

impl SchemaCheck for Pruner {
    fn check(
        &self,
        crd: &Value,
        version: &str,
        object: &mut Value,
        _old: Option<&Value>,
    ) -> Result<(), Denial> {
        assert_eq!(crd["spec"]["group"], "kruntimes.io");
        assert!(!version.is_empty());
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("unknownField");
        }
        if object.pointer("/spec/command").is_none() {
            return Err(Denial {
                code: 422,
                reason: "Invalid".to_owned(),
                message: "Run.kruntimes.io \"x\" is invalid: spec.command: Required value"
                    .to_owned(),
                causes: vec![],
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn admission_mutates_validates_and_denies_with_the_given_status() {
    let recorder = Arc::new(Recorder::default());
    let config = ApiConfig {
        users: admin_users(),
        admission: Some(recorder.clone()),
        ..ApiConfig::default()
    };
    let cluster = Cluster::with(config).await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}))
            .unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "team-a");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(created.metadata.labels.unwrap()["mutated"], "yes");

    let denied = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"deny": "1"}}})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = denied else {
        panic!("expected a Status")
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(
        status.message.contains("denied the request"),
        "{}",
        status.message
    );
    assert_eq!(status.details.unwrap().causes[0].field, "metadata.labels");
    assert!(
        !api.get("c")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap()
            .contains_key("deny"),
        "the denied write is not stored"
    );

    let keep: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "undeletable"}})).unwrap();
    api.create(&PostParams::default(), &keep).await.unwrap();
    let err = api
        .delete("undeletable", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 403));
    assert!(api.get("undeletable").await.is_ok());

    let calls = recorder.calls.lock().unwrap().clone();
    let cm_calls: Vec<(String, Operation, Option<String>)> = calls
        .iter()
        .filter(|c| c.2 == "configmaps")
        .map(|c| (c.0.clone(), c.1, c.4.clone()))
        .collect();
    let a = Some("a".to_owned());
    assert_eq!(
        cm_calls,
        [
            ("mutate".to_owned(), Operation::Create, a.clone()),
            ("validate".to_owned(), Operation::Create, a.clone()),
            ("mutate".to_owned(), Operation::Update, a.clone()),
            ("validate".to_owned(), Operation::Update, a.clone()),
            ("mutate".to_owned(), Operation::Create, a.clone()),
            ("validate".to_owned(), Operation::Create, a.clone()),
            ("validate".to_owned(), Operation::Delete, a.clone()),
        ]
    );
    assert!(
        calls.iter().any(|c| c.2 == "namespaces" && c.4 == a),
        "a Namespace's own labels are its namespace labels"
    );
}

#[tokio::test]
async fn custom_resources_go_through_the_schema_check() {
    let config = ApiConfig {
        users: admin_users(),
        schema: Some(Arc::new(Pruner)),
        crd_dirs: vec![crd_dir()],
        ..ApiConfig::default()
    };
    let cluster = Cluster::with(config).await;
    let (resource, _) = kube::discovery::pinned_kind(
        &cluster.client,
        &GroupVersionKind::gvk("kruntimes.io", "v1alpha1", "Run"),
    )
    .await
    .unwrap();
    let runs: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), "default", &resource);
    let run: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run", "metadata": {"name": "r"},
        "spec": {"runtimeRef": {"name": "rt"}, "command": ["true"], "unknownField": 1}}),
    )
    .unwrap();
    let created = runs.create(&PostParams::default(), &run).await.unwrap();
    assert!(
        created.data["spec"].get("unknownField").is_none(),
        "pruned: {}",
        created.data
    );
    let invalid: DynamicObject = serde_json::from_value(json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run", "metadata": {"name": "bad"}, "spec": {"runtimeRef": {"name": "rt"}}})).unwrap();
    let err = runs
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422 && s.reason == "Invalid"));
}
