//! xDS on a real control plane (`--xds-listen` on 127.0.0.1:0): the ADS stream itself
//! (subscribe, ACK, push on change, NACK, resubscribe after a reconnect), with tokens and TLS,
//! and grpcio's own xDS client calling `xds:///echo` (tests/xds/grpc_client.py).

mod common;

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use common::{DEADLINE, TestControlPlane, eventually, metric, post, register, text};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{HealthStatus, Node},
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::Listener,
        },
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::rpc::Status as RpcStatus,
};
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming, transport::Channel};
use waypost_control::{auth::Role, testkit::tokens};

const CLA: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

async fn with_xds(tweak: impl FnOnce(&mut waypost_control::Config)) -> TestControlPlane {
    TestControlPlane::in_memory(|c| {
        c.xds_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await
}

/// One ADS stream: requests in, responses out.
struct Ads {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Ads {
    async fn open(channel: Channel, token: Option<&str>) -> Result<Ads, tonic::Status> {
        let (requests, rx) = mpsc::channel(8);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("metadata value"),
            );
        }
        let responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(request)
            .await?
            .into_inner();
        Ok(Ads {
            requests,
            responses,
        })
    }

    async fn send(&self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.requests
            .send(request(type_url, names, version, nonce))
            .await
            .expect("the stream takes requests");
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(DEADLINE, self.responses.message())
            .await
            .expect("a response within the deadline")
            .expect("a response, not an error")
            .expect("the stream is open")
    }
}

fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: "rust-test".to_owned(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: type_url.to_owned(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

async fn channel(cp: &TestControlPlane) -> Channel {
    let addr = cp.running.xds_addr.expect("xDS is on");
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the xDS listener")
}

/// The endpoints of a CLA response: (port, weight, health status), by locality in order.
fn endpoints(res: &DiscoveryResponse) -> Vec<(u32, u32, i32)> {
    assert_eq!(res.type_url, CLA);
    let cla = ClusterLoadAssignment::decode(res.resources[0].value.as_slice()).unwrap();
    assert_eq!(cla.cluster_name, "echo");
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(
                envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    ep,
                ),
            ) = &e.host_identifier
            else {
                panic!("an endpoint");
            };
            let Some(
                envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa),
            ) = ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                panic!("a socket address");
            };
            let Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ) = sa.port_specifier
            else {
                panic!("a port");
            };
            (port, e.load_balancing_weight.unwrap().value, e.health_status)
        })
        .collect()
}

fn instance(id: &str, port: u16, weight: u32) -> serde_json::Value {
    json!({"service": "echo", "id": id, "host": "127.0.0.1", "port": port, "weight": weight})
}

#[tokio::test]
async fn ads_subscribe_ack_push_nack_and_resubscribe_after_a_reconnect() {
    let cp = with_xds(|_| {}).await;
    register(&cp, instance("a", 7001, 3)).await;
    let mut ads = Ads::open(channel(&cp).await, None).await.unwrap();

    // Subscribe: the current assignment, versioned by the registry revision.
    ads.send(CLA, &["echo"], "", "").await;
    let first = ads.next().await;
    assert_eq!(endpoints(&first), [(7001, 3, HealthStatus::Healthy as i32)]);
    let v1: u64 = first.version_info.parse().unwrap();
    assert!(v1 >= 1);
    ads.send(CLA, &["echo"], &first.version_info, &first.nonce)
        .await;

    // A change to another service pushes nothing; the next push is echo's own change.
    register(
        &cp,
        json!({"service": "other", "host": "127.0.0.1", "port": 7100}),
    )
    .await;
    register(&cp, instance("b", 7002, 1)).await;
    let pushed = ads.next().await;
    assert_eq!(
        endpoints(&pushed),
        [
            (7001, 3, HealthStatus::Healthy as i32),
            (7002, 1, HealthStatus::Healthy as i32)
        ]
    );
    assert_eq!(
        pushed.version_info.parse::<u64>().unwrap(),
        v1 + 2,
        "pushed at echo's revision, not at other's"
    );
    ads.send(CLA, &["echo"], &pushed.version_info, &pushed.nonce)
        .await;

    // Draining shows as DRAINING.
    let drained = post(&cp, "/drain", json!({"service": "echo", "id": "b"})).await;
    assert!(drained.status.is_success(), "{}", drained.body);
    let pushed = ads.next().await;
    assert_eq!(endpoints(&pushed)[1].2, HealthStatus::Draining as i32);

    // A NACK is counted (and keeps the subscription).
    let mut nack = request(CLA, &["echo"], &first.version_info, &pushed.nonce);
    nack.error_detail = Some(RpcStatus {
        code: Code::InvalidArgument as i32,
        message: "refused for the test".to_owned(),
        ..Default::default()
    });
    ads.requests.send(nack).await.unwrap();
    eventually(DEADLINE, "the NACK counted in /metrics", || async {
        text(&cp, "/metrics")
            .await
            .contains("waypost_xds_nacks_total{kind=\"endpoints\"} 1")
            .then_some(())
    })
    .await;

    // Listeners on the same stream.
    ads.send(LDS, &["echo"], "", "").await;
    let lds = ads.next().await;
    assert_eq!(lds.type_url, LDS);
    let listener = Listener::decode(lds.resources[0].value.as_slice()).unwrap();
    assert_eq!(listener.name, "echo");
    assert!(listener.api_listener.is_some());

    // A new stream (after a reconnect) that names its last version gets the whole state again.
    drop(ads);
    let mut ads = Ads::open(channel(&cp).await, None).await.unwrap();
    ads.send(CLA, &["echo"], &pushed.version_info, "").await;
    let again = ads.next().await;
    assert_eq!(endpoints(&again), endpoints(&pushed));
    let metrics = text(&cp, "/metrics").await;
    assert!(metrics.contains("waypost_xds_pushes_total{kind=\"endpoints\"}"));
    // The old stream ends on the server once the client's close reaches it.
    eventually(DEADLINE, "one xDS stream open", || async {
        text(&cp, "/metrics")
            .await
            .contains("waypost_xds_streams 1")
            .then_some(())
    })
    .await;

    // Shutdown ends the stream (the client reconnects, elsewhere if it can) within the drain.
    cp.token.cancel();
    let ended = tokio::time::timeout(DEADLINE, ads.responses.message())
        .await
        .expect("the stream ends on shutdown");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
}

