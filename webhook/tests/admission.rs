//! The handlers on real AdmissionReview v1 documents (webhook/tests/fixtures), with the
//! returned JSONPatch applied to the object.

// Tests fail loudly (clippy.toml allows unwrap/expect/panic in tests; helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kruntimes_pss::{Level, Policy, Version, evaluate_object};
use kruntimes_testkit::fixtures;
use kruntimes_webhook::admission::{
    AnswerJson, Endpoint, Handlers, ReviewError, STANDALONE_WARNING, parse_review,
};
use kruntimes_webhook::inject::{InjectConfig, inject_pod};
use serde_json::{Value, json};

fn handlers() -> Handlers {
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::from([
        (
            "strict".to_owned(),
            BTreeMap::from([(
                "pod-security.kubernetes.io/enforce".to_owned(),
                "restricted".to_owned(),
            )]),
        ),
        ("plain".to_owned(), BTreeMap::new()),
    ]);
    Handlers::standalone(InjectConfig::default(), Level::Baseline)
        .with_namespaces(Arc::new(namespaces))
}

/// The response review as JSON, as the server sends it, answered at the endpoint the
/// apiserver would use. It is also kube-core's own encoding of the same answer, except
/// for the patch: base64 text instead of an array of numbers, holding the same bytes.
fn answer_bytes(body: &[u8]) -> Value {
    let review = parse_review(body).unwrap();
    let endpoint = Endpoint::for_review(&review);
    let out = handlers().review(endpoint, review).unwrap();
    let mut kube_core = serde_json::to_value(&out).unwrap();
    let out = serde_json::to_value(AnswerJson(&out)).unwrap();
    if let Some(patch) = kube_core["response"]["patch"].as_array() {
        let bytes: Vec<u8> = patch
            .iter()
            .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
            .collect();
        assert_eq!(
            base64_free::decode(out["response"]["patch"].as_str().unwrap()),
            bytes
        );
        kube_core["response"]["patch"] = out["response"]["patch"].clone();
    }
    assert_eq!(out, kube_core);
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    out
}

fn answer(name: &str) -> (Value, Value) {
    let body = fixtures::bytes(name);
    let request: Value = serde_json::from_slice(&body).unwrap();
    let out = answer_bytes(&body);
    let response = out["response"].clone();
    assert_eq!(
        response["uid"], request["request"]["uid"],
        "{name}: uid not echoed"
    );
    (request, response)
}

fn applied_patch(request: &Value, response: &Value) -> Value {
    // The server writes base64 (the Go encoder's form of []byte); kube-core's own
    // encoding, an array of numbers, is accepted too.
    let bytes: Vec<u8> = match &response["patch"] {
        Value::String(s) => base64_free::decode(s),
        Value::Array(a) => a
            .iter()
            .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
            .collect(),
        other => panic!("no patch: {other}"),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

/// A tiny standard base64 decoder: the patch travels base64-encoded in the review.
mod base64_free {
    pub(super) fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                acc |= val(*c) << (18 - 6 * i);
            }
            let n = chunk.len() * 6 / 8;
            out.extend_from_slice(&acc.to_be_bytes()[1..=n]);
        }
        out
    }
}

#[test]
fn an_invalid_workflow_is_denied_with_every_violation() {
    let (_, r) = answer("workflow-create-invalid.json");
    assert_eq!(r["allowed"], false);
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Workflow \"release\" is invalid:\n  "),
        "{message}"
    );
    assert!(
        message.contains("spec.jobs[1].needs[0]: Not found: \"fetc\""),
        "{message}"
    );
    assert!(message.contains("spec.jobs[2].steps[0]"), "{message}");
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(r["status"]["reason"], "Invalid");
    let causes = r["status"]["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), message.lines().count() - 1);
    assert!(causes.iter().any(|c| {
        c["field"] == "spec.jobs[1].needs[0]"
            && c["reason"] == "FieldValueNotFound"
            && c["message"]
                .as_str()
                .unwrap()
                .starts_with("Not found: \"fetc\"")
    }));
    assert_eq!(r["status"]["details"]["kind"], "Workflow");
    assert_eq!(r["status"]["details"]["name"], "release");
    assert!(r.get("patch").is_none());
}

#[test]
fn dry_run_is_answered_like_the_real_request() {
    let (_, real) = answer("workflow-create-invalid.json");
    let (_, dry) = answer("workflow-create-invalid-dryrun.json");
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("uid");
        v
    };
    assert_eq!(strip(real), strip(dry));
    let (req, real) = answer("pod-create-runtime.json");
    let (_, dry) = answer("pod-create-runtime-dryrun.json");
    assert_eq!(applied_patch(&req, &real), applied_patch(&req, &dry));
}

#[test]
fn a_valid_run_is_allowed_with_the_standalone_warning() {
    let (_, r) = answer("run-create.json");
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(r["warnings"], json!([STANDALONE_WARNING]));
}

