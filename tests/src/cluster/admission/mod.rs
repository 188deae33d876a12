//! [`Admission`] through webhooks: what kube-apiserver's `MutatingAdmissionWebhook` and
//! `ValidatingAdmissionWebhook` plugins do with the stored
//! `MutatingWebhookConfiguration`s and `ValidatingWebhookConfiguration`s.
//!
//! - Mutating webhooks are called one after the other, in configuration name order and
//!   then in the order of their `webhooks` list, each seeing the object as the ones
//!   before it patched it (a base64 `JSONPatch`). A webhook with `reinvocationPolicy:
//!   IfNeeded` is called once more when a webhook after it changed the object (one
//!   reinvocation round, as in the apiserver).
//! - Validating webhooks are called concurrently; the first refusal in configuration
//!   order is the answer.
//! - A webhook is called when a rule matches (operations, apiGroups, apiVersions,
//!   resources with `*`, `pods/status`, `pods/*`, `*/status` and `*/*`, scope), its
//!   `namespaceSelector` matches the namespace's labels (cluster-scoped objects other
//!   than Namespaces always match), its `objectSelector` matches the labels of the
//!   object or of the old object, and its `matchConditions` (CEL over `object`,
//!   `oldObject` and `request`) are all true.
//! - The call is an AdmissionReview v1 POSTed over HTTPS (HTTP/1.1) to `clientConfig.url`
//!   or to `clientConfig.service` (namespace, name, port 443 by default, path) through
//!   the [`ServiceResolver`]; the certificate must be valid for `NAME.NAMESPACE.svc`
//!   (or the URL's host) and signed by a certificate of `caBundle` (nothing else is
//!   trusted). `?timeout=` carries `timeoutSeconds` (10 by default), which bounds the
//!   whole call. Connections are kept alive and reused per target, as the apiserver's
//!   webhook clients reuse theirs.
//! - A call that fails (unreachable, TLS, timeout, not a 200, a malformed answer) is
//!   skipped with `failurePolicy: Ignore` and is a 500 `InternalError` (`failed calling
//!   webhook "NAME": ...`) with `Fail`, the default. A refusal is the webhook's status
//!   code (403 when it gives none below 400) with `admission webhook "NAME" denied the
//!   request: MESSAGE` and its causes. A dry run sent to a webhook whose `sideEffects`
//!   is not `None` or `NoneOnDryRun` is a 400.
//!
//! `matchPolicy: Equivalent` is treated as `Exact`: the emulated API server serves one
//! version per group, so no other version can be equivalent. Warnings are logged
//! (tracing, target `kruntimes_e2e::admission`). docs/test-cluster.md, "Admission and
//! schema", lists every difference from kube-apiserver.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use serde_json::Value;

use super::contract::{Admission, AdmissionInput, Denial};
use matching::{Decision, Matcher};
use review::Answer;

mod client;
mod matching;
mod pool;
mod review;

pub use client::{MAX_RESPONSE_BYTES, ServiceRef};
pub use matching::MAX_COMPILED_CONDITIONS;
pub use pool::MAX_IDLE_PER_TARGET;

/// `timeoutSeconds` when a webhook sets none (admissionregistration.k8s.io/v1).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Service's port is reached (a loopback address in tests); `None` when the
/// Service does not exist.
pub type ServiceResolver = Arc<dyn Fn(&ServiceRef) -> Option<SocketAddr> + Send + Sync>;

/// Webhook admission for the emulated API server.
#[derive(Clone)]
pub struct WebhookAdmission {
    resolver: ServiceResolver,
    connections: Arc<pool::ConnectionPool>,
}

impl std::fmt::Debug for WebhookAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAdmission").finish_non_exhaustive()
    }
}

/// One webhook entry, from either kind of configuration.
#[derive(Debug)]
struct Hook<'a> {
    name: &'a str,
    client_config: &'a WebhookClientConfig,
    matcher: Matcher<'a>,
    timeout: Duration,
    ignore_failures: bool,
    side_effects: &'a str,
    review_versions: &'a [String],
    reinvoke_if_needed: bool,
}

