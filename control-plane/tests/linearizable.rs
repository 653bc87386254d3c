//! Linearizability under failover, with real processes: clients register, deregister and
//! discover a few instances through random nodes while the leader is killed with SIGKILL and
//! restarted; every instance's history must be linearizable (the checker and its model are in
//! `cluster_procs/history.rs`). The checker's own tests are here too: it accepts a history
//! that is linearizable and rejects ones that are not.

mod cluster_procs;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use cluster_procs::{
    history::{Event, Op, Outcome, check},
    *,
};
use serde_json::json;

const CLIENTS: usize = 4;
const OPS: usize = 50;
const KEYS: usize = 3;

/// One instance per key, alone in its service, so that a discover reads exactly one key.
fn service(k: usize) -> String {
    format!("lin-{k}")
}

/// What one client did: `(key, event)` for every operation, and answers no fault explains.
type Log = (Vec<(usize, Event)>, Vec<String>);

async fn client(
    c: usize,
    http: reqwest::Client,
    urls: Vec<String>,
    origin: Instant,
    done: Arc<AtomicUsize>,
) -> Log {
    let mut rng = Rng::new(0x11ea_0000 + c as u64);
    let mut events = Vec::new();
    let mut unexpected = Vec::new();
    for _ in 0..OPS {
        let node = rng.below(urls.len());
        let k = rng.below(KEYS);
        let target = json!({"service": service(k), "address": "http://10.2.0.1:8000"});
        let (op, call, r) = match rng.below(10) {
            0..=3 => {
                let call = micros(origin);
                let r = post(&http, &urls[node], "/register", &target).await;
                (Op::Register, call, r)
            }
            4..=6 => {
                let call = micros(origin);
                let r = post(&http, &urls[node], "/deregister", &target).await;
                (Op::Deregister, call, r)
            }
            _ => {
                let call = micros(origin);
                let path = format!("/discover/{}?healthy=false", service(k));
                let r = get(&http, &urls[node], &path).await;
                (Op::Discover, call, r)
            }
        };
        let ret = micros(origin);
        let outcome = match (op, r.status()) {
            (Op::Register, Some(201)) => Outcome::Registered { created: true },
            (Op::Register, Some(200)) => Outcome::Registered { created: false },
            (Op::Deregister, Some(200)) => Outcome::Deregistered,
            (Op::Deregister, _) if r.is_problem(404, "instance_not_found") => Outcome::NotFound,
            (Op::Discover, Some(200)) => {
                let n = r.body()["instances"].as_array().map_or(0, Vec::len);
                if n > 1 {
                    unexpected.push(format!("{n} instances in {}: {r:?}", service(k)));
                }
                Outcome::Observed { present: n > 0 }
            }
            _ if r.is_indeterminate() => Outcome::Unknown,
            _ => {
                unexpected.push(format!("{op:?} {} on node {}: {r:?}", service(k), node + 1));
                Outcome::Unknown
            }
        };
        let unknown = outcome == Outcome::Unknown;
        events.push((
            k,
            Event {
                client: c,
                op,
                call,
                ret: (!unknown).then_some(ret),
                outcome,
            },
        ));
        done.fetch_add(1, Ordering::AcqRel);
        let pause = if unknown {
            100
        } else {
            10 + rng.below(20) as u64
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    (events, unexpected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_instance_history_is_linearizable_across_a_leader_kill() {
    let mut procs = Procs::start(3).await;
    let urls = procs.urls();
    let leader = procs.leader().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    let origin = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                c,
                procs.client.clone(),
                urls.clone(),
                origin,
                done.clone(),
            ))
        })
        .collect();

    progress(&done, CLIENTS * OPS / 4).await;
    procs.nodes[leader].kill();
    let new_leader = procs.leader_among(&survivors).await;
    assert_ne!(new_leader, leader);
    progress(&done, CLIENTS * OPS * 3 / 5).await;
    procs.nodes[leader].start().await;

    let mut per_key: Vec<Vec<Event>> = vec![Vec::new(); KEYS];
    let mut unexpected = Vec::new();
    for c in clients {
        let (events, odd) = c.await.unwrap();
        for (k, e) in events {
            per_key[k].push(e);
        }
        unexpected.extend(odd);
    }
    assert!(
        unexpected.is_empty(),
        "answers no fault explains: {unexpected:#?}"
    );
    procs.wait_ready(leader).await;

    let mut failures = Vec::new();
    for (k, history) in per_key.iter().enumerate() {
        let known = history.iter().filter(|e| e.ret.is_some()).count();
        println!(
            "{}: {} operations, {known} with a known outcome",
            service(k),
            history.len()
        );
        if let Err(report) = check(history) {
            failures.push(format!("{}: {report}", service(k)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// The checker itself.

fn ev(client: usize, op: Op, call: u64, ret: Option<u64>, outcome: Outcome) -> Event {
    Event {
        client,
        op,
        call,
        ret,
        outcome,
    }
}

const CREATED: Outcome = Outcome::Registered { created: true };
const UPDATED: Outcome = Outcome::Registered { created: false };
const PRESENT: Outcome = Outcome::Observed { present: true };
const ABSENT: Outcome = Outcome::Observed { present: false };

#[test]
fn the_checker_accepts_a_linearizable_history() {
    use Op::*;
    let history = [
        // Two concurrent registrations: one must be first (created), the other updates.
        ev(0, Register, 0, Some(100), UPDATED),
        ev(1, Register, 10, Some(90), CREATED),
        // A read concurrent with a deregistration may see either state.
        ev(2, Discover, 120, Some(200), ABSENT),
        ev(0, Deregister, 110, Some(210), Outcome::Deregistered),
        ev(1, Discover, 220, Some(230), ABSENT),
        ev(1, Deregister, 240, Some(250), Outcome::NotFound),
        // A registration of unknown outcome that did happen, after its invocation...
        ev(2, Register, 300, None, Outcome::Unknown),
        ev(0, Discover, 400, Some(410), PRESENT),
        // ... and one that never did.
        ev(1, Deregister, 420, None, Outcome::Unknown),
        ev(0, Discover, 500, Some(510), PRESENT),
        // A failed read is no evidence of anything.
        ev(1, Discover, 520, None, Outcome::Unknown),
    ];
    check(&history).unwrap();
}

#[test]
fn the_checker_rejects_histories_that_are_not_linearizable() {
    use Op::*;
    // A read that misses a registration that completed before it began (a stale read).
    let stale = [
        ev(0, Register, 0, Some(10), CREATED),
        ev(1, Discover, 20, Some(30), ABSENT),
    ];
    let err = check(&stale).unwrap_err();
    assert!(err.contains("not linearizable"), "{err}");
    // An acknowledged registration lost: created twice with no deregistration between.
    let lost = [
        ev(0, Register, 0, Some(10), CREATED),
        ev(1, Register, 20, Some(30), CREATED),
    ];
    assert!(check(&lost).is_err());
    // A write of unknown outcome cannot take effect before it was invoked.
    let early = [
        ev(0, Register, 0, Some(10), CREATED),
        ev(1, Discover, 20, Some(30), ABSENT),
        ev(2, Deregister, 40, None, Outcome::Unknown),
    ];
    assert!(check(&early).is_err());
    // A deregistration answered 404 while the instance was there.
    let not_found = [
        ev(0, Register, 0, Some(10), CREATED),
        ev(1, Deregister, 20, Some(30), Outcome::NotFound),
    ];
    assert!(check(&not_found).is_err());
}
