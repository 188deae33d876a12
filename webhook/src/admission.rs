//! The admission handlers: `/validate` (Runtime, Run, Workflow) and `/mutate` (Pods),
//! as functions from an `AdmissionReview` to the response review. No network: the Pod
//! Security levels of namespaces come through [`NamespaceLevels`], the Runtimes that
//! Runs and Workflow steps name through [`Runtimes`] (caches in API mode, see
//! `cluster.rs`; absent in standalone mode).
//!
//! Broken requests (not JSON, not `admission.k8s.io/v1`, no request, no uid) are
//! [`ReviewError`]s, which the server answers with HTTP 400 and `krt review` with exit
//! status 2. Policy decisions are responses with `allowed: false`, built in one place
//! ([`Denial`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use kruntimes_api::labels::{API_VERSION, GROUP, INJECT_LABEL, RUNTIME_LABEL, VERSION};
use kruntimes_api::v1alpha1::{RunSpec, Runtime};
use kruntimes_api::validation::against_runtime::{
    SchemaCache, check_run_against_runtime, workflow_run_specs,
};
use kruntimes_api::validation::document::TypedObject;
use kruntimes_api::validation::immutability::check_update;
use kruntimes_api::validation::pod_security::{check_pod_security, enforced_policy};
use kruntimes_api::validation::{FieldPath, Violation, check_json_as};
use kruntimes_pss::{Level, Policy, Version};
use kube::core::admission::{AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{Status, StatusCause, StatusDetails};
use kube::core::{DynamicObject, GroupVersionKind};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::inject::{self, InjectConfig};

/// Largest AdmissionReview body accepted (7 MiB): the apiserver's own request limit is
/// 3 MiB of object, and a review carries the object twice (object and oldObject) plus
/// envelope; anything larger is not a real review. Above it: HTTP 413.
pub const MAX_REVIEW_BYTES: usize = 7 * 1024 * 1024;

/// The only AdmissionReview version served.
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// A review that cannot be answered with a decision.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not the AdmissionReview shape.
    #[error("malformed AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    /// Another apiVersion or kind.
    #[error("unsupported review type {0}; only {REVIEW_API_VERSION} AdmissionReview is served")]
    Type(String),
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// An empty `request.uid`.
    #[error("AdmissionReview request has no uid")]
    NoUid,
}

impl ReviewError {
    /// A bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReviewError::Json(_) => "malformed",
            ReviewError::Type(_) => "type",
            ReviewError::NoRequest => "no_request",
            ReviewError::NoUid => "no_uid",
        }
    }
}

/// An AdmissionReview as the handlers read it: the envelope decoded, the objects kept as
/// JSON text until the handler that needs them decodes them once, straight into its own
/// type (a Workflow is never a generic tree on the way to being a `Workflow`). Fields
/// the handlers do not read (`userInfo`, `options`, `resource`...) are skipped.
#[derive(Clone, Debug, Deserialize)]
pub struct Review {
    /// `admission.k8s.io/v1`, the only version served.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The request; a review without one is a [`ReviewError::NoRequest`].
    #[serde(default)]
    pub request: Option<Request>,
}

/// The parts of an `AdmissionRequest` the handlers read.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Echoed in the response; empty is a [`ReviewError::NoUid`].
    #[serde(default)]
    pub uid: String,
    /// The kind of the object.
    pub kind: GroupVersionKind,
    /// `status`, `scale`... for writes to a subresource.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name (empty for a `generateName` create).
    #[serde(default)]
    pub name: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: Operation,
    /// A `dryRun` request: answered exactly like a real one.
    #[serde(default)]
    pub dry_run: bool,
    /// The object as written (absent for DELETE).
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    /// The object before an UPDATE.
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
}

/// Parses a request body into a review, checking its type and uid.
pub fn parse_review(body: &[u8]) -> Result<Review, ReviewError> {
    let review: Review = serde_json::from_slice(body)?;
    check_review(&review)?;
    Ok(review)
}

