//! Deadlines and the self-preservation rule, both pure: the registry feeds them the time.
//!
//! Deadlines live in a lazy min-heap: a heartbeat only moves the deadline stored with the
//! instance (O(1) on the hot path); when a heap entry comes due, the real deadline is checked
//! and the entry re-queued if the instance was renewed meanwhile. Each registered instance has
//! exactly one live heap entry: the one whose registration revision and time match what the
//! instance's entry records ([`Queued`]). Any other entry for the same key (queued for an
//! earlier registration of the same id, or before an update moved the deadline earlier) is
//! stale and dropped when it comes up, so one expiry is one removal.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    time::{Duration, Instant},
};

use waypost_model::{InstanceId, Revision, ServiceName};

/// The key of one instance.
pub(crate) type Key = (ServiceName, InstanceId);

/// Which heap entry is the live one for an instance: the revision that registered it (an
/// update keeps it; a deregistration and a new registration of the same id get a new one),
/// the time that entry was queued for, and the entry's own number, unique in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Queued {
    pub(crate) registration: Revision,
    pub(crate) at: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(Instant, u64, Key, Revision)>>,
    next: u64,
}

impl ExpiryQueue {
    /// Queues `key` (registered at `registration`) for `at`; the caller stores the returned
    /// [`Queued`] with the instance, which makes every other entry for it stale.
    pub(crate) fn schedule(&mut self, at: Instant, key: Key, registration: Revision) -> Queued {
        let seq = self.next;
        self.next += 1;
        self.heap.push(Reverse((at, seq, key, registration)));
        Queued {
            registration,
            at,
            seq,
        }
    }

    /// Pops every entry due at `now`. Callers drop the stale ones (see [`Queued`]) and check
    /// the rest against the instance's real deadline.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<(Key, Queued)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, ..))) = self.heap.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((at, seq, key, registration))) = self.heap.pop() {
                due.push((
                    key,
                    Queued {
                        registration,
                        at,
                        seq,
                    },
                ));
            }
        }
        due
    }
}

/// Self-preservation settings.
///
/// The rule: when more than `threshold` of the instances would expire within one `window`
/// (and at least `min_instances` of them), expiry is held, because that pattern means the
/// control plane or its network is at fault more often than half a fleet dying at once. The
/// hold is bounded: an instance held for `max_hold` is released, at most `threshold` of the
/// population per window (the same rate the rule allows without a hold), oldest deadline first.
/// So a frozen control plane or a short network cut expires nothing (heartbeats come back
/// within an interval and renew the held instances), and a fleet that is really gone leaves
/// discovery within `max_hold` plus a few windows (the release halves what is left each
/// window at the default threshold).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfPreservation {
    /// Off: instances always expire on time.
    pub enabled: bool,
    /// Hold expiry when more than this share of instances would expire within one window.
    pub threshold: f64,
    /// The window over which expiries are counted.
    pub window: Duration,
    /// Never hold when fewer than this many instances would expire in the window, so small
    /// development setups expire normally.
    pub min_instances: usize,
    /// The longest a hold lasts before held instances are released at the threshold's rate.
    pub max_hold: Duration,
}

/// How soon held instances are looked at again: by then heartbeats may have resumed.
pub(crate) const HOLD_RECHECK: Duration = Duration::from_secs(1);

/// Tracks recent expiries and decides whether the next batch may expire.
#[derive(Debug)]
pub(crate) struct Preservation {
    settings: SelfPreservation,
    recent: VecDeque<Instant>,
    /// A hold is on: some overdue instances are kept.
    active: bool,
    /// When the current hold began; `max_hold` is counted from here. It lasts until no
    /// instance is held any more (all renewed, released or removed), whatever passes in
    /// between decide about other instances.
    hold_started: Option<Instant>,
}

