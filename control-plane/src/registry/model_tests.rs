//! The registry against a model (proptest): random sequences of register (new, update with
//! other tags or TTL, again after a deregistration), heartbeat, deregister, clock advances
//! (expiry) and restarts from a snapshot image, checked after every step against a map of what
//! should be registered. Revisions only grow, one per visible change: every `upsert` in the
//! change log changes what the log has built so far and every `remove` removes something in
//! it, so an instance that expires once is removed once. The log, replayed from the start,
//! rebuilds exactly the registry's state, across restarts too.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use proptest::prelude::*;
use waypost_model::{InstanceRef, RegisterRequest};

use super::*;

/// A step. Two services with three possible instances each keep collisions frequent.
#[derive(Debug, Clone)]
enum Op {
    Register {
        svc: u8,
        inst: u8,
        ttl: u32,
        tag: u8,
    },
    Heartbeat {
        svc: u8,
        inst: u8,
    },
    Deregister {
        svc: u8,
        inst: u8,
    },
    Advance {
        millis: u64,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8, 0..3u8, 1..=4u32, 0..2u8)
            .prop_map(|(svc, inst, ttl, tag)| Op::Register { svc, inst, ttl, tag }),
        3 => (0..2u8, 0..3u8).prop_map(|(svc, inst)| Op::Heartbeat { svc, inst }),
        2 => (0..2u8, 0..3u8).prop_map(|(svc, inst)| Op::Deregister { svc, inst }),
        3 => (0..5_000u64).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Restart),
    ]
}

fn service(svc: u8) -> String {
    format!("svc{svc}")
}

fn id(inst: u8) -> String {
    format!("i{inst}")
}

/// What should be registered: (service, id) -> ((ttl, tag), deadline).
type Model = BTreeMap<(String, String), (Fields, Instant)>;

/// The fields a step can change: TTL and the one tag.
type Fields = (u32, String);

/// Instances as (service, id) -> fields, from the registry or from a replayed change log.
type Seen = BTreeMap<(String, String), Fields>;

fn config() -> RegistryConfig {
    RegistryConfig {
        history: 100_000,
        max_instances: 1_000,
        vip_range: None,
        // (Self-preservation, which holds expiry back on purpose, is off there too.)
        ..super::tests::config()
    }
}

/// A registry restored from another's image at `now`: what a node does with a snapshot.
fn restart(from: &Registry, now: Instant) -> Registry {
    Registry::from_image_for_test(config(), from.image(), now)
}

fn registered(r: &Registry) -> Seen {
    r.snapshot(None)
        .0
        .into_iter()
        .map(|i| ((i.service.to_string(), i.id.to_string()), fields(&i)))
        .collect()
}

fn fields(i: &Instance) -> Fields {
    (i.ttl_seconds, i.tags.concat())
}

fn expected(model: &Model) -> Seen {
    model
        .iter()
        .map(|(k, (fields, _))| (k.clone(), fields.clone()))
        .collect()
}

/// Applies the changes after `seen` to `replayed`; checks their revisions grow one by one.
fn replay(r: &Registry, seen: &mut Revision, replayed: &mut Seen) -> Result<(), TestCaseError> {
    let head = r.head();
    prop_assert!(head >= *seen, "the head went back from {} to {head}", *seen);
    let changes = r
        .changes_since(*seen, head)
        .map_err(|_| TestCaseError::fail(format!("no history from {} to {head}", *seen)))?;
    for change in changes {
        prop_assert_eq!(change.revision, *seen + 1, "revisions come one by one");
        *seen = change.revision;
        match change.kind {
            ChangeKind::Upsert { instance, .. } => {
                let key = (instance.service.to_string(), instance.id.to_string());
                let new = fields(&instance);
                let old = replayed.insert(key.clone(), new.clone());
                prop_assert!(
                    old.as_ref() != Some(&new),
                    "revision {} upserts {key:?} without a change",
                    change.revision
                );
            }
            ChangeKind::Remove { service, id, .. } => {
                let key = (service.to_string(), id.to_string());
                prop_assert!(
                    replayed.remove(&key).is_some(),
                    "revision {} removes {key:?}, which is not there",
                    change.revision
                );
            }
        }
    }
    prop_assert_eq!(*seen, head);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut now = Instant::now();
    let mut registry = Registry::in_memory_for_test(config());
    let mut model = Model::new();
    let mut replayed = Seen::new();
    let mut seen: Revision = registry.head();

    for op in ops {
        let r = &registry;
        match op {
            Op::Register {
                svc,
                inst,
                ttl,
                tag,
            } => {
                let tag = format!("t{tag}");
                let req = RegisterRequest {
                    id: Some(id(inst)),
                    ttl_seconds: Some(ttl),
                    tags: vec![tag.clone()],
                    ..RegisterRequest::new(
                        service(svc),
                        format!("10.0.0.{svc}:{}", 8000 + u16::from(inst)),
                    )
                };
                r.register_at(&req, now).expect("a valid registration");
                model.insert(
                    (service(svc), id(inst)),
                    ((ttl, tag), now + Duration::from_secs(ttl.into())),
                );
            }
            Op::Heartbeat { svc, inst } => {
                let key = (service(svc), id(inst));
                let renewed = r.heartbeat_at(&InstanceRef::by_id(service(svc), id(inst)), now);
                match model.get_mut(&key) {
                    Some(((ttl, _), deadline)) => {
                        prop_assert!(renewed.is_ok(), "{key:?} renews: {renewed:?}");
                        *deadline = now + Duration::from_secs((*ttl).into());
                    }
                    None => prop_assert!(renewed.is_err(), "{key:?} is unknown"),
                }
            }
            Op::Deregister { svc, inst } => {
                let key = (service(svc), id(inst));
                let removed = r.deregister(&InstanceRef::by_id(service(svc), id(inst)));
                prop_assert_eq!(removed.is_ok(), model.remove(&key).is_some(), "{:?}", key);
            }
            Op::Advance { millis } => {
                now += Duration::from_millis(millis);
                r.expire_at(now);
                model.retain(|_, (_, deadline)| *deadline > now);
            }
            Op::Restart => {
                let head = r.head();
                registry = restart(r, now);
                prop_assert_eq!(registry.head(), head, "the head survives a restart");
                // Restored instances get a fresh TTL from the restart.
                for ((ttl, _), deadline) in model.values_mut() {
                    *deadline = now + Duration::from_secs((*ttl).into());
                }
            }
        }
        let r = &registry;
        prop_assert_eq!(registered(r), expected(&model));
        replay(r, &mut seen, &mut replayed)?;
        prop_assert_eq!(
            &replayed,
            &expected(&model),
            "the change log replays to the state"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_registry_follows_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
