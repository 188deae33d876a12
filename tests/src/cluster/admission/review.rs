//! The AdmissionReview v1 sent to a webhook and what its answer means: allowed, a
//! denial worded as the apiserver words it, a JSONPatch, warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};

use super::matching::options_for;
use crate::cluster::contract::{AdmissionInput, Denial};

/// A request uid in UUID form: unique within the process (a counter) and across
/// processes (the pid and the start time).
pub(crate) fn new_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pid = std::process::id();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (nanos >> 32) as u32,
        (nanos >> 16) as u16,
        (nanos as u16) & 0xfff,
        pid & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// The AdmissionReview for `input`, with `object` as the object (the mutated one in
/// later mutating webhooks).
pub(crate) fn request(uid: &str, input: &AdmissionInput, object: Option<&Value>) -> Value {
    let kind = json!({"group": input.group, "version": input.version, "kind": input.kind});
    let resource =
        json!({"group": input.group, "version": input.version, "resource": input.resource});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": input.name,
        "operation": input.operation.as_str(),
        "userInfo": {"username": input.user.username, "groups": input.user.groups},
        "object": object,
        "oldObject": input.old_object,
        "dryRun": input.dry_run,
        "options": options_for(input.operation),
    });
    if let Some(sub) = &input.subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    if let Some(namespace) = &input.namespace {
        request["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// A webhook's answer, read.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Allowed, with the patch (mutating webhooks only) and warnings.
    Allowed {
        patch: Option<json_patch::Patch>,
        warnings: Vec<String>,
    },
    /// Denied.
    Denied(Denial),
}

/// Reads `body`, the answer to the review `uid` from webhook `name`. `Err` is a
/// malformed answer: the apiserver treats it as a failed call (`failurePolicy`
/// decides).
pub(crate) fn read_answer(
    name: &str,
    uid: &str,
    body: &[u8],
    mutating: bool,
) -> Result<Answer, String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            review["apiVersion"].as_str().unwrap_or_default(),
            review["kind"].as_str().unwrap_or_default()
        ));
    }
    let response = review
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("webhook response was absent")?;
    let got_uid = response["uid"].as_str().unwrap_or_default();
    if got_uid != uid {
        return Err(format!("expected response.uid={uid:?}, got {got_uid:?}"));
    }
    let warnings = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    if response["allowed"].as_bool() != Some(true) {
        return Ok(Answer::Denied(denial(name, &response["status"])));
    }
    let patch = match (mutating, response.get("patch").and_then(Value::as_str)) {
        (true, Some(encoded)) => Some(decode_patch(response, encoded)?),
        _ => None,
    };
    Ok(Answer::Allowed { patch, warnings })
}

fn decode_patch(response: &Value, encoded: &str) -> Result<json_patch::Patch, String> {
    match response["patchType"].as_str() {
        Some("JSONPatch") => {}
        other => {
            return Err(format!(
                "unsupported patch type {:?}",
                other.unwrap_or_default()
            ));
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the patch is not a JSONPatch: {e}"))
}

/// The apiserver's `ToStatusErr`: the webhook's code (403 when below 400), its reason,
/// its message after `admission webhook "NAME" denied the request`, its causes.
fn denial(name: &str, status: &Value) -> Denial {
    let denied_by = format!("admission webhook {name:?} denied the request");
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(403);
    let reason = status["reason"].as_str().unwrap_or_default().to_owned();
    let message = match status["message"].as_str() {
        Some(m) if !m.is_empty() => format!("{denied_by}: {m}"),
        _ if !reason.is_empty() => format!("{denied_by}: {reason}"),
        _ => format!("{denied_by} without explanation"),
    };
    Denial {
        code,
        reason,
        message,
        causes: status["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    }
}

/// The 500 of a webhook that could not be called with `failurePolicy: Fail`.
pub(crate) fn call_failure(name: &str, why: &str) -> Denial {
    internal(format!("failed calling webhook {name:?}: {why}"))
}

/// A 500 `InternalError`.
pub(crate) fn internal(message: String) -> Denial {
    Denial {
        code: 500,
        reason: "InternalError".to_owned(),
        message: format!("Internal error occurred: {message}"),
        causes: Vec::new(),
    }
}

/// The 400 for a dry run sent to a webhook that may have side effects.
pub(crate) fn dry_run_unsupported(name: &str) -> Denial {
    Denial {
        code: 400,
        reason: "BadRequest".to_owned(),
        message: format!("admission webhook {name:?} does not support dry run"),
        causes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_differ_and_look_like_uuids() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36, "{a}");
        assert_eq!(a.matches('-').count(), 4, "{a}");
    }

    #[test]
    fn denials_take_the_webhooks_code_reason_and_causes() {
        let d = denial(
            "w.example.com",
            &json!({"code": 422, "reason": "Invalid", "message": "spec.x: bad",
                    "details": {"causes": [{"field": "spec.x"}]}}),
        );
        assert_eq!(d.code, 422);
        assert_eq!(d.reason, "Invalid");
        assert_eq!(
            d.message,
            "admission webhook \"w.example.com\" denied the request: spec.x: bad"
        );
        assert_eq!(d.causes, vec![json!({"field": "spec.x"})]);
        let d = denial("w", &json!({"code": 200}));
        assert_eq!(d.code, 403);
        assert_eq!(
            d.message,
            "admission webhook \"w\" denied the request without explanation"
        );
    }

    #[test]
    fn a_foreign_uid_or_version_is_a_failed_call() {
        let answer = |review: Value| read_answer("w", "u1", review.to_string().as_bytes(), true);
        let e = answer(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                              "response": {"uid": "u2", "allowed": true}}),
        )
        .unwrap_err();
        assert_eq!(e, "expected response.uid=\"u1\", got \"u2\"");
        let e = answer(
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                              "response": {"uid": "u1", "allowed": true}}),
        )
        .unwrap_err();
        assert!(
            e.starts_with("expected webhook response of admission.k8s.io/v1"),
            "{e}"
        );
        let e = answer(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                              "response": {"uid": "u1", "allowed": true, "patch": "W10=", "patchType": "Merge"}}))
        .unwrap_err();
        assert_eq!(e, "unsupported patch type \"Merge\"");
    }
}