/// What the rule decided for one expiry pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Expire the first `count` candidates (longest overdue first) and hold the rest; `count`
    /// is every candidate unless a hold that outlived `max_hold` is being released.
    Expire { count: usize },
    /// Hold them all; `became_active` is true on the pass that turned self-preservation on.
    Hold { became_active: bool },
}

impl Preservation {
    pub(crate) fn new(settings: SelfPreservation) -> Self {
        Self {
            settings,
            recent: VecDeque::new(),
            active: false,
            hold_started: None,
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// `candidates` instances are overdue out of `population` registered now, and
    /// `held_elsewhere` instances held by earlier passes are not among the candidates.
    pub(crate) fn judge(
        &mut self,
        now: Instant,
        candidates: usize,
        population: usize,
        held_elsewhere: usize,
    ) -> Verdict {
        while let Some(t) = self.recent.front() {
            if now.duration_since(*t) > self.settings.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let s = self.settings;
        // The population at the start of the window includes what already expired in it.
        let lost = self.recent.len() + candidates;
        let base = population + self.recent.len();
        let over = candidates > 0
            && s.enabled
            && lost >= s.min_instances
            && (lost as f64) > s.threshold * (base as f64);
        if !over {
            if held_elsewhere == 0 {
                self.active = false;
                self.hold_started = None;
            }
            self.recent.extend(std::iter::repeat_n(now, candidates));
            return Verdict::Expire { count: candidates };
        }
        let became_active = !self.active;
        self.active = true;
        let started = *self.hold_started.get_or_insert(now);
        if now.duration_since(started) < s.max_hold {
            return Verdict::Hold { became_active };
        }
        // Held too long: release as many as the rule allows within one window (and at
        // least one, so that a small threshold still ends the hold).
        let allowed = ((s.threshold * base as f64).floor() as usize)
            .max(s.min_instances.saturating_sub(1))
            .max(1)
            .saturating_sub(self.recent.len())
            .min(candidates);
        self.recent.extend(std::iter::repeat_n(now, allowed));
        Verdict::Expire { count: allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        (
            ServiceName::new("s").unwrap(),
            InstanceId::new(&i.to_string()).unwrap(),
        )
    }

    #[test]
    fn queue_pops_only_due_entries_in_order() {
        let t0 = Instant::now();
        let mut q = ExpiryQueue::default();
        q.schedule(t0 + Duration::from_secs(3), key(3), 3);
        q.schedule(t0 + Duration::from_secs(1), key(1), 1);
        let queued = q.schedule(t0 + Duration::from_secs(2), key(2), 2);
        let due: Vec<_> = q.pop_due(t0 + Duration::from_secs(2));
        assert_eq!(due[0].0, key(1));
        assert_eq!(due[1], (key(2), queued));
        assert_eq!(due.len(), 2);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)).len(), 0);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(9)).len(), 1);
    }

    const MAX_HOLD: Duration = Duration::from_secs(60);

    fn rule(enabled: bool) -> Preservation {
        Preservation::new(SelfPreservation {
            enabled,
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_instances: 3,
            max_hold: MAX_HOLD,
        })
    }

    fn all(count: usize) -> Verdict {
        Verdict::Expire { count }
    }

    #[test]
    fn holds_when_most_would_expire_at_once() {
        let now = Instant::now();
        let mut p = rule(true);
        // 6 of 10 overdue: more than half.
        assert_eq!(
            p.judge(now, 6, 10, 0),
            Verdict::Hold {
                became_active: true
            }
        );
        assert_eq!(
            p.judge(now, 6, 10, 0),
            Verdict::Hold {
                became_active: false
            }
        );
        assert!(p.active());
        // Passes that find nothing overdue while the six are held keep the hold on...
        assert_eq!(p.judge(now + HOLD_RECHECK / 2, 0, 10, 6), all(0));
        assert!(p.active());
        // ...and so does one that expires an unrelated instance meanwhile.
        assert_eq!(p.judge(now + HOLD_RECHECK / 2, 1, 10, 6), all(1));
        assert!(p.active());
        // Every held instance renewed: the hold is over.
        assert_eq!(p.judge(now + HOLD_RECHECK, 0, 10, 0), all(0));
        assert!(!p.active());
        // Heartbeats resumed for most: 2 of 10 overdue expire normally.
        assert_eq!(
            p.judge(now, 6, 10, 0),
            Verdict::Hold {
                became_active: true
            }
        );
        assert_eq!(p.judge(now, 2, 10, 0), all(2));
        assert!(!p.active());
    }

    #[test]
    fn counts_expiries_across_the_window() {
        let now = Instant::now();
        let mut p = rule(true);
        assert_eq!(p.judge(now, 2, 10, 0), all(2));
        // 2 already gone in the window + 2 more = 4 of 10: fine.
        assert_eq!(p.judge(now, 2, 8, 0), all(2));
        // 4 gone + 2 = 6 of 10: hold.
        assert!(matches!(p.judge(now, 2, 6, 0), Verdict::Hold { .. }));
        // After the window passes, the old expiries no longer count.
        assert_eq!(p.judge(now + Duration::from_secs(11), 2, 6, 0), all(2));
    }

    #[test]
    fn small_sets_and_disabled_rule_always_expire() {
        let now = Instant::now();
        assert_eq!(rule(true).judge(now, 2, 2, 0), all(2));
        assert_eq!(rule(false).judge(now, 10, 10, 0), all(10));
    }

    /// A fleet that is really gone: held for `max_hold`, then released at most half of what
    /// is left per window, until the remainder is small enough to expire at once.
    #[test]
    fn a_hold_ends_after_max_hold_at_the_thresholds_rate() {
        let start = Instant::now();
        let mut p = rule(true);
        let mut left = 40;
        let mut now = start;
        // Held ones come back every recheck until max_hold has passed.
        while now.duration_since(start) < MAX_HOLD {
            assert!(matches!(p.judge(now, left, left, 0), Verdict::Hold { .. }));
            // A newly overdue instance elsewhere, expired at once, does not restart the hold.
            assert_eq!(p.judge(now + HOLD_RECHECK / 4, 1, left + 100, left), all(1));
            now += HOLD_RECHECK;
        }
        let mut windows = 0;
        while left > 0 {
            let Verdict::Expire { count } = p.judge(now, left, left, 0) else {
                panic!("released after max_hold");
            };
            // At most half at once, or fewer than `min_instances`.
            assert!(count <= left / 2 || count < 3, "{count} of {left} at once");
            left -= count;
            if left > 0 {
                // Within the same window nothing more is released.
                assert_eq!(p.judge(now + HOLD_RECHECK, left, left, 0), all(0));
            }
            now += Duration::from_secs(11);
            windows += 1;
            assert!(windows < 10, "40 instances are gone within a few windows");
        }
        assert!(p.judge(now + HOLD_RECHECK, 0, 0, 0) == all(0) && !p.active());
    }

    /// A frozen control plane or a cut network: everything overdue at once, then heartbeats
    /// return before `max_hold` and nothing was expired.
    #[test]
    fn heartbeats_that_return_within_max_hold_lose_nothing() {
        let start = Instant::now();
        let mut p = rule(true);
        for s in 0..50 {
            let now = start + Duration::from_secs(s);
            assert!(matches!(p.judge(now, 40, 40, 0), Verdict::Hold { .. }));
        }
        // Renewed: nothing is overdue any more.
        assert_eq!(p.judge(start + Duration::from_secs(53), 0, 40, 0), all(0));
        assert!(!p.active());
        // A later, unrelated mass failure starts a new hold, with its own max_hold.
        let later = start + Duration::from_secs(200);
        assert!(matches!(
            p.judge(later, 40, 40, 0),
            Verdict::Hold {
                became_active: true
            }
        ));
    }
}
