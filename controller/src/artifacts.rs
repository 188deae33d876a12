//! The deletion of a Run's uploaded artifacts from its S3-compatible store, with the
//! credentials of the Secret its `status.artifactStore` names: the controller's only
//! S3 client. It needs nothing of the Runtime (which may be gone or scaled to zero):
//! the store, the keys and the Secret's name are all in the Run's status.
//!
//! The objects go in one `DeleteObjects` request per 1000 keys (object_store's
//! `delete_stream`), which S3 answers with success for a key that does not exist: a
//! repeated cleanup deletes nothing twice and fails on nothing already gone. A `404`
//! to it therefore means the bucket itself is missing (S3's `NoSuchBucket`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kruntimes_api::v1alpha1::ArtifactStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

/// The Secret key holding the access key id (the sidecar reads the same key).
pub const ACCESS_KEY_ID_KEY: &str = "AWS_ACCESS_KEY_ID";
/// The Secret key holding the secret access key.
pub const SECRET_ACCESS_KEY_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Time for the deletion of one Run's objects, retries included: one `DeleteObjects`
/// request for up to 1000 keys (the most `status.artifacts` holds). A store that does
/// not answer fails this cleanup (retried later) instead of holding the reconcile.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries of one request on a transient error (connection refused, 5xx) within one
/// cleanup; the cleanup itself is retried with backoff after that.
pub const MAX_RETRIES: usize = 2;

/// Why the artifacts of a Run cannot be deleted now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// The credentials Secret lacks a key, or holds an empty value.
    #[error("Secret {secret}: {reason}")]
    CredentialsInvalid {
        /// The Secret's name.
        secret: String,
        /// What is wrong.
        reason: String,
    },
    /// The recorded store cannot be used (its endpoint is not an http(s) URL).
    #[error("status.artifactStore.{field}: {reason}")]
    StoreInvalid {
        /// The field of `status.artifactStore`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// S3 credentials; never logged (Debug redacts them).
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Credentials from their two values.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    /// The credentials in `secret`'s [`ACCESS_KEY_ID_KEY`] and [`SECRET_ACCESS_KEY_KEY`]
    /// (a trailing newline, as `kubectl create secret --from-file` keeps, is dropped).
    pub fn from_secret(secret: &Secret) -> Result<Self, ArtifactError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let read = |key: &str| {
            let value = secret
                .data
                .as_ref()
                .and_then(|data| data.get(key))
                .ok_or_else(|| ArtifactError::CredentialsInvalid {
                    secret: name.clone(),
                    reason: format!("has no key {key}"),
                })?;
            let text = String::from_utf8(value.0.clone()).map_err(|_| {
                ArtifactError::CredentialsInvalid {
                    secret: name.clone(),
                    reason: format!("{key} is not UTF-8"),
                }
            })?;
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            if text.is_empty() {
                return Err(ArtifactError::CredentialsInvalid {
                    secret: name.clone(),
                    reason: format!("{key} is empty"),
                });
            }
            Ok(text)
        };
        Ok(Self {
            access_key_id: read(ACCESS_KEY_ID_KEY)?,
            secret_access_key: read(SECRET_ACCESS_KEY_KEY)?,
        })
    }
}

/// An S3 client for `store`: path-style requests to its endpoint, as the sidecar made
/// them; each request bounded by `timeout`.
pub fn build_store(
    store: &ArtifactStore,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<AmazonS3, ArtifactError> {
    // object_store's reqwest has no rustls provider of its own (one crypto stack in the
    // workspace); the binary installs ring at start, tests may not have. Idempotent.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain_http = match store.endpoint.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() => false,
        Some(("http", rest)) if !rest.is_empty() => true,
        _ => {
            return Err(ArtifactError::StoreInvalid {
                field: "endpoint",
                reason: format!("{:?} is not an http(s) URL", store.endpoint),
            });
        }
    };
    AmazonS3Builder::new()
        .with_endpoint(&store.endpoint)
        .with_region(store.region.as_deref().unwrap_or("us-east-1"))
        .with_bucket_name(&store.bucket)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(&credentials.secret_access_key)
        .with_virtual_hosted_style_request(false)
        // The sidecar already sent this store signed requests over the same scheme (it
        // refuses plain http unless loopback or allowed by its operator).
        .with_client_options(
            ClientOptions::new()
                .with_timeout(timeout)
                .with_allow_http(plain_http),
        )
        .with_retry(RetryConfig {
            max_retries: MAX_RETRIES,
            ..RetryConfig::default()
        })
        .build()
        .map_err(|e| ArtifactError::StoreInvalid {
            field: "endpoint",
            reason: e.to_string(),
        })
}

