//! The HTTPS call to one webhook: where it goes (`clientConfig.url`, or
//! `clientConfig.service` through the resolver), TLS verified against `caBundle` only,
//! one HTTP/1.1 POST under the webhook's timeout, on a kept-alive connection of the
//! [`ConnectionPool`] when one is idle.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::ServiceResolver;
use super::pool::{Connection, ConnectionPool, TargetKey};

/// Largest webhook answer read, so a webhook that streams without end fails its call
/// instead of filling the test process's memory. A review of the largest object the
/// apiserver stores (about 1.5 MiB in etcd) with a patch that replaces all of it fits.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// A Service a webhook's `clientConfig.service` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// `service.namespace`
    pub namespace: String,
    /// `service.name`
    pub name: String,
    /// `service.port`, 443 when unset.
    pub port: u16,
}

/// Where a webhook is called, resolved from its `clientConfig`.
#[derive(Debug)]
pub(crate) struct Target {
    server_name: ServerName<'static>,
    host: String,
    path_and_query: String,
    /// `https://HOST:PORT/PATH?timeout=..`, as the apiserver's errors show it.
    pub(crate) url: String,
    tls: Arc<rustls::ClientConfig>,
    /// The address connected to, with what a kept connection is reused for.
    key: TargetKey,
}

/// `10s`: the `?timeout=` the apiserver appends.
fn go_duration(timeout: Duration) -> String {
    format!("{}s", timeout.as_secs())
}

impl Target {
    /// Resolves `config`. An error is worded as part of "failed calling webhook".
    pub(crate) async fn resolve(
        config: &WebhookClientConfig,
        resolver: &ServiceResolver,
        pool: &ConnectionPool,
        timeout: Duration,
    ) -> Result<Target, String> {
        let ca_bundle = config
            .ca_bundle
            .as_ref()
            .map_or(&[][..], |b| b.0.as_slice());
        let tls = pool.tls(ca_bundle, tls_config)?;
        let query = format!("timeout={}", go_duration(timeout));
        if let Some(service) = &config.service {
            let port = match service.port {
                None => 443,
                Some(p) => {
                    u16::try_from(p).map_err(|_| format!("service port {p} is not a TCP port"))?
                }
            };
            let service_ref = ServiceRef {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                port,
            };
            let host = format!("{}.{}.svc", service.name, service.namespace);
            let path = service.path.as_deref().unwrap_or("/");
            let url = format!("https://{host}:{port}{path}?{query}");
            let addr = resolver(&service_ref).ok_or_else(|| {
                format!(
                    "service \"{}/{}\" not found",
                    service.namespace, service.name
                )
            })?;
            let server_name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            return Ok(Target {
                key: TargetKey {
                    addr,
                    server_name: host.clone(),
                    ca_bundle: ca_bundle.to_vec(),
                },
                server_name,
                host,
                path_and_query: format!("{path}?{query}"),
                url,
                tls,
            });
        }
        let Some(raw) = &config.url else {
            return Err("clientConfig has neither url nor service".to_owned());
        };
        let mut url = url::Url::parse(raw).map_err(|e| format!("clientConfig.url {raw:?}: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!(
                "clientConfig.url {raw:?}: the scheme must be https"
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("clientConfig.url {raw:?} has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("dial tcp: lookup {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("dial tcp: lookup {host}: no address"))?;
        let server_name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let existing = url.query().map(str::to_owned);
        url.set_query(Some(&match existing {
            Some(q) if !q.is_empty() => format!("{q}&{query}"),
            _ => query,
        }));
        let path_and_query = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        Ok(Target {
            key: TargetKey {
                addr,
                server_name: host.clone(),
                ca_bundle: ca_bundle.to_vec(),
            },
            server_name,
            host: format!("{host}:{port}"),
            path_and_query,
            url: url.to_string(),
            tls,
        })
    }

    /// A new connection: TCP, the TLS handshake verifying the server, HTTP/1.1.
    async fn connect(&self) -> Result<Connection, String> {
        let tcp = tokio::net::TcpStream::connect(self.key.addr)
            .await
            .map_err(|e| format!("dial tcp {}: {e}", self.key.addr))?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Connection {
            sender,
            driver: tokio::spawn(connection),
        })
    }

    fn request(&self, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, String> {
        hyper::Request::post(self.path_and_query.as_str())
            .header("host", self.host.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())
    }

    /// POSTs `body`; returns the answer's body once it is a 200. An idle connection of
    /// `pool` is used when there is one; a request it could not send (the webhook closed
    /// it while idle) goes on a new connection, as Go's transport retries a request
    /// nothing of which was written. The connection goes back to `pool` after a 200.
    pub(crate) async fn post(
        &self,
        pool: &ConnectionPool,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let body = Bytes::from(body);
        let mut sent = None;
        if let Some(mut connection) = pool.take(&self.key)
            && connection.sender.ready().await.is_ok()
        {
            match connection
                .sender
                .try_send_request(self.request(body.clone())?)
                .await
            {
                Ok(response) => sent = Some((connection, response)),
                Err(e) if e.message().is_some() => {}
                Err(e) => return Err(e.into_error().to_string()),
            }
        }
        let (connection, response) = match sent {
            Some(sent) => sent,
            None => {
                let mut connection = self.connect().await?;
                let response = connection
                    .sender
                    .send_request(self.request(body)?)
                    .await
                    .map_err(|e| e.to_string())?;
                (connection, response)
            }
        };
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes()
            .to_vec();
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "the server responded with the status code {} but did not return more information: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        pool.put(self.key.clone(), connection);
        Ok(bytes)
    }
}

/// A client that trusts only the certificates of `ca_bundle` (PEM). Without one no
/// server can be verified, so the call fails (the apiserver would use its host's
/// roots, which a loopback test server is not signed by).
fn tls_config(bundle: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    if bundle.is_empty() {
        return Err(
            "clientConfig.caBundle is empty: no server certificate can be verified".to_owned(),
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle) {
        let cert = cert.map_err(|e| format!("clientConfig.caBundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("clientConfig.caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("clientConfig.caBundle holds no PEM certificate".to_owned());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
