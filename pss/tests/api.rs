//! Behaviour the upstream fixtures do not cover: object kinds, field paths, messages,
//! version boundaries of newer revisions, namespace labels, malformed input, reports.

// Test helpers outside #[test] fns may fail loudly too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use kruntimes_pss::{
    DECODE_CHECK_ID, Evaluation, Level, NamespacePolicy, NoPodSpec, Policy, Version, checks_for,
    evaluate_object, evaluate_pod, overridden_by, render_skipped, report,
};
use serde_json::{Value, json};

fn policy(level: Level, version: Version) -> Policy {
    Policy::new(level, version)
}

const BASELINE: Policy = Policy::new(Level::Baseline, Version::Latest);
const RESTRICTED: Policy = Policy::new(Level::Restricted, Version::Latest);

fn restricted_at(minor: u32) -> Policy {
    policy(Level::Restricted, Version::Minor(minor))
}

fn baseline_at(minor: u32) -> Policy {
    policy(Level::Baseline, Version::Minor(minor))
}

/// A pod spec that passes `restricted:latest`.
fn restricted_spec() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "app", "image": "busybox",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
        }]
    })
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn eval_spec(spec: Value, p: Policy) -> Evaluation {
    evaluate_object(&pod(spec), p).unwrap()
}

fn checks_of(e: &Evaluation) -> Vec<&'static str> {
    e.violations.iter().map(|v| v.check).collect()
}

fn privileged_spec() -> Value {
    json!({"containers": [{"name": "c", "securityContext": {"privileged": true}}]})
}

#[test]
fn every_workload_kind_is_located_with_its_field_path() {
    let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": privileged_spec()});
    let cases = [
        ("v1", "Pod", json!(privileged_spec()), "spec"),
        ("v1", "PodTemplate", json!(null), "template.spec"),
        (
            "v1",
            "ReplicationController",
            json!(null),
            "spec.template.spec",
        ),
        ("apps/v1", "Deployment", json!(null), "spec.template.spec"),
        ("apps/v1", "ReplicaSet", json!(null), "spec.template.spec"),
        ("apps/v1", "StatefulSet", json!(null), "spec.template.spec"),
        ("apps/v1", "DaemonSet", json!(null), "spec.template.spec"),
        ("batch/v1", "Job", json!(null), "spec.template.spec"),
        (
            "batch/v1",
            "CronJob",
            json!(null),
            "spec.jobTemplate.spec.template.spec",
        ),
        (
            "kruntimes.io/v1alpha1",
            "Runtime",
            json!(null),
            "spec.template.spec",
        ),
    ];
    for (api_version, kind, pod_spec, path) in cases {
        let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}});
        match kind {
            "Pod" => obj["spec"] = pod_spec,
            "PodTemplate" => obj["template"] = template.clone(),
            "CronJob" => obj["spec"] = json!({"jobTemplate": {"spec": {"template": template}}}),
            _ => obj["spec"] = json!({"replicas": 1, "template": template}),
        }
        let e = evaluate_object(&obj, BASELINE).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(!e.allowed(), "{kind}");
        assert_eq!(checks_of(&e), ["privileged"], "{kind}");
        assert_eq!(
            e.violations[0].field,
            format!("{path}.containers[0].securityContext.privileged"),
            "{kind}"
        );
        assert!(evaluate_object(&obj, Policy::PRIVILEGED).unwrap().allowed());
    }
}

#[test]
fn template_metadata_annotations_are_used() {
    // AppArmor annotations live on the pod template's metadata, not the workload's.
    let obj = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
        "metadata": {"name": "rt", "annotations": {
            "container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}},
        "spec": {"template": {
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/app": "unconfined"}},
            "spec": {"containers": [{"name": "app"}]}
        }}
    });
    let e = evaluate_object(&obj, BASELINE).unwrap();
    assert_eq!(checks_of(&e), ["appArmorProfile"]);
    assert_eq!(
        e.violations[0].field,
        "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]"
    );
    assert_eq!(e.violations[0].reason, "forbidden AppArmor profile");
    // Seccomp annotations count before v1.19 only.
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {
        "metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
        "spec": {"containers": [{"name": "app"}]}}}});
    let e = evaluate_object(&obj, baseline_at(18)).unwrap();
    assert_eq!(checks_of(&e), ["seccompProfile_baseline"]);
    assert_eq!(
        e.violations[0].detail,
        r#"forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined""#
    );
    assert!(evaluate_object(&obj, baseline_at(19)).unwrap().allowed());
}