#[tokio::test]
async fn a_stream_is_woken_only_by_changes_of_the_services_it_subscribed_to() {
    let cp = with_xds(|_| {}).await;
    register(&cp, instance("a", 7001, 1)).await;
    register(
        &cp,
        json!({"service": "quiet", "host": "127.0.0.1", "port": 7200}),
    )
    .await;
    let mut ads = Ads::open(channel(&cp).await, None).await.unwrap();
    ads.send(CLA, &["echo", "quiet"], "", "").await;
    let first = ads.next().await;
    assert_eq!(first.resources.len(), 2);
    ads.send(CLA, &["echo", "quiet"], &first.version_info, &first.nonce)
        .await;
    let woken = metric(&cp, "waypost_xds_wakeups_total").await;
    for port in 7100..7120 {
        register(
            &cp,
            json!({"service": "other", "host": "127.0.0.1", "port": port}),
        )
        .await;
    }
    register(&cp, instance("b", 7002, 1)).await;
    let pushed = ads.next().await;
    // Only echo's endpoints: quiet's did not change, and an endpoints response may leave them
    // out without removing them.
    assert_eq!(pushed.resources.len(), 1);
    assert_eq!(endpoints(&pushed).len(), 2);
    // The fan-out passes changes in order: by the push of echo's change, the twenty of `other`
    // had been passed, and woke nothing. (At most two more wake-ups are the two registrations
    // before the subscription, passed after it; every commit woke the stream before, 21 here.)
    let after = metric(&cp, "waypost_xds_wakeups_total").await;
    assert!(
        (woken + 1..=woken + 3).contains(&after),
        "{woken} wake-ups before, {after} after"
    );

    // Dropping `quiet` needs no response (an empty one is not sent): the next response is
    // echo's next change.
    ads.send(CLA, &["echo"], &pushed.version_info, &pushed.nonce)
        .await;
    register(&cp, instance("c", 7003, 1)).await;
    let pushed = ads.next().await;
    assert_eq!(pushed.resources.len(), 1);
    assert_eq!(endpoints(&pushed).len(), 3);
}

/// A delta stream's next response.
async fn next_delta(responses: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    tokio::time::timeout(DEADLINE, responses.message())
        .await
        .expect("a response within the deadline")
        .expect("a response, not an error")
        .expect("the stream is open")
}

async fn open_delta(
    channel: Channel,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
) {
    let (tx, rx) = mpsc::channel(8);
    let responses = AggregatedDiscoveryServiceClient::new(channel)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("a delta stream")
        .into_inner();
    (tx, responses)
}

fn names(res: &DeltaDiscoveryResponse) -> Vec<&str> {
    res.resources.iter().map(|r| r.name.as_str()).collect()
}