/// How a webhook's turn ended.
enum Outcome {
    /// Not called: it does not match.
    NotCalled,
    /// Called (or its failed call ignored) and allowed without a change.
    Unchanged,
    /// Patched the object to this.
    Changed(Value),
}

/// A [`Hook`] from a `MutatingWebhook` or a `ValidatingWebhook` (two types with the
/// same fields).
macro_rules! hook {
    ($webhook:expr, $reinvoke_if_needed:expr) => {
        Hook {
            name: &$webhook.name,
            client_config: &$webhook.client_config,
            matcher: Matcher {
                rules: $webhook.rules.as_deref(),
                namespace_selector: $webhook.namespace_selector.as_ref(),
                object_selector: $webhook.object_selector.as_ref(),
                match_conditions: $webhook.match_conditions.as_deref(),
            },
            timeout: timeout_of($webhook.timeout_seconds),
            ignore_failures: $webhook.failure_policy.as_deref() == Some("Ignore"),
            side_effects: &$webhook.side_effects,
            review_versions: &$webhook.admission_review_versions,
            reinvoke_if_needed: $reinvoke_if_needed,
        }
    };
}

fn parse<T: k8s_openapi::serde::de::DeserializeOwned>(
    kind: &str,
    value: &Value,
) -> Result<T, Denial> {
    serde_json::from_value(value.clone()).map_err(|e| {
        review::internal(format!(
            "{kind} {:?} is malformed: {e}",
            value["metadata"]["name"].as_str().unwrap_or_default()
        ))
    })
}

