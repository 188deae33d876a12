//! Kubernetes name formats and the names kruntimes generates.

use sha2::{Digest, Sha256};

use crate::v1alpha1::limits::{MAX_LABEL_BYTES, MAX_NAME_BYTES};

const LABEL_FORMAT: &str = "must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name' or '123-abc')";

/// Checks a DNS-1123 label (job, step and container names). Returns why it is not one.
pub fn check_dns1123_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_LABEL_BYTES {
        return Err(format!("must be no more than {MAX_LABEL_BYTES} characters"));
    }
    if !is_label(value) {
        return Err(format!("a lowercase RFC 1123 label {LABEL_FORMAT}"));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (most object names). Returns why it is not one.
pub fn check_dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(format!("must be no more than {MAX_NAME_BYTES} characters"));
    }
    if !value.split('.').all(is_label) {
        return Err(format!(
            "a lowercase RFC 1123 subdomain {LABEL_FORMAT}, with '.' between labels"
        ));
    }
    Ok(())
}

/// Checks an environment variable name: a C identifier.
pub fn check_c_identifier(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err("must consist of letters, digits and '_', and must not start with a digit (e.g. 'MY_VAR')".into())
    }
}

fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_BYTES
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// Hex characters of the hash appended to shortened child names: 40 bits, so a
/// collision between two long names of one Workflow needs about a million of them.
const CHILD_NAME_HASH_CHARS: usize = 10;

/// The name of the Run a Workflow step becomes: `<workflow>-<job>-<step>` when that is a
/// valid DNS-1123 label of at most 63 characters; otherwise the joined name cut to fit,
/// then `-` and a stable hash of the three parts. The same input always gives the same
/// name, and the name is always a valid label (given valid parts), so a long name is
/// never a reason to reject a Workflow.
pub fn child_run_name(workflow: &str, job: &str, step: &str) -> String {
    let joined = format!("{workflow}-{job}-{step}");
    if joined.len() <= MAX_LABEL_BYTES && is_label(&joined) {
        return joined;
    }
    // The parts are hashed with a separator that cannot occur in a name, so
    // ("a-b", "c") and ("a", "b-c") hash differently even though they join alike.
    let mut hasher = Sha256::new();
    for part in [workflow, job, step] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let hash: String = digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(CHILD_NAME_HASH_CHARS)
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect();
    let keep = MAX_LABEL_BYTES - 1 - CHILD_NAME_HASH_CHARS;
    let prefix: String = joined
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(keep)
        .collect();
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("r-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn labels() {
        assert!(check_dns1123_label("fetch").is_ok());
        assert!(check_dns1123_label("a-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_dns1123_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_dns1123_label(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn subdomains() {
        assert!(check_dns1123_subdomain("a.b-c.d").is_ok());
        for bad in ["", "a..b", ".a", "a.", "A.b"] {
            assert!(check_dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        // Four labels of 63 and a dot between each: 255; cut to the 253 limit and one over.
        let long = vec!["a".repeat(63); 4].join(".");
        let at_limit = &long[..253];
        assert!(
            check_dns1123_subdomain(at_limit).is_ok(),
            "{}",
            at_limit.len()
        );
        let over = format!("{at_limit}a");
        assert_eq!(
            check_dns1123_subdomain(&over),
            Err("must be no more than 253 characters".to_string())
        );
    }

    #[test]
    fn c_identifiers() {
        assert!(check_c_identifier("MODE").is_ok());
        assert!(check_c_identifier("_x1").is_ok());
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(check_c_identifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_child_names_are_joined() {
        assert_eq!(
            child_run_name("release", "fetch", "download"),
            "release-fetch-download"
        );
    }

    #[test]
    fn ambiguous_long_joins_get_different_hashes() {
        let long = "w".repeat(60);
        assert_ne!(
            child_run_name(&long, "a-b", "c"),
            child_run_name(&long, "a", "b-c")
        );
    }

    /// A joined name of exactly `MAX_LABEL_BYTES` is kept; one more becomes the first
    /// characters, `-` and exactly `CHILD_NAME_HASH_CHARS` hex characters of the SHA-256
    /// of the parts (each followed by NUL), 63 in all.
    #[test]
    fn child_name_hash_boundary() {
        assert_eq!(CHILD_NAME_HASH_CHARS, 10, "the value in docs/api.md");
        // "<workflow>-j-s": the workflow name takes what the two parts and dashes leave.
        let workflow_at = "w".repeat(MAX_LABEL_BYTES - "-j-s".len());
        let at = child_run_name(&workflow_at, "j", "s");
        assert_eq!(at, format!("{workflow_at}-j-s"));
        assert_eq!(at.len(), MAX_LABEL_BYTES);

        let workflow_over = format!("{workflow_at}w");
        let over = child_run_name(&workflow_over, "j", "s");
        let digest = Sha256::digest(format!("{workflow_over}\0j\0s\0").as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let keep = MAX_LABEL_BYTES - 1 - CHILD_NAME_HASH_CHARS;
        assert_eq!(
            over,
            format!(
                "{}-{}",
                &workflow_over[..keep],
                &hex[..CHILD_NAME_HASH_CHARS]
            )
        );
        assert_eq!(over.len(), MAX_LABEL_BYTES);
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn child_names_are_stable_valid_labels(w in label(), j in label(), s in label()) {
            let name = child_run_name(&w, &j, &s);
            prop_assert_eq!(&name, &child_run_name(&w, &j, &s));
            prop_assert!(check_dns1123_label(&name).is_ok(), "{}", name);
            let joined = format!("{w}-{j}-{s}");
            if joined.len() <= 63 {
                prop_assert_eq!(name, joined);
            } else {
                prop_assert!(name.starts_with(&joined[..20]));
            }
        }

        #[test]
        fn distinct_long_inputs_get_distinct_names(
            w in "[a-z]{40,63}", j in label(), s1 in label(), s2 in label()
        ) {
            prop_assume!(s1 != s2);
            prop_assert_ne!(child_run_name(&w, &j, &s1), child_run_name(&w, &j, &s2));
        }
    }
}