#[test]
fn objects_without_a_pod_spec() {
    let cases = [
        (json!("just a string"), NoPodSpec::NotAnObject),
        (json!({"apiVersion": "v1"}), NoPodSpec::MissingKind),
        (
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": []}}),
            NoPodSpec::UnsupportedKind {
                api_version: "v1".into(),
                kind: "Service".into(),
            },
        ),
        (
            json!({"apiVersion": "example.com/v1", "kind": "Deployment", "spec": {}}),
            NoPodSpec::UnsupportedKind {
                api_version: "example.com/v1".into(),
                kind: "Deployment".into(),
            },
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}}),
            NoPodSpec::MissingPodSpec {
                kind: "Deployment".into(),
                path: "spec.template.spec",
            },
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "spec": "nope"}),
            NoPodSpec::MissingPodSpec {
                kind: "Pod".into(),
                path: "spec",
            },
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": []}}),
            NoPodSpec::MissingPodSpec {
                kind: "CronJob".into(),
                path: "spec.jobTemplate.spec.template.spec",
            },
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(
            evaluate_object(&obj, RESTRICTED).unwrap_err(),
            want,
            "{obj}"
        );
    }
    // Without apiVersion the kind alone decides.
    let e = evaluate_object(&json!({"kind": "Pod", "spec": privileged_spec()}), BASELINE);
    assert!(!e.unwrap().allowed());
}

#[test]
fn ephemeral_and_init_containers_are_checked_in_upstream_order() {
    let spec = json!({
        "containers": [{"name": "app"}],
        "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
        "ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}]
    });
    let e = eval_spec(spec, BASELINE);
    assert_eq!(checks_of(&e), ["privileged"]);
    let v = &e.violations[0];
    assert_eq!(
        v.detail,
        r#"containers "init", "debug" must not set securityContext.privileged=true"#
    );
    assert_eq!(v.field, "spec");
    assert_eq!(
        v.fields,
        [
            "spec.initContainers[0].securityContext.privileged",
            "spec.ephemeralContainers[0].securityContext.privileged"
        ]
    );
    // An ephemeral container alone fails restricted like any other container.
    let mut spec = restricted_spec();
    spec["ephemeralContainers"] = json!([{"name": "debug"}]);
    let e = eval_spec(spec, RESTRICTED);
    assert_eq!(
        checks_of(&e),
        ["allowPrivilegeEscalation", "capabilities_restricted"]
    );
    assert_eq!(
        e.violations[0].field,
        "spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation"
    );
}

