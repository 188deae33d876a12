//! The controller's way into a Runtime's pod, against real runtimed processes: a TLS
//! connection that trusts exactly the sidecar's own certificate, with its bearer token
//! (`kruntimes_runtimed_api::client::connect_tls`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kruntimes_runtimed_api::client::{TlsTarget, connect_tls};
use kruntimes_runtimed_api::proto;
use kruntimes_testkit::runtimed::{Pod, self_signed};

fn target(pod: &Pod) -> TlsTarget {
    TlsTarget {
        authority: pod.addr.to_string(),
        server_name: pod.server_name.clone(),
        certificate_pem: pod.certificate_pem.clone().into_bytes(),
        token: pod.token.clone(),
    }
}

#[tokio::test]
async fn a_pinned_tls_client_with_the_token_is_served() {
    let pod = Pod::start(&[]);
    let mut client = connect_tls(&target(&pod), Duration::from_secs(5))
        .await
        .unwrap();
    let health = client
        .health(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.ready, "{health:?}");
    assert!(health.capacity > 0);
}

#[tokio::test]
async fn a_wrong_token_is_refused_as_unauthenticated() {
    let pod = Pod::start(&[]);
    let mut wrong = target(&pod);
    wrong.token = "not-the-token-but-long-enough-0123456789".into();
    let mut client = connect_tls(&wrong, Duration::from_secs(5)).await.unwrap();
    let status = client.health(proto::HealthRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn another_certificate_is_not_trusted() {
    let pod = Pod::start(&[]);
    let mut other = target(&pod);
    other.certificate_pem = self_signed(&pod.server_name).0.into_bytes();
    let refused = connect_tls(&other, Duration::from_secs(5)).await;
    assert!(
        refused.is_err(),
        "a certificate other than the pinned one was accepted"
    );
}
