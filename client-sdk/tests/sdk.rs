//! The SDK against a real control plane, started in the test on 127.0.0.1:0.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::{net::TcpListener, task::JoinHandle};
use waypost_client::{
    Balance, Client, Filter, RegistrationState, Resolver, ServiceSet, Watch,
    model::{ErrorCode, InstanceRef, RegisterRequest},
};
use waypost_control::testkit::{TestControlPlane, eventually};

const DEADLINE: Duration = Duration::from_secs(10);

fn request(service: &str, port: u16, ttl: u32) -> RegisterRequest {
    RegisterRequest {
        ttl_seconds: Some(ttl),
        ..RegisterRequest::new(service, format!("127.0.0.1:{port}"))
    }
}

async fn count(client: &Client, service: &str) -> usize {
    client
        .discover(service, &Filter::default())
        .await
        .expect("discover")
        .count
}

/// The sum of a Prometheus metric's samples whose line contains `labels`.
async fn metric(cp: &TestControlPlane, name: &str, labels: &str) -> f64 {
    let text = reqwest::get(cp.at("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn heartbeats_keep_an_instance_past_several_ttls_and_dropping_the_handle_lets_it_expire() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let handle = client.register(request("web", 8001, 2)).await.unwrap();
    assert_eq!(handle.id(), "127.0.0.1:8001");

    // The handle beats once a second (a third of the TTL, at least the server's 1 s): by the
    // third beat more than a TTL has passed since the registration, and the instance must
    // have been there at every look.
    eventually(DEADLINE, "three heartbeats", || async {
        assert_eq!(count(&client, "web").await, 1, "expired while heartbeating");
        assert_eq!(handle.state(), RegistrationState::Registered);
        (metric(&cp, "waypost_heartbeats_total", "result=\"ok\"").await >= 3.0).then_some(())
    })
    .await;

    drop(handle);
    eventually(
        DEADLINE,
        "the instance to expire once its handle is dropped",
        || async { (count(&client, "web").await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_lost_instance_is_registered_again_after_a_control_plane_restart() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let addr = cp.running.addr;
    let client = Client::new(&cp.url).unwrap();
    let handle = client.register(request("web", 8001, 3)).await.unwrap();
    let interval = Duration::from_secs(1); // a third of the TTL
    let mut state = handle.watch_state();

    cp.stop().await;
    state
        .wait_for(|s| !s.is_registered())
        .await
        .expect("the handle reports failing heartbeats");

    // An in-memory control plane comes back empty, on the same address.
    let cp = TestControlPlane::in_memory(|c| c.listen = addr).await;
    assert_eq!(count(&client, "web").await, 0);
    // The next heartbeat comes within one interval (retries are capped at it), is answered
    // `instance_not_found`, and the handle registers again at once. The deadline allows one
    // interval plus scheduling slack.
    eventually(
        interval + Duration::from_secs(2),
        "re-registration",
        || async { (count(&client, "web").await == 1).then_some(()) },
    )
    .await;
    state
        .wait_for(RegistrationState::is_registered)
        .await
        .unwrap();
    drop(cp);
}

#[tokio::test]
async fn registration_and_heartbeats_fail_over_to_the_second_endpoint() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }; // closed again: connections there are refused
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::builder()
        .endpoint(format!("http://{dead}"))
        .endpoint(&cp.url)
        .build()
        .unwrap();
    let handle = client.register(request("web", 8001, 2)).await.unwrap();
    assert_eq!(count(&client, "web").await, 1);
    eventually(
        DEADLINE,
        "three heartbeats at the second endpoint",
        || async {
            (metric(&cp, "waypost_heartbeats_total", "result=\"ok\"").await >= 3.0).then_some(())
        },
    )
    .await;
    assert_eq!(handle.state(), RegistrationState::Registered);
    assert_eq!(count(&client, "web").await, 1);
}

#[tokio::test]
async fn many_registrations_of_one_client_heartbeat_in_batches() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let mut handles = Vec::new();
    for port in 8001..8006 {
        handles.push(client.register(request("web", port, 3)).await.unwrap());
    }
    eventually(DEADLINE, "ten heartbeats", || async {
        (metric(&cp, "waypost_heartbeats_total", "result=\"ok\"").await >= 10.0).then_some(())
    })
    .await;
    let renewed = metric(&cp, "waypost_heartbeats_total", "result=\"ok\"").await;
    let requests = metric(
        &cp,
        "waypost_http_request_duration_seconds_count",
        "route=\"/heartbeat\"",
    )
    .await;
    assert!(
        requests * 2.0 <= renewed,
        "{requests} heartbeat requests renewed {renewed} instances: not batched"
    );
    assert_eq!(count(&client, "web").await, 5);
}

#[tokio::test]
async fn errors_keep_the_servers_problem_code() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    let err = client
        .register(RegisterRequest::new("Not_A_Label", "127.0.0.1:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidServiceName), "{err}");
    assert!(!err.is_retryable());
    let err = client
        .deregister(InstanceRef::by_id("web", "nobody"))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let nowhere = Client::new("http://127.0.0.1:1").unwrap();
    let err = nowhere.services().await.unwrap_err();
    assert!(err.is_retryable() && err.code().is_none(), "{err}");
}

/// A TCP relay in front of the control plane that the test can cut (closing every connection
/// and refusing new ones) and restore on the same address: a forced disconnect.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(pipe);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn restore(&self) {
        let listener = eventually(DEADLINE, "the relay's address to be free", || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.serve(listener);
    }
}

async fn next_set(watch: &mut Watch) -> ServiceSet {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("a set within the deadline")
        .expect("the watch never ends")
}

#[tokio::test]
async fn watch_sees_register_deregister_and_expiry_in_order_across_a_forced_disconnect() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let direct = Client::new(&cp.url).unwrap();
    let relay = Relay::start(cp.running.addr).await;
    let watcher = Client::new(&format!("http://{}", relay.addr)).unwrap();
    let mut watch = watcher.watch("web");
    let mut seen = vec![next_set(&mut watch).await];

    direct.register_once(&request("web", 1, 600)).await.unwrap();
    direct
        .register_once(&request("other", 9, 600))
        .await
        .unwrap(); // filtered out
    direct.register_once(&request("web", 2, 600)).await.unwrap();
    seen.push(next_set(&mut watch).await);
    seen.push(next_set(&mut watch).await);

    // Disconnected: a deregistration, a registration and its expiry all happen unseen.
    relay.cut();
    direct
        .deregister(InstanceRef::by_id("web", "127.0.0.1:1"))
        .await
        .unwrap();
    direct.register_once(&request("web", 3, 1)).await.unwrap();
    eventually(DEADLINE, "127.0.0.1:3 to expire", || async {
        (count(&direct, "web").await == 1).then_some(())
    })
    .await;
    relay.restore().await;

    // Resumed from the last revision seen: each change, in order, none twice.
    for _ in 0..3 {
        seen.push(next_set(&mut watch).await);
    }
    let ids: Vec<Vec<&str>> = seen.iter().map(ServiceSet::ids).collect();
    assert_eq!(
        ids,
        vec![
            vec![],
            vec!["127.0.0.1:1"],
            vec!["127.0.0.1:1", "127.0.0.1:2"],
            vec!["127.0.0.1:2"],
            vec!["127.0.0.1:2", "127.0.0.1:3"],
            vec!["127.0.0.1:2"],
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].revision < w[1].revision),
        "revisions must increase: {:?}",
        seen.iter().map(|s| s.revision).collect::<Vec<_>>()
    );
    // Nothing more is pending: the stream delivered no duplicate.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_resolver_keeps_answering_with_the_control_plane_stopped() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    for port in [7001, 7002] {
        client
            .register_once(&request("payments", port, 600))
            .await
            .unwrap();
    }
    let resolver = Resolver::new(&client, ["payments"], Balance::RoundRobin);
    tokio::time::timeout(DEADLINE, resolver.ready())
        .await
        .unwrap();
    let mut ports: Vec<u16> = (0..2)
        .map(|_| resolver.pick("payments").unwrap().port)
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![7001, 7002], "round robin visits both");

    cp.stop().await;
    assert!(
        client.services().await.is_err(),
        "the control plane is down"
    );
    for _ in 0..10 {
        let port = resolver
            .pick("payments")
            .expect("answers from the cache")
            .port;
        assert!([7001, 7002].contains(&port));
    }
    assert_eq!(resolver.instances("payments").unwrap().len(), 2);
    assert!(resolver.pick("not-followed").is_none());
}

#[tokio::test]
async fn weighted_random_follows_the_weights() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).unwrap();
    for (port, weight) in [(7001, 1), (7002, 9)] {
        let mut req = request("payments", port, 600);
        req.weight = Some(weight);
        client.register_once(&req).await.unwrap();
    }
    let resolver = Resolver::new(&client, ["payments"], Balance::WeightedRandom);
    tokio::time::timeout(DEADLINE, resolver.ready())
        .await
        .unwrap();
    let heavy = (0..1000)
        .filter(|_| resolver.pick("payments").unwrap().port == 7002)
        .count();
    // Expected 900 (standard deviation about 9.5): 800 is ten deviations away.
    assert!(
        heavy > 800,
        "weight 9 of 10 was picked {heavy} times in 1000"
    );
}
