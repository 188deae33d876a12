//! Authentication of the sidecar's network listener: a bearer token read from a file
//! (in a cluster, a per-Runtime Secret mounted into the sidecar only), compared in
//! constant time, re-read when the file changes so the Secret can be rotated without a
//! restart. The unix sockets are not authenticated this way: their access is the file
//! mode and who mounts the volume.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Shortest token accepted: 32 bytes (256 bits when random) cannot be guessed; a shorter
/// file is far more likely a mistake (an empty Secret key, a placeholder) than a choice.
pub const MIN_TOKEN_BYTES: usize = 32;

/// Longest token accepted: it travels in a header on every call, and a file this large
/// is not a token.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// How often the token file is checked for a change. Kubernetes updates a mounted
/// Secret within about a minute; checking more often than that costs one `stat`.
pub const TOKEN_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The gRPC metadata key carrying the token, as `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// The one answer to a missing, malformed or wrong token: no hint which it was.
const UNAUTHENTICATED: &str = "missing or invalid bearer token";

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Length outside [`MIN_TOKEN_BYTES`]..=[`MAX_TOKEN_BYTES`] (after trimming).
    #[error(
        "token file {path}: the token is {len} bytes; it must be {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes"
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// Its trimmed length.
        len: usize,
    },
    /// Bytes that cannot appear in an HTTP header value.
    #[error("token file {path}: the token must be visible ASCII (no spaces or control characters)")]
    Charset {
        /// The file.
        path: PathBuf,
    },
}

/// Reads and checks a token file. Surrounding whitespace (a trailing newline from
/// `echo` or an editor) is not part of the token.
pub fn read_token(path: &Path) -> Result<Vec<u8>, TokenError> {
    let raw = std::fs::read(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = raw.trim_ascii();
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len()) {
        return Err(TokenError::Length {
            path: path.to_owned(),
            len: token.len(),
        });
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Charset {
            path: path.to_owned(),
        });
    }
    Ok(token.to_vec())
}

/// A tonic interceptor admitting only calls that carry `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerAuth {
    token: Arc<RwLock<Arc<Vec<u8>>>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("BearerAuth").finish_non_exhaustive()
    }
}

impl BearerAuth {
    /// Loads the token from `path` (checked with [`read_token`]).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        Ok(Self {
            token: Arc::new(RwLock::new(Arc::new(read_token(path)?))),
        })
    }

    fn current(&self) -> Arc<Vec<u8>> {
        match self.token.read() {
            Ok(guard) => guard.clone(),
            // A writer panicked mid-swap; the value is a whole Arc either way.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, token: Vec<u8>) {
        let mut guard = match self.token.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(token);
    }

    /// Whether `header` (the whole `authorization` value) carries the current token.
    pub fn admits(&self, header: &[u8]) -> bool {
        let Some(presented) = header.strip_prefix(b"Bearer ") else {
            return false;
        };
        // Lengths may differ in time; contents are compared in constant time.
        bool::from(presented.ct_eq(self.current().as_slice()))
    }

    /// Re-reads the file every [`TOKEN_RELOAD_INTERVAL`] (or `interval`) when its
    /// modification time or size changed. A file that has become unreadable or invalid
    /// keeps the previous token in force and is logged: a half-written Secret update
    /// must not lock the controller out. Runs until the task is dropped.
    pub async fn watch(self, path: PathBuf, interval: Duration) {
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut last = stamp(&path);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match read_token(&path) {
                Ok(token) => {
                    self.replace(token);
                    tracing::info!(path = %path.display(), "bearer token reloaded");
                }
                Err(error) => {
                    tracing::warn!(%error, "token file changed but is not usable; keeping the previous token");
                }
            }
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let admitted = request
            .metadata()
            .get(AUTHORIZATION)
            .is_some_and(|value| self.admits(value.as_bytes()));
        if admitted {
            Ok(request)
        } else {
            Err(Status::unauthenticated(UNAUTHENTICATED))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn token_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn token_length_bounds() {
        let (_d, at_min) = token_file(&[b'a'; MIN_TOKEN_BYTES]);
        assert!(read_token(&at_min).is_ok());
        let (_d, below) = token_file(&[b'a'; MIN_TOKEN_BYTES - 1]);
        assert!(matches!(
            read_token(&below),
            Err(TokenError::Length { len, .. }) if len == MIN_TOKEN_BYTES - 1
        ));
        let (_d, at_max) = token_file(&[b'a'; MAX_TOKEN_BYTES]);
        assert!(read_token(&at_max).is_ok());
        let (_d, above) = token_file(&[b'a'; MAX_TOKEN_BYTES + 1]);
        assert!(matches!(read_token(&above), Err(TokenError::Length { .. })));
    }

    #[test]
    fn trailing_newline_is_not_part_of_the_token() {
        let token = [b'k'; 40];
        let mut content = token.to_vec();
        content.extend_from_slice(b"\n");
        let (_d, path) = token_file(&content);
        assert_eq!(read_token(&path).unwrap(), token.to_vec());
    }

    #[test]
    fn inner_space_or_control_characters_are_refused() {
        let mut content = vec![b'a'; 40];
        content[10] = b' ';
        let (_d, path) = token_file(&content);
        assert!(matches!(read_token(&path), Err(TokenError::Charset { .. })));
        content[10] = 0x07;
        let (_d, path) = token_file(&content);
        assert!(matches!(read_token(&path), Err(TokenError::Charset { .. })));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_token(Path::new("/nonexistent/krt-token")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/krt-token"));
    }

    #[test]
    fn admits_only_the_exact_bearer_token() {
        let token = "t".repeat(MIN_TOKEN_BYTES);
        let (_d, path) = token_file(token.as_bytes());
        let auth = BearerAuth::from_file(&path).unwrap();
        assert!(auth.admits(format!("Bearer {token}").as_bytes()));
        assert!(!auth.admits(token.as_bytes()));
        assert!(!auth.admits(format!("bearer {token}").as_bytes()));
        assert!(!auth.admits(format!("Bearer {token}x").as_bytes()));
        assert!(!auth.admits(format!("Bearer {}", &token[1..]).as_bytes()));
        assert!(!auth.admits(b"Bearer "));
        assert!(!auth.admits(b""));
        assert!(!format!("{auth:?}").contains(&token));
    }

    #[tokio::test]
    async fn rotation_replaces_the_token_and_a_bad_update_keeps_the_old_one() {
        let old = "o".repeat(MIN_TOKEN_BYTES);
        let new = "n".repeat(MIN_TOKEN_BYTES + 8);
        let (_d, path) = token_file(old.as_bytes());
        let auth = BearerAuth::from_file(&path).unwrap();
        let watcher = tokio::spawn(auth.clone().watch(path.clone(), Duration::from_millis(10)));

        std::fs::write(&path, b"short").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(auth.admits(format!("Bearer {old}").as_bytes()));

        std::fs::write(&path, new.as_bytes()).unwrap();
        let mut rotated = false;
        for _ in 0..200 {
            if auth.admits(format!("Bearer {new}").as_bytes()) {
                rotated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        watcher.abort();
        assert!(rotated, "the new token was never picked up");
        assert!(!auth.admits(format!("Bearer {old}").as_bytes()));
    }
}