fn timeout_of(seconds: Option<i32>) -> Duration {
    seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

impl WebhookAdmission {
    /// Admission calling `clientConfig.service` webhooks at the addresses `resolver`
    /// gives.
    pub fn new(resolver: ServiceResolver) -> WebhookAdmission {
        WebhookAdmission {
            resolver,
            connections: Arc::default(),
        }
    }

    /// Calls `hook` with `object`. `Ok(Err(why))` is a failed call (the failure policy
    /// decides); `Err` is a refusal whatever the policy (a dry run to a webhook with side
    /// effects).
    async fn call(
        &self,
        hook: &Hook<'_>,
        input: &AdmissionInput,
        object: Option<&Value>,
        mutating: bool,
    ) -> Result<Result<Answer, String>, Denial> {
        if input.dry_run && !matches!(hook.side_effects, "None" | "NoneOnDryRun") {
            return Err(review::dry_run_unsupported(hook.name));
        }
        if !hook.review_versions.iter().any(|v| v == "v1") {
            return Ok(Err(format!(
                "webhook does not accept v1 AdmissionReview (admissionReviewVersions {:?})",
                hook.review_versions
            )));
        }
        let target = match client::Target::resolve(
            hook.client_config,
            &self.resolver,
            &self.connections,
            hook.timeout,
        )
        .await
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(format!("failed to call webhook: {e}"))),
        };
        let uid = review::new_uid();
        let body = review::request(&uid, input, object)
            .to_string()
            .into_bytes();
        let answer =
            match tokio::time::timeout(hook.timeout, target.post(&self.connections, body)).await {
                Err(_) => Err("context deadline exceeded".to_owned()),
                Ok(Err(e)) => Err(e),
                Ok(Ok(bytes)) => return Ok(review::read_answer(hook.name, &uid, &bytes, mutating)),
            };
        Ok(answer.map_err(|e| format!("failed to call webhook: Post {:?}: {e}", target.url)))
    }

    /// Decides, calls and reads one webhook with the failure policy applied.
    async fn run(
        &self,
        hook: &Hook<'_>,
        input: &AdmissionInput,
        object: Option<&Value>,
        mutating: bool,
    ) -> Result<Outcome, Denial> {
        let answer = match hook.matcher.decide(input, object) {
            Decision::Skip => return Ok(Outcome::NotCalled),
            Decision::Invalid(e) => {
                return Err(review::internal(format!("webhook {:?}: {e}", hook.name)));
            }
            Decision::ConditionError(e) => Err(format!("failed to evaluate match conditions: {e}")),
            Decision::Call => self.call(hook, input, object, mutating).await?,
        };
        let (patch, warnings) = match answer {
            Ok(Answer::Denied(denial)) => return Err(denial),
            Ok(Answer::Allowed { patch, warnings }) => (patch, warnings),
            Err(why) if hook.ignore_failures => {
                tracing::warn!(target: "kruntimes_e2e::admission", webhook = hook.name, "failed calling webhook, ignoring: {why}");
                return Ok(Outcome::Unchanged);
            }
            Err(why) => return Err(review::call_failure(hook.name, &why)),
        };
        for warning in warnings {
            tracing::warn!(target: "kruntimes_e2e::admission", webhook = hook.name, "admission warning: {warning}");
        }
        let Some(patch) = patch else {
            return Ok(Outcome::Unchanged);
        };
        let Some(before) = object else {
            return Err(review::internal(format!(
                "webhook {:?} patched a request that has no object",
                hook.name
            )));
        };
        let mut after = before.clone();
        json_patch::patch(&mut after, &patch).map_err(|e| {
            review::internal(format!(
                "webhook {:?}: applying its JSONPatch: {e}",
                hook.name
            ))
        })?;
        Ok(if &after == before {
            Outcome::Unchanged
        } else {
            Outcome::Changed(after)
        })
    }

    async fn mutate_all(&self, input: &AdmissionInput) -> Result<Option<Value>, Denial> {
        let configs = input
            .mutating
            .iter()
            .map(|v| parse::<MutatingWebhookConfiguration>("MutatingWebhookConfiguration", v))
            .collect::<Result<Vec<_>, _>>()?;
        let hooks: Vec<Hook<'_>> = configs
            .iter()
            .flat_map(|c| c.webhooks.iter().flatten())
            .map(|w| hook!(w, w.reinvocation_policy.as_deref() == Some("IfNeeded")))
            .collect();
        let mut object = input.object.clone();
        // The apiserver's reinvocation bookkeeping: IfNeeded webhooks called so far, and
        // those a later change makes due for a second call.
        let mut previously_called = Vec::new();
        let mut reinvoke = BTreeSet::new();
        for (i, hook) in hooks.iter().enumerate() {
            if let Outcome::Changed(changed) = self.run(hook, input, object.as_ref(), true).await? {
                object = Some(changed);
                reinvoke.extend(previously_called.drain(..));
            }
            if hook.reinvoke_if_needed
                && hook.matcher.decide(input, object.as_ref()) == Decision::Call
            {
                previously_called.push(i);
            }
        }
        for i in reinvoke {
            if let Outcome::Changed(changed) =
                self.run(&hooks[i], input, object.as_ref(), true).await?
            {
                object = Some(changed);
            }
        }
        Ok(object.filter(|o| Some(o) != input.object.as_ref()))
    }

    async fn validate_all(&self, input: &AdmissionInput) -> Result<(), Denial> {
        let configs = input
            .validating
            .iter()
            .map(|v| parse::<ValidatingWebhookConfiguration>("ValidatingWebhookConfiguration", v))
            .collect::<Result<Vec<_>, _>>()?;
        let hooks: Vec<Hook<'_>> = configs
            .iter()
            .flat_map(|c| c.webhooks.iter().flatten())
            .map(|w| hook!(w, false))
            .collect();
        let calls = hooks
            .iter()
            .map(|hook| self.run(hook, input, input.object.as_ref(), false));
        for result in futures::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }
}

impl Admission for WebhookAdmission {
    fn mutate<'a>(
        &'a self,
        input: &'a AdmissionInput,
    ) -> BoxFuture<'a, Result<Option<Value>, Denial>> {
        Box::pin(self.mutate_all(input))
    }

    fn validate<'a>(&'a self, input: &'a AdmissionInput) -> BoxFuture<'a, Result<(), Denial>> {
        Box::pin(self.validate_all(input))
    }
}
