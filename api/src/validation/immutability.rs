//! What an UPDATE may not change: a Run's `spec` after create (except `cancel`, which is
//! how a Run is stopped), and a Workflow's `spec` once it has left `Pending`. The objects
//! are compared as JSON (what the apiserver stores), so a field the typed structs do not
//! know is compared too.

use serde_json::{Map, Value};

use super::{Reason, Violation};

/// The Run field that stays writable after create.
pub const RUN_MUTABLE_FIELD: &str = "cancel";
/// The Workflow phase in which its spec may still change.
pub const WORKFLOW_EDITABLE_PHASE: &str = "Pending";

/// The immutability violations of updating `old` to `new`, both objects of `kind` as
/// JSON; empty for kinds without such rules (Runtime).
pub fn check_update(kind: &str, old: &Value, new: &Value) -> Vec<Violation> {
    match kind {
        "Run" => check_run_update(old, new),
        "Workflow" => check_workflow_update(old, new),
        _ => Vec::new(),
    }
}

fn spec(object: &Value) -> Value {
    object.get("spec").cloned().unwrap_or(Value::Null)
}

/// A Run's `spec` is immutable except `cancel`: one violation per changed field, in
/// field-name order.
pub fn check_run_update(old: &Value, new: &Value) -> Vec<Violation> {
    let without_cancel = |v: &Value| {
        let mut s = spec(v);
        if let Some(m) = s.as_object_mut() {
            m.remove(RUN_MUTABLE_FIELD);
        }
        s
    };
    let (old, new) = (without_cancel(old), without_cancel(new));
    if old == new {
        return Vec::new();
    }
    let empty = Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut fields: Vec<&String> = o
        .keys()
        .chain(n.keys())
        .filter(|k| o.get(*k) != n.get(*k))
        .collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .map(|f| {
            Violation::new(
                format!("spec.{f}"),
                Reason::Forbidden,
                "Run spec is immutable after create, except cancel",
            )
        })
        .collect()
}

/// A Workflow's `spec` is immutable once `old` has left `Pending` (an object without a
/// phase is Pending).
pub fn check_workflow_update(old: &Value, new: &Value) -> Vec<Violation> {
    let phase = old
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or(WORKFLOW_EDITABLE_PHASE);
    if phase != WORKFLOW_EDITABLE_PHASE && spec(old) != spec(new) {
        vec![Violation::new(
            "spec",
            Reason::Forbidden,
            format!("Workflow spec is immutable once it has started (phase {phase})"),
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(spec: Value) -> Value {
        json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Run", "metadata": {"name": "r"}, "spec": spec})
    }

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn a_run_may_only_be_cancelled() {
        let old = run(json!({"runtimeRef": {"name": "py"}, "script": "echo 1", "timeout": "1m"}));
        let mut cancelled = old.clone();
        cancelled["spec"]["cancel"] = json!(true);
        assert!(check_update("Run", &old, &cancelled).is_empty());
        assert!(check_update("Run", &old, &old).is_empty());

        let changed =
            run(json!({"runtimeRef": {"name": "py"}, "script": "echo 2", "cancel": true}));
        let violations = check_update("Run", &old, &changed);
        // Changed and removed fields, sorted; `cancel` is not one of them.
        assert_eq!(fields(&violations), ["spec.script", "spec.timeout"]);
        assert!(violations.iter().all(|v| v.reason == Reason::Forbidden));
        assert_eq!(
            violations[0].to_string(),
            "spec.script: Forbidden: Run spec is immutable after create, except cancel"
        );
        // An added field is a change too.
        let mut added = old.clone();
        added["spec"]["input"] = json!({"x": 1});
        assert_eq!(fields(&check_update("Run", &old, &added)), ["spec.input"]);
    }

    #[test]
    fn a_workflow_spec_is_editable_only_while_pending() {
        let spec = |n: u32| json!({"jobs": [{"name": "a", "steps": [{"name": format!("s{n}")}]}]});
        let workflow = |phase: Option<&str>, n: u32| {
            let mut w =
                json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Workflow", "spec": spec(n)});
            if let Some(phase) = phase {
                w["status"] = json!({"phase": phase});
            }
            w
        };
        assert!(check_update("Workflow", &workflow(None, 1), &workflow(None, 2)).is_empty());
        assert!(
            check_update(
                "Workflow",
                &workflow(Some("Pending"), 1),
                &workflow(None, 2)
            )
            .is_empty()
        );
        // Started: the same spec (a label or status change) passes, another does not.
        let running = workflow(Some("Running"), 1);
        assert!(check_update("Workflow", &running, &workflow(Some("Running"), 1)).is_empty());
        let violations = check_update("Workflow", &running, &workflow(Some("Running"), 2));
        assert_eq!(violations.len(), 1);
        assert_eq!(
            violations[0].to_string(),
            "spec: Forbidden: Workflow spec is immutable once it has started (phase Running)"
        );
    }

    #[test]
    fn runtimes_have_no_immutable_fields() {
        let old = json!({"kind": "Runtime", "spec": {"replicas": 1}});
        let new = json!({"kind": "Runtime", "spec": {"replicas": 2}});
        assert!(check_update("Runtime", &old, &new).is_empty());
    }
}