fn check_review(review: &Review) -> Result<(), ReviewError> {
    if review.api_version != REVIEW_API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::Type(format!(
            "{} {}",
            review.api_version, review.kind
        )));
    }
    match &review.request {
        None => Err(ReviewError::NoRequest),
        Some(r) if r.uid.is_empty() => Err(ReviewError::NoUid),
        Some(_) => Ok(()),
    }
}

/// An allowed response to the request `uid`, the start of every answer.
fn allowed(uid: &str) -> AdmissionResponse {
    // `invalid` is the only public constructor without a kube `AdmissionRequest`; it
    // sets the v1 review type, the only one served.
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Status::default();
    response
}

/// How an answer goes on the wire: the review as kube-core shapes it, except the patch,
/// which is base64 text (what the apiserver's Go encoder writes for `[]byte`) rather
/// than kube-core's JSON array of numbers: a third of the size, and cheaper to write
/// and to read. The server and `krt review` both answer through this.
#[derive(Debug)]
pub struct AnswerJson<'a>(pub &'a AdmissionReview<DynamicObject>);

impl serde::Serialize for AnswerJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        use serde::ser::SerializeStruct as _;

        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Response<'a> {
            uid: &'a str,
            allowed: bool,
            status: &'a Status,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'static str>,
            #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
            audit_annotations: &'a std::collections::HashMap<String, String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            warnings: Option<&'a Vec<String>>,
        }

        let review = self.0;
        let mut out = serializer.serialize_struct("AdmissionReview", 3)?;
        out.serialize_field("apiVersion", &review.types.api_version)?;
        out.serialize_field("kind", &review.types.kind)?;
        if let Some(r) = &review.response {
            // kube-core sets the patch type exactly when it sets a patch (`with_patch`).
            let patch = r
                .patch
                .as_ref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
            let patch_type = patch.as_ref().map(|_| "JSONPatch");
            out.serialize_field(
                "response",
                &Response {
                    uid: &r.uid,
                    allowed: r.allowed,
                    status: &r.result,
                    patch,
                    patch_type,
                    audit_annotations: &r.audit_annotations,
                    warnings: r.warnings.as_ref(),
                },
            )?;
        }
        out.end()
    }
}

/// The two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /validate`: Runtime, Run, Workflow.
    Validate,
    /// `POST /mutate`: Pods.
    Mutate,
}

impl Endpoint {
    /// The endpoint the apiserver would send this review to: Pods go to `/mutate`,
    /// everything else to `/validate`.
    pub fn for_review(review: &Review) -> Endpoint {
        match &review.request {
            Some(r) if r.kind.group.is_empty() && r.kind.kind == "Pod" => Endpoint::Mutate,
            _ => Endpoint::Validate,
        }
    }

    /// `validate` or `mutate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// Where the Pod Security labels of namespaces come from.
pub trait NamespaceLevels: Send + Sync {
    /// The labels of `namespace`; `None` when unknown (standalone mode, or not cached
    /// yet), in which case the floor applies.
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}

/// Standalone mode: no Kubernetes API, every namespace is treated as unlabeled.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unlabeled;

impl NamespaceLevels for Unlabeled {
    fn labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
        None
    }
}

impl NamespaceLevels for BTreeMap<String, BTreeMap<String, String>> {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.get(namespace).cloned()
    }
}

/// What a Runtime lookup found.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The Runtime.
    Found(Arc<Runtime>),
    /// No Runtime of that name in that namespace (it may be created later: Runs wait).
    NotFound,
    /// The cache has not finished its first list: nothing can be said yet.
    NotSynced,
}

/// Where the Runtimes named by `runtimeRef` come from (API mode: the Runtime reflector).
/// Called on a blocking thread, under the review's deadline.
pub trait Runtimes: Send + Sync {
    /// The Runtime `name` in `namespace`.
    fn lookup(&self, namespace: &str, name: &str) -> Lookup;
}

impl Runtimes for BTreeMap<(String, String), Runtime> {
    fn lookup(&self, namespace: &str, name: &str) -> Lookup {
        match self.get(&(namespace.to_owned(), name.to_owned())) {
            Some(r) => Lookup::Found(Arc::new(r.clone())),
            None => Lookup::NotFound,
        }
    }
}

