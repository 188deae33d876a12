//! The checks, their versioned revisions, and the registry that picks them for a policy.
//!
//! Mirrors upstream `k8s.io/pod-security-admission/policy`: every check has one or more
//! revisions, each applying from a minimum policy version until the next revision; at
//! `restricted`, a restricted revision may override (replace) baseline checks.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::policy::{Level, Policy};
use crate::view::{Container, PodView, SecurityContext};

mod baseline;
mod restricted;
mod seccomp;

use baseline::*;
use restricted::*;
use seccomp::*;

/// A failed check, before it is tagged with its check id.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub(crate) reason: String,
    pub(crate) detail: String,
    pub(crate) fields: Vec<String>,
}

type CheckFn = fn(&PodView<'_>) -> Option<Finding>;

struct Revision {
    /// First policy minor version (`v1.N`) this revision applies to.
    min: u32,
    check: CheckFn,
    /// Baseline checks this (restricted) revision replaces at `restricted`.
    overrides: &'static [&'static str],
}

struct CheckDef {
    id: &'static str,
    level: Level,
    /// Sorted by `min`, strictly increasing.
    revisions: &'static [Revision],
}

const fn rev(min: u32, check: CheckFn) -> Revision {
    Revision {
        min,
        check,
        overrides: &[],
    }
}

const fn rev_over(min: u32, check: CheckFn, overrides: &'static [&'static str]) -> Revision {
    Revision {
        min,
        check,
        overrides,
    }
}

/// Baseline checks sorted by id, then restricted checks sorted by id: upstream's
/// evaluation (and so message) order.
static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "appArmorProfile",
        level: Level::Baseline,
        revisions: &[rev(0, app_armor_profile_1_0)],
    },
    CheckDef {
        id: "capabilities_baseline",
        level: Level::Baseline,
        revisions: &[rev(0, capabilities_baseline_1_0)],
    },
    CheckDef {
        id: "hostNamespaces",
        level: Level::Baseline,
        revisions: &[rev(0, host_namespaces_1_0)],
    },
    CheckDef {
        id: "hostPathVolumes",
        level: Level::Baseline,
        revisions: &[rev(0, host_path_volumes_1_0)],
    },
    CheckDef {
        id: "hostPorts",
        level: Level::Baseline,
        revisions: &[rev(0, host_ports_1_0)],
    },
    CheckDef {
        id: "hostProbesAndHostLifecycle",
        level: Level::Baseline,
        revisions: &[rev(34, host_probes_and_host_lifecycle_1_34)],
    },
    CheckDef {
        id: "privileged",
        level: Level::Baseline,
        revisions: &[rev(0, privileged_1_0)],
    },
    CheckDef {
        id: "procMount",
        level: Level::Baseline,
        revisions: &[rev(0, proc_mount_1_0), rev(35, proc_mount_1_35_baseline)],
    },
    CheckDef {
        id: "seLinuxOptions",
        level: Level::Baseline,
        revisions: &[rev(0, se_linux_options_1_0), rev(31, se_linux_options_1_31)],
    },
    CheckDef {
        id: "seccompProfile_baseline",
        level: Level::Baseline,
        revisions: &[
            rev(0, seccomp_profile_baseline_1_0),
            rev(19, seccomp_profile_baseline_1_19),
        ],
    },
    CheckDef {
        id: "sysctls",
        level: Level::Baseline,
        revisions: &[
            rev(0, sysctls_1_0),
            rev(27, sysctls_1_27),
            rev(29, sysctls_1_29),
            rev(32, sysctls_1_32),
            rev(37, sysctls_1_37),
        ],
    },
    CheckDef {
        id: "windowsHostProcess",
        level: Level::Baseline,
        revisions: &[rev(0, windows_host_process_1_0)],
    },
    CheckDef {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        revisions: &[
            rev(8, allow_privilege_escalation_1_8),
            rev(25, allow_privilege_escalation_1_25),
        ],
    },
    CheckDef {
        id: "capabilities_restricted",
        level: Level::Restricted,
        revisions: &[
            rev_over(22, capabilities_restricted_1_22, &["capabilities_baseline"]),
            rev_over(25, capabilities_restricted_1_25, &["capabilities_baseline"]),
        ],
    },
    CheckDef {
        id: "procMount_restricted",
        level: Level::Restricted,
        revisions: &[rev_over(35, proc_mount_1_0, &["procMount"])],
    },
    CheckDef {
        id: "restrictedVolumes",
        level: Level::Restricted,
        revisions: &[rev_over(0, restricted_volumes_1_0, &["hostPathVolumes"])],
    },
    CheckDef {
        id: "runAsNonRoot",
        level: Level::Restricted,
        revisions: &[rev(0, run_as_non_root_1_0), rev(35, run_as_non_root_1_35)],
    },
    CheckDef {
        id: "runAsUser",
        level: Level::Restricted,
        revisions: &[rev(23, run_as_user_1_23), rev(35, run_as_user_1_35)],
    },
    CheckDef {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        revisions: &[
            rev_over(
                19,
                seccomp_profile_restricted_1_19,
                &["seccompProfile_baseline"],
            ),
            rev_over(
                25,
                seccomp_profile_restricted_1_25,
                &["seccompProfile_baseline"],
            ),
        ],
    },
];

