//! The sidecar's S3 credentials: read from a mounted Secret's directory or from its
//! environment, again before each Run's upload.

use std::path::PathBuf;

use super::ArtifactError;

/// S3 credentials; never logged (Debug redacts them).
#[derive(Clone)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Where the sidecar reads its credentials, again before each Run's upload (so a
/// rotated Secret is picked up without a restart).
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// A directory holding the files `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`:
    /// the Runtime's `credentialsSecretRef` Secret mounted as a volume.
    Dir(PathBuf),
    /// The sidecar's environment variables of the same names.
    Env,
}

const ACCESS_KEY_NAME: &str = "AWS_ACCESS_KEY_ID";
const SECRET_KEY_NAME: &str = "AWS_SECRET_ACCESS_KEY";

impl CredentialSource {
    /// Reads the credentials now.
    pub fn load(&self) -> Result<Credentials, ArtifactError> {
        let (access_key_id, secret_access_key) = match self {
            Self::Dir(dir) => {
                let read = |name: &str| {
                    std::fs::read_to_string(dir.join(name))
                        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                        .map_err(|e| {
                            ArtifactError::NoCredentials(format!(
                                "{}: {e}",
                                dir.join(name).display()
                            ))
                        })
                };
                (read(ACCESS_KEY_NAME)?, read(SECRET_KEY_NAME)?)
            }
            Self::Env => {
                let read = |name: &str| {
                    std::env::var(name).map_err(|_| {
                        ArtifactError::NoCredentials(format!(
                            "{name} is not set in the sidecar's environment and no --s3-credentials-dir was given"
                        ))
                    })
                };
                (read(ACCESS_KEY_NAME)?, read(SECRET_KEY_NAME)?)
            }
        };
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err(ArtifactError::NoCredentials(
                "the access key id or the secret access key is empty".into(),
            ));
        }
        Ok(Credentials {
            access_key_id,
            secret_access_key,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Reason;

    #[test]
    fn credentials_from_a_mounted_secret_directory() {
        let dir = tempfile::tempdir().unwrap();
        let source = CredentialSource::Dir(dir.path().to_owned());
        assert_eq!(
            source.load().unwrap_err().reason(),
            Some(Reason::NoArtifactCredentials)
        );
        std::fs::write(dir.path().join(ACCESS_KEY_NAME), "AKID\n").unwrap();
        std::fs::write(dir.path().join(SECRET_KEY_NAME), "secret").unwrap();
        let c = source.load().unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKID", "secret")
        );
        assert!(!format!("{c:?}").contains("secret"));
    }
}
