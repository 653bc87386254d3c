use std::time::{Duration, Instant};

use waypost_model::{ChangeReason, Health, InstanceRef, RegisterRequest, Status};

use super::*;
use crate::command::Reply;

/// A small registry's configuration (3 instances at most, VIPs on), for tests here and in the
/// modules that read a registry.
pub(crate) fn config() -> RegistryConfig {
    RegistryConfig {
        default_ttl_seconds: 30,
        heartbeat_interval: Duration::from_secs(10),
        history: 100,
        max_instances: 3,
        max_instances_per_service: 1_000,
        self_preservation: SelfPreservation {
            enabled: false,
            threshold: 0.5,
            window: Duration::from_secs(30),
            min_instances: 10,
            max_hold: Duration::from_secs(300),
        },
        vip_range: Some("127.100.0.0/16".parse().unwrap()),
    }
}

#[test]
fn services_get_distinct_stable_vips_shown_in_discovery() {
    let r = Registry::in_memory_for_test(RegistryConfig {
        max_instances: 10,
        ..config()
    });
    let a1 = r
        .register(&RegisterRequest::new("a", "10.0.0.1:1"))
        .unwrap();
    let a2 = r
        .register(&RegisterRequest::new("a", "10.0.0.1:2"))
        .unwrap();
    let b = r
        .register(&RegisterRequest::new("b", "10.0.0.1:3"))
        .unwrap();
    let vip = |x: &Registered| x.instance.vip.unwrap();
    assert_eq!(vip(&a1), vip(&a2), "one VIP per service");
    assert_ne!(vip(&a1), vip(&b));
    assert_eq!(vip(&a1).to_string(), "127.100.0.1");
    assert_eq!(r.services().0["b"].vip, Some(vip(&b)));
    let (body, _) = r.discover_body("a", &Filter::default());
    let parsed: waypost_model::DiscoverResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed.vip, Some(vip(&a1)));
    // Emptied and registered again: the same VIP.
    r.deregister(&InstanceRef::by_id("a", "10.0.0.1:1"))
        .unwrap();
    r.deregister(&InstanceRef::by_id("a", "10.0.0.1:2"))
        .unwrap();
    let again = r
        .register(&RegisterRequest::new("a", "10.0.0.1:4"))
        .unwrap();
    assert_eq!(vip(&again), vip(&a1));
}