/// Description of one check, for documentation and tooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInfo {
    /// Upstream check id, e.g. `capabilities_restricted`.
    pub id: &'static str,
    /// `Baseline` or `Restricted`.
    pub level: Level,
    /// Minor versions (`v1.N`) at which a revision of the check starts.
    pub revisions: Vec<u32>,
    /// Baseline check ids the newest revision overrides at `restricted`.
    pub overrides: Vec<&'static str>,
}

/// All checks, baseline first, each group sorted by id.
pub fn checks() -> Vec<CheckInfo> {
    CHECKS
        .iter()
        .map(|c| CheckInfo {
            id: c.id,
            level: c.level,
            revisions: c.revisions.iter().map(|r| r.min).collect(),
            overrides: c
                .revisions
                .last()
                .map(|r| r.overrides.to_vec())
                .unwrap_or_default(),
        })
        .collect()
}

/// The revision of `def` in force at `minor`, if the check exists then.
fn revision_at(def: &CheckDef, minor: u32) -> Option<&Revision> {
    def.revisions.iter().rev().find(|r| r.min <= minor)
}

/// The checks evaluated for `policy`, in evaluation order.
fn selected(policy: Policy) -> Vec<(&'static str, &'static Revision)> {
    if policy.level == Level::Privileged {
        return Vec::new();
    }
    let minor = policy.version.effective_minor();
    let restricted = policy.level == Level::Restricted;
    let picked: Vec<(&CheckDef, &Revision)> = CHECKS
        .iter()
        .filter(|c| c.level == Level::Baseline || restricted)
        .filter_map(|c| revision_at(c, minor).map(|r| (c, r)))
        .collect();
    let overridden: BTreeSet<&str> = picked
        .iter()
        .filter(|(c, _)| c.level == Level::Restricted)
        .flat_map(|(_, r)| r.overrides.iter().copied())
        .collect();
    picked
        .into_iter()
        .filter(|(c, _)| c.level == Level::Restricted || !overridden.contains(c.id))
        .map(|(c, r)| (c.id, r))
        .collect()
}

/// Ids of the checks evaluated for `policy`, in evaluation order (empty at `privileged`).
pub fn checks_for(policy: Policy) -> Vec<&'static str> {
    selected(policy).into_iter().map(|(id, _)| id).collect()
}

/// At `restricted` and `policy`'s version, the restricted check that replaces baseline
/// check `baseline_id`, if any (e.g. `capabilities_baseline` -> `capabilities_restricted`
/// from v1.22).
pub fn overridden_by(baseline_id: &str, version: crate::Version) -> Option<&'static str> {
    let minor = version.effective_minor();
    CHECKS
        .iter()
        .filter(|c| c.level == Level::Restricted)
        .find(|c| revision_at(c, minor).is_some_and(|r| r.overrides.contains(&baseline_id)))
        .map(|c| c.id)
}

/// Runs the checks of `policy` on `view`: `(check id, finding)` of each failed check.
pub(crate) fn run(view: &PodView<'_>, policy: Policy) -> Vec<(&'static str, Finding)> {
    selected(policy)
        .into_iter()
        .filter_map(|(id, r)| (r.check)(view).map(|f| (id, f)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers (upstream's pluralize / joinQuote / %q).

fn pluralize<'s>(singular: &'s str, plural: &'s str, n: usize) -> &'s str {
    if n == 1 { singular } else { plural }
}

fn join_quote<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(s.as_ref());
        out.push('"');
    }
    out
}

/// Go's `%q` (strconv.Quote) for the common cases.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn finding(reason: impl Into<String>, detail: impl Into<String>, fields: Vec<String>) -> Finding {
    Finding {
        reason: reason.into(),
        detail: detail.into(),
        fields,
    }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// The security context of a container, if set.
fn sc<'c, 'a>(c: &'c Container<'a>) -> Option<&'c SecurityContext<'a>> {
    c.sc.as_ref()
}

fn pod_sc<'v, 'a>(pod: &'v PodView<'a>) -> Option<&'v SecurityContext<'a>> {
    pod.sc.as_ref()
}

fn annotation<'a>(pod: &PodView<'a>, key: &str) -> Option<&'a str> {
    pod.annotations
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .and_then(|i| pod.annotations.get(i))
        .map(|(_, v)| *v)
}
