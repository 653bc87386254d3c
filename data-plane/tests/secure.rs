//! The sidecar following a control plane that serves HTTPS, asks for client certificates and
//! has authorization on: it connects with the configured CA, client certificate and token.

mod common;

use common::TestSidecar;
use waypost_client::{Client, model::RegisterRequest};
use waypost_control::{
    auth::Role,
    testkit::{TestControlPlane, TestPki, tokens},
};

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

    let sidecar = TestSidecar::start(&cp.url, |config| {
        config.token = Some("sidecar-read".parse().unwrap());
        config.ca_cert = Some(pki.ca.clone());
        config.client_cert = Some(pki.client.clone());
        assert!(
            !format!("{config:?}").contains("sidecar-read"),
            "the token is redacted"
        );
    })
    .await;
    // Caught up over mTLS with its token.
    sidecar.caught_up(registered.revision).await;
    assert_eq!(
        sidecar.running.snapshots.current().revision,
        registered.revision
    );
    sidecar.stop().await;
}
