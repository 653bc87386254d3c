//! One protection policy per service, set through the control plane's API and followed by a
//! real sidecar and the SDK's resolver: with `never_empty`, a service whose instances all fail
//! their checks or expire keeps answering from its last set (DNS, the explain endpoint, the
//! resolver say so), while a drain or a deregistration still takes an instance out.

mod common;

use std::time::Duration;

use common::{DEADLINE, TestSidecar, a_records, ip_set};
use serde_json::{Value, json};
use waypost_client::{
    Balance, Client, Resolver,
    model::{CheckReport, Health, InstanceRef, RegisterRequest},
};
use waypost_control::testkit::{TestControlPlane, eventually};

const WEB: &str = "web.service.waypost.";
const API: &str = "api.service.waypost.";

fn instance(service: &str, id: &str, ip: &str, ttl: u32) -> RegisterRequest {
    RegisterRequest {
        id: Some(id.to_owned()),
        ttl_seconds: Some(ttl),
        ..RegisterRequest::new(service, format!("{ip}:8080"))
    }
}

async fn put_policy(cp: &TestControlPlane, service: &str, policy: Value) -> Value {
    let res = reqwest::Client::new()
        .put(cp.at(&format!("/services/{service}/policy")))
        .json(&policy)
        .send()
        .await
        .expect("PUT policy");
    assert_eq!(res.status(), 200);
    res.json().await.expect("a policy answer")
}

async fn explain(s: &TestSidecar, service: &str) -> Value {
    reqwest::get(s.admin(&format!("/explain/{service}")))
        .await
        .expect("explain")
        .json()
        .await
        .expect("explain JSON")
}

async fn critical(client: &Client, service: &str, id: &str) -> u64 {
    let report = CheckReport {
        instance: InstanceRef::by_id(service, id),
        health: Health::Critical,
        output: Some("GET /healthz: 503".into()),
    };
    client
        .report_check(&report)
        .await
        .expect("a check report")
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_empty_keeps_the_last_set_through_failing_checks_and_expiry_but_not_a_drain() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    let client = Client::new(&cp.url).expect("a client");
    for (id, ip) in [("a", "127.0.0.31"), ("b", "127.0.0.32")] {
        client
            .register_once(&instance("web", id, ip, 600))
            .await
            .expect("register");
    }
    let set = put_policy(
        &cp,
        "web",
        json!({"never_empty": true, "min_healthy_percent": 30}),
    )
    .await;
    assert_eq!(set["policy"]["never_empty"], true);
    // Every instance carries it, and /services shows it.
    let services = client.services().await.expect("/services");
    assert_eq!(
        services.services["web"].policy.map(|p| p.never_empty),
        Some(true)
    );
    let found = client
        .discover("web", &Default::default())
        .await
        .expect("discover");
    assert!(found.instances.iter().all(|i| i.instance.policy.is_some()));

    let s = TestSidecar::start(&cp.url, |_| {}).await;
    let resolver = Resolver::new(&client, ["web", "api"], Balance::RoundRobin);
    resolver.ready().await;

    // `a` fails its check: `b` still takes work, nothing to protect.
    let r = critical(&client, "web", "a").await;
    s.caught_up(r).await;
    assert_eq!(a_records(s.dns(), WEB).await, ip_set(&["127.0.0.32"]));
    // `b` fails too: the registry has none that takes work, but DNS, the sidecar's explain
    // and the resolver keep the last non-empty set, {b}, and say so.
    let r = critical(&client, "web", "b").await;
    assert_eq!(
        client
            .discover("web", &Default::default())
            .await
            .unwrap()
            .count,
        0
    );
    s.caught_up(r).await;
    assert_eq!(a_records(s.dns(), WEB).await, ip_set(&["127.0.0.32"]));
    let e = explain(&s, "web").await;
    assert_eq!(e["protected"], true, "{e}");
    assert_eq!(e["policy"]["min_healthy_percent"], 30, "{e}");
    assert_eq!(s.metric("waypost_sidecar_protected_services").await, 1.0);
    eventually(DEADLINE, "the resolver protects web", || async {
        let kept = resolver.pick("web")?;
        (resolver.protected("web") && kept.id.as_str() == "b").then_some(())
    })
    .await;

    // `a` passes again (the set is {a}, not protected), then is drained: a drain is meant,
    // so nothing is kept.
    let report = CheckReport {
        instance: InstanceRef::by_id("web", "a"),
        health: Health::Passing,
        output: None,
    };
    let r = client
        .report_check(&report)
        .await
        .expect("a check report")
        .revision;
    s.caught_up(r).await;
    assert_eq!(a_records(s.dns(), WEB).await, ip_set(&["127.0.0.31"]));
    let drained = client
        .drain(InstanceRef::by_id("web", "a"), true)
        .await
        .expect("drain");
    s.caught_up(drained.revision).await;
    assert!(a_records(s.dns(), WEB).await.is_empty());
    assert_eq!(explain(&s, "web").await["protected"], false);
    // So is a deregistration.
    let c = client
        .register_once(&instance("web", "c", "127.0.0.34", 600))
        .await
        .expect("register");
    s.caught_up(c.revision).await;
    assert_eq!(a_records(s.dns(), WEB).await, ip_set(&["127.0.0.34"]));
    let gone = client
        .deregister(InstanceRef::by_id("web", "c"))
        .await
        .expect("deregister");
    s.caught_up(gone.revision).await;
    assert!(a_records(s.dns(), WEB).await.is_empty());
    eventually(DEADLINE, "the resolver no longer protects web", || async {
        (!resolver.protected("web") && resolver.pick("web").is_none()).then_some(())
    })
    .await;

    // Expiry: the policy is set before the instance comes; it expires (a TTL of 1 s, no
    // heartbeats), and the sidecar and the resolver still answer with it.
    put_policy(&cp, "api", json!({"never_empty": true})).await;
    let registered = client
        .register_once(&instance("api", "c", "127.0.0.33", 1))
        .await
        .expect("register");
    assert!(registered.instance.policy.is_some_and(|p| p.never_empty));
    s.caught_up(registered.revision).await;
    eventually(Duration::from_secs(10), "c expired", || async {
        let found = client.discover("api", &Default::default()).await.ok()?;
        (found.count == 0).then_some(found.revision)
    })
    .await;
    eventually(DEADLINE, "the sidecar applied the expiry", || async {
        (s.running.snapshots.current().revision > registered.revision).then_some(())
    })
    .await;
    assert_eq!(a_records(s.dns(), API).await, ip_set(&["127.0.0.33"]));
    assert_eq!(explain(&s, "api").await["protected"], true);
    eventually(DEADLINE, "the resolver keeps c", || async {
        (resolver.protected("api") && resolver.pick("api").is_some()).then_some(())
    })
    .await;
}
