//! The flags of the certificate modes and the `NAMESPACE/NAME` values they take.

use std::fmt;

use kruntimes_api::validation::names::{check_dns1123_label, check_dns1123_subdomain};

use super::{CLUSTER_DOMAIN, DEFAULT_CA_BUNDLE_SELECTOR, MAX_LABEL_NAME_LEN, MAX_SECRET_NAME_LEN};

/// Where the serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    /// Serve the certificate files as they are (mounted from a Secret, e.g. cert-manager's).
    Files,
    /// Generate a CA and serving certificates, keep them in a Secret, patch caBundles.
    SelfManaged,
}

/// Flags of the certificate modes (flattened into the server's flags).
#[derive(Clone, Debug, clap::Args)]
pub struct CertArgs {
    /// Where the serving certificate comes from: `files` (the files as they are; also the
    /// cert-manager mode) or `self-managed` (own CA in a Secret, caBundle patched).
    #[arg(long, env = "KRUNTIMES_WEBHOOK_CERT_MODE", value_enum, default_value_t = CertMode::Files)]
    pub cert_mode: CertMode,
    /// The Secret holding the self-managed CA and serving certificate.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_SELF_MANAGED_SECRET",
        value_name = "NAMESPACE/NAME",
        value_parser = NamespacedName::parse_secret,
        required_if_eq("cert_mode", "self-managed")
    )]
    pub self_managed_secret: Option<NamespacedName>,
    /// The Service the API server calls the webhook through: its DNS names go into the
    /// self-managed serving certificate.
    #[arg(
        long,
        env = "KRUNTIMES_WEBHOOK_SELF_MANAGED_SERVICE",
        value_name = "NAMESPACE/NAME",
        value_parser = NamespacedName::parse_service,
        required_if_eq("cert_mode", "self-managed")
    )]
    pub self_managed_service: Option<NamespacedName>,
    /// Label selector of the Validating/MutatingWebhookConfigurations whose caBundle the
    /// self-managed mode keeps up to date.
    #[arg(long, env = "KRUNTIMES_WEBHOOK_CA_BUNDLE_SELECTOR", default_value = DEFAULT_CA_BUNDLE_SELECTOR)]
    pub ca_bundle_selector: String,
}

/// A flag value that is not a usable `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not two parts separated by one `/`.
    #[error("expected NAMESPACE/NAME, got {0:?}")]
    Shape(String),
    /// A part longer than Kubernetes allows.
    #[error("{what} {value:?} is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// Which part.
        what: &'static str,
        /// The part.
        value: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A part that is not a DNS-1123 name.
    #[error("{what} {value:?} is not a DNS-1123 name: it {reason}")]
    Invalid {
        /// Which part.
        what: &'static str,
        /// The part.
        value: String,
        /// Why, as `kruntimes_api::validation::names` says it.
        reason: String,
    },
}

/// `NAMESPACE/NAME` of a Secret or a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacedName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Checks one part: its length against `max` (so the error names the limit), then its
/// characters with the DNS-1123 rules every kruntimes component uses.
fn check_dns(
    what: &'static str,
    value: &str,
    max: usize,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), NameError> {
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            value: value.to_owned(),
            len: value.len(),
            max,
        });
    }
    check(value).map_err(|reason| NameError::Invalid {
        what,
        value: value.to_owned(),
        reason,
    })
}

impl NamespacedName {
    fn split(value: &str) -> Result<(&str, &str), NameError> {
        match value.split_once('/') {
            Some((namespace, name)) if !name.contains('/') => Ok((namespace, name)),
            _ => Err(NameError::Shape(value.to_owned())),
        }
    }

    /// Parses `NAMESPACE/NAME` of a Secret (namespace: DNS-1123 label; name: subdomain).
    pub fn parse_secret(value: &str) -> Result<Self, NameError> {
        let (namespace, name) = Self::split(value)?;
        check_dns(
            "namespace",
            namespace,
            MAX_LABEL_NAME_LEN,
            check_dns1123_label,
        )?;
        check_dns(
            "Secret name",
            name,
            MAX_SECRET_NAME_LEN,
            check_dns1123_subdomain,
        )?;
        Ok(NamespacedName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Parses `NAMESPACE/NAME` of a Service (both DNS-1123 labels).
    pub fn parse_service(value: &str) -> Result<Self, NameError> {
        let (namespace, name) = Self::split(value)?;
        check_dns(
            "namespace",
            namespace,
            MAX_LABEL_NAME_LEN,
            check_dns1123_label,
        )?;
        check_dns(
            "Service name",
            name,
            MAX_LABEL_NAME_LEN,
            check_dns1123_label,
        )?;
        Ok(NamespacedName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The DNS names of this Service: `<name>`, `<name>.<namespace>`,
    /// `<name>.<namespace>.svc`, `<name>.<namespace>.svc.cluster.local`.
    pub fn service_dns_names(&self) -> Vec<String> {
        let short = format!("{}.{}", self.name, self.namespace);
        vec![
            self.name.clone(),
            short.clone(),
            format!("{short}.svc"),
            format!("{short}.svc.{CLUSTER_DOMAIN}"),
        ]
    }

    /// The name the API server verifies when it calls the Service: `<name>.<namespace>.svc`.
    pub fn service_server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}
