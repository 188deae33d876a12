//! The Secret holding runtimed's credentials for one Runtime.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kruntimes_api::v1alpha1::Runtime;

use super::Owner;
use crate::Error;
use crate::naming;
use crate::runtime::credentials::Credentials;

/// The Secret of `runtime`: type `Opaque`, the bearer token, the certificate and the
/// key under [`naming::TOKEN_KEY`], [`naming::TLS_CERT_KEY`] and [`naming::TLS_KEY_KEY`].
pub fn secret(runtime: &Runtime, credentials: &Credentials) -> Result<Secret, Error> {
    let owner = Owner::of(runtime)?;
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Ok(Secret {
        metadata: owner.metadata(naming::secret_name(&owner.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (naming::TOKEN_KEY.to_owned(), bytes(credentials.token())),
            (
                naming::TLS_CERT_KEY.to_owned(),
                bytes(credentials.certificate_pem()),
            ),
            (
                naming::TLS_KEY_KEY.to_owned(),
                bytes(credentials.private_key_pem()),
            ),
        ])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use kruntimes_api::labels::RUNTIME_LABEL;

    use super::super::fixtures::runtime;
    use super::super::{MANAGED_BY, MANAGED_BY_LABEL};
    use super::*;
    use crate::runtime::credentials::{self, Credentials};

    #[test]
    fn holds_the_three_keys_and_is_owned() {
        let rt = runtime();
        let creds = Credentials::generate(
            &naming::server_name("python", "team-a"),
            credentials::now_in_seconds(),
        )
        .unwrap();
        let s = secret(&rt, &creds).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("python-runtimed"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[RUNTIME_LABEL], "python");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        let data = s.data.unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(text(naming::TOKEN_KEY), creds.token());
        assert_eq!(text(naming::TLS_CERT_KEY), creds.certificate_pem());
        assert_eq!(text(naming::TLS_KEY_KEY), creds.private_key_pem());
    }
}
