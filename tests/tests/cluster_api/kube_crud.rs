//! Through kube-rs: discovery, CRUD, conflicts, generation, status separation, patches,
//! server-side apply, finalizers, selectors, watches, authentication and faults.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kruntimes_e2e::cluster::api::ApiConfig;
use kruntimes_e2e::cluster::api::fault::FaultLength;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::harness::{Cluster, admin_users, crd_dir};

pub fn config_map(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

fn code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_lists_builtin_types_with_subresources() {
    let cluster = Cluster::start().await;
    let discovery = kube::discovery::Discovery::new(cluster.client.clone())
        .run()
        .await
        .unwrap();
    let apps = discovery.get("apps").expect("apps group");
    let (deploy, caps) = apps
        .recommended_kind("Deployment")
        .expect("Deployment kind");
    assert_eq!(deploy.plural, "deployments");
    let subs: Vec<String> = caps
        .subresources
        .iter()
        .map(|(r, _)| r.plural.clone())
        .collect();
    assert!(
        subs.contains(&"deployments/scale".to_owned()) || subs.contains(&"scale".to_owned()),
        "{subs:?}"
    );
    assert!(discovery.get("coordination.k8s.io").is_some());
    assert!(discovery.get("apiextensions.k8s.io").is_some());
    let version = cluster.client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn crud_with_resource_versions_and_conflicts() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let first_rv: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    let again = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(again), (409, "AlreadyExists".to_owned()));

    let mut changed = created.clone();
    changed.data = Some([("k".to_owned(), "w".to_owned())].into());
    let updated = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    let second_rv: u64 = updated
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(second_rv > first_rv);
    let stale = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert_eq!(code(stale), (409, "Conflict".to_owned()));

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let list_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(list_rv, cluster.server.store().revision());
    assert!(list_rv >= second_rv);

    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let generated = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = generated.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        code(api.get("a").await.unwrap_err()),
        (404, "NotFound".to_owned())
    );
    let missing_ns: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "nowhere");
    let err = missing_ns
        .create(&PostParams::default(), &config_map("b", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(err), (404, "NotFound".to_owned()));
    let cluster_wide: Api<ConfigMap> = Api::all(cluster.client.clone());
    let err = cluster_wide
        .create(&PostParams::default(), &config_map("nowhere", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(err).0, 404, "a write names its namespace");
    assert_eq!(
        cluster_wide
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "reads span namespaces"
    );
    let bad = api
        .create(&PostParams::default(), &config_map("Bad_Name", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(bad), (422, "Invalid".to_owned()));
}

#[tokio::test]
async fn generation_counts_spec_changes_and_status_is_separate() {
    // No Deployment controller: it would write the status this test sets.
    let config = ApiConfig {
        users: admin_users(),
        disable_controllers: true,
        ..ApiConfig::default()
    };
    let cluster = Cluster::with(config).await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let mut with_status = deployment("d", 1);
    with_status.status = Some(serde_json::from_value(json!({"replicas": 7})).unwrap());
    let created = api
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status is dropped on create");

    let labels =
        Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}, "status": {"replicas": 5}}));
    let relabelled = api
        .patch("d", &PatchParams::default(), &labels)
        .await
        .unwrap();
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes keep generation"
    );
    assert!(
        relabelled.status.is_none(),
        "status ignored on the main resource"
    );

    let status = Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"replicas": 3}}));
    let with_status = api
        .patch_status("d", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(with_status.status.unwrap().replicas, Some(3));
    assert_eq!(
        with_status.spec.replicas,
        Some(1),
        "spec ignored on /status"
    );
    assert_eq!(with_status.metadata.generation, Some(1));

    let scaled = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    let scale = api.get_scale("d").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.as_ref().unwrap().replicas, 3);
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=d"));
    let rescaled = api
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(rescaled.spec.unwrap().replicas, Some(4));
    let applied_scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "d"}, "spec": {"replicas": 4}});
    let applied = api
        .patch_scale(
            "d",
            &PatchParams::apply("scaler"),
            &Patch::Apply(&applied_scale),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.unwrap().replicas, Some(4));
    let stored = api.get("d").await.unwrap();
    assert_eq!(stored.spec.replicas, Some(4));
    assert_eq!(stored.metadata.generation, Some(3));

    let noop_rv = stored.metadata.resource_version.clone();
    let noop = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(
        noop.metadata.resource_version, noop_rv,
        "a no-op patch writes nothing"
    );
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let cluster = Cluster::start().await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}, {"name": "b", "image": "y"}]}}))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let json_patch: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/labels", "value": {"l": "1"}},
        {"op": "replace", "path": "/spec/containers/1/image", "value": "z"}]),
    )
    .unwrap();
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(json_patch))
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["l"], "1");
    assert_eq!(
        patched.spec.as_ref().unwrap().containers[1]
            .image
            .as_deref(),
        Some("z")
    );
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "q"}]))
            .unwrap();
    let err = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert_eq!(code(err).0, 422);
    let smp = Patch::Strategic(
        json!({"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}}),
    );
    let merged = api.patch("p", &PatchParams::default(), &smp).await.unwrap();
    let containers = merged.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "containers merged by name");
    let env: Vec<String> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["A", "B"]);
    let merge = Patch::Merge(json!({"metadata": {"labels": {"l": null, "m": "2"}}}));
    let merged = api
        .patch("p", &PatchParams::default(), &merge)
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.unwrap(),
        [("m".to_owned(), "2".to_owned())].into()
    );
}

