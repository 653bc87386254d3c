//! The sidecar following a control plane that serves HTTPS, asks for client certificates and
//! has authorization on: it connects with the configured CA, client certificate and token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use waypost_client::{Client, model::RegisterRequest};
use waypost_control::{
    auth::Role,
    testkit::{TestControlPlane, TestPki, tokens},
};
use waypost_sidecar::Config;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_sidecar_follows_a_control_plane_over_mtls_with_a_token() {
    let pki = TestPki::new();
    let cp = TestControlPlane::in_memory(|c| {
        c.tls = Some(pki.server_files(true));
        c.tokens = tokens(&[
            ("op", Role::Operator, &[]),
            ("sidecar-read", Role::Read, &[]),
        ]);
    })
    .await;
    let operator = Client::builder()
        .endpoint(&cp.url)
        .ca_cert(&pki.ca)
        .client_cert(&pki.client.0, &pki.client.1)
        .token("op")
        .build()
        .unwrap();
    let registered = operator
        .register_once(&RegisterRequest::new("web", "127.0.0.1:8001"))
        .await
        .unwrap();

    let mut config = Config::for_test(&cp.url, None);
    config.token = Some("sidecar-read".parse().unwrap());
    config.ca_cert = Some(pki.ca.clone());
    config.client_cert = Some(pki.client.clone());
    assert!(
        !format!("{config:?}").contains("sidecar-read"),
        "the token is redacted"
    );
    let token = CancellationToken::new();
    let sidecar = waypost_sidecar::start(config, token.clone()).await.unwrap();
    let snapshot = tokio::time::timeout(
        DEADLINE,
        sidecar
            .snapshots
            .wait_for(|s| s.revision >= registered.revision),
    )
    .await
    .expect("the sidecar caught up over mTLS with its token");
    assert_eq!(snapshot.revision, registered.revision);
    token.cancel();
}
