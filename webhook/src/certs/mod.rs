//! Serving certificates of the webhook, in two modes (`--cert-mode`):
//!
//! - `files` (the default, and the cert-manager mode): serve `--tls-cert-file` and
//!   `--tls-private-key-file` as they are; the server reloads them when they change.
//! - `self-managed`: the webhook keeps its own CA and a short-lived serving certificate in
//!   one Secret, writes the serving pair to those two files (so the same reloader serves
//!   it), and keeps `clientConfig.caBundle` of the webhook configurations it owns (found by
//!   label) equal to its CA bundle.
//!
//! The decision is pure ([`plan`]: time passed in, nothing read or written); the cluster
//! part ([`Reconciler`]) reads and writes the Secret, the files and the configurations, and
//! [`run`] repeats it. See `docs/webhook-certificates.md` for the timeline.

use time::Duration;

mod args;
mod plan;
mod reconcile;

pub use args::{CertArgs, CertMode, NameError, NamespacedName};
pub use plan::{
    Action, CertError, Corruption, Plan, SecretContents, ServingReason, ca_bundle_patch, plan,
};
pub use reconcile::{
    Outcome, ReconcileError, Reconciler, SelfManaged, SelfManagedConfig, StartError, backoff, run,
    start_self_managed, wait_after_success,
};

/// Lifetime of a generated CA: a year, so rotations are rare enough to watch, and a leaked
/// `ca.key` stops being useful within a year.
pub const CA_VALIDITY: Duration = Duration::days(365);
/// A CA is replaced once it has this much validity left (a third of [`CA_VALIDITY`]). The
/// old CA stays in the bundle until it expires, so the two overlap this long, and a webhook
/// that was down for weeks still finds a valid CA when it comes back.
pub const CA_RENEW_BEFORE: Duration = Duration::days(122);
/// Lifetime of a serving certificate: a week, so a leaked `tls.key` expires soon, yet an
/// API server outage of days (renewal needs the API) does not let it lapse.
pub const SERVING_VALIDITY: Duration = Duration::days(7);
/// A serving certificate is renewed once it has this much validity left (a third of
/// [`SERVING_VALIDITY`]): two days and more to retry a failing renewal.
pub const SERVING_RENEW_BEFORE: Duration = Duration::hours(56);
/// `notBefore` is set this far in the past, so a client whose clock runs behind accepts a
/// certificate made a moment ago (client-go's self-signed certificates do the same).
pub const NOT_BEFORE_BACKDATE: Duration = Duration::hours(1);
/// At most this many CAs in `ca-bundle.crt`. Rotation needs two (current and previous); a
/// recreation from a corrupt Secret carries over the old ones still valid. More means
/// something else wrote the Secret: the current CA and those that expire last are kept.
pub const MAX_BUNDLE_CAS: usize = 8;
/// Cluster DNS domain of the longest name in the serving certificate (the API server itself
/// calls `<service>.<namespace>.svc`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// How often the Secret, the files and the caBundles are checked when nothing is due
/// sooner: another replica's renewal is picked up, and a caBundle emptied by a re-applied
/// manifest (Helm upgrade, GitOps sync) restored, within a minute.
pub const RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// First wait after a failed reconcile; doubled after each further failure.
pub const RETRY_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait between retries, so an API outage is retried at least once a minute.
pub const RETRY_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// Write conflicts (409) on the Secret tolerated in one reconcile before it fails (and is
/// retried with backoff): each conflict means another replica wrote the Secret, whose
/// contents the next read normally accepts as they are.
pub const MAX_WRITE_ATTEMPTS: usize = 5;
/// Label selector of the webhook configurations whose caBundle is managed.
pub const DEFAULT_CA_BUNDLE_SELECTOR: &str = kruntimes_api::labels::CA_BUNDLE_SELF_MANAGED_SELECTOR;
/// Longest namespace or Service name: a DNS-1123 label (Kubernetes' own limit).
pub const MAX_LABEL_NAME_LEN: usize = kruntimes_api::v1alpha1::limits::MAX_LABEL_BYTES;
/// Longest Secret name: a DNS-1123 subdomain (Kubernetes' own limit).
pub const MAX_SECRET_NAME_LEN: usize = kruntimes_api::v1alpha1::limits::MAX_NAME_BYTES;

/// Secret key of the current CA certificate (PEM).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the current CA private key (PKCS#8 PEM).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving certificate (PEM, the leaf alone).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving private key (PKCS#8 PEM).
pub const TLS_KEY_KEY: &str = "tls.key";
/// Secret key of the CA bundle written to `caBundle` (PEM, current CA first).
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
/// Type of a Secret the webhook creates: `kubernetes.io/tls`, whose `tls.crt`/`tls.key`
/// the API server requires, so tools that read TLS Secrets understand it.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