#[test]
fn revisions_move_only_on_visible_changes() {
    let r = Registry::in_memory_for_test(config());
    let req = RegisterRequest::new("web", "10.0.0.1:80");
    let a = r.register(&req).unwrap();
    assert!(a.created);
    assert_eq!(a.instance.revision, 1);
    // Same fields again: no new revision.
    let again = r.register(&req).unwrap();
    assert!(!again.created);
    assert_eq!(again.instance.revision, 1);
    assert_eq!(r.head(), 1);
    // A heartbeat moves nothing.
    r.heartbeat(&InstanceRef::by_address("web", "10.0.0.1:80"))
        .unwrap();
    assert_eq!(r.head(), 1);
    // A change of tags does.
    let changed = r
        .register(&RegisterRequest {
            tags: vec!["v2".into()],
            ..req.clone()
        })
        .unwrap();
    assert_eq!(changed.instance.revision, 2);
    // Draining twice moves once.
    let (i, rev) = r
        .drain(&InstanceRef::by_id("web", "10.0.0.1:80"), true)
        .unwrap();
    assert_eq!((i.status, rev), (Status::Draining, 3));
    let (_, rev) = r
        .drain(&InstanceRef::by_id("web", "10.0.0.1:80"), true)
        .unwrap();
    assert_eq!(rev, 3);
    let (_, _, rev) = r
        .deregister(&InstanceRef::by_id("web", "10.0.0.1:80"))
        .unwrap();
    assert_eq!(rev, 4);
    let changes = r.changes_since(0, 4).unwrap();
    assert_eq!(
        changes.iter().map(|c| c.revision).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn endpoint_lookup_finds_instances_registered_with_an_id() {
    let r = Registry::in_memory_for_test(config());
    let req = RegisterRequest {
        id: Some("web-1".into()),
        ..RegisterRequest::new("web", "http://localhost:8001")
    };
    r.register(&req).unwrap();
    let renewed = r
        .heartbeat(&InstanceRef::by_address("web", "localhost:8001"))
        .unwrap();
    assert_eq!(renewed.id.as_str(), "web-1");
    assert!(matches!(
        r.heartbeat(&InstanceRef::by_address("web", "localhost:8002")),
        Err(RegistryError::NotFound { .. })
    ));
}

#[test]
fn the_instance_limit_is_enforced_for_new_instances_only() {
    let r = Registry::in_memory_for_test(config());
    for port in 1..=3 {
        r.register(&RegisterRequest::new("web", format!("10.0.0.1:{port}")))
            .unwrap();
    }
    assert!(matches!(
        r.register(&RegisterRequest::new("web", "10.0.0.1:4")),
        Err(RegistryError::Full(3))
    ));
    r.register(&RegisterRequest {
        weight: Some(5),
        ..RegisterRequest::new("web", "10.0.0.1:1")
    })
    .unwrap();
}

#[test]
fn overdue_instances_expire_and_renewed_ones_do_not() {
    let r = Registry::in_memory_for_test(config());
    let short = RegisterRequest {
        ttl_seconds: Some(1),
        ..RegisterRequest::new("web", "10.0.0.1:1")
    };
    r.register(&short).unwrap();
    r.register(&RegisterRequest {
        ttl_seconds: Some(1),
        ..RegisterRequest::new("web", "10.0.0.1:2")
    })
    .unwrap();
    let later = Instant::now() + Duration::from_millis(1500);
    // As if :2 had heartbeated: its deadline lies beyond `later`.
    {
        let mut inner = r.lock();
        let svc = ServiceName::new("web").unwrap();
        let id = InstanceId::new("10.0.0.1:2").unwrap();
        inner.state.get_mut(&svc, &id).unwrap().deadline = later + Duration::from_secs(5);
    }
    r.expire_at(later);
    let (left, _) = r.discover("web", &Filter::default());
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instance.id.as_str(), "10.0.0.1:2");
    let last = r.changes_since(2, 3).unwrap();
    assert!(matches!(
        &last[0].kind,
        ChangeKind::Remove {
            reason: ChangeReason::Expired,
            ..
        }
    ));
}

#[test]
fn service_revision_tracks_removal_of_the_last_instance() {
    let r = Registry::in_memory_for_test(config());
    r.register(&RegisterRequest::new("web", "10.0.0.1:1"))
        .unwrap();
    r.register(&RegisterRequest::new("db", "10.0.0.1:2"))
        .unwrap();
    assert_eq!(r.service_revision("web"), 1);
    r.deregister(&InstanceRef::by_id("web", "10.0.0.1:1"))
        .unwrap();
    assert_eq!(r.service_revision("web"), 3);
    assert_eq!(r.services().0.len(), 1);
}

#[test]
fn a_service_restored_from_an_image_is_as_new_as_the_image() {
    // web: instance 1 at revision 1, instance 2 at revision 2, instance 2 removed at 4 (the
    // image keeps no trace of the removal); db changed at 3.
    let r = Registry::in_memory_for_test(config());
    for (service, addr) in [
        ("web", "10.0.0.1:1"),
        ("web", "10.0.0.1:2"),
        ("db", "10.0.0.1:3"),
    ] {
        r.register(&RegisterRequest::new(service, addr)).unwrap();
    }
    r.deregister(&InstanceRef::by_id("web", "10.0.0.1:2"))
        .unwrap();
    assert_eq!(r.service_revision("web"), 4);
    let copy = Registry::from_image_for_test(config(), r.image(), Instant::now());
    // Never behind the removal: a blocking query from before it must see a change.
    assert_eq!(copy.service_revision("web"), 4);
    assert_eq!(copy.service_revision("db"), 4);
}

#[test]
fn an_absent_service_has_revision_zero_however_far_the_history_moves() {
    let r = Registry::in_memory_for_test(config());
    // More changes elsewhere than the history keeps (100): the floor moves past 0.
    for _ in 0..75 {
        r.register(&RegisterRequest::new("db", "10.0.0.1:2"))
            .unwrap();
        r.deregister(&InstanceRef::by_id("db", "10.0.0.1:2"))
            .unwrap();
    }
    r.register(&RegisterRequest::new("db", "10.0.0.1:2"))
        .unwrap();
    assert!(
        r.service_revision("web") > 0,
        "a blocking query's floor moves"
    );
    assert_eq!(r.service_revision_or_zero("web"), 0);
    assert_eq!(r.service_revision_or_zero("db"), 151);
}

#[test]
fn expiry_happens_at_the_deadline_not_before() {
    let r = Registry::in_memory_for_test(config());
    let before = Instant::now();
    r.register(&RegisterRequest {
        ttl_seconds: Some(1),
        ..RegisterRequest::new("web", "10.0.0.1:1")
    })
    .unwrap();
    let after = Instant::now();
    let ttl = Duration::from_secs(1);
    // Just before the earliest possible deadline: still there.
    r.expire_at(before + ttl - Duration::from_millis(1));
    assert_eq!(r.status().instances, 1);
    // At the latest possible deadline: gone. The expiry task runs this every 250 ms, so an
    // instance expires within TTL + 250 ms.
    r.expire_at(after + ttl);
    assert_eq!(r.status().instances, 0);
    assert_eq!(r.head(), 2);
}

#[test]
fn the_assembled_discovery_body_is_a_discover_response() {
    let r = Registry::in_memory_for_test(config());
    let rich = RegisterRequest {
        id: Some("a-1".into()),
        tags: vec!["v2".into()],
        metadata: [(
            "note".to_owned(),
            "quote \" back\\slash ünï \u{1}".to_owned(),
        )]
        .into(),
        check: Some(waypost_model::Check {
            interval_seconds: 5,
            timeout_seconds: 1,
            ..waypost_model::Check::http("http://10.0.0.1:80/h")
        }),
        ..RegisterRequest::new("web", "http://10.0.0.1:80")
    };
    r.register(&rich).unwrap();
    r.register(&RegisterRequest::new("web", "10.0.0.2:80"))
        .unwrap();
    r.drain(&InstanceRef::by_id("web", "10.0.0.2:80"), true)
        .unwrap();
    for (filter, want) in [
        (
            Filter {
                healthy_only: true,
                ..Filter::default()
            },
            1,
        ),
        (Filter::default(), 2),
    ] {
        let (body, rev) = r.discover_body("web", &filter);
        let parsed: waypost_model::DiscoverResponse =
            serde_json::from_slice(&body).expect("the body parses as a DiscoverResponse");
        let (structured, _) = r.discover("web", &filter);
        assert_eq!(
            (parsed.service.as_str(), parsed.count, parsed.revision),
            ("web", want, rev)
        );
        let got: Vec<_> = parsed.instances.iter().map(|i| &i.instance).collect();
        let expected: Vec<_> = structured.iter().map(|i| &i.instance).collect();
        assert_eq!(got, expected);
        assert!(parsed.instances.iter().all(|i| i.uptime_seconds >= 0.0));
    }
    let (empty, _) = r.discover_body("nobody", &Filter::default());
    let parsed: waypost_model::DiscoverResponse = serde_json::from_slice(&empty).unwrap();
    assert_eq!(parsed.count, 0);
}

#[test]
fn a_flapping_instance_takes_no_work_keeps_its_account_and_is_counted() {
    let r = Registry::in_memory_for_test(RegistryConfig {
        max_instances: 10,
        ..config()
    });
    for port in 1..=2 {
        r.register(&RegisterRequest::new("web", format!("10.0.0.1:{port}")))
            .unwrap();
    }
    let one = InstanceRef::by_id("web", "10.0.0.1:1");
    let account = "flapping: 5 changes within 120 s";
    let (instance, _) = r
        .report_check(&one, Health::Flapping, Some(account))
        .unwrap();
    assert!(!instance.takes_work());
    assert_eq!(instance.health_output.as_deref(), Some(account));
    assert_eq!(r.services().0["web"].active_instances, 1);
    let healthy = Filter {
        healthy_only: true,
        ..Filter::default()
    };
    assert_eq!(
        r.discover("web", &healthy).0.len(),
        1,
        "only the other takes work"
    );
    assert_eq!(r.discover("web", &Filter::default()).0.len(), 2);
    assert_eq!(r.metrics.flapping_entered.get(), 1);
    assert_eq!(r.metrics.flapping_instances.get(), 1);
    // Reported again (a sidecar setting the record straight): no change, not counted again.
    r.report_check(&one, Health::Flapping, Some(account))
        .unwrap();
    assert_eq!(r.metrics.flapping_entered.get(), 1);
    // Released to critical: the gauge drops, the counter stays.
    r.report_check(&one, Health::Critical, Some("503")).unwrap();
    assert_eq!(r.metrics.flapping_instances.get(), 0);
    assert_eq!(r.metrics.flapping_entered.get(), 1);
    // A flapping instance that leaves takes its share of the gauge with it.
    r.report_check(&one, Health::Flapping, Some(account))
        .unwrap();
    assert_eq!(r.metrics.flapping_instances.get(), 1);
    r.deregister(&one).unwrap();
    assert_eq!(r.metrics.flapping_instances.get(), 0);
    assert_eq!(r.metrics.flapping_entered.get(), 2);
}

#[test]
fn service_summaries_count_active_instances_through_every_change() {
    let r = Registry::in_memory_for_test(RegistryConfig {
        max_instances: 10,
        ..config()
    });
    for port in 1..=3 {
        r.register(&RegisterRequest::new("web", format!("10.0.0.1:{port}")))
            .unwrap();
    }
    let summary = |r: &Registry| r.services().0["web"];
    assert_eq!(summary(&r).active_instances, 3);
    r.drain(&InstanceRef::by_id("web", "10.0.0.1:1"), true)
        .unwrap();
    assert_eq!(summary(&r).active_instances, 2);
    // A critical check takes one more out of the count, a passing one brings it back.
    r.report_check(
        &InstanceRef::by_id("web", "10.0.0.1:2"),
        Health::Critical,
        Some("down"),
    )
    .unwrap();
    assert_eq!(summary(&r).active_instances, 1);
    r.report_check(
        &InstanceRef::by_id("web", "10.0.0.1:2"),
        Health::Passing,
        None,
    )
    .unwrap();
    assert_eq!(summary(&r).active_instances, 2);
    // Re-registering a draining instance as up.
    r.register(&RegisterRequest::new("web", "10.0.0.1:1"))
        .unwrap();
    assert_eq!(summary(&r).active_instances, 3);
    r.drain(&InstanceRef::by_id("web", "10.0.0.1:2"), true)
        .unwrap();
    r.deregister(&InstanceRef::by_id("web", "10.0.0.1:2"))
        .unwrap();
    r.deregister(&InstanceRef::by_id("web", "10.0.0.1:3"))
        .unwrap();
    let s = summary(&r);
    assert_eq!((s.total_instances, s.active_instances), (1, 1));
}

#[test]
fn a_full_service_refuses_new_instances_only() {
    let r = Registry::in_memory_for_test(RegistryConfig {
        max_instances: 10,
        max_instances_per_service: 2,
        ..config()
    });
    r.register(&RegisterRequest::new("a", "10.0.0.1:1"))
        .unwrap();
    r.register(&RegisterRequest::new("a", "10.0.0.1:2"))
        .unwrap();
    let head = r.head();
    assert!(matches!(
        r.register(&RegisterRequest::new("a", "10.0.0.1:3")),
        Err(RegistryError::ServiceFull { max: 2, .. })
    ));
    assert_eq!(r.head(), head, "a refusal changes nothing");
    assert!(
        r.register(&RegisterRequest::new("a", "10.0.0.1:2")).is_ok(),
        "updates pass"
    );
    assert!(
        r.register(&RegisterRequest::new("b", "10.0.0.1:3")).is_ok(),
        "other services too"
    );
}

/// Issue 12: an instance updated, or deregistered and registered again, before its TTL ran
/// out expired twice (two `remove` events, two revisions), because each registration queued
/// its own expiry entry and both came due in one pass.
#[test]
fn one_expiry_is_one_removal_after_updates_and_re_registration() {
    let t0 = Instant::now();
    let r = Registry::in_memory_for_test(RegistryConfig {
        max_instances: 10,
        ..config()
    });
    let reg = |tags: &[&str]| RegisterRequest {
        ttl_seconds: Some(3),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..RegisterRequest::new("s", "127.0.0.1:8001")
    };
    let by_id = InstanceRef::by_id("s", "127.0.0.1:8001");
    // Registered, then updated; then a second instance deregistered and registered again.
    r.register_at(&reg(&[]), t0).unwrap();
    r.register_at(&reg(&["x"]), t0 + Duration::from_millis(500))
        .unwrap();
    let other = |at| {
        r.register_at(
            &RegisterRequest {
                ttl_seconds: Some(3),
                ..RegisterRequest::new("s", "127.0.0.1:8002")
            },
            at,
        )
        .unwrap();
    };
    other(t0);
    r.deregister(&InstanceRef::by_id("s", "127.0.0.1:8002"))
        .unwrap();
    other(t0);
    let head = r.head();
    r.expire_at(t0 + Duration::from_millis(2_900));
    assert_eq!(r.head(), head, "nothing is due before its deadline");
    r.expire_at(t0 + Duration::from_millis(3_400));
    assert_eq!(
        r.head(),
        head + 1,
        "the re-registered instance expires once"
    );
    r.expire_at(t0 + Duration::from_secs(10));
    let removed: Vec<_> = r
        .changes_since(head, r.head())
        .unwrap()
        .into_iter()
        .filter(|c| matches!(c.kind, ChangeKind::Remove { .. }))
        .collect();
    assert_eq!(removed.len(), 2, "one removal per instance: {removed:?}");
    assert_eq!(r.head(), head + 2);
    assert_eq!(r.metrics.expirations.get(), 2);
    assert!(r.heartbeat(&by_id).is_err());
    // A shorter TTL given on update expires at the new, earlier deadline.
    let t1 = t0 + Duration::from_secs(20);
    r.register_at(
        &RegisterRequest {
            ttl_seconds: Some(60),
            ..RegisterRequest::new("s", "127.0.0.1:8003")
        },
        t1,
    )
    .unwrap();
    r.register_at(
        &RegisterRequest {
            ttl_seconds: Some(2),
            ..RegisterRequest::new("s", "127.0.0.1:8003")
        },
        t1,
    )
    .unwrap();
    let head = r.head();
    r.expire_at(t1 + Duration::from_secs(3));
    assert_eq!(r.head(), head + 1, "expired at the shorter TTL");
}

fn preserving() -> RegistryConfig {
    RegistryConfig {
        max_instances: 1_000,
        self_preservation: SelfPreservation {
            enabled: true,
            threshold: 0.5,
            window: Duration::from_secs(30),
            min_instances: 10,
            max_hold: Duration::from_secs(60),
        },
        ..config()
    }
}

fn fleet(r: &Registry, n: u16, now: Instant) {
    for port in 1..=n {
        r.register_at(
            &RegisterRequest {
                ttl_seconds: Some(2),
                ..RegisterRequest::new("fleet", format!("10.0.0.1:{port}"))
            },
            now,
        )
        .unwrap();
    }
}

fn held_count(r: &Registry) -> usize {
    r.discover("fleet", &Filter::default())
        .0
        .iter()
        .filter(|i| i.held)
        .count()
}

/// Issue 12: fifty instances that never renew were held for as long as nothing else changed.
/// Now they are held (and shown as held) for `max_hold`, then released at the threshold's
/// rate, and all gone within `max_hold` plus a few windows.
#[test]
fn a_fleet_that_is_really_gone_leaves_discovery_in_bounded_time() {
    let t0 = Instant::now();
    let r = Registry::in_memory_for_test(preserving());
    fleet(&r, 50, t0);
    let mut now = t0;
    let mut gone_at = None;
    // The expiry task's tick, driven by hand for 10 minutes of registry time.
    while now < t0 + Duration::from_secs(600) {
        now += Duration::from_millis(250);
        r.expire_at(now);
        let left = r.discover("fleet", &Filter::default()).0.len();
        if now < t0 + Duration::from_secs(62) {
            assert_eq!(left, 50, "held for max_hold at {:?}", now - t0);
        }
        if now == t0 + Duration::from_secs(30) {
            assert!(r.status().self_preservation_active);
            assert_eq!(held_count(&r), 50, "every held instance is shown as held");
            let body = String::from_utf8(r.discover_body("fleet", &Filter::default()).0).unwrap();
            assert_eq!(body.matches("\"held\":true").count(), 50);
            assert!(
                r.metrics
                    .render()
                    .contains("waypost_self_preservation_held_instances 50")
            );
        }
        if left == 0 {
            gone_at = Some(now - t0);
            break;
        }
    }
    let gone_at = gone_at.expect("the dead fleet leaves discovery");
    // max_hold (60 s), then at most half per 30 s window: 50 → 25 → 13 → 4 (below the minimum
    // of 10, so all at once).
    assert!(
        gone_at <= Duration::from_secs(60 + 4 * 31),
        "gone after {gone_at:?}"
    );
    assert_eq!(r.metrics.expirations.get(), 50);
    for _ in 0..12 {
        now += Duration::from_millis(250);
        r.expire_at(now);
    }
    assert!(!r.status().self_preservation_active, "the hold is over");
}

/// A frozen control plane (or a cut network) sees every instance overdue at once; heartbeats
/// return within the hold and nothing is expired.
#[test]
fn heartbeats_that_return_within_the_hold_lose_nothing() {
    let t0 = Instant::now();
    let r = Registry::in_memory_for_test(preserving());
    fleet(&r, 50, t0);
    // Frozen for 40 s: the first pass after it finds all fifty overdue.
    let thawed = t0 + Duration::from_secs(40);
    r.expire_at(thawed);
    assert_eq!(held_count(&r), 50);
    // Most of the fleet (more than the threshold's half) is cut off for another 15 s; the rest
    // heartbeats at once.
    for port in 1..=20u16 {
        r.heartbeat_at(
            &InstanceRef::by_id("fleet", format!("10.0.0.1:{port}")),
            thawed,
        )
        .unwrap();
    }
    assert_eq!(
        held_count(&r),
        30,
        "a heartbeat ends the hold of its instance"
    );
    let mut now = thawed;
    while now < thawed + Duration::from_secs(15) {
        now += Duration::from_millis(250);
        r.expire_at(now);
    }
    for port in 1..=50u16 {
        r.heartbeat_at(
            &InstanceRef::by_id("fleet", format!("10.0.0.1:{port}")),
            now,
        )
        .unwrap();
    }
    r.expire_at(now + Duration::from_millis(250));
    assert_eq!(r.discover("fleet", &Filter::default()).0.len(), 50);
    assert_eq!(held_count(&r), 0);
    assert_eq!(r.metrics.expirations.get(), 0, "nothing expired");
}

#[test]
fn an_expiry_decided_before_a_registration_never_removes_the_new_one() {
    let r = Registry::in_memory_for_test(config());
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(2);
    let req = RegisterRequest {
        ttl_seconds: Some(1),
        ..RegisterRequest::new("web", "10.0.0.1:80")
    };
    r.register_at(&req, t0).unwrap();
    // The leader decides the expiry; the same registration arrives before it is applied.
    let decided = r.expire_due(later);
    assert_eq!(decided.len(), 1, "{decided:?}");
    r.register_at(&req, later).unwrap();
    let head = r.head();
    assert_eq!(r.propose_at(&decided[0], later), Reply::Nothing);
    assert_eq!((r.head(), r.snapshot(Some("web")).0.len()), (head, 1));

    // Deregistered and registered anew (a new registration) between decision and apply.
    let decided = r.expire_due(later + Duration::from_secs(2));
    assert_eq!(decided.len(), 1, "{decided:?}");
    r.deregister(&InstanceRef::by_id("web", "10.0.0.1:80"))
        .unwrap();
    r.register_at(&req, later + Duration::from_secs(2)).unwrap();
    let head = r.head();
    assert_eq!(
        r.propose_at(&decided[0], later + Duration::from_secs(2)),
        Reply::Nothing
    );
    assert_eq!((r.head(), r.snapshot(Some("web")).0.len()), (head, 1));

    // Left alone, the decided expiry applies.
    let decided = r.expire_due(later + Duration::from_secs(5));
    assert_eq!(decided.len(), 1);
    assert!(matches!(
        r.propose_at(&decided[0], later + Duration::from_secs(5)),
        Reply::Removed { .. }
    ));
    assert!(r.snapshot(Some("web")).0.is_empty());
}

#[test]
fn a_registry_restored_from_its_image_is_the_same_and_allocates_vips_the_same() {
    let r = Registry::in_memory_for_test(RegistryConfig {
        max_instances: 10,
        ..config()
    });
    r.register(&RegisterRequest::new("a", "10.0.0.1:1"))
        .unwrap();
    r.register(&RegisterRequest::new("b", "10.0.0.1:2"))
        .unwrap();
    // `a` empties but keeps its VIP; `d` has a policy and no instance.
    r.deregister(&InstanceRef::by_id("a", "10.0.0.1:1"))
        .unwrap();
    let policy = waypost_model::ServicePolicy {
        min_healthy_percent: Some(20),
        never_empty: true,
    };
    for service in ["b", "d"] {
        r.propose_at(
            &Command::SetPolicy {
                service: ServiceName::new(service).unwrap(),
                policy: Some(policy),
            },
            Instant::now(),
        );
    }
    assert_eq!(r.image().policies.len(), 2);
    let copy = Registry::from_image_for_test(
        RegistryConfig {
            max_instances: 10,
            ..config()
        },
        r.image(),
        Instant::now(),
    );
    assert_eq!(copy.image(), r.image());
    assert_eq!(copy.policy("d"), Some(policy));
    let next = r
        .prepare_register(&RegisterRequest::new("c", "10.0.0.1:3"))
        .unwrap();
    let one = r.propose_at(&next, Instant::now());
    let two = copy.propose_at(&next, Instant::now());
    assert!(matches!(&one, Reply::Registered { created: true, .. }));
    assert_eq!(one, two, "the same command gives the same result on both");
}

#[test]
fn heartbeats_keep_an_instance_past_its_ttl() {
    let start = Instant::now();
    let r = Registry::from_image_for_test(config(), Image::default(), start);
    r.register_at(
        &RegisterRequest {
            ttl_seconds: Some(1),
            ..RegisterRequest::new("web", "10.0.0.1:80")
        },
        start,
    )
    .unwrap();
    let me = InstanceRef::by_id("web", "10.0.0.1:80");
    // A heartbeat every 300 ms for 2.5 s of registry time (the expiry task's tick included).
    for step in 1..=8 {
        let now = start + Duration::from_millis(300 * step);
        r.heartbeat_at(&me, now).unwrap();
        r.expire_at(now + Duration::from_millis(250));
        assert_eq!(
            r.status().instances,
            1,
            "expired despite heartbeats at step {step}"
        );
    }
    // Then silence: gone one TTL after the last heartbeat.
    r.expire_at(start + Duration::from_millis(2400) + Duration::from_secs(1));
    assert_eq!(r.status().instances, 0);
}

#[test]
fn a_restored_registry_gives_every_instance_a_fresh_ttl_when_it_starts_leading() {
    let registered = Instant::now();
    let before = Registry::in_memory_for_test(config());
    before
        .register_at(
            &RegisterRequest {
                ttl_seconds: Some(2),
                ..RegisterRequest::new("web", "10.0.0.1:80")
            },
            registered,
        )
        .unwrap();
    // The process was down for longer than the TTL; it starts leading at `restarted`, with
    // a grace (a cluster's: the election timeout) on top of the TTL.
    let restarted = registered + Duration::from_secs(60);
    let grace = Duration::from_secs(2);
    let after = Registry::new(config(), before.image(), 0, Arc::new(Metrics::new()));
    after.lead(true, grace, restarted);
    after.expire_at(restarted + Duration::from_secs(2) + grace - Duration::from_millis(1));
    assert_eq!(
        after.status().instances,
        1,
        "a restart must not mass-expire"
    );
    let me = InstanceRef::by_id("web", "10.0.0.1:80");
    after
        .heartbeat_at(&me, restarted + Duration::from_secs(3))
        .unwrap();
    after.expire_at(restarted + Duration::from_secs(3) + Duration::from_secs(2));
    assert_eq!(
        after.status().instances,
        0,
        "one TTL after its last heartbeat"
    );
}
