//! What one check has seen, and the health it decides from it: results in a row against the
//! check's thresholds, then flap damping over the changes the thresholds let through. Pure:
//! the caller passes the time, so the rules are tested without waiting.
//!
//! Damping counts decided changes (passing to critical or back), not raw results: the
//! thresholds already absorb single blips, and what is left, changing again and again, is an
//! instance that should not get traffic in between. Held as `flapping`, it changes nothing
//! visible while it keeps flapping (no revision per change for every watcher), and it is
//! released once its decided health has not changed for a whole window.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use waypost_model::{Check, Health};

/// A check's rules, as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Failures in a row that make a passing instance critical.
    pub(crate) failures_before_critical: u32,
    /// Successes in a row that make a critical instance passing.
    pub(crate) successes_before_passing: u32,
    /// Changes allowed within the window; more hold the instance. 0: no damping.
    pub(crate) flap_changes: u32,
    /// The window changes are counted in, and the stable time that releases a hold.
    pub(crate) flap_window: Duration,
}

impl From<&Check> for Rules {
    fn from(check: &Check) -> Self {
        Self {
            // The model bounds them from 1; a 0 from elsewhere would mean the same as 1.
            failures_before_critical: check.failures_before_critical.max(1),
            successes_before_passing: check.successes_before_passing.max(1),
            flap_changes: check.flap_changes,
            flap_window: Duration::from_secs(check.flap_window_seconds.into()),
        }
    }
}

/// What one result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Nothing decided: the result agreed, or the streak is below its threshold.
    Nothing,
    /// The thresholds decided a new health (`Passing` or `Critical`).
    Decided(Health),
    /// That change was one too many within the window: the instance is now held as flapping.
    Held,
    /// Stable for the window: the hold ends and the decided health shows again.
    Released,
}

/// One check's memory. Bounded: at most `flap_changes + 1` change times.
#[derive(Debug)]
pub(crate) struct CheckState {
    rules: Rules,
    /// The decided health: `Some(true)` passing, `Some(false)` critical; `None` only before
    /// the first result of a check that the registry showed as flapping (nothing to go by:
    /// the first result decides, without counting as a change).
    passing: Option<bool>,
    /// Results in a row that disagree with `passing`.
    streak: u32,
    /// When `passing` changed, oldest first: those within the window, at most
    /// `flap_changes + 1` (enough to tell "more than `flap_changes`").
    changes: VecDeque<Instant>,
    /// Held as flapping.
    held: bool,
    /// Since when `passing` has been `false` (for `deregister_critical_after`).
    critical_since: Option<Instant>,
}

impl CheckState {
    /// Starts from the health the registry shows, so that a restarted sidecar continues where
    /// the last one left off: a critical instance needs its successes to come back, and a
    /// flapping one stays held until it has been stable for a window counted from now.
    pub(crate) fn new(rules: Rules, recorded: Health, now: Instant) -> Self {
        let damping = rules.flap_changes > 0;
        let (passing, held) = match recorded {
            Health::Passing => (Some(true), false),
            Health::Critical => (Some(false), false),
            Health::Flapping => (None, damping),
        };
        Self {
            rules,
            passing,
            streak: 0,
            changes: if held {
                VecDeque::from([now])
            } else {
                VecDeque::new()
            },
            held,
            critical_since: (passing == Some(false)).then_some(now),
        }
    }

    /// Takes one result at `now`.
    pub(crate) fn observe(&mut self, passed: bool, now: Instant) -> Event {
        let mut event = Event::Nothing;
        match self.passing {
            None => {
                self.passing = Some(passed);
                self.critical_since = (!passed).then_some(now);
            }
            Some(current) if current == passed => self.streak = 0,
            Some(current) => {
                self.streak += 1;
                let needed = if current {
                    self.rules.failures_before_critical
                } else {
                    self.rules.successes_before_passing
                };
                if self.streak >= needed {
                    self.streak = 0;
                    self.passing = Some(passed);
                    self.critical_since = (!passed).then_some(now);
                    event = self.changed(passed, now);
                }
            }
        }
        let stable = self
            .changes
            .back()
            .is_none_or(|last| now.duration_since(*last) >= self.rules.flap_window);
        if self.held && stable {
            self.held = false;
            self.changes.clear();
            event = Event::Released;
        }
        event
    }

    /// Records a decided change and says whether it starts a hold.
    fn changed(&mut self, passed: bool, now: Instant) -> Event {
        let decided = Event::Decided(if passed {
            Health::Passing
        } else {
            Health::Critical
        });
        if self.rules.flap_changes == 0 {
            return decided;
        }
        self.changes.push_back(now);
        let keep = self.rules.flap_changes as usize + 1;
        while let Some(first) = self.changes.front() {
            if self.changes.len() > keep || now.duration_since(*first) >= self.rules.flap_window {
                self.changes.pop_front();
            } else {
                break;
            }
        }
        if !self.held && self.changes.len() > self.rules.flap_changes as usize {
            self.held = true;
            return Event::Held;
        }
        decided
    }

