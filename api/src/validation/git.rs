//! Git sources: `https://` URLs without credentials, and refs that cannot be mistaken
//! for options.

use crate::v1alpha1::limits::{MAX_GIT_REF_BYTES, MAX_NAME_BYTES, MAX_URL_BYTES};

/// Checks a git repository URL. Only `https://` is accepted: `file://`, `ssh://`,
/// `ext::`, `git://` and local paths could read the pod's own files or run commands,
/// and credentials in a URL would be stored in plain text in the Run.
pub fn check_git_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("must be no more than {MAX_URL_BYTES} bytes"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters".into());
    }
    if !url.starts_with("https://") {
        return Err(
            "must be an https:// URL; file://, ssh://, git://, ext:: and local paths are not supported"
                .into(),
        );
    }
    // The URL parser repairs "https:///path" into host "path"; a typo must not pick a host.
    if url["https://".len()..].starts_with('/') {
        return Err("must name a host: https://HOST/PATH".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not embed credentials; configure access on the Runtime instead".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

/// The host of an already valid git URL, lowercased, for the allow-list check.
pub fn git_url_host(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
}

/// Checks a branch, tag or commit name.
pub fn check_git_ref(git_ref: &str) -> Result<(), String> {
    if git_ref.is_empty() {
        return Err("must not be empty".into());
    }
    if git_ref.len() > MAX_GIT_REF_BYTES {
        return Err(format!("must be no more than {MAX_GIT_REF_BYTES} bytes"));
    }
    if git_ref.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if git_ref.contains("..") || git_ref.contains("@{") || git_ref.ends_with(".lock") {
        return Err(
            "is not a valid git ref ('..', '@{' and a '.lock' suffix are not allowed)".into(),
        );
    }
    if git_ref.chars().any(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(
            "must not contain whitespace, control characters or any of ~ ^ : ? * [ \\".into(),
        );
    }
    if git_ref.starts_with('/') || git_ref.ends_with('/') || git_ref.contains("//") {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    Ok(())
}

/// Checks a host name in `git.allowedHosts`: a lowercase DNS name, optionally with a port.
/// The entry is bounded as a whole, port included, as the CRD schema bounds it: a
/// 253-character name with a port would pass the name rule but not the apiserver.
pub fn check_allowed_host(host: &str) -> Result<(), String> {
    if host.len() > MAX_NAME_BYTES {
        return Err(format!("must be no more than {MAX_NAME_BYTES} characters"));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{port:?} is not a valid port"));
    }
    super::names::check_dns1123_subdomain(name).map_err(|_| {
        "must be a lowercase host name such as github.com, optionally with :port".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_https() {
        assert!(check_git_url("https://github.com/org/repo").is_ok());
        assert!(check_git_url("https://git.example.com:8443/org/repo.git").is_ok());
        for bad in [
            "http://github.com/org/repo",
            "file:///etc",
            "ssh://git@github.com/org/repo",
            "git@github.com:org/repo",
            "ext::sh -c touch% /tmp/pwned",
            "git://github.com/org/repo",
            "/srv/repo",
            "HTTPS://github.com/x",
            "https://user:token@github.com/org/repo",
            "https://token@github.com/org/repo",
            "https://github.com/org/re po",
            "https:///path",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs() {
        for ok in ["main", "v1.2.3", "feature/x", "0123abcd"] {
            assert!(check_git_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-u",
            "--upload-pack=x",
            "a..b",
            "a b",
            "x^",
            "a//b",
            "/a",
            "a.lock",
            "@{-1}",
        ] {
            assert!(check_git_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert!(check_allowed_host("github.com").is_ok());
        assert!(check_allowed_host("git.example.com:8443").is_ok());
        for bad in [
            "",
            "GitHub.com",
            "https://github.com",
            "a:0",
            "a:x",
            "a:70000",
        ] {
            assert!(check_allowed_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_is_lowercased() {
        assert_eq!(
            git_url_host("https://GitHub.com/x").as_deref(),
            Some("github.com")
        );
    }
}