/// Default Pod Security floor: `baseline`, the level that prevents known privilege
/// escalations; namespaces that enforce more get more.
pub const DEFAULT_PSS_FLOOR: Level = Level::Baseline;

/// Warning added to Run and Workflow reviews in standalone mode (under 120 characters).
pub const STANDALONE_WARNING: &str =
    "standalone webhook: Runtime not looked up; timeout, input and git host not checked against it";

/// The handlers and their configuration.
#[derive(Clone)]
pub struct Handlers {
    inject: InjectConfig,
    floor: Policy,
    namespaces: Arc<dyn NamespaceLevels>,
    /// `None` in standalone mode: Runtime rules are skipped with [`STANDALONE_WARNING`].
    runtimes: Option<Arc<dyn Runtimes>>,
    schemas: Arc<SchemaCache>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("inject", &self.inject)
            .field("floor", &self.floor)
            .field("standalone", &self.runtimes.is_none())
            .finish_non_exhaustive()
    }
}

impl Handlers {
    /// Standalone handlers: no namespace labels, the floor applies everywhere, Runtime
    /// lookups are skipped with a warning.
    pub fn standalone(inject: InjectConfig, floor: Level) -> Self {
        Handlers {
            inject,
            floor: Policy::new(floor, Version::Latest),
            namespaces: Arc::new(Unlabeled),
            runtimes: None,
            schemas: Arc::new(SchemaCache::new()),
        }
    }

    /// Handlers reading namespace labels from `namespaces` (the floor still applies as
    /// a minimum).
    pub fn with_namespaces(mut self, namespaces: Arc<dyn NamespaceLevels>) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Handlers checking Runs and Workflow steps against the Runtimes of `runtimes`
    /// (`timeout` vs `maxTimeout`, `input` vs `inputSchema`, git hosts): API mode.
    pub fn with_runtimes(mut self, runtimes: Arc<dyn Runtimes>) -> Self {
        self.runtimes = Some(runtimes);
        self
    }

    /// Whether answering `review` may wait on something other than its own input: a
    /// Run or Workflow in API mode reads the Runtime cache and may compile or evaluate
    /// an input schema. The server runs those on the blocking pool under the deadline.
    pub fn may_block(&self, review: &Review) -> bool {
        self.runtimes.is_some()
            && review.request.as_ref().is_some_and(|r| {
                r.kind.group == GROUP && matches!(r.kind.kind.as_str(), "Run" | "Workflow")
            })
    }

    /// Whether Runtime lookups are off (standalone mode).
    pub fn is_standalone(&self) -> bool {
        self.runtimes.is_none()
    }