#[test]
fn restricted_aggregate_message_matches_upstream() {
    let spec = json!({"containers": [{"name": "app"}], "hostNetwork": true,
                      "volumes": [{"name": "h", "hostPath": {"path": "/"}}]});
    let e = eval_spec(spec, RESTRICTED);
    assert_eq!(
        checks_of(&e),
        [
            "hostNamespaces",
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "restrictedVolumes",
            "runAsNonRoot",
            "seccompProfile_restricted"
        ]
    );
    assert_eq!(
        e.denial_message().unwrap(),
        "violates PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true), \
         allowPrivilegeEscalation != false (container \"app\" must set \
         securityContext.allowPrivilegeEscalation=false), unrestricted capabilities \
         (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), \
         restricted volume types (volume \"h\" uses restricted volume type \"hostPath\"), \
         runAsNonRoot != true (pod or container \"app\" must set \
         securityContext.runAsNonRoot=true), seccompProfile (pod or container \"app\" must \
         set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
    assert_eq!(e.violations[3].field, "spec.volumes[0].hostPath");
    // At baseline the same hostPath volume is reported by hostPathVolumes.
    let e = eval_spec(
        json!({"containers": [{"name": "a"}], "volumes": [{"name": "h", "hostPath": {}}]}),
        BASELINE,
    );
    assert_eq!(checks_of(&e), ["hostPathVolumes"]);
    assert_eq!(e.violations[0].detail, r#"volume "h""#);
    assert!(eval_spec(restricted_spec(), RESTRICTED).allowed());
    assert_eq!(e.denial_message().map(|_| ()), Some(()));
    assert_eq!(
        eval_spec(restricted_spec(), RESTRICTED).denial_message(),
        None
    );
}

#[test]
fn overrides_follow_versions() {
    assert_eq!(
        overridden_by("capabilities_baseline", Version::Minor(21)),
        None
    );
    assert_eq!(
        overridden_by("capabilities_baseline", Version::Minor(22)),
        Some("capabilities_restricted")
    );
    assert_eq!(
        overridden_by("seccompProfile_baseline", Version::Minor(19)),
        Some("seccompProfile_restricted")
    );
    assert_eq!(overridden_by("procMount", Version::Minor(34)), None);
    assert_eq!(
        overridden_by("procMount", Version::Latest),
        Some("procMount_restricted")
    );
    assert_eq!(
        overridden_by("hostPathVolumes", Version::Minor(0)),
        Some("restrictedVolumes")
    );
    let at_21 = checks_for(restricted_at(21));
    assert!(at_21.contains(&"capabilities_baseline"));
    assert!(!at_21.contains(&"capabilities_restricted"));
    let latest = checks_for(RESTRICTED);
    assert_eq!(latest.len(), 19 - 4);
    assert!(!latest.contains(&"hostPathVolumes"));
    assert!(checks_for(Policy::PRIVILEGED).is_empty());
    assert!(!checks_for(baseline_at(33)).contains(&"hostProbesAndHostLifecycle"));
    assert!(checks_for(baseline_at(34)).contains(&"hostProbesAndHostLifecycle"));
}

#[test]
fn windows_pod_at_restricted() {
    let windows = json!({
        "os": {"name": "windows"},
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "win"}]
    });
    // From v1.25 seccomp, capabilities and allowPrivilegeEscalation skip Windows pods.
    assert!(eval_spec(windows.clone(), RESTRICTED).allowed());
    assert!(eval_spec(windows.clone(), restricted_at(25)).allowed());
    let e = eval_spec(windows.clone(), restricted_at(24));
    assert_eq!(
        checks_of(&e),
        [
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "seccompProfile_restricted"
        ]
    );
    // Not exempt: runAsNonRoot, and hostProcess (baseline).
    let mut w = windows.clone();
    w["securityContext"] = json!({"windowsOptions": {"hostProcess": true}});
    let e = eval_spec(w, RESTRICTED);
    assert_eq!(checks_of(&e), ["windowsHostProcess", "runAsNonRoot"]);
    assert_eq!(
        e.violations[0].detail,
        "pod must not set securityContext.windowsOptions.hostProcess=true"
    );
    // A Windows pod's added capabilities pass restricted (baseline's twin is overridden).
    let mut w = windows;
    w["containers"][0]["securityContext"] = json!({"capabilities": {"add": ["SYS_ADMIN"]}});
    assert!(eval_spec(w.clone(), RESTRICTED).allowed());
    assert_eq!(
        checks_of(&eval_spec(w, BASELINE)),
        ["capabilities_baseline"]
    );
}