/// A control plane with `echo` (one instance) and `other`, and a delta stream subscribed to
/// `echo` with its first response.
async fn delta_on_echo_beside_other() -> (
    TestControlPlane,
    mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
    DeltaDiscoveryResponse,
) {
    let cp = with_xds(|_| {}).await;
    register(&cp, instance("a", 7001, 1)).await;
    register(
        &cp,
        json!({"service": "other", "host": "127.0.0.1", "port": 7100}),
    )
    .await;
    let (tx, mut responses) = open_delta(channel(&cp).await).await;
    tx.send(DeltaDiscoveryRequest {
        type_url: CLA.to_owned(),
        resource_names_subscribe: vec!["echo".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    let first = next_delta(&mut responses).await;
    (cp, tx, responses, first)
}

#[tokio::test]
async fn delta_sends_only_what_the_client_lacks_also_after_a_reconnect() {
    let (cp, tx, mut responses, first) = delta_on_echo_beside_other().await;
    assert_eq!(names(&first), ["echo"]);
    tx.send(DeltaDiscoveryRequest {
        type_url: CLA.to_owned(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    register(&cp, instance("b", 7002, 1)).await;
    let pushed = next_delta(&mut responses).await;
    assert_eq!(names(&pushed), ["echo"]);
    assert_ne!(pushed.resources[0].version, first.resources[0].version);

    // Reconnected, holding echo's latest version: only `other` is sent.
    drop((tx, responses));
    let (tx, mut responses) = open_delta(channel(&cp).await).await;
    tx.send(DeltaDiscoveryRequest {
        type_url: CLA.to_owned(),
        resource_names_subscribe: vec!["echo".to_owned(), "other".to_owned()],
        initial_resource_versions: [("echo".to_owned(), pushed.resources[0].version.clone())]
            .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(names(&next_delta(&mut responses).await), ["other"]);
}

#[tokio::test]
async fn a_delta_nack_that_also_subscribes_is_answered() {
    let (_cp, tx, mut responses, first) = delta_on_echo_beside_other().await;
    // Refuses that response and subscribes to `other` in the same request, as a delta client
    // may. Nothing changes afterwards: only the request itself can bring the answer.
    tx.send(DeltaDiscoveryRequest {
        type_url: CLA.to_owned(),
        response_nonce: first.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: Code::InvalidArgument as i32,
            message: "refused for the test".to_owned(),
            ..Default::default()
        }),
        resource_names_subscribe: vec!["other".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(names(&next_delta(&mut responses).await), ["other"]);
}

#[tokio::test]
async fn a_follower_serves_xds_from_its_applied_state() {
    let c = waypost_control::testkit::TestCluster::start(3, |c| {
        c.xds_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let follower = c.nodes[c.other_than(leader)].as_ref().unwrap();
    let mut ads = Ads::open(channel(follower).await, None).await.unwrap();
    ads.send(CLA, &["echo"], "", "").await;
    let empty = ads.next().await;
    assert!(
        ClusterLoadAssignment::decode(empty.resources[0].value.as_slice())
            .unwrap()
            .endpoints
            .is_empty()
    );
    ads.send(CLA, &["echo"], &empty.version_info, &empty.nonce)
        .await;
    // Written through the leader, pushed by the follower once applied there.
    register(c.nodes[leader].as_ref().unwrap(), instance("a", 7001, 2)).await;
    assert_eq!(
        endpoints(&ads.next().await),
        [(7001, 2, HealthStatus::Healthy as i32)]
    );
}

#[tokio::test]
async fn with_tokens_and_tls_a_stream_needs_a_token_over_tls() {
    const READER: &str = "read-xds-5e1";
    let pki = waypost_control::testkit::TestPki::new();
    let cp = with_xds(|c| {
        c.tokens = tokens(&[(READER, Role::Read, &[])]);
        c.tls = Some(pki.server_files(false));
    })
    .await;
    let channel = tls_channel(&cp, &pki.ca).await;
    let refused = Ads::open(channel.clone(), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = Ads::open(channel.clone(), Some("not-a-token"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut ads = Ads::open(channel, Some(READER)).await.unwrap();
    ads.send(LDS, &["echo"], "", "").await;
    assert_eq!(ads.next().await.type_url, LDS);
}

/// A gRPC channel over TLS to the xDS listener, trusting `ca` (tonic's own TLS is not built:
/// the connector does the handshake with tokio-rustls).
async fn tls_channel(cp: &TestControlPlane, ca: &std::path::Path) -> Channel {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let addr = cp.running.xds_addr.expect("xDS is on");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connect over TLS")
}

/// The Python interpreter with grpcio: `WAYPOST_PYTHON` (relative to the workspace root, as
/// tools/test.sh sets it), else the workspace's .venv. `None` when it lacks grpcio.
fn python_with_grpcio() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("WAYPOST_PYTHON")
        .map(|p| root.join(p))
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[tokio::test]
async fn grpcio_calls_xds_echo_by_weight_and_follows_drain_deregister_and_new_instances() {
    let Some(python) = python_with_grpcio() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs grpcio in WAYPOST_PYTHON (.ci/run installs it)"
        );
        eprintln!("skipped: no Python with grpcio (run .ci/run, or pip install grpcio in .venv)");
        return;
    };
    let cp = with_xds(|_| {}).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/xds/grpc_client.py");
    let xds = cp.running.xds_addr.unwrap().to_string();
    let child = tokio::process::Command::new(python)
        .arg(script)
        .args(["--api", &cp.url, "--xds", &xds])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the gRPC client finishes within two minutes")
        .expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "grpc_client.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("xds check: ok"), "{stdout}");
    // The shares measured, for the log.
    eprint!("{stdout}");
}
