//! Instances that left (expired or deregistered) in the last minutes, for
//! `GET /discover/{service}/explain`: "why is my instance not returned" is most often "it
//! expired at 10:02". Kept in apply order on every node, from what the commands carry (their
//! proposer's time and caller), so every node explains the same; not in snapshots, so a node
//! that restarts or installs a snapshot starts with none.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use waypost_model::{Instance, Timestamp};

/// How long a departure is kept.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(600);

/// Most departures kept, whatever their age: a mass expiry keeps the newest.
pub(crate) const MAX_DEPARTURES: usize = 10_000;

/// How an instance left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    Expired,
    Deregistered,
}

/// One instance that left.
#[derive(Debug, Clone)]
pub(crate) struct Departure {
    /// As it was when it left.
    pub(crate) instance: Arc<Instance>,
    pub(crate) left: Left,
    /// When (absent in log entries written before departures were kept).
    pub(crate) at: Option<Timestamp>,
    /// Who deregistered it, with authorization on.
    pub(crate) by: Option<String>,
}

/// The departures, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Departures(VecDeque<Departure>);

impl Departures {
    /// Notes a departure and drops those too old or too many.
    pub(crate) fn push(&mut self, departure: Departure) {
        if let Some(at) = departure.at {
            let floor = at.to_system_time() - KEPT_FOR;
            while self
                .0
                .front()
                .is_some_and(|d| d.at.is_none_or(|t| t.to_system_time() < floor))
            {
                self.0.pop_front();
            }
        }
        if self.0.len() == MAX_DEPARTURES {
            self.0.pop_front();
        }
        self.0.push_back(departure);
    }

    /// The departures of `service` within [`KEPT_FOR`] of `now`, newest first.
    pub(crate) fn of<'a>(
        &'a self,
        service: &'a str,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a Departure> + 'a {
        let floor = now.to_system_time() - KEPT_FOR;
        self.0.iter().rev().filter(move |d| {
            d.instance.service.as_str() == service
                && d.at.is_some_and(|t| t.to_system_time() >= floor)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn departure(service: &str, at_secs: u64) -> Departure {
        let instance: Instance = serde_json::from_value(serde_json::json!({
            "id": "a:1", "service": service, "address": "a:1", "host": "a", "port": 1,
            "tags": [], "metadata": {}, "weight": 1, "status": "up", "ttl_seconds": 30,
            "registered_at": "2026-11-30T10:00:00.000Z", "revision": 1
        }))
        .unwrap();
        let at = Timestamp::from(std::time::UNIX_EPOCH + Duration::from_secs(at_secs));
        Departure {
            instance: Arc::new(instance),
            left: Left::Expired,
            at: Some(at),
            by: None,
        }
    }

    #[test]
    fn departures_are_kept_ten_minutes_newest_first() {
        let mut d = Departures::default();
        d.push(departure("web", 1_000));
        d.push(departure("db", 1_100));
        d.push(departure("web", 1_200));
        let now = |s| Timestamp::from(std::time::UNIX_EPOCH + Duration::from_secs(s));
        let web: Vec<_> = d.of("web", now(1_300)).filter_map(|d| d.at).collect();
        assert_eq!(web, [now(1_200), now(1_000)]);
        // Ten minutes after the first, it is no longer shown, and a later push drops it.
        assert_eq!(d.of("web", now(1_601)).count(), 1);
        d.push(departure("web", 1_700));
        assert_eq!(d.0.len(), 3);
        assert_eq!(d.of("db", now(1_700)).count(), 1);
    }
}
