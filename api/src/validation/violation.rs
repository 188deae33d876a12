use std::fmt;

use serde::Serialize;

/// The kind of a violation, with Kubernetes' `field.ErrorType` wording so messages read
/// like the apiserver's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    /// A reference to something that does not exist.
    NotFound,
    /// A value that is malformed or out of range.
    Invalid,
    /// A value that must be unique and is not.
    Duplicate,
    /// A value outside a fixed set of supported ones.
    Unsupported,
    /// A required value is missing.
    Required,
    /// A value that may not be set (reserved, or not with another field).
    Forbidden,
    /// A string longer than allowed.
    TooLong,
    /// A list or map with more entries than allowed.
    TooMany,
}

impl Reason {
    /// Kubernetes' wording (`field.ErrorType.String()`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Invalid => "Invalid value",
            Self::Duplicate => "Duplicate value",
            Self::Unsupported => "Unsupported value",
            Self::Required => "Required value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }

    /// The `metav1.CauseType` for `status.details.causes[].reason`.
    pub fn cause_type(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Unsupported => "FieldValueNotSupported",
            Self::Required => "FieldValueRequired",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest offending value quoted in a message; longer ones are cut, so a 256 KiB
/// script never ends up in a denial.
const MAX_QUOTED_VALUE_CHARS: usize = 120;

/// One thing wrong with an object: where, what kind of wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Kubernetes-style field path, such as `spec.jobs[1].needs[0]`.
    pub field: String,
    /// The kind of violation.
    pub reason: Reason,
    /// The offending value, quoted and shortened, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What is wrong and what would be right.
    pub detail: String,
}

impl Violation {
    /// A violation without an offending value.
    pub fn new(field: impl Into<String>, reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            value: None,
            detail: detail.into(),
        }
    }

    /// A violation quoting the offending value.
    pub fn with_value(
        field: impl Into<String>,
        reason: Reason,
        value: impl fmt::Debug,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason,
            value: Some(quote(&value)),
            detail: detail.into(),
        }
    }

    /// The message without the field path: `Not found: "fetc" (no job named ...)`.
    pub fn message(&self) -> String {
        match (&self.value, self.detail.is_empty()) {
            (Some(value), false) => format!("{}: {} ({})", self.reason, value, self.detail),
            (Some(value), true) => format!("{}: {}", self.reason, value),
            (None, _) => format!("{}: {}", self.reason, self.detail),
        }
    }
}

impl fmt::Display for Violation {
    /// `spec.jobs[1].needs[0]: Not found: "fetc" (no job named "fetc"; jobs are: fetch, build)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

fn quote(value: &dyn fmt::Debug) -> String {
    let full = format!("{value:?}");
    if full.chars().count() <= MAX_QUOTED_VALUE_CHARS {
        return full;
    }
    let cut: String = full.chars().take(MAX_QUOTED_VALUE_CHARS).collect();
    // Close the quote of a cut string, so the message still reads as one value.
    let close = if full.starts_with('"') { "\"" } else { "" };
    format!(
        "{cut}...{close} ({} characters in all)",
        full.chars().count()
    )
}

/// A Kubernetes-style field path under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// The root, for paths relative to an object (`spec`, `metadata`).
    pub fn root(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// `parent.child`
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return Self(name.to_owned());
        }
        // Paths are built for every field checked, not only for violations: plain
        // appends, not the formatting machinery (it showed in the webhook's profile).
        let mut path = String::with_capacity(self.0.len() + 1 + name.len());
        path.push_str(&self.0);
        path.push('.');
        path.push_str(name);
        Self(path)
    }

    /// `parent[index]`
    pub fn index(&self, index: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = index;
        loop {
            start -= 1;
            digits[start] = b"0123456789"[rest % 10];
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let digits = std::str::from_utf8(&digits[start..]).unwrap_or_default();
        self.bracketed(digits)
    }

    /// `parent[key]` for map entries.
    pub fn key(&self, key: &str) -> Self {
        self.bracketed(key)
    }

    fn bracketed(&self, inner: &str) -> Self {
        let mut path = String::with_capacity(self.0.len() + 2 + inner.len());
        path.push_str(&self.0);
        path.push('[');
        path.push_str(inner);
        path.push(']');
        Self(path)
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FieldPath> for String {
    fn from(path: FieldPath) -> Self {
        path.0
    }
}

impl From<&FieldPath> for String {
    fn from(path: &FieldPath) -> Self {
        path.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_written() {
        let root = FieldPath::root("spec");
        assert_eq!(root.child("jobs").index(0).as_str(), "spec.jobs[0]");
        assert_eq!(root.index(7).index(10).as_str(), "spec[7][10]");
        assert_eq!(root.index(123).as_str(), "spec[123]");
        assert_eq!(
            root.index(usize::MAX).as_str(),
            format!("spec[{}]", usize::MAX)
        );
        assert_eq!(root.child("files").key("a.py").as_str(), "spec.files[a.py]");
        assert_eq!(FieldPath::root("").child("spec").as_str(), "spec");
    }

    #[test]
    fn renders_like_the_apiserver() {
        let v = Violation::with_value(
            FieldPath::root("spec")
                .child("jobs")
                .index(1)
                .child("needs")
                .index(0),
            Reason::NotFound,
            "fetc",
            "no job named \"fetc\"; jobs are: fetch, build",
        );
        assert_eq!(
            v.to_string(),
            "spec.jobs[1].needs[0]: Not found: \"fetc\" (no job named \"fetc\"; jobs are: fetch, build)"
        );
    }

    /// A quoted value of exactly `MAX_QUOTED_VALUE_CHARS` characters (quotes included) is
    /// kept whole; one more is cut to that many, counted in characters, not bytes.
    #[test]
    fn quoted_value_boundary() {
        assert_eq!(MAX_QUOTED_VALUE_CHARS, 120, "the value in docs/api.md");
        for unit in ["x", "é"] {
            let at = unit.repeat(MAX_QUOTED_VALUE_CHARS - 2);
            assert_eq!(quote(&at), format!("\"{at}\""));
            let over = unit.repeat(MAX_QUOTED_VALUE_CHARS - 1);
            let kept: String = format!("\"{over}")
                .chars()
                .take(MAX_QUOTED_VALUE_CHARS)
                .collect();
            assert_eq!(
                quote(&over),
                format!(
                    "{kept}...\" ({} characters in all)",
                    MAX_QUOTED_VALUE_CHARS + 1
                )
            );
        }
        // Other values are cut alike, without a closing quote. `[1, 1, ...]` of n
        // items takes 3n characters.
        let list_at = vec![1u8; MAX_QUOTED_VALUE_CHARS / 3];
        assert_eq!(quote(&list_at), format!("{list_at:?}"));
        let list_over = vec![1u8; MAX_QUOTED_VALUE_CHARS / 3 + 1];
        let full = format!("{list_over:?}");
        assert_eq!(
            quote(&list_over),
            format!(
                "{}... ({} characters in all)",
                &full[..MAX_QUOTED_VALUE_CHARS],
                full.len()
            )
        );
    }

    #[test]
    fn long_values_are_cut() {
        let v = Violation::with_value("spec.script", Reason::Invalid, "x".repeat(10_000), "");
        let value = v.value.unwrap();
        assert!(value.len() < 200, "{value}");
        assert!(
            value.ends_with("...\" (10002 characters in all)"),
            "{value}"
        );
    }
}