#[tokio::test]
async fn server_side_apply_with_two_managers() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let alice = PatchParams::apply("alice");
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "1", "b": "2"}});
    let created = api.patch("s", &alice, &Patch::Apply(&first)).await.unwrap();
    assert_eq!(created.data.clone().unwrap().len(), 2);
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["alice"]);
    let bob_doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "9", "c": "3"}});
    let err = api
        .patch("s", &PatchParams::apply("bob"), &Patch::Apply(&bob_doc))
        .await
        .unwrap_err();
    assert_eq!(code(err), (409, "Conflict".to_owned()));
    let forced = api
        .patch(
            "s",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob_doc),
        )
        .await
        .unwrap();
    let data = forced.data.unwrap();
    assert_eq!((data["a"].as_str(), data["c"].as_str()), ("9", "3"));
    let alice_again =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {}});
    let shrunk = api
        .patch("s", &alice, &Patch::Apply(&alice_again))
        .await
        .unwrap();
    let data = shrunk.data.unwrap();
    assert!(
        !data.contains_key("b"),
        "alice's omitted field is removed: {data:?}"
    );
    assert_eq!(data["a"], "9", "bob's field stays");
    let dry = api.patch("s", &PatchParams::apply("bob").dry_run(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "dry"}}))).await.unwrap();
    assert_eq!(dry.data.unwrap()["a"], "dry");
    assert_eq!(
        api.get("s").await.unwrap().data.unwrap()["a"],
        "9",
        "dry run stores nothing"
    );
}

