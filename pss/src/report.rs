//! One report line per checked document, for `krt check pss`.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::{NoPodSpec, Policy, Violation, evaluate_object};

/// The result of checking one document of one file.
///
/// Serializes as
/// `{"file":"a.yaml","index":0,"kind":"Pod","name":"web","allowed":false,"violations":[{"check":…,"reason":…,"detail":…,"field":…}]}`;
/// [`Display`](fmt::Display) gives the text form (one line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportLine {
    /// The file name as given.
    pub file: String,
    /// Index of the document in the file (0-based).
    pub index: usize,
    /// `kind` of the object (empty when absent).
    pub kind: String,
    /// `metadata.name` (or `metadata.generateName`; empty when neither).
    pub name: String,
    /// Whether the policy allows the object.
    pub allowed: bool,
    /// What the policy forbids, in upstream's check order.
    pub violations: Vec<Violation>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `kind` and name of a document, for reports (empty strings when absent).
pub fn kind_and_name(doc: &Value) -> (String, String) {
    let kind = str_at(doc, &["kind"]).unwrap_or_default();
    let name = str_at(doc, &["metadata", "name"])
        .or_else(|| str_at(doc, &["metadata", "generateName"]))
        .unwrap_or_default();
    (kind.to_owned(), name.to_owned())
}

/// Evaluates document `index` of `file` against `policy`.
///
/// Errors when the document holds no pod spec; [`render_skipped`] renders that case.
pub fn report(
    file: &str,
    index: usize,
    doc: &Value,
    policy: Policy,
) -> Result<ReportLine, NoPodSpec> {
    let evaluation = evaluate_object(doc, policy)?;
    let (kind, name) = kind_and_name(doc);
    Ok(ReportLine {
        file: file.to_owned(),
        index,
        kind,
        name,
        allowed: evaluation.allowed(),
        violations: evaluation.violations,
    })
}

/// Text line for a document without a pod spec:
/// `FILE[1] Service/web: skipped: Service (v1) does not hold a pod spec`.
pub fn render_skipped(file: &str, index: usize, doc: &Value, err: &NoPodSpec) -> String {
    let (kind, name) = kind_and_name(doc);
    format!(
        "{file}[{index}] {}: skipped: {err}",
        object_label(&kind, &name)
    )
}

fn object_label(kind: &str, name: &str) -> String {
    match (kind.is_empty(), name.is_empty()) {
        (true, true) => "<unnamed>".to_owned(),
        (false, true) => kind.to_owned(),
        (true, false) => name.to_owned(),
        (false, false) => format!("{kind}/{name}"),
    }
}

impl ReportLine {
    fn render(&self) -> String {
        let mut out = format!(
            "{}[{}] {}: ",
            self.file,
            self.index,
            object_label(&self.kind, &self.name)
        );
        if self.allowed {
            out.push_str("allowed");
            return out;
        }
        out.push_str("denied: ");
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(v.check);
            out.push_str(": ");
            out.push_str(&v.reason);
            if !v.detail.is_empty() {
                out.push_str(" (");
                out.push_str(&v.detail);
                out.push(')');
            }
            if !v.field.is_empty() {
                out.push_str(" [");
                out.push_str(&v.field);
                out.push(']');
            }
        }
        out
    }
}

/// Escapes control characters so one report is one line.
fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl fmt::Display for ReportLine {
    /// `FILE[0] Pod/web: allowed`, or
    /// `FILE[0] Pod/web: denied: privileged: privileged (container "a" must not set securityContext.privileged=true) [spec.containers[0].securityContext.privileged]; …`
    ///
    /// Control characters (from untrusted names) are escaped: always a single line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(&self.render()))
    }
}
