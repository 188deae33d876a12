//! The checks of an artifact request at Execute, before the Run starts: the store (its
//! endpoint, bucket and prefix), `max_bytes` and the globs.

use std::net::IpAddr;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use kruntimes_api::validation::paths::{PathKind, check_relative_path};

use super::{ArtifactError, MAX_BYTES_CEILING, MAX_PATTERNS, MAX_PREFIX_BYTES};
use crate::proto;

/// Whether plain http is acceptable for `endpoint`: https always; http only to a
/// loopback host, or anywhere when the operator said so.
pub(super) fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), ArtifactError> {
    let bad = |reason: String| ArtifactError::StoreInvalid {
        field: "store.endpoint",
        reason,
    };
    let url =
        url_parts(endpoint).ok_or_else(|| bad(format!("{endpoint:?} is not an http(s) URL")))?;
    match url {
        ("https", _) => Ok(()),
        ("http", host) if allow_http || is_loopback(host) => Ok(()),
        ("http", _) => Err(bad(
            "plain http is allowed only to a loopback address (or with the sidecar's --s3-allow-http)"
                .into(),
        )),
        _ => Err(bad(format!("{endpoint:?} is not an http(s) URL"))),
    }
}

/// (scheme, host) of an absolute http(s) URL without credentials.
fn url_parts(endpoint: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    Some((scheme, host))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a request before the Run starts: nothing is created when this fails.
pub fn check_request(
    request: &proto::ArtifactRequest,
    allow_http: bool,
) -> Result<GlobSet, ArtifactError> {
    let store = request.store.as_ref().ok_or(ArtifactError::StoreInvalid {
        field: "store",
        reason: "is required (no artifact store configured for this Run)".into(),
    })?;
    check_endpoint(&store.endpoint, allow_http)?;
    if store.bucket.len() < 3 || store.bucket.len() > 63 {
        return Err(ArtifactError::StoreInvalid {
            field: "store.bucket",
            reason: "must be 3 to 63 characters".into(),
        });
    }
    if store.prefix.len() > MAX_PREFIX_BYTES
        || store.prefix.starts_with('/')
        || store.prefix.contains("//")
    {
        return Err(ArtifactError::StoreInvalid {
            field: "store.prefix",
            reason: format!(
                "must be at most {MAX_PREFIX_BYTES} bytes, without a leading '/' or '//'"
            ),
        });
    }
    if request.max_bytes > MAX_BYTES_CEILING {
        return Err(ArtifactError::StoreInvalid {
            field: "max_bytes",
            reason: format!("must be at most {MAX_BYTES_CEILING} bytes"),
        });
    }
    globs(&request.paths)
}

/// Compiles the globs: relative, no `..`, `*` within one directory, `**` across.
pub fn globs(patterns: &[String]) -> Result<GlobSet, ArtifactError> {
    let invalid = |index: usize, reason: String| ArtifactError::PatternInvalid {
        index,
        pattern: patterns.get(index).cloned().unwrap_or_default(),
        reason,
    };
    if patterns.is_empty() {
        return Err(invalid(0, "at least one glob is required".into()));
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(invalid(
            MAX_PATTERNS,
            format!("at most {MAX_PATTERNS} globs are allowed"),
        ));
    }
    let mut set = GlobSetBuilder::new();
    for (index, pattern) in patterns.iter().enumerate() {
        check_relative_path(pattern, PathKind::Glob).map_err(|r| invalid(index, r))?;
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| invalid(index, e.kind().to_string()))?;
        set.add(glob);
    }
    set.build().map_err(|e| invalid(0, e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Reason;

    #[test]
    fn loopback_detection() {
        assert_eq!(
            url_parts("http://127.0.0.1:9000"),
            Some(("http", "127.0.0.1"))
        );
        assert_eq!(url_parts("http://[::1]:9000/x"), Some(("http", "::1")));
        assert_eq!(
            url_parts("https://s3.example"),
            Some(("https", "s3.example"))
        );
        assert_eq!(url_parts("http://user:pw@host"), None);
        assert!(check_endpoint("http://127.0.0.1:9000", false).is_ok());
        assert!(check_endpoint("http://localhost:9000", false).is_ok());
        assert!(check_endpoint("http://[::1]:9000", false).is_ok());
        assert!(check_endpoint("https://s3.example", false).is_ok());
        assert!(check_endpoint("http://s3.example", false).is_err());
        assert!(check_endpoint("http://s3.example", true).is_ok());
        assert!(check_endpoint("ftp://s3.example", true).is_err());
        assert!(check_endpoint("s3.example", true).is_err());
    }

    #[test]
    fn globs_are_checked_and_star_stays_in_one_directory() {
        let set = globs(&["out/*.json".into()]).unwrap();
        assert!(set.is_match("out/a.json"));
        assert!(!set.is_match("out/sub/a.json"));
        let set = globs(&["out/**".into()]).unwrap();
        assert!(set.is_match("out/sub/a.json"));
        for bad in ["../x", "/etc/passwd", "a/../b", "", "a//b"] {
            let e = globs(&[bad.into()]).unwrap_err();
            assert_eq!(e.reason(), Some(Reason::ArtifactPatternInvalid), "{bad}");
        }
        assert!(globs(&[]).is_err());
        let many: Vec<String> = (0..MAX_PATTERNS).map(|i| format!("f{i}")).collect();
        assert!(globs(&many).is_ok());
        let too_many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("f{i}")).collect();
        assert!(globs(&too_many).is_err());
    }

    #[test]
    fn max_bytes_ceiling_boundary() {
        let mut r = proto::ArtifactRequest {
            paths: vec!["out/**".into()],
            max_bytes: MAX_BYTES_CEILING,
            store: Some(proto::S3Store {
                endpoint: "https://s3.example".into(),
                bucket: "runs".into(),
                ..Default::default()
            }),
        };
        assert!(check_request(&r, false).is_ok());
        r.max_bytes = MAX_BYTES_CEILING + 1;
        assert_eq!(
            check_request(&r, false).unwrap_err().reason(),
            Some(Reason::ArtifactStoreInvalid)
        );
        r.max_bytes = 0;
        r.store = None;
        assert_eq!(
            check_request(&r, false).unwrap_err().reason(),
            Some(Reason::ArtifactStoreInvalid)
        );
    }
}
