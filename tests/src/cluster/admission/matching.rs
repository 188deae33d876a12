//! Which webhooks a request goes to: `rules` (operations, apiGroups, apiVersions,
//! resources with their `*` and subresource forms, scope), `namespaceSelector` and
//! `objectSelector`, as kube-apiserver matches them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use k8s_openapi::api::admissionregistration::v1::{MatchCondition, RuleWithOperations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::cel::{KubeCelExt as _, cel};
use serde_json::Value;

use crate::cluster::contract::{AdmissionInput, Operation};

/// Compiled `matchConditions` expressions kept per thread; past this many the cache is
/// emptied (expressions come from stored configurations, which a test may create
/// without end).
pub const MAX_COMPILED_CONDITIONS: usize = 1_024;

/// A compiled expression, or why it does not compile.
type Compiled = Rc<Result<cel::Program, String>>;

thread_local! {
    /// The CEL context with Kubernetes' functions, built once per thread (a `Context`
    /// is not `Sync`); each evaluation binds its variables in a scope of its own.
    static FUNCTIONS: cel::Context<'static> = cel::Context::default().with_all();
    /// Expressions compiled once, as the apiserver compiles a configuration's
    /// conditions when it loads it, not per request.
    static PROGRAMS: RefCell<HashMap<String, Compiled>> = RefCell::new(HashMap::new());
}

fn compiled(expression: &str) -> Compiled {
    PROGRAMS.with(|programs| {
        let mut programs = programs.borrow_mut();
        if let Some(program) = programs.get(expression) {
            return program.clone();
        }
        if programs.len() >= MAX_COMPILED_CONDITIONS {
            programs.clear();
        }
        let program = Rc::new(cel::Program::compile(expression).map_err(|e| e.to_string()));
        programs.insert(expression.to_owned(), program.clone());
        program
    })
}

/// The parts of a webhook entry that decide whether it is called (shared by mutating
/// and validating webhooks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Matcher<'a> {
    pub(crate) rules: Option<&'a [RuleWithOperations]>,
    pub(crate) namespace_selector: Option<&'a LabelSelector>,
    pub(crate) object_selector: Option<&'a LabelSelector>,
    pub(crate) match_conditions: Option<&'a [MatchCondition]>,
}

/// Whether a webhook is called.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Rules, selectors and conditions match.
    Call,
    /// Something does not match.
    Skip,
    /// A selector is malformed: the request fails whatever the failure policy.
    Invalid(String),
    /// A match condition could not be evaluated: the failure policy decides.
    ConditionError(String),
}

impl Matcher<'_> {
    /// Whether `input`, with `object` as its (possibly mutated) object, goes to this
    /// webhook.
    pub(crate) fn decide(&self, input: &AdmissionInput, object: Option<&Value>) -> Decision {
        let rules = self.rules.unwrap_or_default();
        if !rules.iter().any(|rule| rule_matches(rule, input)) {
            return Decision::Skip;
        }
        let selectors = namespace_matches(self.namespace_selector, input).and_then(|ns| {
            Ok(ns && object_matches(self.object_selector, object, input.old_object.as_ref())?)
        });
        match selectors {
            Ok(true) => {}
            Ok(false) => return Decision::Skip,
            Err(e) => return Decision::Invalid(e),
        }
        match conditions_match(self.match_conditions.unwrap_or_default(), input, object) {
            Ok(true) => Decision::Call,
            Ok(false) => Decision::Skip,
            Err(e) => Decision::ConditionError(e),
        }
    }
}

