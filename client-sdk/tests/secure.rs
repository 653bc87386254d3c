//! The SDK against a control plane serving HTTPS (certificates made by rcgen for the test),
//! with client certificates (mTLS) and with bearer tokens.

use waypost_client::{
    Client, Error, Filter,
    model::{ErrorCode, RegisterRequest},
};
use waypost_control::{
    auth::Role,
    testkit::{TestControlPlane, TestPki, tokens},
};

/// The problem code of a refused call.
fn code(err: &Error) -> Option<ErrorCode> {
    match err {
        Error::Problem { problem, .. } => Some(problem.code),
        _ => None,
    }
}

/// How many instances of `service` `client` discovers.
async fn count(client: &Client, service: &str) -> usize {
    client
        .discover(service, &Filter::default())
        .await
        .expect("discover")
        .count
}

/// The whole cause chain of a connection-level failure (no answer from the control plane);
/// panics on any other error.
fn transport_failure(err: &Error) -> String {
    let Error::Unavailable { last, .. } = err else {
        panic!("expected no answer, got {err}");
    };
    assert!(matches!(**last, Error::Transport { .. }), "{last}");
    let mut chain = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&**last);
    while let Some(e) = cause {
        chain.push_str(&format!("{e}; "));
        cause = e.source();
    }
    chain
}

/// A reqwest client trusting the test CA, optionally limited to HTTP/1.1 and with a client
/// certificate.
fn raw_client(pki: &TestPki, http1_only: bool, identity: bool) -> reqwest::Client {
    let ca = std::fs::read(&pki.ca).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap());
    if http1_only {
        builder = builder.http1_only();
    }
    if identity {
        let mut pem = std::fs::read(&pki.client.0).unwrap();
        pem.extend(std::fs::read(&pki.client.1).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_with_the_configured_ca_and_both_http_versions_by_alpn() {
    let pki = TestPki::new();
    let cp = TestControlPlane::in_memory(|c| c.tls = Some(pki.server_files(false))).await;
    assert!(cp.url.starts_with("https://127.0.0.1:"), "{}", cp.url);

    let client = Client::builder()
        .endpoint(&cp.url)
        .ca_cert(&pki.ca)
        .build()
        .unwrap();
    client
        .register_once(&RegisterRequest::new("web", "127.0.0.1:8001"))
        .await
        .unwrap();
    assert_eq!(count(&client, "web").await, 1);

    // ALPN: HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let res = raw_client(&pki, http1_only, false)
            .get(cp.at("/services"))
            .send()
            .await
            .unwrap();
        assert_eq!((res.status().as_u16(), res.version()), (200, version));
    }

    // Without the CA the server's certificate is not trusted, and plain HTTP gets nothing.
    let untrusting = Client::builder().endpoint(&cp.url).build().unwrap();
    let err = untrusting
        .discover("web", &Filter::default())
        .await
        .unwrap_err();
    let chain = transport_failure(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    let plain = Client::new(&cp.url.replace("https://", "http://")).unwrap();
    assert!(plain.discover("web", &Filter::default()).await.is_err());
}

#[tokio::test]
async fn mtls_needs_a_client_certificate_from_the_configured_ca() {
    let pki = TestPki::new();
    let cp = TestControlPlane::in_memory(|c| c.tls = Some(pki.server_files(true))).await;

    let with_cert = Client::builder()
        .endpoint(&cp.url)
        .ca_cert(&pki.ca)
        .client_cert(&pki.client.0, &pki.client.1)
        .build()
        .unwrap();
    with_cert
        .register_once(&RegisterRequest::new("web", "127.0.0.1:8001"))
        .await
        .unwrap();

    let without = Client::builder()
        .endpoint(&cp.url)
        .ca_cert(&pki.ca)
        .build()
        .unwrap();
    let stranger = Client::builder()
        .endpoint(&cp.url)
        .ca_cert(&pki.ca)
        .client_cert(&pki.stranger.0, &pki.stranger.1)
        .build()
        .unwrap();
    for refused in [&without, &stranger] {
        let err = refused
            .discover("web", &Filter::default())
            .await
            .unwrap_err();
        let chain = transport_failure(&err);
        assert!(
            chain.to_lowercase().contains("alert"),
            "refused by the handshake: {chain}"
        );
    }

    let metrics = raw_client(&pki, false, true)
        .get(cp.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("waypost_tls_handshake_failures_total "))
        .expect("the handshake failure counter")
        .parse()
        .unwrap();
    assert!(failures >= 2.0, "{failures}");
    assert_eq!(count(&with_cert, "web").await, 1);
}

#[tokio::test]
async fn tokens_from_the_builder_are_sent_and_refusals_are_problems() {
    let cp = TestControlPlane::in_memory(|c| {
        c.tokens = tokens(&[("pay-secret", Role::Service, &["payments"])]);
    })
    .await;
    let scoped = Client::builder()
        .endpoint(&cp.url)
        .token("pay-secret")
        .build()
        .unwrap();
    let handle = scoped
        .register(RegisterRequest::new("payments", "127.0.0.1:8001"))
        .await
        .unwrap();
    let err = scoped
        .register_once(&RegisterRequest::new("web", "127.0.0.1:8002"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Forbidden), "{err}");

    let anonymous = Client::builder().endpoint(&cp.url).build().unwrap();
    let err = anonymous
        .discover("payments", &Filter::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Unauthorized), "{err}");

    assert_eq!(count(&scoped, "payments").await, 1);
    handle.deregister().await.unwrap();
    assert_eq!(count(&scoped, "payments").await, 0);
}
