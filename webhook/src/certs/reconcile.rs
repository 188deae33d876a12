//! The cluster part: the [`Reconciler`] reads and writes the Secret, the files and the
//! webhook configurations; [`run`] repeats it, with backoff after failures.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use super::plan::{Action, CertError, Plan, SecretContents, ca_bundle_patch, plan};
use super::{
    CertArgs, MAX_WRITE_ATTEMPTS, NamespacedName, RESYNC_INTERVAL, RETRY_BACKOFF_INITIAL,
    RETRY_BACKOFF_MAX, SECRET_TYPE,
};

/// What the cluster part works on.
#[derive(Clone, Debug)]
pub struct SelfManagedConfig {
    /// The Secret.
    pub secret: NamespacedName,
    /// The Service (names of the serving certificate).
    pub service: NamespacedName,
    /// Label selector of the webhook configurations to patch.
    pub ca_bundle_selector: String,
    /// Where the serving certificate is written (`--tls-cert-file`).
    pub cert_file: PathBuf,
    /// Where its key is written (`--tls-private-key-file`).
    pub key_file: PathBuf,
}

/// A failed step of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the Secret.
    #[error("cannot read Secret {secret}: {source}")]
    ReadSecret {
        /// The Secret.
        secret: NamespacedName,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Creating or updating the Secret.
    #[error("cannot write Secret {secret}: {source}")]
    WriteSecret {
        /// The Secret.
        secret: NamespacedName,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Every write attempt met a conflict.
    #[error("Secret {secret} changed under every one of {attempts} writes")]
    Conflicts {
        /// The Secret.
        secret: NamespacedName,
        /// Attempts made.
        attempts: usize,
    },
    /// Generating or signing.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// Writing a certificate file.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Listing webhook configurations.
    #[error("cannot list {kind}s with labels {selector:?}: {source}")]
    ListConfigurations {
        /// The kind.
        kind: &'static str,
        /// The selector.
        selector: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Patching a caBundle.
    #[error("cannot patch caBundle of {kind} {name}: {source}")]
    PatchCaBundle {
        /// The kind.
        kind: &'static str,
        /// The configuration.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Building the patch (never expected: the patch is made of strings).
    #[error("cannot build the caBundle patch: {0}")]
    BuildPatch(#[from] serde_json::Error),
}

impl ReconcileError {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::ReadSecret { .. } => "read_secret",
            ReconcileError::WriteSecret { .. } => "write_secret",
            ReconcileError::Conflicts { .. } => "conflicts",
            ReconcileError::Certificate(_) => "certificate",
            ReconcileError::WriteFile { .. } => "write_file",
            ReconcileError::ListConfigurations { .. } => "list_configurations",
            ReconcileError::PatchCaBundle { .. } => "patch_ca_bundle",
            ReconcileError::BuildPatch(_) => "build_patch",
        }
    }
}

/// What one reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The decision taken on the Secret (after conflicts, the last one).
    pub action: Action,
    /// Whether the certificate files were (re)written.
    pub files_written: bool,
    /// `Kind/name` of each configuration patched.
    pub patched: Vec<String>,
    /// When something is due next.
    pub next_due: OffsetDateTime,
}

/// Reads and writes the Secret, the files and the webhook configurations.
#[derive(Clone)]
pub struct Reconciler {
    client: kube::Client,
    config: SelfManagedConfig,
}

impl fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconciler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory and a
/// rename, so a reader sees the old or the new file, never a part. Unchanged content is
/// not written. Returns whether it wrote.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path.file_name().map_or_else(
        || "certificate".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{file_name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    Ok(true)
}

impl Reconciler {
    /// A reconciler on `client`.
    pub fn new(client: kube::Client, config: SelfManagedConfig) -> Self {
        Reconciler { client, config }
    }

    /// One round at `now`: converge the Secret, patch the caBundles that differ, then write
    /// the files (patching first, so a new CA is trusted before anything it signed is
    /// served).
    pub async fn reconcile(&self, now: OffsetDateTime) -> Result<Outcome, ReconcileError> {
        let plan = self.converge_secret(now).await?;
        let (mut patched, validating) = self
            .patch_kind::<ValidatingWebhookConfiguration>(
                "ValidatingWebhookConfiguration",
                &plan.contents.ca_bundle,
                |c| {
                    named_bundles(
                        c.webhooks
                            .iter()
                            .flatten()
                            .map(|w| (&w.name, w.client_config.ca_bundle.as_ref())),
                    )
                },
            )
            .await?;
        let (mutating_patched, mutating) = self
            .patch_kind::<MutatingWebhookConfiguration>(
                "MutatingWebhookConfiguration",
                &plan.contents.ca_bundle,
                |c| {
                    named_bundles(
                        c.webhooks
                            .iter()
                            .flatten()
                            .map(|w| (&w.name, w.client_config.ca_bundle.as_ref())),
                    )
                },
            )
            .await?;
        patched.extend(mutating_patched);
        if validating + mutating == 0 {
            tracing::warn!(selector = %self.config.ca_bundle_selector, "no webhook configuration carries the caBundle label: the API server cannot trust this webhook until one does");
        }
        // The key first: until the certificate follows, the server sees a pair that does
        // not match, refuses it and keeps serving the old one.
        let key_written = self.write_file(&self.config.key_file, &plan.contents.tls_key, 0o600)?;
        let cert_written =
            self.write_file(&self.config.cert_file, &plan.contents.tls_crt, 0o644)?;
        Ok(Outcome {
            action: plan.action,
            files_written: key_written || cert_written,
            patched,
            next_due: plan.next_due,
        })
    }

    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<bool, ReconcileError> {
        write_atomically(path, contents, mode).map_err(|source| ReconcileError::WriteFile {
            path: path.to_owned(),
            source,
        })
    }

    async fn converge_secret(&self, now: OffsetDateTime) -> Result<Plan, ReconcileError> {
        let secret = &self.config.secret;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let existing =
                api.get_opt(&secret.name)
                    .await
                    .map_err(|source| ReconcileError::ReadSecret {
                        secret: secret.clone(),
                        source,
                    })?;
            let current = existing
                .as_ref()
                .map(|s| SecretContents::from_data(&s.data.clone().unwrap_or_default()));
            let plan = plan(now, current.as_ref(), &self.config.service)?;
            if !plan.action.writes_secret() {
                return Ok(plan);
            }
            tracing::info!(secret = %secret, action = %plan.action, "writing the certificate Secret");
            let written = match existing {
                None => api
                    .create(&PostParams::default(), &self.new_secret(&plan.contents))
                    .await
                    .map(drop),
                Some(mut stored) => {
                    // Other keys, labels and the type stay; resourceVersion makes this
                    // write fail if another replica wrote since our read.
                    let mut data = stored.data.take().unwrap_or_default();
                    data.extend(plan.contents.to_data());
                    stored.data = Some(data);
                    api.replace(&secret.name, &PostParams::default(), &stored)
                        .await
                        .map(drop)
                }
            };
            match written {
                Ok(()) => return Ok(plan),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(secret = %secret, "another replica wrote the Secret first; reading it again");
                }
                Err(source) => {
                    return Err(ReconcileError::WriteSecret {
                        secret: secret.clone(),
                        source,
                    });
                }
            }
        }
        Err(ReconcileError::Conflicts {
            secret: secret.clone(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    fn new_secret(&self, contents: &SecretContents) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.config.secret.name.clone()),
                namespace: Some(self.config.secret.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/name".to_owned(),
                        "kruntimes-webhook".to_owned(),
                    ),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "kruntimes-webhook".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some(SECRET_TYPE.to_owned()),
            data: Some(contents.to_data()),
            ..Secret::default()
        }
    }

    /// Patches the configurations of one kind that differ: (patched, found).
    async fn patch_kind<K>(
        &self,
        kind: &'static str,
        bundle: &[u8],
        webhooks: impl Fn(&K) -> Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(Vec<String>, usize), ReconcileError>
    where
        K: kube::Resource<Scope = kube::core::ClusterResourceScope>
            + Clone
            + fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let selector = &self.config.ca_bundle_selector;
        let api: Api<K> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| ReconcileError::ListConfigurations {
                kind,
                selector: selector.clone(),
                source,
            })?;
        let mut patched = Vec::new();
        for config in &list.items {
            let Some(patch) = ca_bundle_patch(&webhooks(config), bundle)? else {
                continue;
            };
            let name = config.meta().name.clone().unwrap_or_default();
            api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(|source| ReconcileError::PatchCaBundle {
                    kind,
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(kind, name = %name, "caBundle patched");
            patched.push(format!("{kind}/{name}"));
        }
        Ok((patched, list.items.len()))
    }
}

/// How long to sleep after a successful round: until `next_due`, at least a second, at
/// most [`RESYNC_INTERVAL`].
pub fn wait_after_success(now: OffsetDateTime, next_due: OffsetDateTime) -> std::time::Duration {
    let seconds = u64::try_from((next_due - now).whole_seconds()).unwrap_or(0);
    std::time::Duration::from_secs(seconds.max(1)).min(RESYNC_INTERVAL)
}

/// The wait after `failures` failed rounds in a row (1 for the first): doubling from
/// [`RETRY_BACKOFF_INITIAL`] up to [`RETRY_BACKOFF_MAX`].
pub fn backoff(failures: u32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_BACKOFF_INITIAL
        .saturating_mul(1 << doublings)
        .min(RETRY_BACKOFF_MAX)
}

/// Reconciles forever: after a success, again when something is due or after
/// [`RESYNC_INTERVAL`]; after a failure, with [`backoff`]. `ready` turns true after the
/// first success (certificate written and caBundles patched) and stays true: a later API
/// outage does not take serving replicas out, since what they serve stays valid for days.
pub async fn run(reconciler: Reconciler, ready: tokio::sync::watch::Sender<bool>) {
    let mut failures = 0u32;
    loop {
        let now = OffsetDateTime::now_utc();
        let wait = match reconciler.reconcile(now).await {
            Ok(outcome) => {
                failures = 0;
                if outcome.action.writes_secret()
                    || outcome.files_written
                    || !outcome.patched.is_empty()
                {
                    tracing::info!(action = %outcome.action, files_written = outcome.files_written, patched = ?outcome.patched, "certificates reconciled");
                }
                if !ready.send_replace(true) {
                    tracing::info!("self-managed certificate in place: ready");
                }
                wait_after_success(now, outcome.next_due)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                tracing::warn!(error = %error, step = error.metric_label(), retry_in = ?wait, "certificate reconcile failed");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Why the self-managed mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag the mode needs is missing.
    #[error("{0} is required with --cert-mode self-managed")]
    MissingFlag(&'static str),
}

/// The running self-managed mode.
#[derive(Debug)]
pub struct SelfManaged {
    /// True once the certificate is written and the caBundles patched.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The loop; abort it to stop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts [`run`] with the in-cluster (or KUBECONFIG) client, writing to the given files.
pub async fn start_self_managed(
    client: kube::Client,
    args: &CertArgs,
    cert_file: &Path,
    key_file: &Path,
) -> Result<SelfManaged, StartError> {
    let secret = args
        .self_managed_secret
        .clone()
        .ok_or(StartError::MissingFlag("--self-managed-secret"))?;
    let service = args
        .self_managed_service
        .clone()
        .ok_or(StartError::MissingFlag("--self-managed-service"))?;
    let reconciler = Reconciler::new(
        client,
        SelfManagedConfig {
            secret,
            service,
            ca_bundle_selector: args.ca_bundle_selector.clone(),
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
        },
    );
    let (sender, ready) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(reconciler, sender));
    Ok(SelfManaged { ready, task })
}

/// Each webhook's name and current caBundle, as [`ca_bundle_patch`] compares them.
fn named_bundles<'a>(
    webhooks: impl Iterator<Item = (&'a String, Option<&'a k8s_openapi::ByteString>)>,
) -> Vec<(String, Option<Vec<u8>>)> {
    webhooks
        .map(|(name, bundle)| (name.clone(), bundle.map(|b| b.0.clone())))
        .collect()
}