/// The `matchConditions`, CEL over `object`, `oldObject` and `request`: the webhook is
/// skipped when one is false; otherwise an evaluation error is an error. The values are
/// bound as plain JSON (map keys such as `kruntimes.io/runtime` as they are; kube-cel's
/// admission-policy evaluator escapes every key, which breaks `'a/b' in labels`).
fn conditions_match(
    conditions: &[MatchCondition],
    input: &AdmissionInput,
    object: Option<&Value>,
) -> Result<bool, String> {
    if conditions.is_empty() {
        return Ok(true);
    }
    let kind =
        serde_json::json!({"group": input.group, "version": input.version, "kind": input.kind});
    let resource = serde_json::json!({"group": input.group, "version": input.version, "resource": input.resource});
    let request = serde_json::json!({
        "operation": input.operation.as_str(),
        "userInfo": {"username": input.user.username, "groups": input.user.groups},
        "name": input.name,
        "namespace": input.namespace.clone().unwrap_or_default(),
        "dryRun": input.dry_run,
        "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "subResource": input.subresource.clone().unwrap_or_default(),
    });
    FUNCTIONS.with(|functions| evaluate(functions, conditions, input, object, request))
}

fn evaluate(
    functions: &cel::Context<'static>,
    conditions: &[MatchCondition],
    input: &AdmissionInput,
    object: Option<&Value>,
    request: Value,
) -> Result<bool, String> {
    let mut context = functions.new_inner_scope();
    let bound = [
        ("object", object.cloned().unwrap_or(Value::Null)),
        ("oldObject", input.old_object.clone().unwrap_or(Value::Null)),
        ("request", request),
    ];
    for (name, value) in bound {
        context
            .add_variable(name, value)
            .map_err(|e| format!("binding {name}: {e}"))?;
    }
    let mut first_error = None;
    for condition in conditions {
        let outcome = match compiled(&condition.expression).as_ref() {
            Ok(program) => program.execute(&context).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        match outcome {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => {
                first_error.get_or_insert(format!(
                    "matchCondition {:?} returned {other:?}, not a bool",
                    condition.name
                ));
            }
            Err(e) => {
                first_error.get_or_insert(format!("matchCondition {:?}: {e}", condition.name));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

fn listed(values: Option<&Vec<String>>, wanted: &str) -> bool {
    values
        .into_iter()
        .flatten()
        .any(|v| v == "*" || v == wanted)
}

fn rule_matches(rule: &RuleWithOperations, input: &AdmissionInput) -> bool {
    listed(rule.operations.as_ref(), input.operation.as_str())
        && listed(rule.api_groups.as_ref(), &input.group)
        && listed(rule.api_versions.as_ref(), &input.version)
        && resource_matches(rule.resources.as_ref(), input)
        && scope_matches(rule.scope.as_deref(), input)
}

/// `pods` (the resource only), `pods/status`, `pods/*` (the resource and every
/// subresource), `*` (every resource, no subresource), `*/status`, `*/*`.
fn resource_matches(resources: Option<&Vec<String>>, input: &AdmissionInput) -> bool {
    let sub = input.subresource.as_deref().unwrap_or("");
    resources.into_iter().flatten().any(|entry| {
        let (resource, entry_sub) = entry.split_once('/').unwrap_or((entry, ""));
        let resource_ok = resource == "*" || resource == input.resource;
        // `pods/*` takes `pods` itself too, as the apiserver's matcher does.
        let sub_ok = entry_sub == "*" || entry_sub == sub;
        resource_ok && sub_ok
    })
}

/// `Namespaced`, `Cluster` or `*` (the default). A request on a Namespace itself is
/// cluster-scoped.
fn scope_matches(scope: Option<&str>, input: &AdmissionInput) -> bool {
    match scope.unwrap_or("*") {
        "Namespaced" => input.namespace.is_some(),
        "Cluster" => input.namespace.is_none(),
        _ => true,
    }
}

/// The namespace selector applies to namespaced objects and to Namespaces themselves
/// (their own labels); other cluster-scoped objects always match it.
fn namespace_matches(
    selector: Option<&LabelSelector>,
    input: &AdmissionInput,
) -> Result<bool, String> {
    let is_namespace = input.group.is_empty() && input.resource == "namespaces";
    if input.namespace.is_none() && !is_namespace {
        return Ok(true);
    }
    selector_matches(selector, &input.namespace_labels)
        .map_err(|e| format!("namespaceSelector: {e}"))
}

/// The object selector matches when the new object or the old one matches it.
fn object_matches(
    selector: Option<&LabelSelector>,
    object: Option<&Value>,
    old_object: Option<&Value>,
) -> Result<bool, String> {
    if selector.is_none() {
        return Ok(true);
    }
    for object in [object, old_object].into_iter().flatten() {
        if selector_matches(selector, &labels_of(object))
            .map_err(|e| format!("objectSelector: {e}"))?
        {
            return Ok(true);
        }
    }
    // With neither object (a delete without old object) labels are empty.
    if object.is_none() && old_object.is_none() {
        return selector_matches(selector, &BTreeMap::new())
            .map_err(|e| format!("objectSelector: {e}"));
    }
    Ok(false)
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A label selector: every `matchLabels` pair and every `matchExpressions` entry
/// (`In`, `NotIn`, `Exists`, `DoesNotExist`). An absent or empty selector matches
/// everything.
pub(crate) fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.as_deref().unwrap_or_default();
        let present = labels.get(&expression.key);
        let ok = match expression.operator.as_str() {
            "In" => present.is_some_and(|v| values.contains(v)),
            "NotIn" => present.is_none_or(|v| !values.contains(v)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => {
                return Err(format!(
                    "{other:?} is not a valid label selector operator (In, NotIn, Exists, DoesNotExist)"
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The options object AdmissionReview carries for `operation`.
pub(crate) fn options_for(operation: Operation) -> Value {
    let kind = match operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    serde_json::json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"})
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cluster::contract::UserInfo;

    fn pod_input(labels: Value) -> AdmissionInput {
        AdmissionInput {
            operation: Operation::Create,
            group: String::new(),
            version: "v1".to_owned(),
            resource: "pods".to_owned(),
            subresource: None,
            kind: "Pod".to_owned(),
            namespace: Some("team-a".to_owned()),
            name: "p".to_owned(),
            object: Some(json!({"metadata": {"name": "p", "labels": labels}})),
            old_object: None,
            user: UserInfo::default(),
            dry_run: false,
            namespace_labels: BTreeMap::new(),
            mutating: Vec::new(),
            validating: Vec::new(),
        }
    }

    fn condition(expression: &str) -> MatchCondition {
        MatchCondition {
            name: "c".to_owned(),
            expression: expression.to_owned(),
        }
    }

    #[test]
    fn conditions_see_label_keys_as_they_are() {
        let input = pod_input(json!({"kruntimes.io/runtime": "py"}));
        let check = |e: &str| conditions_match(&[condition(e)], &input, input.object.as_ref());
        assert_eq!(
            check("'kruntimes.io/runtime' in object.metadata.labels"),
            Ok(true)
        );
        assert_eq!(
            check("object.metadata.labels['kruntimes.io/runtime'] == 'py'"),
            Ok(true)
        );
        assert_eq!(
            check("request.operation == 'CREATE' && oldObject == null"),
            Ok(true)
        );
        assert_eq!(check("'other' in object.metadata.labels"), Ok(false));
        assert!(check("object.metadata.labels['other'] == 'x'").is_err());
        // A false condition wins over an error in another.
        let both = [condition("object.nope.x"), condition("false")];
        assert_eq!(
            conditions_match(&both, &input, input.object.as_ref()),
            Ok(false)
        );
    }

    /// The shipped validating webhook's condition, read from deploy/: sent on CREATE and
    /// on an UPDATE that changes the spec, not on a metadata-only UPDATE.
    #[test]
    fn the_validating_webhooks_condition_leaves_out_metadata_only_updates() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/webhook-configurations.yaml"
        ))
        .unwrap();
        let start = text.find("create-or-spec-changed").unwrap();
        let expression: String = text[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with("          "))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(expression.contains("oldObject.spec"), "{expression}");
        let run = |spec: Value, finalizers: Value| json!({"metadata": {"name": "r", "finalizers": finalizers}, "spec": spec});
        let mut input = pod_input(json!({}));
        input.kind = "Run".to_owned();
        input.object = Some(run(json!({"script": "a"}), json!([])));
        let check = |input: &AdmissionInput| {
            conditions_match(&[condition(&expression)], input, input.object.as_ref())
        };
        assert_eq!(check(&input), Ok(true), "CREATE");
        input.operation = Operation::Update;
        input.old_object = Some(run(json!({"script": "a"}), json!([])));
        input.object = Some(run(json!({"script": "a"}), json!(["kruntimes.io/run"])));
        assert_eq!(check(&input), Ok(false), "a finalizer added");
        input.object = Some(run(json!({"script": "a", "cancel": true}), json!([])));
        assert_eq!(check(&input), Ok(true), "spec.cancel set");
    }

    #[test]
    fn resources_match_with_their_wildcard_and_subresource_forms() {
        let mut input = pod_input(json!({}));
        let matches = |entry: &str, input: &AdmissionInput| {
            resource_matches(Some(&vec![entry.to_owned()]), input)
        };
        for (entry, main, status) in [
            ("pods", true, false),
            ("pods/status", false, true),
            ("pods/*", true, true),
            ("*", true, false),
            ("*/status", false, true),
            ("*/*", true, true),
            ("runs", false, false),
        ] {
            input.subresource = None;
            assert_eq!(matches(entry, &input), main, "{entry} on pods");
            input.subresource = Some("status".to_owned());
            assert_eq!(matches(entry, &input), status, "{entry} on pods/status");
        }
    }

    #[test]
    fn object_selectors_match_the_old_object_too_and_bad_selectors_are_invalid() {
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap_or_default();
        let matcher = |selector| Matcher {
            rules: None,
            namespace_selector: None,
            object_selector: Some(selector),
            match_conditions: None,
        };
        let mut input = pod_input(json!({"app": "db"}));
        input.operation = Operation::Delete;
        input.old_object = input.object.take();
        let rule: RuleWithOperations = serde_json::from_value(json!({
            "operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]
        }))
        .unwrap_or_default();
        let rules = [rule];
        let decide = |m: Matcher<'_>, input: &AdmissionInput| {
            Matcher {
                rules: Some(&rules),
                ..m
            }
            .decide(input, input.object.as_ref())
        };
        assert_eq!(decide(matcher(&selector), &input), Decision::Skip);
        input.old_object = Some(json!({"metadata": {"labels": {"app": "web"}}}));
        assert_eq!(decide(matcher(&selector), &input), Decision::Call);
        let bad: LabelSelector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "app", "operator": "Near"}]}),
        )
        .unwrap_or_default();
        assert!(matches!(
            decide(matcher(&bad), &input),
            Decision::Invalid(_)
        ));
        // A cluster-scoped object ignores the namespace selector.
        let never: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"never": "set"}})).unwrap_or_default();
        let by_namespace = Matcher {
            rules: Some(&rules),
            namespace_selector: Some(&never),
            object_selector: None,
            match_conditions: None,
        };
        assert_eq!(by_namespace.decide(&input, None), Decision::Skip);
        input.namespace = None;
        assert_eq!(by_namespace.decide(&input, None), Decision::Call);
    }

    #[test]
    fn selectors_take_every_operator_and_refuse_unknown_ones() {
        let labels = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        let selector =
            |e: Value| -> LabelSelector { serde_json::from_value(e).unwrap_or_default() };
        let check = |e: Value| selector_matches(Some(&selector(e)), &labels);
        assert_eq!(check(json!({"matchLabels": {"a": "1"}})), Ok(true));
        assert_eq!(check(json!({"matchLabels": {"a": "2"}})), Ok(false));
        let expr = |op: &str, values: Value| json!({"matchExpressions": [{"key": "a", "operator": op, "values": values}]});
        assert_eq!(check(expr("In", json!(["1", "2"]))), Ok(true));
        assert_eq!(check(expr("NotIn", json!(["1"]))), Ok(false));
        assert_eq!(
            check(
                json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["1"]}]})
            ),
            Ok(true)
        );
        assert_eq!(
            check(json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]})),
            Ok(true)
        );
        assert_eq!(
            check(json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})),
            Ok(false)
        );
        assert!(check(expr("Near", json!([]))).is_err());
        assert_eq!(selector_matches(None, &labels), Ok(true));
    }
}
