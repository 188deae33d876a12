//! Names and keys of what the controller creates for a Runtime, in one place: the
//! renderers, the dispatcher (which reads the Secret) and the injector's annotations
//! agree through these.

/// The Deployment that keeps a Runtime's warm pods: the Runtime's own name.
pub fn deployment_name(runtime: &str) -> String {
    runtime.to_owned()
}

/// The Secret holding the sidecar's bearer token and TLS certificate and key.
pub fn secret_name(runtime: &str) -> String {
    format!("{runtime}-runtimed")
}

/// The NetworkPolicy admitting only the controller to runtimed's port.
pub fn network_policy_name(runtime: &str) -> String {
    format!("{runtime}-runtimed")
}

/// Key of the bearer token in the Secret.
pub const TOKEN_KEY: &str = kruntimes_api::labels::TOKEN_SECRET_KEY;
/// Key of the sidecar's certificate (PEM) in the Secret.
pub const TLS_CERT_KEY: &str = kruntimes_api::labels::TLS_CERT_SECRET_KEY;
/// Key of the sidecar's private key (PEM) in the Secret.
pub const TLS_KEY_KEY: &str = kruntimes_api::labels::TLS_KEY_SECRET_KEY;

/// The name the sidecar's certificate is issued for. The controller connects to a pod's
/// IP and checks the certificate against this name and against the certificate in the
/// Secret (the only root it trusts for that Runtime), so no DNS name needs to resolve.
pub fn server_name(runtime: &str, namespace: &str) -> String {
    format!("{runtime}.{namespace}.runtimed.kruntimes.io")
}

/// The field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "kruntimes-controller";

#[cfg(test)]
mod tests {
    #[test]
    fn names_derive_from_the_runtime() {
        assert_eq!(super::secret_name("python"), "python-runtimed");
        assert_eq!(
            super::server_name("python", "team-a"),
            "python.team-a.runtimed.kruntimes.io"
        );
    }
}
