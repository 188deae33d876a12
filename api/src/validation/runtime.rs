//! Rules for a Runtime: its pool settings, limits, and the fields of its pod template
//! that the controller and the injector own.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::git::check_allowed_host;
use super::names::{check_dns1123_label, check_dns1123_subdomain};
use super::{FieldPath, Reason, Violation, check_timeout};
use crate::labels::{
    RESERVED_NAME_PREFIX, RESERVED_PREFIX, SIDECAR_CONTAINER, WORKSPACE_VOLUME,
    is_reserved_container, is_reserved_volume,
};
use crate::quantity::parse_bytes;
use crate::v1alpha1::limits::{MAX_ALLOWED_HOSTS, MAX_CONCURRENCY, MAX_REPLICAS};
use crate::v1alpha1::{RuntimeArtifacts, RuntimeGit, RuntimeLimits, RuntimeSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Smallest `maxOutputBytes`: below this, error messages themselves would be cut.
pub const MIN_OUTPUT_BYTES: u64 = 1024;
/// Largest `maxOutputBytes` per stream: runtimed keeps head and tail in memory.
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Checks everything about a RuntimeSpec at `path` (normally `spec`). The template's
/// security context is the Pod Security engine's job, not this function's.
pub fn check_runtime_spec(spec: &RuntimeSpec, path: &FieldPath) -> Vec<Violation> {
    let mut v = Vec::new();
    check_pool(spec, path, &mut v);
    check_template(spec, path, &mut v);
    if let Some(size) = spec.workspace.as_ref().and_then(|w| w.size_limit.as_ref()) {
        check_positive_bytes(
            size,
            &path.child("workspace").child("sizeLimit"),
            None,
            &mut v,
        );
    }
    if let Some(limits) = &spec.limits {
        check_limits(limits, &path.child("limits"), &mut v);
    }
    if let Some(schema) = &spec.input_schema
        && !(schema.is_object() || schema.is_boolean())
    {
        v.push(Violation::new(
            path.child("inputSchema"),
            Reason::Invalid,
            "must be a JSON Schema: an object or a boolean",
        ));
    }
    if let Some(git) = &spec.git {
        check_git(git, &path.child("git"), &mut v);
    }
    if let Some(artifacts) = &spec.artifacts {
        check_artifacts(artifacts, &path.child("artifacts"), &mut v);
    }
    v
}

/// `replicas` and `concurrency` within their bounds.
fn check_pool(spec: &RuntimeSpec, path: &FieldPath, v: &mut Vec<Violation>) {
    if !(0..=MAX_REPLICAS).contains(&spec.replicas) {
        v.push(Violation::with_value(
            path.child("replicas"),
            Reason::Invalid,
            spec.replicas,
            format!("must be between 0 and {MAX_REPLICAS}"),
        ));
    }
    if !(1..=MAX_CONCURRENCY).contains(&spec.concurrency) {
        v.push(Violation::with_value(
            path.child("concurrency"),
            Reason::Invalid,
            spec.concurrency,
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        ));
    }
}

/// `limits`: both timeouts valid, the default not above the maximum, the output cap
/// within its bounds.
fn check_limits(limits: &RuntimeLimits, limits_path: &FieldPath, v: &mut Vec<Violation>) {
    let default = limits
        .default_timeout
        .as_ref()
        .map(|t| (t, check_timeout(t, &limits_path.child("defaultTimeout"))));
    let max = limits
        .max_timeout
        .as_ref()
        .map(|t| (t, check_timeout(t, &limits_path.child("maxTimeout"))));
    for (_, problems) in default.iter().chain(max.iter()) {
        v.extend(problems.iter().cloned());
    }
    if let (Some((d, dp)), Some((m, mp))) = (&default, &max)
        && dp.is_empty()
        && mp.is_empty()
        && let (Ok(d_value), Ok(m_value)) = (crate::duration::parse(d), crate::duration::parse(m))
        && d_value > m_value
    {
        v.push(Violation::with_value(
            limits_path.child("defaultTimeout"),
            Reason::Invalid,
            d,
            format!("must not exceed maxTimeout ({m})"),
        ));
    }
    if let Some(bytes) = &limits.max_output_bytes {
        check_positive_bytes(
            bytes,
            &limits_path.child("maxOutputBytes"),
            Some((MIN_OUTPUT_BYTES, MAX_OUTPUT_BYTES)),
            v,
        );
    }
}

/// `git`: a bounded list of distinct allowed hosts, byte cap and timeout.
fn check_git(git: &RuntimeGit, git_path: &FieldPath, v: &mut Vec<Violation>) {
    let hosts_path = git_path.child("allowedHosts");
    if git.allowed_hosts.is_empty() {
        v.push(Violation::new(
            &hosts_path,
            Reason::Required,
            "list the hosts Runs may fetch from",
        ));
    }
    if git.allowed_hosts.len() > MAX_ALLOWED_HOSTS {
        v.push(Violation::with_value(
            &hosts_path,
            Reason::TooMany,
            git.allowed_hosts.len(),
            format!("must have at most {MAX_ALLOWED_HOSTS} entries"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, host) in git.allowed_hosts.iter().enumerate() {
        if let Err(why) = check_allowed_host(host) {
            v.push(Violation::with_value(
                hosts_path.index(i),
                Reason::Invalid,
                host,
                why,
            ));
        }
        if !seen.insert(host) {
            v.push(Violation::with_value(
                hosts_path.index(i),
                Reason::Duplicate,
                host,
                "",
            ));
        }
    }
    if let Some(bytes) = &git.max_bytes {
        check_positive_bytes(bytes, &git_path.child("maxBytes"), None, v);
    }
    if let Some(timeout) = &git.timeout {
        v.extend(check_timeout(timeout, &git_path.child("timeout")));
    }
}

/// `artifacts`: the byte cap and the S3 location (URL without credentials, bucket name,
/// relative prefix, Secret name).
fn check_artifacts(artifacts: &RuntimeArtifacts, a_path: &FieldPath, v: &mut Vec<Violation>) {
    if let Some(bytes) = &artifacts.max_bytes {
        check_positive_bytes(bytes, &a_path.child("maxBytes"), None, v);
    }
    let s3 = &artifacts.s3;
    let s3_path = a_path.child("s3");
    match url::Url::parse(&s3.endpoint) {
        Ok(u) if !matches!(u.scheme(), "https" | "http") => v.push(Violation::with_value(
            s3_path.child("endpoint"),
            Reason::Invalid,
            &s3.endpoint,
            "must be an https:// (or http://) URL",
        )),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => v.push(Violation::new(
            s3_path.child("endpoint"),
            Reason::Forbidden,
            "must not embed credentials; use credentialsSecretRef",
        )),
        Ok(_) => {}
        Err(e) => v.push(Violation::with_value(
            s3_path.child("endpoint"),
            Reason::Invalid,
            &s3.endpoint,
            format!("is not a valid URL: {e}"),
        )),
    }
    if let Err(why) = check_bucket(&s3.bucket) {
        v.push(Violation::with_value(
            s3_path.child("bucket"),
            Reason::Invalid,
            &s3.bucket,
            why,
        ));
    }
    if let Some(prefix) = &s3.prefix
        && (prefix.starts_with('/') || prefix.split('/').any(|s| s == ".."))
    {
        v.push(Violation::with_value(
            s3_path.child("prefix"),
            Reason::Invalid,
            prefix,
            "must not start with '/' or contain '..' segments",
        ));
    }
    if let Some(secret) = &s3.credentials_secret_ref
        && let Err(why) = check_dns1123_subdomain(&secret.name)
    {
        v.push(Violation::with_value(
            s3_path.child("credentialsSecretRef").child("name"),
            Reason::Invalid,
            &secret.name,
            why,
        ));
    }
}

/// S3 bucket naming rules (the subset every S3-compatible store accepts).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if valid {
        Ok(())
    } else {
        Err("must be 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit".into())
    }
}

fn check_positive_bytes(
    quantity: &Quantity,
    path: &FieldPath,
    bounds: Option<(u64, u64)>,
    v: &mut Vec<Violation>,
) {
    match parse_bytes(&quantity.0) {
        Err(e) => v.push(Violation::with_value(
            path,
            Reason::Invalid,
            &quantity.0,
            e.to_string(),
        )),
        Ok(0) => v.push(Violation::with_value(
            path,
            Reason::Invalid,
            &quantity.0,
            "must be greater than zero",
        )),
        Ok(bytes) => {
            if let Some((min, max)) = bounds
                && !(min..=max).contains(&bytes)
            {
                v.push(Violation::with_value(
                    path,
                    Reason::Invalid,
                    &quantity.0,
                    format!("must be between {min} and {max} bytes"),
                ));
            }
        }
    }
}

/// The container that runs Runs: `container` when set, otherwise the first.
pub fn target_container<'a>(
    spec: &RuntimeSpec,
    pod: &'a PodSpec,
) -> Option<(usize, &'a Container)> {
    match &spec.container {
        Some(name) => pod
            .containers
            .iter()
            .enumerate()
            .find(|(_, c)| &c.name == name),
        None => pod.containers.first().map(|c| (0, c)),
    }
}

/// The pod template: no kruntimes.io/ keys, a pod spec with containers that stay up, no
/// names the injector adds, and a target container without command or args.
fn check_template(spec: &RuntimeSpec, spec_root: &FieldPath, v: &mut Vec<Violation>) {
    let template = &spec.template;
    let path = &spec_root.child("template");
    check_template_metadata(template.metadata.as_ref(), path, v);
    let spec_path = path.child("spec");
    let Some(pod) = &template.spec else {
        v.push(Violation::new(
            &spec_path,
            Reason::Required,
            "the template needs a pod spec with at least one container",
        ));
        return;
    };
    if pod.containers.is_empty() {
        v.push(Violation::new(
            spec_path.child("containers"),
            Reason::Required,
            "the template needs at least one container",
        ));
    }
    if let Some(policy) = &pod.restart_policy
        && policy != "Always"
    {
        v.push(Violation::with_value(
            spec_path.child("restartPolicy"),
            Reason::Unsupported,
            policy,
            "warm pods are long-lived: restartPolicy must be Always (or unset)",
        ));
    }
    check_reserved_names(pod, &spec_path, v);
    check_target_container(spec, pod, spec_root, &spec_path, v);
}

fn check_template_metadata(meta: Option<&ObjectMeta>, path: &FieldPath, v: &mut Vec<Violation>) {
    if let Some(meta) = meta {
        for (field, map) in [("labels", &meta.labels), ("annotations", &meta.annotations)] {
            for key in map.iter().flat_map(|m| m.keys()) {
                if key.starts_with(RESERVED_PREFIX) {
                    v.push(Violation::with_value(
                        path.child("metadata").child(field).key(key),
                        Reason::Forbidden,
                        key,
                        format!("{field} under {RESERVED_PREFIX} are set by kruntimes"),
                    ));
                }
            }
        }
    }
}

/// Volume, container and mount names the injector adds ([`is_reserved_volume`],
/// [`is_reserved_container`]): the same predicates the injector refuses pods with.
fn check_reserved_names(pod: &PodSpec, spec_path: &FieldPath, v: &mut Vec<Violation>) {
    let volume_rule = format!(
        "volume names {RESERVED_NAME_PREFIX}* and {WORKSPACE_VOLUME} are added by the injector"
    );
    let mount_rule = format!(
        "mounts of {RESERVED_NAME_PREFIX}* and {WORKSPACE_VOLUME} are added by the injector"
    );
    let container_rule = format!(
        "container names {SIDECAR_CONTAINER} and {RESERVED_NAME_PREFIX}* are added by the injector"
    );
    for (i, volume) in pod.volumes.iter().flatten().enumerate() {
        if is_reserved_volume(&volume.name) {
            v.push(Violation::with_value(
                spec_path.child("volumes").index(i).child("name"),
                Reason::Forbidden,
                &volume.name,
                &volume_rule,
            ));
        }
    }
    let groups: [(&str, &[Container]); 2] = [
        ("containers", &pod.containers),
        (
            "initContainers",
            pod.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (field, containers) in groups {
        for (i, container) in containers.iter().enumerate() {
            let c_path = spec_path.child(field).index(i);
            if is_reserved_container(&container.name) {
                v.push(Violation::with_value(
                    c_path.child("name"),
                    Reason::Forbidden,
                    &container.name,
                    &container_rule,
                ));
            }
            for (m, mount) in container.volume_mounts.iter().flatten().enumerate() {
                if is_reserved_volume(&mount.name) {
                    v.push(Violation::with_value(
                        c_path.child("volumeMounts").index(m).child("name"),
                        Reason::Forbidden,
                        &mount.name,
                        &mount_rule,
                    ));
                }
            }
        }
    }
}

/// `spec.container` names a container of the template, and the target has neither
/// `command` nor `args` (the agent replaces them).
fn check_target_container(
    spec: &RuntimeSpec,
    pod: &PodSpec,
    spec_root: &FieldPath,
    spec_path: &FieldPath,
    v: &mut Vec<Violation>,
) {
    match (&spec.container, target_container(spec, pod)) {
        (Some(name), None) => {
            let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
            if let Err(why) = check_dns1123_label(name) {
                v.push(Violation::with_value(
                    spec_root.child("container"),
                    Reason::Invalid,
                    name,
                    why,
                ));
            } else {
                v.push(Violation::with_value(
                    spec_root.child("container"),
                    Reason::NotFound,
                    name,
                    format!(
                        "no container of the template has this name; containers are: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        (_, Some((i, container))) => {
            for (field, set) in [
                ("command", container.command.is_some()),
                ("args", container.args.is_some()),
            ] {
                if set {
                    v.push(Violation::new(
                        spec_path.child("containers").index(i).child(field),
                        Reason::Forbidden,
                        format!("the runtimed agent replaces the {field} of the container that runs Runs; set the program in each Run"),
                    ));
                }
            }
        }
        (None, None) => {}
    }
}
