//! The admission rules, as pure functions: each takes an object and returns every
//! violation, never just the first, each with a Kubernetes-style field path. The
//! webhook, the controller and `krt check` all call these.

pub mod against_runtime;
mod dag;
pub mod document;
pub mod git;
pub mod immutability;
pub mod names;
pub mod paths;
pub mod pod_security;
mod run;
mod runtime;
mod violation;
mod workflow;

pub use dag::check_jobs;
pub use document::{CheckedObject, DocumentError, check_document, check_json, check_json_as};
pub use run::{RunSpecContext, check_run_spec};
pub use runtime::{MAX_OUTPUT_BYTES, MIN_OUTPUT_BYTES, check_runtime_spec, target_container};
pub use violation::{FieldPath, Reason, Violation};
pub use workflow::check_workflow_spec;

use kube::{Resource, ResourceExt};

use crate::v1alpha1::limits::{MAX_DURATION_BYTES, MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS};
use crate::v1alpha1::{Run, Runtime, Workflow};

/// An object the rules know how to check. Implemented once per kind and called by
/// every component, so they can never disagree.
pub trait Validate {
    /// Every violation, in a stable order; empty when the object is valid.
    fn validate(&self) -> Vec<Violation>;
}

impl Validate for Runtime {
    fn validate(&self) -> Vec<Violation> {
        // Runtime names become the value of the kruntimes.io/runtime label: a label.
        let mut v = check_object_name(self.meta(), names::check_dns1123_label);
        v.extend(check_runtime_spec(&self.spec, &FieldPath::root("spec")));
        v.extend(against_runtime::check_input_schema(
            &self.spec,
            &FieldPath::root("spec"),
        ));
        v
    }
}

impl Validate for Run {
    fn validate(&self) -> Vec<Violation> {
        let mut v = check_object_name(self.meta(), names::check_dns1123_subdomain);
        v.extend(check_run_spec(
            &self.spec,
            &FieldPath::root("spec"),
            RunSpecContext::Run,
        ));
        v
    }
}

impl Validate for Workflow {
    fn validate(&self) -> Vec<Violation> {
        // Workflow names become the value of the kruntimes.io/workflow label: a label.
        let mut v = check_object_name(self.meta(), names::check_dns1123_label);
        let name = self.name_any();
        v.extend(check_workflow_spec(
            &name,
            &self.spec,
            &FieldPath::root("spec"),
        ));
        v
    }
}

fn check_object_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    check: fn(&str) -> Result<(), String>,
) -> Vec<Violation> {
    match (&meta.name, &meta.generate_name) {
        (Some(name), _) => match check(name) {
            Ok(()) => Vec::new(),
            Err(why) => vec![Violation::with_value(
                "metadata.name",
                Reason::Invalid,
                name,
                why,
            )],
        },
        // The apiserver appends 5 random characters to generateName.
        (None, Some(prefix)) => match check(&format!("{prefix}xxxxx")) {
            Ok(()) => Vec::new(),
            Err(why) => vec![Violation::with_value(
                "metadata.generateName",
                Reason::Invalid,
                prefix,
                format!("with the 5 characters the apiserver appends, the name {why}"),
            )],
        },
        (None, None) => vec![Violation::new(
            "metadata.name",
            Reason::Required,
            "name or generateName is required",
        )],
    }
}

/// Checks a timeout string: a Go duration from `MIN_TIMEOUT_SECONDS` (1s) to
/// `MAX_TIMEOUT_SECONDS` (24h), the bounds the CRD's CEL rule uses too.
pub fn check_timeout(value: &str, path: &FieldPath) -> Vec<Violation> {
    if value.len() > MAX_DURATION_BYTES {
        return vec![Violation::new(
            path,
            Reason::TooLong,
            format!("must be no more than {MAX_DURATION_BYTES} bytes"),
        )];
    }
    match crate::duration::parse(value) {
        Err(e) => vec![Violation::with_value(
            path,
            Reason::Invalid,
            value,
            e.to_string(),
        )],
        Ok(d) if d.as_secs() < MIN_TIMEOUT_SECONDS => vec![Violation::with_value(
            path,
            Reason::Invalid,
            value,
            format!("must be at least {MIN_TIMEOUT_SECONDS}s"),
        )],
        Ok(d)
            if d.as_secs() > MAX_TIMEOUT_SECONDS
                || (d.as_secs() == MAX_TIMEOUT_SECONDS && d.subsec_nanos() > 0) =>
        {
            vec![Violation::with_value(
                path,
                Reason::Invalid,
                value,
                "must be at most 24h",
            )]
        }
        Ok(_) => Vec::new(),
    }
}