    /// Answers a review at `endpoint`.
    pub fn review(
        &self,
        endpoint: Endpoint,
        review: Review,
    ) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
        check_review(&review)?;
        let request = review.request.ok_or(ReviewError::NoRequest)?;
        let response = match endpoint {
            Endpoint::Validate => self.validate_request(&request),
            Endpoint::Mutate => self.mutate_request(&request),
        };
        Ok(response.into_review())
    }

    /// `POST /validate`.
    pub fn validate(&self, review: Review) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
        self.review(Endpoint::Validate, review)
    }

    /// `POST /mutate`.
    pub fn mutate(&self, review: Review) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
        self.review(Endpoint::Mutate, review)
    }

    /// The Pod Security policy enforced for Runtime templates in `namespace`: the
    /// namespace's enforce level, or the floor when that is stricter or absent.
    pub fn policy_for(&self, namespace: Option<&str>) -> (Policy, Vec<String>) {
        let labels = namespace.and_then(|ns| self.namespaces.labels(ns));
        let (policy, errors) = enforced_policy(labels.as_ref(), self.floor);
        let warnings = errors.iter().map(|e| truncate(&e.to_string())).collect();
        (policy, warnings)
    }

    fn validate_request(&self, req: &Request) -> AdmissionResponse {
        let response = allowed(&req.uid);
        let kind = req.kind.kind.as_str();
        if req.kind.group != GROUP
            || req.kind.version != VERSION
            || !matches!(kind, "Runtime" | "Run" | "Workflow")
        {
            return Denial::bad_request(format!(
                "/validate admits {API_VERSION} Runtime, Run and Workflow; got {} {}",
                gvk_string(req),
                kind
            ))
            .apply(response);
        }
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return response;
        }
        // Status (and scale) writes are the controller's; the spec was checked when it
        // was written.
        if req.sub_resource.is_some() {
            return response;
        }
        let Some(object) = &req.object else {
            return Denial::bad_request("the request carries no object").apply(response);
        };
        // The kind the apiserver says the object is (checked above) saves a scan for it.
        let checked = match check_json_as(kind, object) {
            Ok(c) => c,
            Err(e) => return Denial::bad_request(e.to_string()).apply(response),
        };
        let mut violations = checked.violations;
        let mut warnings = Vec::new();
        // A tree of the object only where a rule reads it generically (Pod Security on a
        // Runtime's template, the comparisons of an UPDATE), and then only once.
        let tree = std::cell::OnceCell::new();
        let tree = || {
            tree.get_or_init(|| serde_json::from_str::<Value>(object.get()).unwrap_or(Value::Null))
        };
        if checked.kind == "Runtime" && checked.object.is_some() {
            let (policy, label_warnings) = self.policy_for(req.namespace.as_deref());
            warnings.extend(label_warnings);
            violations.extend(check_pod_security(tree(), policy));
        }
        // Against the Runtime only when the spec is new (a create, or a Workflow update
        // that changes its spec), so that cancelling a Run, or an update that leaves a
        // Workflow's spec alone, is never refused because the Runtime changed since the
        // object was admitted. A Run's spec cannot change after create except `cancel`
        // (immutability below); a Workflow's can while it is Pending.
        let mut spec_changed = req.operation == Operation::Create;
        if req.operation == Operation::Update {
            let old = req
                .old_object
                .as_ref()
                .and_then(|o| serde_json::from_str::<Value>(o.get()).ok());
            match old {
                Some(old) => {
                    let new = tree();
                    violations.extend(check_update(checked.kind, &old, new));
                    spec_changed = checked.kind == "Workflow" && old.get("spec") != new.get("spec");
                }
                None => spec_changed = checked.kind == "Workflow",
            }
        }
        match (&self.runtimes, &checked.object) {
            (None, _) if matches!(checked.kind, "Run" | "Workflow") => {
                warnings.push(STANDALONE_WARNING.to_owned());
            }
            (Some(runtimes), Some(object)) if spec_changed => {
                let namespace = req
                    .namespace
                    .clone()
                    .or_else(|| object_namespace(object))
                    .unwrap_or_default();
                let specs: Vec<(FieldPath, &RunSpec)> = match object {
                    TypedObject::Run(run) => vec![(FieldPath::root("spec"), &run.spec)],
                    TypedObject::Workflow(wf) => {
                        workflow_run_specs(&wf.spec, &FieldPath::root("spec"))
                    }
                    TypedObject::Runtime(_) => Vec::new(),
                };
                let (v, w) = self.against_runtimes(runtimes.as_ref(), &namespace, &specs);
                violations.extend(v);
                warnings.extend(w);
            }
            _ => {}
        }
        let response = with_warnings(response, warnings);
        if violations.is_empty() {
            return response;
        }
        Denial::invalid(checked.kind, &checked.name, &violations).apply(response)
    }

    /// The Runtime rules for every RunSpec, each Runtime looked up once.
    fn against_runtimes(
        &self,
        runtimes: &dyn Runtimes,
        namespace: &str,
        specs: &[(FieldPath, &RunSpec)],
    ) -> (Vec<Violation>, Vec<String>) {
        let mut found: BTreeMap<&str, Lookup> = BTreeMap::new();
        let (mut violations, mut warnings) = (Vec::new(), Vec::new());
        for (path, spec) in specs {
            let name = spec.runtime_ref.name.as_str();
            if name.is_empty() {
                continue; // reported by the spec rules
            }
            let lookup = found
                .entry(name)
                .or_insert_with(|| runtimes.lookup(namespace, name));
            match lookup {
                Lookup::Found(runtime) => {
                    let out = check_run_against_runtime(spec, path, runtime, &self.schemas);
                    violations.extend(out.violations);
                    warnings.extend(out.warnings);
                }
                Lookup::NotFound => warnings.push(format!(
                    "Runtime {name:?} not found in {namespace:?}: timeout, input and git not checked"
                )),
                Lookup::NotSynced => warnings.push(format!(
                    "Runtime cache not synced yet: {name:?} not checked (timeout, input, git)"
                )),
            }
        }
        let mut seen = std::collections::HashSet::new();
        warnings.retain(|w| seen.insert(w.clone()));
        (violations, warnings)
    }

    fn mutate_request(&self, req: &Request) -> AdmissionResponse {
        let response = allowed(&req.uid);
        if !req.kind.group.is_empty() || req.kind.kind != "Pod" {
            return Denial::bad_request(format!(
                "/mutate injects core v1 Pods; got {} {}",
                gvk_string(req),
                req.kind.kind
            ))
            .apply(response);
        }
        if req.operation != Operation::Create || req.sub_resource.is_some() {
            return response;
        }
        let Some(object) = &req.object else {
            return Denial::bad_request("the request carries no object").apply(response);
        };
        let pod: Value = match serde_json::from_str(object.get()) {
            Ok(v) => v,
            Err(e) => {
                return Denial::bad_request(format!("cannot read object: {e}")).apply(response);
            }
        };
        let labels = &pod["metadata"]["labels"];
        let selected = labels.get(RUNTIME_LABEL).is_some()
            || labels.get(INJECT_LABEL).and_then(Value::as_str) == Some("enabled");
        if !selected {
            return response;
        }
        let name = pod_name(&pod, &req.name);
        match inject::inject_pod(&pod, &self.inject) {
            Err(e) => Denial::refused(format!(
                "Pod {name:?} cannot be injected with runtimed: {e}"
            ))
            .apply(response),
            Ok(mutated) => {
                let patch = inject::patch(pod, mutated);
                if patch.0.is_empty() {
                    return response;
                }
                match response.clone().with_patch(patch) {
                    Ok(r) => r,
                    Err(e) => Denial::internal(format!("cannot encode patch: {e}")).apply(response),
                }
            }
        }
    }
}