    /// The health to show: `flapping` while held, else the decided one.
    pub(crate) fn health(&self) -> Health {
        match (self.held, self.passing) {
            (true, _) => Health::Flapping,
            (false, Some(false)) => Health::Critical,
            (false, _) => Health::Passing,
        }
    }

    /// Held as flapping.
    pub(crate) fn held(&self) -> bool {
        self.held
    }

    /// Changes remembered within the window (what a new hold reports).
    pub(crate) fn recent_changes(&self) -> usize {
        self.changes.len()
    }

    /// Since when the decided health has been critical, held or not.
    pub(crate) fn critical_since(&self) -> Option<Instant> {
        self.critical_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(failures: u32, successes: u32, flap_changes: u32, window: u64) -> Rules {
        Rules {
            failures_before_critical: failures,
            successes_before_passing: successes,
            flap_changes,
            flap_window: Duration::from_secs(window),
        }
    }

    /// Feeds `results` one second apart from `start`; the health after each.
    fn run(state: &mut CheckState, start: Instant, results: &str) -> String {
        results
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let now = start + Duration::from_secs(i as u64);
                state.observe(c == '+', now);
                match state.health() {
                    Health::Passing => 'P',
                    Health::Critical => 'C',
                    Health::Flapping => 'F',
                }
            })
            .collect()
    }

    #[test]
    fn thresholds_count_results_in_a_row() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(3, 2, 0, 60), Health::Passing, t);
        // Two failures are not enough; a success in between starts the count again.
        assert_eq!(run(&mut s, t, "--+---+-++"), "PPPPPCCCCP");
        assert_eq!(s.critical_since(), None);
    }

    #[test]
    fn the_defaults_keep_one_result_deciding() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(1, 1, 0, 60), Health::Passing, t);
        assert_eq!(run(&mut s, t, "-+-+"), "CPCP");
    }

    #[test]
    fn a_restart_continues_from_the_registry() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(1, 2, 4, 60), Health::Critical, t);
        assert_eq!(s.critical_since(), Some(t));
        assert_eq!(run(&mut s, t, "+-++"), "CCCP");
    }

    #[test]
    fn more_changes_than_allowed_within_the_window_hold_until_stable_for_it() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(1, 1, 4, 10), Health::Passing, t);
        // Four changes are allowed; the fifth within 10 s holds.
        assert_eq!(run(&mut s, t, "-+-+"), "CPCP");
        assert_eq!(s.observe(false, t + Duration::from_secs(4)), Event::Held);
        assert_eq!(s.recent_changes(), 5);
        assert_eq!(s.health(), Health::Flapping);
        // Still changing: still held, and each change restarts the stable time.
        let later = t + Duration::from_secs(5);
        assert_eq!(run(&mut s, later, "+-"), "FF");
        // The last change was at 6 s: held up to 15 s, released at 16 s.
        for second in 7..16 {
            s.observe(false, t + Duration::from_secs(second));
            assert_eq!(s.health(), Health::Flapping, "at {second} s");
        }
        assert_eq!(
            s.observe(false, t + Duration::from_secs(16)),
            Event::Released
        );
        assert_eq!(s.health(), Health::Critical);
        assert_eq!(s.critical_since(), Some(t + Duration::from_secs(6)));
    }

    #[test]
    fn changes_spread_wider_than_the_window_do_not_hold() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(1, 1, 2, 10), Health::Passing, t);
        for i in 0..20u64 {
            let now = t + Duration::from_secs(i * 6);
            assert_ne!(s.observe(i % 2 == 1, now), Event::Held, "change {i}");
        }
        assert!(s.recent_changes() <= 3, "bounded");
    }

    #[test]
    fn damping_off_never_holds_and_releases_a_recorded_flap() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(1, 1, 0, 10), Health::Flapping, t);
        assert!(!s.held());
        assert_eq!(run(&mut s, t, "-+-+-+-+-+-+"), "CPCPCPCPCPCP");
    }

    #[test]
    fn a_flap_shown_by_the_registry_holds_a_window_from_the_start() {
        let t = Instant::now();
        let mut s = CheckState::new(rules(1, 1, 4, 5), Health::Flapping, t);
        // The first result decides without counting as a change; released 5 s after the start.
        assert_eq!(run(&mut s, t, "+++++++"), "FFFFFPP");
    }
}
