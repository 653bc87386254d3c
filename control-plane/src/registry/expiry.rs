//! Deadlines and the self-preservation rule, both pure: the registry feeds them the time.
//!
//! Deadlines live in a lazy min-heap: a heartbeat only moves the deadline stored with the
//! instance (O(1) on the hot path); when a heap entry comes due, the real deadline is checked
//! and the entry re-queued if the instance was renewed meanwhile.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    time::{Duration, Instant},
};

use waypost_model::{InstanceId, ServiceName};

/// The key of one instance.
pub(crate) type Key = (ServiceName, InstanceId);

#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl ExpiryQueue {
    pub(crate) fn schedule(&mut self, at: Instant, key: Key) {
        self.heap.push(Reverse((at, key)));
    }

    /// Pops every entry due at `now`. Callers check each against the instance's real deadline.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<(Instant, Key)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse(entry)) = self.heap.pop() {
                due.push(entry);
            }
        }
        due
    }
}

/// Self-preservation settings.
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
}

/// How soon held instances are looked at again: by then heartbeats may have resumed.
pub(crate) const HOLD_RECHECK: Duration = Duration::from_secs(1);

/// Tracks recent expiries and decides whether the next batch may expire.
#[derive(Debug)]
pub(crate) struct Preservation {
    settings: SelfPreservation,
    recent: VecDeque<Instant>,
    active: bool,
    /// The last pass that held expiry. Held instances come back every [`HOLD_RECHECK`]; when
    /// none has been held for two of those, they all renewed and the hold is over.
    last_hold: Option<Instant>,
}

/// What the rule decided for one expiry pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Expire the candidates.
    Expire,
    /// Hold them; `became_active` is true on the pass that turned self-preservation on.
    Hold { became_active: bool },
}

impl Preservation {
    pub(crate) fn new(settings: SelfPreservation) -> Self {
        Self {
            settings,
            recent: VecDeque::new(),
            active: false,
            last_hold: None,
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// `candidates` instances are overdue out of `population` registered now.
    pub(crate) fn judge(&mut self, now: Instant, candidates: usize, population: usize) -> Verdict {
        while let Some(t) = self.recent.front() {
            if now.duration_since(*t) > self.settings.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if candidates == 0 {
            if self
                .last_hold
                .is_none_or(|t| now.duration_since(t) > 2 * HOLD_RECHECK)
            {
                self.active = false;
            }
            return Verdict::Expire;
        }
        let s = self.settings;
        // The population at the start of the window includes what already expired in it.
        let lost = self.recent.len() + candidates;
        let base = population + self.recent.len();
        let hold =
            s.enabled && lost >= s.min_instances && (lost as f64) > s.threshold * (base as f64);
        if hold {
            let became_active = !self.active;
            self.active = true;
            self.last_hold = Some(now);
            Verdict::Hold { became_active }
        } else {
            self.active = false;
            self.recent.extend(std::iter::repeat_n(now, candidates));
            Verdict::Expire
        }
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
        q.schedule(t0 + Duration::from_secs(3), key(3));
        q.schedule(t0 + Duration::from_secs(1), key(1));
        q.schedule(t0 + Duration::from_secs(2), key(2));
        let due: Vec<_> = q
            .pop_due(t0 + Duration::from_secs(2))
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(due, vec![key(1), key(2)]);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)).len(), 0);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(9)).len(), 1);
    }

    fn rule(enabled: bool) -> Preservation {
        Preservation::new(SelfPreservation {
            enabled,
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_instances: 3,
        })
    }

    #[test]
    fn holds_when_most_would_expire_at_once() {
        let now = Instant::now();
        let mut p = rule(true);
        // 6 of 10 overdue: more than half.
        assert_eq!(
            p.judge(now, 6, 10),
            Verdict::Hold {
                became_active: true
            }
        );
        assert_eq!(
            p.judge(now, 6, 10),
            Verdict::Hold {
                became_active: false
            }
        );
        assert!(p.active());
        // Passes with nothing overdue right after a hold keep it on (held ones come back)...
        assert_eq!(p.judge(now + HOLD_RECHECK / 2, 0, 10), Verdict::Expire);
        assert!(p.active());
        // ...until no hold for two rechecks: every held instance renewed.
        assert_eq!(p.judge(now + 3 * HOLD_RECHECK, 0, 10), Verdict::Expire);
        assert!(!p.active());
        // Heartbeats resumed for most: 2 of 10 overdue expire normally.
        assert_eq!(
            p.judge(now, 6, 10),
            Verdict::Hold {
                became_active: true
            }
        );
        assert_eq!(p.judge(now, 2, 10), Verdict::Expire);
        assert!(!p.active());
    }

    #[test]
    fn counts_expiries_across_the_window() {
        let now = Instant::now();
        let mut p = rule(true);
        assert_eq!(p.judge(now, 2, 10), Verdict::Expire);
        // 2 already gone in the window + 2 more = 4 of 10: fine.
        assert_eq!(p.judge(now, 2, 8), Verdict::Expire);
        // 4 gone + 2 = 6 of 10: hold.
        assert!(matches!(p.judge(now, 2, 6), Verdict::Hold { .. }));
        // After the window passes, the old expiries no longer count.
        assert_eq!(
            p.judge(now + Duration::from_secs(11), 2, 6),
            Verdict::Expire
        );
    }

    #[test]
    fn small_sets_and_disabled_rule_always_expire() {
        let now = Instant::now();
        assert_eq!(rule(true).judge(now, 2, 2), Verdict::Expire);
        assert_eq!(rule(false).judge(now, 10, 10), Verdict::Expire);
    }
}