fn object_namespace(object: &TypedObject) -> Option<String> {
    match object {
        TypedObject::Run(o) => o.metadata.namespace.clone(),
        TypedObject::Workflow(o) => o.metadata.namespace.clone(),
        TypedObject::Runtime(o) => o.metadata.namespace.clone(),
    }
}

fn gvk_string(req: &Request) -> String {
    if req.kind.group.is_empty() {
        req.kind.version.clone()
    } else {
        format!("{}/{}", req.kind.group, req.kind.version)
    }
}

fn pod_name(pod: &Value, request_name: &str) -> String {
    let meta = &pod["metadata"];
    if let Some(n) = meta["name"].as_str().filter(|n| !n.is_empty()) {
        return n.to_owned();
    }
    if let Some(g) = meta["generateName"].as_str().filter(|n| !n.is_empty()) {
        return format!("{g}*");
    }
    if request_name.is_empty() {
        "<unnamed>".to_owned()
    } else {
        request_name.to_owned()
    }
}

/// What to answer when a decision cannot be computed within the deadline
/// (`--deadline-exceeded-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeadlinePolicy {
    /// Deny (504 `Timeout`): nothing unchecked gets in. The default, matching
    /// `failurePolicy: Fail`.
    #[default]
    Deny,
    /// Allow, with a warning: availability over checking; for `/mutate` the Pod is
    /// created without runtimed.
    Allow,
}

impl DeadlinePolicy {
    /// `deny` or `allow`, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlinePolicy::Deny => "deny",
            DeadlinePolicy::Allow => "allow",
        }
    }
}

/// The answer to review `uid` when no decision was reached within `deadline`.
pub fn deadline_exceeded_answer(
    uid: &str,
    endpoint: Endpoint,
    policy: DeadlinePolicy,
    deadline: std::time::Duration,
) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    let what = format!(
        "kruntimes webhook: no decision within its {} ms deadline",
        deadline.as_millis()
    );
    match policy {
        DeadlinePolicy::Allow => {
            response.allowed = true;
            response.result = Status::success();
            let unchecked = match endpoint {
                Endpoint::Validate => "allowed unchecked",
                Endpoint::Mutate => "allowed without runtimed injection",
            };
            response.warnings = Some(vec![truncate(&format!("{what}; {unchecked}"))]);
            response.into_review()
        }
        DeadlinePolicy::Deny => Denial {
            code: 504,
            reason: "Timeout",
            message: format!("{what}; denied (--deadline-exceeded-policy=deny), retry"),
            details: None,
        }
        .apply(response)
        .into_review(),
    }
}