#[tokio::test]
async fn repeated_applies_are_no_ops_and_shared_fields_stay() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "data": {"a": "1"}});
    let first = api
        .patch("n", &PatchParams::apply("alice"), &Patch::Apply(&doc))
        .await
        .unwrap();
    let again = api
        .patch("n", &PatchParams::apply("alice"), &Patch::Apply(&doc))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version, again.metadata.resource_version,
        "a repeated apply writes nothing"
    );
    // Bob applies the same value: no conflict, and he co-owns the field.
    let shared = api
        .patch("n", &PatchParams::apply("bob"), &Patch::Apply(&doc))
        .await
        .unwrap();
    assert_ne!(
        shared.metadata.resource_version, again.metadata.resource_version,
        "ownership changed"
    );
    let without = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}});
    let after = api
        .patch("n", &PatchParams::apply("alice"), &Patch::Apply(&without))
        .await
        .unwrap();
    assert_eq!(after.data.unwrap()["a"], "1", "bob still owns data.a");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let mut cm = config_map("f", json!({}));
    cm.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
    api.create(&PostParams::default(), &cm).await.unwrap();
    let deleting = api.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = deleting.left().expect("the object, still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    let add = Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "other"]}}));
    assert_eq!(
        code(
            api.patch("f", &PatchParams::default(), &add)
                .await
                .unwrap_err()
        )
        .0,
        422
    );
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    api.patch("f", &PatchParams::default(), &release)
        .await
        .unwrap();
    assert_eq!(code(api.get("f").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    for (name, labels) in [
        ("one", json!({"app": "web", "tier": "front"})),
        ("two", json!({"app": "db"})),
        ("three", json!({})),
    ] {
        api.create(&PostParams::default(), &config_map(name, labels))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        let mut n: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        n.sort();
        n
    };
    let cases: [(&str, &[&str]); 6] = [
        ("app=web", &["one"]),
        ("app!=web", &["three", "two"]),
        ("app in (web,db)", &["one", "two"]),
        ("app notin (web)", &["three", "two"]),
        ("tier", &["one"]),
        ("!app", &["three"]),
    ];
    for (selector, expected) in cases {
        let got = names(
            api.list(&ListParams::default().labels(selector))
                .await
                .unwrap(),
        );
        assert_eq!(got, expected, "{selector}");
    }
    let by_name = names(
        api.list(&ListParams::default().fields("metadata.name=two"))
            .await
            .unwrap(),
    );
    assert_eq!(by_name, ["two"]);
    let unsupported = api
        .list(&ListParams::default().fields("data.k=v"))
        .await
        .unwrap_err();
    assert_eq!(code(unsupported).0, 400);
}

#[tokio::test]
async fn unknown_tokens_are_401_and_faults_answer_until_they_expire() {
    let cluster = Cluster::start().await;
    let mut kubeconfig = cluster.server.kubeconfig("wrong", "default");
    kubeconfig["users"][0]["user"]["token"] = json!("wrong");
    let parsed: kube::config::Kubeconfig = serde_json::from_value(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .unwrap();
    let stranger: Api<ConfigMap> =
        Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    assert_eq!(
        code(stranger.list(&ListParams::default()).await.unwrap_err()).0,
        401
    );

    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .server
        .fail_requests(500, FaultLength::Requests(2))
        .unwrap();
    assert_eq!(
        code(api.list(&ListParams::default()).await.unwrap_err()),
        (500, "InternalError".to_owned())
    );
    assert_eq!(code(api.get("x").await.unwrap_err()).0, 500);
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "the fault ends after two requests"
    );
    assert_eq!(cluster.server.faulted_requests(), 2);
    // kube-rs retries a 429 after the Retry-After second: the list succeeds once the
    // fault has expired, and the server saw the faulted attempt.
    cluster
        .server
        .fail_requests(429, FaultLength::For(Duration::from_millis(300)))
        .unwrap();
    assert!(api.list(&ListParams::default()).await.is_ok());
    assert!(cluster.server.faulted_requests() >= 3);
    assert!(
        cluster
            .server
            .fail_requests(404, FaultLength::Requests(1))
            .is_err()
    );
}

#[tokio::test]
async fn crds_from_the_chart_serve_runs_with_status_and_scale() {
    let cluster = Cluster::with(ApiConfig {
        users: admin_users(),
        crd_dirs: vec![crd_dir()],
        ..ApiConfig::default()
    })
    .await;
    let discovery = kube::discovery::Discovery::new(cluster.client.clone())
        .run()
        .await
        .unwrap();
    let group = discovery.get("kruntimes.io").expect("kruntimes.io served");
    let (run_type, _) = group.recommended_kind("Run").expect("Run kind");
    let runs: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), "default", &run_type);
    let run: DynamicObject =
        serde_json::from_value(json!({"apiVersion": run_type.api_version, "kind": "Run",
        "metadata": {"name": "r1"}, "spec": {"runtimeRef": {"name": "rt"}, "command": ["true"]}}))
        .unwrap();
    let created = runs.create(&PostParams::default(), &run).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let status = Patch::Merge(json!({"status": {"phase": "Running"}}));
    let with_status = runs
        .patch_status("r1", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["phase"], "Running");
    assert_eq!(with_status.metadata.generation, Some(1));

    let (runtime_type, caps) = group.recommended_kind("Runtime").expect("Runtime kind");
    let has_scale = caps
        .subresources
        .iter()
        .any(|(r, _)| r.plural.ends_with("scale"));
    let crd_text = std::fs::read_to_string(crd_dir().join("runtimes.kruntimes.io.yaml")).unwrap();
    assert_eq!(
        has_scale,
        crd_text.contains("scale:"),
        "discovery shows the CRD's scale subresource"
    );
    let runtimes: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), "default", &runtime_type);
    let runtime: DynamicObject = serde_json::from_value(
        json!({"apiVersion": runtime_type.api_version, "kind": "Runtime",
        "metadata": {"name": "rt"}, "spec": {"replicas": 1}}),
    )
    .unwrap();
    runtimes
        .create(&PostParams::default(), &runtime)
        .await
        .unwrap();
    let status =
        Patch::Merge(json!({"status": {"replicas": 1, "selector": "kruntimes.io/runtime=rt"}}));
    runtimes
        .patch_status("rt", &PatchParams::default(), &status)
        .await
        .unwrap();
    let scale = runtimes.get_scale("rt").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    let scale_status = scale.status.unwrap();
    assert_eq!(
        (scale_status.replicas, scale_status.selector.as_deref()),
        (1, Some("kruntimes.io/runtime=rt"))
    );
    runtimes
        .patch_scale(
            "rt",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let scaled = runtimes.get("rt").await.unwrap();
    assert_eq!(
        (
            scaled.data["spec"]["replicas"].as_i64(),
            scaled.metadata.generation
        ),
        (Some(4), Some(2))
    );
    let other = ApiResource::from_gvk(&GroupVersionKind::gvk("kruntimes.io", "v9", "Run"));
    let missing: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), "default", &other);
    assert_eq!(
        code(missing.list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
}

/// The overhead of the emulator: a create and the watch event for it, round trip.
/// Prints figures; asserts only that every event arrived.
#[tokio::test]
async fn bodies_up_to_the_limit_are_accepted_and_larger_are_413() {
    let cluster = Cluster::start().await;
    let limit = kruntimes_e2e::cluster::api::MAX_BODY_BYTES;
    let frame = |name: &str, padding: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"{padding}"}}}}"#
        )
    };
    let body =
        |name: &str, len: usize| frame(name, &"x".repeat(len - frame(name, "").len())).into_bytes();
    let post = |bytes: Vec<u8>| {
        http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/json")
            .body(bytes)
            .unwrap()
    };
    let at_limit = body("at-limit", limit);
    assert_eq!(at_limit.len(), limit);
    let created: ConfigMap = cluster.client.request(post(at_limit)).await.unwrap();
    assert_eq!(
        created.data.unwrap()["k"].len(),
        limit - frame("at-limit", "").len(),
        "the whole padding is stored"
    );
    let over = cluster
        .client
        .request::<ConfigMap>(post(body("over", limit + 1)))
        .await
        .unwrap_err();
    assert_eq!(code(over), (413, "RequestEntityTooLarge".to_owned()));
}