/// What deleting one Run's objects came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Every object is gone (deleted now or before).
    Deleted,
    /// The bucket does not exist: nothing can be deleted, and retrying will not change
    /// that until it is created again.
    BucketMissing,
    /// The store refused the credentials (403/401); the message is the store's.
    AccessDenied(String),
    /// A key in `status.artifacts` is not a valid object path: retrying will not help.
    KeyInvalid(String),
    /// A failure that may pass (no answer, a 5xx): retry later.
    Transient(String),
}

/// What the deletion of one key came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyOutcome {
    Deleted,
    BucketMissing,
    AccessDenied(String),
    Transient(String),
}

/// Deletes every key of `keys` from `store` (one request per 1000 keys), all of it
/// bounded by `timeout`; a bucket found missing or access denied wins over a
/// transient failure (retrying will not fix them).
pub async fn delete_objects(
    store: Arc<dyn ObjectStore>,
    keys: &[String],
    timeout: Duration,
) -> DeleteOutcome {
    let mut locations = Vec::with_capacity(keys.len());
    for key in keys {
        match ObjectPath::parse(key) {
            Ok(location) => locations.push(Ok(location)),
            Err(e) => return DeleteOutcome::KeyInvalid(format!("key {key:?}: {e}")),
        }
    }
    let deleted = store.delete_stream(futures::stream::iter(locations).boxed());
    let results: Vec<_> = match tokio::time::timeout(timeout, deleted.collect()).await {
        Ok(results) => results,
        Err(_) => {
            return DeleteOutcome::Transient(format!(
                "delete {} object(s): no answer within {}s",
                keys.len(),
                timeout.as_secs_f64()
            ));
        }
    };
    let mut transient = None;
    let mut denied = None;
    for result in results {
        match result.map_or_else(|e| classify(&e), |_| KeyOutcome::Deleted) {
            KeyOutcome::Deleted => {}
            KeyOutcome::BucketMissing => return DeleteOutcome::BucketMissing,
            KeyOutcome::AccessDenied(message) => denied = Some(message),
            KeyOutcome::Transient(message) => transient = Some(message),
        }
    }
    match (denied, transient) {
        (Some(message), _) => DeleteOutcome::AccessDenied(message),
        (None, Some(message)) => DeleteOutcome::Transient(message),
        (None, None) => DeleteOutcome::Deleted,
    }
}

fn classify(error: &object_store::Error) -> KeyOutcome {
    let text = format!("delete: {}", error_chain(error));
    match error {
        // S3 answers a missing key's delete with success, so a 404 is the bucket's; a
        // store that does answer 404 for a missing key has nothing left to delete.
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
            KeyOutcome::BucketMissing
        }
        object_store::Error::NotFound { .. } => KeyOutcome::Deleted,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => KeyOutcome::AccessDenied(text),
        // A key the store refused inside a `DeleteObjects` answer, with S3's code.
        _ if text.contains("AccessDenied") => KeyOutcome::AccessDenied(text),
        _ => KeyOutcome::Transient(text),
    }
}

/// An error and its causes, `: `-separated (object_store's own message hides the
/// cause, such as "connection refused" or the store's error code).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("s3".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_come_from_both_keys_of_the_secret() {
        let c = Credentials::from_secret(&secret(&[
            (ACCESS_KEY_ID_KEY, "AKID\n"),
            (SECRET_ACCESS_KEY_KEY, "hidden"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key, "hidden");
        assert!(!format!("{c:?}").contains("hidden"));
    }

    #[test]
    fn a_missing_or_empty_key_is_named() {
        let missing = Credentials::from_secret(&secret(&[(ACCESS_KEY_ID_KEY, "AKID")]));
        assert_eq!(
            missing.unwrap_err().to_string(),
            "Secret s3: has no key AWS_SECRET_ACCESS_KEY"
        );
        let empty = Credentials::from_secret(&secret(&[
            (ACCESS_KEY_ID_KEY, "\n"),
            (SECRET_ACCESS_KEY_KEY, "x"),
        ]));
        assert_eq!(
            empty.unwrap_err().to_string(),
            "Secret s3: AWS_ACCESS_KEY_ID is empty"
        );
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused() {
        let store = ArtifactStore {
            endpoint: "ftp://store".into(),
            bucket: "b".into(),
            ..Default::default()
        };
        let err = build_store(&store, &Credentials::new("a", "b"), DELETE_TIMEOUT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "status.artifactStore.endpoint: \"ftp://store\" is not an http(s) URL"
        );
    }
}