/// Longest warning kept (the apiserver truncates longer ones, so a warning is kept under 120).
pub const MAX_WARNING_CHARS: usize = 119;

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_WARNING_CHARS {
        return s.to_owned();
    }
    let cut: String = s.chars().take(MAX_WARNING_CHARS - 3).collect();
    format!("{cut}...")
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings.iter().map(|w| truncate(w)).collect());
    }
    response
}

/// A policy decision to deny: the one place that shapes denials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP-like code in `status.code` (what `kubectl` shows).
    pub code: u16,
    /// `status.reason` (a `metav1.StatusReason`).
    pub reason: &'static str,
    /// `status.message`.
    pub message: String,
    /// `status.details`, when the denial is about fields of a named object.
    pub details: Option<StatusDetails>,
}

impl Denial {
    /// An object with field violations: 422 Invalid, every violation in the message and
    /// in `details.causes`.
    pub fn invalid(kind: &str, name: &str, violations: &[Violation]) -> Denial {
        let mut message = format!("{kind} {name:?} is invalid:");
        for v in violations {
            message.push_str("\n  ");
            message.push_str(&v.to_string());
        }
        let causes = violations
            .iter()
            .map(|v| StatusCause {
                reason: v.reason.cause_type().to_owned(),
                message: v.message(),
                field: v.field.clone(),
            })
            .collect();
        Denial {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(StatusDetails {
                name: name.to_owned(),
                group: GROUP.to_owned(),
                kind: kind.to_owned(),
                uid: String::new(),
                causes,
                retry_after_seconds: 0,
            }),
        }
    }

    /// A request this endpoint does not handle (wrong kind, no object): 400.
    pub fn bad_request(message: impl Into<String>) -> Denial {
        Denial {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// A refusal by policy (a Pod that cannot be injected): 403.
    pub fn refused(message: impl Into<String>) -> Denial {
        Denial {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
            details: None,
        }
    }

    /// The webhook failed to compute an answer: 500, generic message.
    pub fn internal(message: impl Into<String>) -> Denial {
        Denial {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// Turns `response` (one without a patch) into this denial (uid and warnings kept).
    pub fn apply(self, response: AdmissionResponse) -> AdmissionResponse {
        let mut response = response.deny(&self.message);
        let mut status = Status::failure(&self.message, self.reason).with_code(self.code);
        status.details = self.details;
        response.result = status;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_short() {
        assert!(STANDALONE_WARNING.chars().count() < 120);
        assert_eq!(
            truncate(&"x".repeat(500)).chars().count(),
            MAX_WARNING_CHARS
        );
    }

    /// The policy itself is `enforced_policy`'s (tested in kruntimes-api); this is the
    /// plumbing: the handlers' namespace source, the floor, and label errors as warnings.
    #[test]
    fn namespace_labels_reach_the_policy_and_their_errors_the_warnings() {
        let label = |level: &str| {
            BTreeMap::from([(
                "pod-security.kubernetes.io/enforce".to_owned(),
                level.to_owned(),
            )])
        };
        let ns = BTreeMap::from([
            ("strict".to_owned(), label("restricted")),
            ("typo".to_owned(), label("strict")),
        ]);
        let h = Handlers::standalone(InjectConfig::default(), Level::Baseline)
            .with_namespaces(Arc::new(ns));
        assert_eq!(h.policy_for(Some("strict")).0.level, Level::Restricted);
        assert_eq!(h.policy_for(Some("unknown")).0.level, Level::Baseline);
        let (p, warnings) = h.policy_for(Some("typo"));
        assert_eq!(p.level, Level::Restricted);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("\"strict\""), "{warnings:?}");
    }
}