#[test]
fn run_spec_is_immutable_except_cancel() {
    let (_, r) = answer("run-update-cancel.json");
    assert_eq!(r["allowed"], true, "{r}");
    let (_, r) = answer("run-update-script.json");
    assert_eq!(r["allowed"], false);
    let fields: Vec<&str> = r["status"]["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["spec.script", "spec.timeout"]);
}

#[test]
fn status_updates_are_not_validated_again() {
    let (_, r) = answer("run-update-status.json");
    assert_eq!(r["allowed"], true, "{r}");
}

#[test]
fn a_running_workflow_spec_is_immutable() {
    let (_, r) = answer("workflow-update-running.json");
    assert_eq!(r["allowed"], false);
    assert!(r["status"]["message"].as_str().unwrap().contains(
        "spec: Forbidden: Workflow spec is immutable once it has started (phase Running)"
    ));
}

#[test]
fn runtime_templates_meet_the_namespace_level_or_the_floor() {
    // Unlabeled namespace: the baseline floor, which the plain template meets.
    let (_, r) = answer("runtime-create-unlabeled-namespace.json");
    assert_eq!(r["allowed"], true, "{r}");
    // The same template where the namespace enforces restricted.
    let (_, r) = answer("runtime-create-restricted-namespace.json");
    assert_eq!(r["allowed"], false);
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\""),
        "{message}"
    );
    assert!(
        message.contains("allowPrivilegeEscalation != false"),
        "{message}"
    );
    assert!(message.contains("runAsNonRoot != true"), "{message}");
    // Privileged containers fail the floor anywhere.
    let (_, r) = answer("runtime-create-privileged.json");
    assert_eq!(r["allowed"], false);
    let causes = r["status"]["details"]["causes"].as_array().unwrap();
    assert!(causes.iter().any(|c| c["field"]
        == "spec.template.spec.containers[0].securityContext.privileged"
        && c["reason"] == "FieldValueForbidden"));
}

#[test]
fn other_kinds_are_denied_at_validate() {
    let (_, r) = answer("configmap-create.json");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 400);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("got v1 ConfigMap")
    );
    // and a Workflow sent to /mutate is denied too
    let review = parse_review(&fixtures::bytes("run-create.json")).unwrap();
    let out = serde_json::to_value(handlers().mutate(review).unwrap()).unwrap();
    assert_eq!(out["response"]["allowed"], false);
}

#[test]
fn labeled_pods_get_runtimed_injected() {
    let (req, r) = answer("pod-create-runtime.json");
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(r["patchType"], "JSONPatch");
    let pod = applied_patch(&req, &r);
    let original = &req["request"]["object"];
    // managedFields are untouched, everything else is the documented shape
    assert_eq!(
        pod["metadata"]["managedFields"],
        original["metadata"]["managedFields"]
    );
    assert_eq!(
        pod["spec"]["containers"][0]["command"][0],
        "/krt/bin/runtimed"
    );
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "krt-install");
    assert_eq!(pod["spec"]["initContainers"][1]["name"], "runtimed");
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        ["kube-api-access-x7k2p", "krt-bin", "krt-run", "workspace"]
    );
    assert_eq!(pod["spec"]["volumes"][3]["emptyDir"]["sizeLimit"], "2Gi");
    // the pod passed restricted before and still does
    let restricted = Policy::new(Level::Restricted, Version::Latest);
    assert!(evaluate_object(original, restricted).unwrap().allowed());
    let eval = evaluate_object(&pod, restricted).unwrap();
    assert!(eval.allowed(), "{}", eval.forbidden_detail());
    // the same as the injector's own answer, and re-injection changes nothing
    let mut expected = inject_pod(original, &InjectConfig::default()).unwrap();
    expected["metadata"]["managedFields"] = original["metadata"]["managedFields"].clone();
    assert_eq!(pod, expected);
}

#[test]
fn an_injected_pod_reinvoked_gets_no_patch() {
    let mut request: Value =
        serde_json::from_slice(&fixtures::bytes("pod-create-runtime.json")).unwrap();
    let object = request["request"]["object"].clone();
    request["request"]["object"] = inject_pod(&object, &InjectConfig::default()).unwrap();
    let out = answer_bytes(&serde_json::to_vec(&request).unwrap());
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none(), "{out}");
}

#[test]
fn other_pods_are_allowed_untouched() {
    let (_, r) = answer("pod-create-unlabeled.json");
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none());
}

#[test]
fn refused_pods_are_denied_with_the_reason() {
    let (_, r) = answer("pod-create-hostnetwork.json");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.hostNetwork: Forbidden")
    );
}

#[test]
fn broken_reviews_are_errors_not_decisions() {
    assert!(matches!(
        parse_review(b"{not json"),
        Err(ReviewError::Json(_))
    ));
    assert!(matches!(parse_review(b"[]"), Err(ReviewError::Json(_))));
    let mut review: Value = serde_json::from_slice(&fixtures::bytes("run-create.json")).unwrap();
    review["request"]["uid"] = json!("");
    assert!(matches!(
        parse_review(&serde_json::to_vec(&review).unwrap()),
        Err(ReviewError::NoUid)
    ));
    review["request"].as_object_mut().unwrap().remove("uid");
    assert!(parse_review(&serde_json::to_vec(&review).unwrap()).is_err());
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    assert!(parse_review(&serde_json::to_vec(&review).unwrap()).is_err());
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    assert!(matches!(
        parse_review(&serde_json::to_vec(&no_request).unwrap()),
        Err(ReviewError::NoRequest)
    ));
    // absurd nesting: an error, not a stack overflow
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_review(deep.as_bytes()).is_err());
}

#[test]
fn only_api_mode_runs_and_workflows_may_block() {
    let standalone = handlers();
    let runtimes: BTreeMap<(String, String), kruntimes_api::v1alpha1::Runtime> = BTreeMap::new();
    let api_mode = handlers().with_runtimes(Arc::new(runtimes));
    for (name, blocks_in_api_mode) in [
        ("run-create.json", true),
        ("workflow-create-invalid.json", true),
        ("runtime-create-privileged.json", false),
        ("pod-create-runtime.json", false),
    ] {
        let review = parse_review(&fixtures::bytes(name)).unwrap();
        assert!(!standalone.may_block(&review), "{name}: standalone");
        assert_eq!(
            api_mode.may_block(&review),
            blocks_in_api_mode,
            "{name}: API mode"
        );
    }
}