#[test]
fn user_namespace_relaxations_start_at_1_35() {
    let mut spec = restricted_spec();
    spec["hostUsers"] = json!(false);
    spec["securityContext"] = json!({"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}});
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
    assert!(eval_spec(spec.clone(), restricted_at(35)).allowed());
    assert!(eval_spec(spec.clone(), RESTRICTED).allowed());
    let e = eval_spec(spec.clone(), restricted_at(34));
    assert_eq!(checks_of(&e), ["runAsNonRoot", "runAsUser"]);
    assert_eq!(
        e.violations[0].detail,
        r#"container "app" must not set securityContext.runAsNonRoot=false"#
    );
    assert_eq!(e.violations[1].detail, "pod must not set runAsUser=0");
    assert_eq!(e.violations[1].field, "spec.securityContext.runAsUser");
    // hostUsers: true (or unset) relaxes nothing.
    spec["hostUsers"] = json!(true);
    assert_eq!(
        checks_of(&eval_spec(spec, RESTRICTED)),
        ["runAsNonRoot", "runAsUser"]
    );
    // procMount: relaxed at baseline, but procMount_restricted still forbids it.
    let spec = json!({"hostUsers": false, "containers": [
        {"name": "a", "securityContext": {"procMount": "Unmasked"}}]});
    assert!(eval_spec(spec.clone(), BASELINE).allowed());
    assert_eq!(
        checks_of(&eval_spec(spec.clone(), baseline_at(34))),
        ["procMount"]
    );
    let mut r = restricted_spec();
    r["hostUsers"] = json!(false);
    r["containers"][0]["securityContext"]["procMount"] = json!("Unmasked");
    let e = eval_spec(r, RESTRICTED);
    assert_eq!(checks_of(&e), ["procMount_restricted"]);
    assert_eq!(
        e.violations[0].detail,
        r#"container "app" must not set securityContext.procMount to "Unmasked""#
    );
}

#[test]
fn newer_revisions_apply_from_their_version() {
    // seLinuxOptions: container_engine_t from v1.31.
    let spec = json!({"containers": [{"name": "a",
        "securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}]});
    assert!(eval_spec(spec.clone(), baseline_at(31)).allowed());
    let e = eval_spec(spec, baseline_at(30));
    assert_eq!(
        e.violations[0].detail,
        r#"container "a" set forbidden securityContext.seLinuxOptions: type "container_engine_t""#
    );
    let spec = json!({"securityContext": {"seLinuxOptions": {"user": "u", "role": "r"}},
                      "containers": [{"name": "a"}]});
    assert_eq!(
        eval_spec(spec, BASELINE).violations[0].detail,
        "pod set forbidden securityContext.seLinuxOptions: user may not be set; role may not be set"
    );
    // sysctls: each set joins at its version.
    let sysctl = |name: &str| {
        json!({"securityContext": {"sysctls": [{"name": name, "value": "1"}]},
               "containers": [{"name": "a"}]})
    };
    for (name, since) in [
        ("kernel.shm_rmid_forced", 0),
        ("net.ipv4.ip_local_reserved_ports", 27),
        ("net.ipv4.tcp_keepalive_time", 29),
        ("net.ipv4.tcp_wmem", 32),
        ("net.ipv4.tcp_notsent_lowat", 37),
    ] {
        assert!(
            eval_spec(sysctl(name), baseline_at(since)).allowed(),
            "{name}"
        );
        assert!(eval_spec(sysctl(name), BASELINE).allowed(), "{name}");
        if since > 0 {
            let e = eval_spec(sysctl(name), baseline_at(since - 1));
            assert_eq!(e.violations[0].detail, name);
            assert_eq!(
                e.violations[0].field,
                "spec.securityContext.sysctls[0].name"
            );
        }
    }
    // hostProbesAndHostLifecycle from v1.34.
    let spec = json!({"containers": [{"name": "a",
        "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
        "lifecycle": {"preStop": {"tcpSocket": {"host": "example.com", "port": 1}}}}]});
    assert!(eval_spec(spec.clone(), baseline_at(33)).allowed());
    let e = eval_spec(spec, baseline_at(34));
    assert_eq!(
        e.violations[0].detail,
        r#"container "a" uses probe or lifecycle hosts "10.0.0.1", "example.com""#
    );
    assert_eq!(e.violations[0].field, "spec.containers[0]");
    // allowPrivilegeEscalation exists from v1.8, runAsUser from v1.23.
    assert!(!checks_for(restricted_at(7)).contains(&"allowPrivilegeEscalation"));
    assert!(checks_for(restricted_at(8)).contains(&"allowPrivilegeEscalation"));
    assert!(!checks_for(restricted_at(22)).contains(&"runAsUser"));
}

#[test]
fn apparmor_fields_and_annotations() {
    let spec = json!({
        "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
        "containers": [
            {"name": "a", "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}},
            {"name": "b", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}
        ]
    });
    let e = eval_spec(spec, BASELINE);
    assert_eq!(checks_of(&e), ["appArmorProfile"]);
    assert_eq!(e.violations[0].reason, "forbidden AppArmor profile");
    assert_eq!(
        e.violations[0].detail,
        r#"pod and container "b" must not set AppArmor profile type to "Unconfined""#
    );
    assert_eq!(e.violations[0].field, "spec");
}

#[test]
fn volumes() {
    let spec = json!({"containers": [{"name": "a"}], "volumes": [
        {"name": "none"},
        {"name": "img", "image": {"reference": "x"}},
        {"name": "eph", "ephemeral": {}},
        {"name": "unknown-source", "somethingNew": {}},
        {"name": "n", "nfs": {"server": "s", "path": "/"}},
        {"name": "g", "gitRepo": {"repository": "r"}}
    ]});
    let mut full = restricted_spec();
    full["volumes"] = spec["volumes"].clone();
    let e = eval_spec(full, RESTRICTED);
    assert_eq!(checks_of(&e), ["restrictedVolumes"]);
    assert_eq!(
        e.violations[0].detail,
        r#"volumes "n", "g" use restricted volume types "gitRepo", "nfs""#
    );
    assert_eq!(e.violations[0].field, "spec.volumes");
    assert!(eval_spec(spec, BASELINE).allowed());
}

#[test]
fn host_ports_and_namespaces_messages() {
    let spec = json!({"hostPID": true, "hostIPC": true, "containers": [
        {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 1}]},
        {"name": "b", "ports": [{"containerPort": 9, "hostPort": 9}]}
    ]});
    let e = eval_spec(spec, BASELINE);
    assert_eq!(checks_of(&e), ["hostNamespaces", "hostPorts"]);
    assert_eq!(e.violations[0].detail, "hostPID=true, hostIPC=true");
    assert_eq!(e.violations[1].reason, "hostPort");
    assert_eq!(
        e.violations[1].detail,
        r#"containers "a", "b" use hostPorts 8080, 9"#
    );
    let spec = json!({"containers": [{"name": "a", "ports": [{"hostPort": 8080}],
        "securityContext": {"capabilities": {"add": ["NET_RAW", "CHOWN", "SYS_ADMIN"]}}}]});
    let e = eval_spec(spec, BASELINE);
    assert_eq!(
        e.violations[0].detail,
        r#"container "a" must not include "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add"#
    );
    assert_eq!(
        e.violations[0].field,
        "spec.containers[0].securityContext.capabilities.add"
    );
    assert_eq!(
        e.violations[1].field,
        "spec.containers[0].ports[0].hostPort"
    );
}

#[test]
fn versions_and_levels_parse_like_upstream() {
    assert_eq!("latest".parse::<Version>().unwrap(), Version::Latest);
    assert_eq!("v1.0".parse::<Version>().unwrap(), Version::Minor(0));
    assert_eq!("v1.37".parse::<Version>().unwrap(), Version::Minor(37));
    assert_eq!("v1.99".parse::<Version>().unwrap().effective_minor(), 37);
    for bad in [
        "", "1.30", "v1.", "v1.01", "v2.0", "v1.3a", "Latest", "v1.-1", " v1.2",
    ] {
        let err = bad.parse::<Version>().unwrap_err();
        assert_eq!(err.to_string(), r#"must be "latest" or "v1.x""#, "{bad:?}");
    }
    assert_eq!(Version::Minor(30).to_string(), "v1.30");
    assert_eq!(Version::Latest.to_string(), "latest");
    for l in [Level::Privileged, Level::Baseline, Level::Restricted] {
        assert_eq!(l.to_string().parse::<Level>().unwrap(), l);
    }
    assert_eq!(
        "Restricted".parse::<Level>().unwrap_err().to_string(),
        "must be one of privileged, baseline, restricted"
    );
    assert_eq!(RESTRICTED.to_string(), "restricted:latest");
    // A version above the newest revision behaves like latest.
    let spec = json!({"containers": [{"name": "a"}]});
    assert_eq!(
        eval_spec(spec.clone(), restricted_at(99)).violations,
        eval_spec(spec, RESTRICTED).violations
    );
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn namespace_labels() {
    let (p, errs) = NamespacePolicy::from_labels(&labels(&[]), Policy::PRIVILEGED);
    assert!(errs.is_empty());
    assert_eq!(p, NamespacePolicy::from(Policy::PRIVILEGED));

    let (p, errs) = NamespacePolicy::from_labels(
        &labels(&[
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "v1.30"),
            ("pod-security.kubernetes.io/warn", "restricted"),
            ("pod-security.kubernetes.io/audit-version", "v1.25"),
            ("unrelated", "x"),
        ]),
        Policy::PRIVILEGED,
    );
    assert!(errs.is_empty());
    assert_eq!(p.enforce, baseline_at(30));
    assert_eq!(p.warn, RESTRICTED);
    assert_eq!(p.audit, policy(Level::Privileged, Version::Minor(25)));

    // Invalid values: enforce fails closed (restricted), audit/warn fail open
    // (privileged), versions fall back to latest; one error per bad label.
    let (p, errs) = NamespacePolicy::from_labels(
        &labels(&[
            ("pod-security.kubernetes.io/enforce", "strict"),
            ("pod-security.kubernetes.io/enforce-version", "1.30"),
            ("pod-security.kubernetes.io/audit", "Baseline"),
            ("pod-security.kubernetes.io/warn", ""),
            ("pod-security.kubernetes.io/warn-version", "v1.x"),
        ]),
        baseline_at(20),
    );
    assert_eq!(p.enforce, RESTRICTED);
    assert_eq!(p.audit, policy(Level::Privileged, Version::Minor(20)));
    assert_eq!(p.warn, Policy::PRIVILEGED);
    let labels_in_error: Vec<&str> = errs.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(
        labels_in_error,
        [
            "pod-security.kubernetes.io/enforce",
            "pod-security.kubernetes.io/enforce-version",
            "pod-security.kubernetes.io/audit",
            "pod-security.kubernetes.io/warn",
            "pod-security.kubernetes.io/warn-version"
        ]
    );
    assert_eq!(
        errs[0].to_string(),
        r#"metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted"#
    );
    assert_eq!(errs[1].message, r#"must be "latest" or "v1.x""#);
}

#[test]
fn malformed_input_is_denied_not_panicking() {
    let spec = json!({
        "hostNetwork": "yes",
        "securityContext": {"runAsNonRoot": "true", "sysctls": {"name": "x"}},
        "containers": [
            {"name": 7, "securityContext": {"privileged": 1, "capabilities": {"drop": "ALL", "add": [null, 3]}}},
            "not-a-container",
            null
        ],
        "initContainers": {"name": "x"},
        "volumes": [{"name": "v", "hostPath": "/etc"}, 5],
        "os": [],
    });
    let e = eval_spec(spec.clone(), RESTRICTED);
    assert!(!e.allowed());
    assert_eq!(e.violations[0].check, DECODE_CHECK_ID);
    assert_eq!(e.violations[0].field, "spec");
    let decode = &e.violations[0];
    for f in [
        "spec.hostNetwork",
        "spec.securityContext.runAsNonRoot",
        "spec.securityContext.sysctls",
        "spec.containers[0].name",
        "spec.containers[0].securityContext.privileged",
        "spec.containers[0].securityContext.capabilities.drop",
        "spec.containers[0].securityContext.capabilities.add[1]",
        "spec.containers[1]",
        "spec.initContainers",
        "spec.volumes[0].hostPath",
        "spec.volumes[1]",
        "spec.os",
    ] {
        assert!(
            decode.fields.iter().any(|x| x == f),
            "{f} in {:?}",
            decode.fields
        );
    }
    assert!(
        decode
            .detail
            .contains("spec.hostNetwork: expected a boolean, got string")
    );
    assert!(decode.detail.ends_with("(and 2 more)"), "{}", decode.detail);
    // The null container is checked as an empty container.
    let ape = e
        .violations
        .iter()
        .find(|v| v.check == "allowPrivilegeEscalation")
        .unwrap();
    assert!(
        ape.fields
            .contains(&"spec.containers[2].securityContext.allowPrivilegeEscalation".to_owned())
    );
    // Privileged does not even decode (as upstream).
    assert!(eval_spec(spec, Policy::PRIVILEGED).allowed());
    // Wrong types in the metadata and out-of-range integers.
    let obj = json!({"kind": "Pod", "metadata": {"annotations": {"a": 1}},
        "spec": {"containers": [{"name": "a", "ports": [{"hostPort": 1.5}, {"hostPort": 99999999999_i64}],
                                 "securityContext": {"runAsUser": "0"}}]}});
    let e = evaluate_object(&obj, BASELINE).unwrap();
    assert_eq!(checks_of(&e), [DECODE_CHECK_ID]);
    assert_eq!(
        e.violations[0].fields,
        [
            "metadata.annotations[a]",
            "spec.containers[0].securityContext.runAsUser",
            "spec.containers[0].ports[0].hostPort",
            "spec.containers[0].ports[1].hostPort"
        ]
    );
    // A pod spec that is not an object, via evaluate_pod.
    let e = evaluate_pod(None, &json!([1, 2]), "spec", BASELINE);
    assert_eq!(checks_of(&e), [DECODE_CHECK_ID]);
    // Nulls are absent, as in Go.
    let spec = json!({"hostNetwork": null, "securityContext": null, "volumes": null,
        "containers": [{"name": "a", "securityContext": {"privileged": null, "capabilities": null}}]});
    assert!(eval_spec(spec, BASELINE).allowed());
}

#[test]
fn evaluate_pod_derives_metadata_path() {
    let meta =
        json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}});
    let spec = json!({"containers": [{"name": "a"}]});
    for (base, meta_path) in [
        ("spec", "metadata"),
        ("spec.template.spec", "spec.template.metadata"),
        ("items[3].spec", "items[3].metadata"),
        ("", "metadata"),
    ] {
        let e = evaluate_pod(Some(&meta), &spec, base, BASELINE);
        assert_eq!(
            e.violations[0].field,
            format!("{meta_path}.annotations[container.apparmor.security.beta.kubernetes.io/a]"),
            "{base}"
        );
    }
}

#[test]
fn report_lines() {
    let doc = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "securityContext": {"privileged": true}}]}}}});
    let line = report("app.yaml", 2, &doc, BASELINE).unwrap();
    assert!(!line.allowed);
    assert_eq!(
        serde_json::to_value(&line).unwrap(),
        json!({"file": "app.yaml", "index": 2, "kind": "Deployment", "name": "web", "allowed": false,
               "violations": [{"check": "privileged", "reason": "privileged",
                 "detail": "container \"app\" must not set securityContext.privileged=true",
                 "field": "spec.template.spec.containers[0].securityContext.privileged"}]})
    );
    assert_eq!(
        line.to_string(),
        "app.yaml[2] Deployment/web: denied: privileged: privileged (container \"app\" must not \
         set securityContext.privileged=true) [spec.template.spec.containers[0].securityContext.privileged]"
    );
    let line = report("app.yaml", 0, &doc, Policy::PRIVILEGED).unwrap();
    assert_eq!(line.to_string(), "app.yaml[0] Deployment/web: allowed");
    assert_eq!(
        serde_json::to_value(&line).unwrap()["violations"],
        json!([])
    );

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
    let err = report("a.yaml", 1, &svc, BASELINE).unwrap_err();
    assert_eq!(
        render_skipped("a.yaml", 1, &svc, &err),
        "a.yaml[1] Service/s: skipped: Service (v1) does not hold a pod spec"
    );
    // Text stays on one line whatever the names contain.
    let doc = json!({"kind": "Pod", "metadata": {"name": "a\nb"},
        "spec": {"containers": [{"name": "x\ny", "securityContext": {"privileged": true}}]}});
    let text = report("f", 0, &doc, BASELINE).unwrap().to_string();
    assert!(!text.contains('\n'), "{text}");
}
