//! The upload of matched files to the S3 store, a few at once within a memory budget,
//! and the rollback of every object whose upload started when one fails.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::collect::{Matched, collect, read_file};
use super::credentials::{CredentialSource, Credentials};
use super::request::{check_endpoint, check_request};
use super::{
    ArtifactError, DEFAULT_MAX_BYTES, DELETE_TIMEOUT, MAX_IN_FLIGHT_BYTES, MAX_RETRIES,
    UPLOAD_CONCURRENCY, UPLOAD_TIMEOUT,
};
use crate::{lock, proto};

/// Installs ring as rustls's process-wide provider (object_store's reqwest is built
/// without one, so the workspace has a single crypto stack). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An S3 client for `store`: path-style requests to the given endpoint.
pub fn build_store(
    store: &proto::S3Store,
    credentials: &Credentials,
    allow_http: bool,
) -> Result<AmazonS3, ArtifactError> {
    install_crypto_provider();
    check_endpoint(&store.endpoint, allow_http)?;
    let region = if store.region.is_empty() {
        "us-east-1"
    } else {
        &store.region
    };
    AmazonS3Builder::new()
        .with_endpoint(&store.endpoint)
        .with_region(region)
        .with_bucket_name(&store.bucket)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(&credentials.secret_access_key)
        .with_virtual_hosted_style_request(false)
        // allow_http is one of the client options: set both at once (a later
        // with_client_options would reset it).
        .with_client_options(
            ClientOptions::new()
                .with_timeout(UPLOAD_TIMEOUT)
                .with_allow_http(store.endpoint.starts_with("http://")),
        )
        .with_retry(RetryConfig {
            max_retries: MAX_RETRIES,
            ..RetryConfig::default()
        })
        .build()
        .map_err(|e| ArtifactError::StoreInvalid {
            field: "store",
            reason: e.to_string(),
        })
}

/// The object key of `path` for `run_uid`.
pub fn object_key(prefix: &str, run_uid: &str, path: &str) -> String {
    format!("{prefix}{run_uid}/{path}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Uploads `files` (from [`collect`]) and returns their results in path order; on any
/// failure deletes every object whose upload started and returns the error.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    workspace: &Path,
    run_uid: &str,
    prefix: &str,
    files: Vec<Matched>,
) -> Result<Vec<proto::ArtifactResult>, ArtifactError> {
    let started: Arc<Mutex<Vec<ObjectPath>>> = Arc::default();
    // Permits are KiB, so one u32 covers MAX_IN_FLIGHT_BYTES.
    let budget_kib = (MAX_IN_FLIGHT_BYTES / 1024) as u32;
    let budget = Arc::new(Semaphore::new(budget_kib as usize));
    let uploads = files.into_iter().map(|matched| {
        let store = store.clone();
        let started = started.clone();
        let budget = budget.clone();
        let workspace = workspace.to_owned();
        let key = object_key(prefix, run_uid, &matched.path);
        async move {
            let fail = |reason: String| (key.clone(), reason);
            let kib = (matched.size.div_ceil(1024)).min(u64::from(budget_kib)) as u32;
            let _permit = budget
                .acquire_many(kib.max(1))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let read = matched.clone();
            let content = tokio::task::spawn_blocking(move || read_file(&workspace, &read))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?;
            let sha256 = hex(&Sha256::digest(&content));
            let location = ObjectPath::parse(&key).map_err(|e| fail(e.to_string()))?;
            lock(&started).push(location.clone());
            match tokio::time::timeout(
                UPLOAD_TIMEOUT,
                store.put(&location, PutPayload::from(content)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(proto::ArtifactResult {
                    path: matched.path,
                    key,
                    size: matched.size,
                    sha256,
                }),
                Ok(Err(e)) => Err(fail(error_chain(&e))),
                Err(_) => Err(fail(format!("no answer within {UPLOAD_TIMEOUT:?}"))),
            }
        }
    });
    let mut stream = futures::stream::iter(uploads).buffer_unordered(UPLOAD_CONCURRENCY);
    let mut results = Vec::new();
    let mut failure = None;
    while let Some(result) = stream.next().await {
        match result {
            Ok(r) => results.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Dropping the stream cancels the uploads still running; their keys are in `started`.
    drop(stream);
    if let Some((key, reason)) = failure {
        let keys = std::mem::take(&mut *lock(&started));
        let rollback = rollback(store.as_ref(), keys).await;
        return Err(ArtifactError::UploadFailed {
            key,
            reason,
            rollback,
        });
    }
    results.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(results)
}

/// Deletes `keys`; says what happened.
async fn rollback(store: &dyn ObjectStore, keys: Vec<ObjectPath>) -> String {
    let mut left = Vec::new();
    for key in &keys {
        match tokio::time::timeout(DELETE_TIMEOUT, store.delete(key)).await {
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => {}
            Ok(Err(e)) => {
                tracing::warn!(%key, error = error_chain(&e), "artifact rollback: delete failed");
                left.push(key.to_string());
            }
            Err(_) => left.push(key.to_string()),
        }
    }
    if left.is_empty() {
        format!("rolled back: {} uploaded object(s) deleted", keys.len())
    } else {
        format!("rollback incomplete: could not delete {}", left.join(", "))
    }
}

/// An error and its causes, `: `-separated (object_store's own message hides the
/// cause, such as "connection refused").
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

/// Everything in one call: match, check, upload (or roll back).
pub async fn upload_workspace(
    workspace: &Path,
    run_uid: &str,
    request: &proto::ArtifactRequest,
    credentials: &CredentialSource,
    allow_http: bool,
) -> Result<Vec<proto::ArtifactResult>, ArtifactError> {
    let globs = check_request(request, allow_http)?;
    let store = request.store.clone().unwrap_or_default();
    let max_bytes = if request.max_bytes == 0 {
        DEFAULT_MAX_BYTES
    } else {
        request.max_bytes
    };
    let root = workspace.to_owned();
    let files = tokio::task::spawn_blocking(move || collect(&root, &globs, max_bytes))
        .await
        .map_err(|e| ArtifactError::ReadFailed {
            path: workspace.display().to_string(),
            reason: e.to_string(),
        })??;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let client = build_store(&store, &credentials.load()?, allow_http)?;
    upload(Arc::new(client), workspace, run_uid, &store.prefix, files).await
}
