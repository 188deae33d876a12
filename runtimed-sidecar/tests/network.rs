//! The sidecar's network listener, for real: `runtimed sidecar --grpc-bind-address`
//! with a token file (and TLS), a real agent behind it, calls over TCP on loopback.
// Tests stop loudly on the first unexpected value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kruntimes_runtimed::grpc::{RuntimedClient, connect_unix};
use kruntimes_runtimed::proto;
use kruntimes_runtimed::sidecar::auth::MIN_TOKEN_BYTES;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const RUNTIMED: &str = env!("CARGO_BIN_EXE_runtimed");

struct Pair {
    _dir: tempfile::TempDir,
    _agent: tokio::process::Child,
    _sidecar: tokio::process::Child,
    addr: std::net::SocketAddr,
    token_file: PathBuf,
}

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn wait_for_socket(socket: &Path) {
    for _ in 0..500 {
        if connect_unix(socket).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never listened", socket.display());
}

/// An agent and a sidecar listening on loopback; `tls` is (cert PEM, key PEM).
async fn start(token: &str, tls: Option<(&str, &str)>) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let agent_socket = dir.path().join("agent.sock");
    let sidecar_socket = dir.path().join("sidecar.sock");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let agent = tokio::process::Command::new(RUNTIMED)
        .args(["agent", "--socket"])
        .arg(&agent_socket)
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .env("RUNTIMED_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = free_port();
    let mut sidecar = tokio::process::Command::new(RUNTIMED);
    sidecar
        .args(["sidecar", "--listen"])
        .arg(&sidecar_socket)
        .arg("--agent-socket")
        .arg(&agent_socket)
        .arg("--grpc-bind-address")
        .arg(addr.to_string())
        .arg("--token-file")
        .arg(&token_file)
        .env("RUNTIMED_LOG", "error")
        .kill_on_drop(true);
    if let Some((cert, key)) = tls {
        let cert_file = dir.path().join("tls.crt");
        let key_file = dir.path().join("tls.key");
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        sidecar
            .arg("--tls-cert-file")
            .arg(cert_file)
            .arg("--tls-private-key-file")
            .arg(key_file);
    }
    let sidecar = sidecar.spawn().unwrap();
    wait_for_socket(&agent_socket).await;
    wait_for_socket(&sidecar_socket).await;
    Pair {
        _dir: dir,
        _agent: agent,
        _sidecar: sidecar,
        addr,
        token_file,
    }
}

async fn channel(endpoint: Endpoint) -> Channel {
    for _ in 0..500 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the network listener never accepted a connection");
}

async fn health(
    client: &mut RuntimedClient<Channel>,
    authorization: Option<&str>,
) -> Result<proto::HealthResponse, tonic::Status> {
    let mut request = tonic::Request::new(proto::HealthRequest::default());
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    client.health(request).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn network_calls_need_the_bearer_token() {
    let token = "a".repeat(MIN_TOKEN_BYTES + 4);
    let pair = start(&token, None).await;
    let endpoint = Endpoint::from_shared(format!("http://{}", pair.addr)).unwrap();
    let mut client = RuntimedClient::new(channel(endpoint).await);

    for bad in [None, Some("Bearer wrong"), Some(token.as_str())] {
        let status = health(&mut client, bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
    }
    let bearer = format!("Bearer {token}");
    let ok = health(&mut client, Some(&bearer)).await.unwrap();
    assert!(!ok.version.is_empty());

    // A Run through the network listener, end to end.
    let mut request = tonic::Request::new(proto::ExecuteRequest {
        run_uid: "net-1".into(),
        interpreter: proto::Interpreter::Bash as i32,
        script: Some("echo over-the-network".into()),
        keep_workspace: false,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    client.execute(request).await.unwrap();
    let mut phase = proto::Phase::Running;
    for _ in 0..500 {
        let mut request = tonic::Request::new(proto::StatusRequest {
            execution_id: "net-1".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        phase = client.status(request).await.unwrap().into_inner().phase();
        if phase != proto::Phase::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(phase, proto::Phase::Succeeded);
    // An unauthenticated caller learns nothing about it.
    let status = client
        .status(proto::StatusRequest {
            execution_id: "net-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let old = "o".repeat(MIN_TOKEN_BYTES);
    let new = "n".repeat(MIN_TOKEN_BYTES);
    let pair = start(&old, None).await;
    let endpoint = Endpoint::from_shared(format!("http://{}", pair.addr)).unwrap();
    let mut client = RuntimedClient::new(channel(endpoint).await);
    health(&mut client, Some(&format!("Bearer {old}")))
        .await
        .unwrap();
    // As kubelet does for a Secret volume: a new file swapped in by rename.
    let staged = pair.token_file.with_extension("new");
    std::fs::write(&staged, &new).unwrap();
    std::fs::rename(&staged, &pair.token_file).unwrap();
    // The file is polled every TOKEN_RELOAD_INTERVAL (10 s); allow two periods.
    let mut switched = false;
    for _ in 0..250 {
        if health(&mut client, Some(&format!("Bearer {new}")))
            .await
            .is_ok()
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the new token was never accepted");
    let status = health(&mut client, Some(&format!("Bearer {old}")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn tls_listener_serves_a_client_that_trusts_its_certificate() {
    rustls_provider();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["runtimed.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let token = "t".repeat(MIN_TOKEN_BYTES);
    let pair = start(&token, Some((&cert.pem(), &key.serialize_pem()))).await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.pem()))
        .domain_name("runtimed.test");
    let endpoint = Endpoint::from_shared(format!("https://{}", pair.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let mut client = RuntimedClient::new(channel(endpoint).await);
    let bearer = format!("Bearer {token}");
    assert!(health(&mut client, Some(&bearer)).await.is_ok());
    assert_eq!(
        health(&mut client, None).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // Plain text to a TLS listener does not get an answer.
    let plain = Endpoint::from_shared(format!("http://{}", pair.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if let Ok(channel) = plain.connect().await {
        let mut client = RuntimedClient::new(channel);
        assert!(health(&mut client, Some(&bearer)).await.is_err());
    }
}

/// A self-signed certificate for `runtimed.test`: (cert PEM, key PEM, cert DER).
fn self_signed() -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["runtimed.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// The leaf certificate the listener presents to a new connection (DER), from a
/// handshake that trusts both `trusted`.
async fn served_leaf(addr: std::net::SocketAddr, trusted: &[&[u8]]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots
            .add(rustls_pki_types::CertificateDer::from(der.to_vec()))
            .unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("runtimed.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "gRPC needs h2");
    session.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_rotated_tls_certificate_is_served_without_a_restart() {
    rustls_provider();
    let (old_cert, old_key, old_der) = self_signed();
    let (new_cert, new_key, new_der) = self_signed();
    let token = "t".repeat(MIN_TOKEN_BYTES);
    let bearer = format!("Bearer {token}");
    let pair = start(&token, Some((&old_cert, &old_key))).await;
    let trusting = |pem: &str| {
        Endpoint::from_shared(format!("https://{}", pair.addr))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name("runtimed.test"),
            )
            .unwrap()
    };
    let mut before = RuntimedClient::new(channel(trusting(&old_cert)).await);
    health(&mut before, Some(&bearer)).await.unwrap();
    assert_eq!(served_leaf(pair.addr, &[&old_der, &new_der]).await, old_der);

    // As cert-manager and the kubelet do: new files renamed over the old ones, one at a
    // time (the key first here, so that for a while the pair does not match).
    let dir = pair.token_file.parent().unwrap();
    for (name, contents) in [("tls.key", &new_key), ("tls.crt", &new_cert)] {
        let staged = dir.join(format!("{name}.new"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
    // Polled every TLS_RELOAD_INTERVAL (10 s); allow two periods and a half.
    let mut served = Vec::new();
    for _ in 0..250 {
        served = served_leaf(pair.addr, &[&old_der, &new_der]).await;
        if served == new_der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, new_der, "the new certificate was never served");
    let mut after = RuntimedClient::new(channel(trusting(&new_cert)).await);
    health(&mut after, Some(&bearer)).await.unwrap();
    // A connection made before the rotation goes on working.
    health(&mut before, Some(&bearer)).await.unwrap();

    // A pair that does not load keeps the current certificate in service.
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(served_leaf(pair.addr, &[&old_der, &new_der]).await, new_der);
    health(&mut after, Some(&bearer)).await.unwrap();
}

#[test]
fn tls_material_that_does_not_load_stops_the_sidecar_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = self_signed();
    let (_, other_key, _) = self_signed();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, other_key).unwrap();
    let token = "t".repeat(MIN_TOKEN_BYTES);
    let with = |cert: &Path, key: &Path| {
        sidecar_refusal(
            &[
                "--grpc-bind-address",
                "127.0.0.1:0",
                "--token-file",
                "TOKEN",
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-private-key-file",
                key.to_str().unwrap(),
            ],
            Some(token.as_bytes()),
        )
    };
    let (code, stderr) = with(&cert_file, &key_file);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the private key does not match the certificate"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.crt");
    let (code, stderr) = with(&missing, &key_file);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("reading {}", missing.display())),
        "{stderr}"
    );
}

fn rustls_provider() {
    // Several tests may race to install it; only the first wins, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn sidecar_refusal(args: &[&str], token: Option<&[u8]>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    if let Some(content) = token {
        std::fs::write(&token_file, content).unwrap();
    }
    let out = Command::new(RUNTIMED)
        .args(["sidecar", "--listen"])
        .arg(dir.path().join("s.sock"))
        .arg("--agent-socket")
        .arg(dir.path().join("a.sock"))
        .args(
            args.iter()
                .map(|a| a.replace("TOKEN", token_file.to_str().unwrap())),
        )
        .env("RUNTIMED_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_network_is_never_served_without_a_valid_token() {
    let (code, stderr) = sidecar_refusal(&["--grpc-bind-address", "127.0.0.1:0"], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");

    let (code, stderr) = sidecar_refusal(
        &[
            "--grpc-bind-address",
            "127.0.0.1:0",
            "--token-file",
            "TOKEN",
        ],
        Some(b"short\n"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("must be 32 to 4096 bytes"), "{stderr}");

    let (code, stderr) = sidecar_refusal(
        &[
            "--grpc-bind-address",
            "127.0.0.1:0",
            "--token-file",
            "TOKEN",
        ],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("token file"), "{stderr}");

    let (code, stderr) = sidecar_refusal(&["--grpc-bind-address", "not-an-address"], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--grpc-bind-address"), "{stderr}");
}
