//! The order answers are given in: a weighted random permutation, drawn per query.
//!
//! Many resolvers and clients use the first address of an answer, so the order decides where
//! load goes. Each record carries a weight, fixed when the snapshot is built; a query only
//! draws the order, without looking instances up.

use hickory_proto::rr::Record;
use rand::{Rng, seq::SliceRandom};

/// Records with the weight each one is answered by, in the order they were built.
#[derive(Debug, Default, Clone)]
pub struct WeightedRecords {
    // Two parallel vectors (kept the same length by `push`), so that `records()` is a slice
    // for callers that do not care about weights.
    records: Vec<Record>,
    weights: Vec<f64>,
    /// Some weights differ. Most services give every instance the same weight, and then a
    /// uniform shuffle is the same law as the race below, without a logarithm and a sort.
    uneven: bool,
}

impl WeightedRecords {
    /// One record, alone in its answer.
    pub fn single(record: Record) -> Self {
        let mut one = Self::default();
        one.push(record, 1.0);
        one
    }

    /// Adds `record` with `weight` (a record of weight 0 or less comes after all others).
    pub fn push(&mut self, record: Record, weight: f64) {
        self.uneven |= self.weights.first().is_some_and(|first| *first != weight);
        self.records.push(record);
        self.weights.push(weight);
    }

    /// The records in the order they were built.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The weights, in the same order as [`WeightedRecords::records`].
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in a weighted random order: the first is record `i` with probability
    /// `w_i / Σw`, the second is drawn the same way from the rest, and so on (weighted sampling
    /// without replacement). See [`Order::draw`] for how.
    pub fn weighted_order<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<Record> {
        if self.records.len() < 2 {
            return self.records.clone();
        }
        let mut order = Order::default();
        order
            .draw(&self.weights, self.uneven, rng)
            .iter()
            .map(|&i| self.records[i].clone())
            .collect()
    }

    /// Whether some weights differ (see [`Order::draw`]).
    pub fn uneven(&self) -> bool {
        self.uneven
    }
}

/// Room to draw orders in, kept by a caller that draws many (the UDP fast path) so that a draw
/// allocates nothing once the room has grown to the largest answer.
#[derive(Debug, Default)]
pub struct Order {
    indices: Vec<usize>,
    keyed: Vec<(f64, usize)>,
}

impl Order {
    /// A weighted random order of the indices of `weights`, `uneven` when some weights differ.
    ///
    /// Efraimidis and Spirakis's method as an exponential race: each record draws a time
    /// `-ln(u) / w` (exponential with rate `w`, `u` uniform in (0, 1]) and the records are
    /// sorted by it. The smallest of independent exponentials is record `i` with probability
    /// `w_i / Σw`, and by memorylessness the race among the rest starts afresh, so the whole
    /// order has the same law as repeated weighted draws, at the cost of one sort. (The usual
    /// key `u^(1/w)`, largest first, orders the same way; the logarithm keeps precision when
    /// `1/w` is tiny.) Most services give every instance the same weight, and then a uniform
    /// shuffle is the same law, without a logarithm and a sort.
    pub fn draw<R: Rng + ?Sized>(
        &mut self,
        weights: &[f64],
        uneven: bool,
        rng: &mut R,
    ) -> &[usize] {
        self.indices.clear();
        self.indices.extend(0..weights.len());
        if weights.len() < 2 {
            return &self.indices;
        }
        if !uneven {
            self.indices.shuffle(rng);
            return &self.indices;
        }
        self.keyed.clear();
        self.keyed.extend(weights.iter().enumerate().map(|(i, &w)| {
            // `random` is in [0, 1); `1 - u` is in (0, 1], so the logarithm is finite.
            let u = 1.0 - rng.random::<f64>();
            let time = if w > 0.0 { -u.ln() / w } else { f64::INFINITY };
            (time, i)
        }));
        self.keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for (slot, (_, i)) in self.indices.iter_mut().zip(&self.keyed) {
            *slot = *i;
        }
        &self.indices
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::{Name, RData, rdata::A};
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn a(last: u8) -> Record {
        let owner = Name::from_ascii("web.service.waypost.").unwrap();
        Record::from_rdata(owner, 5, RData::A(A(Ipv4Addr::new(127, 0, 0, last))))
    }

    fn last_octet(record: &Record) -> u8 {
        match &record.data {
            RData::A(a) => a.0.octets()[3],
            other => panic!("not an A record: {other:?}"),
        }
    }

    fn set(weights: &[f64]) -> WeightedRecords {
        let mut set = WeightedRecords::default();
        for (i, &w) in weights.iter().enumerate() {
            set.push(a(i as u8), w);
        }
        set
    }

    #[test]
    fn every_order_is_a_permutation() {
        let records = set(&[1.0, 2.0, 5.0, 5.0]);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let mut order: Vec<u8> = records
                .weighted_order(&mut rng)
                .iter()
                .map(last_octet)
                .collect();
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2, 3]);
        }
        assert!(set(&[]).weighted_order(&mut rng).is_empty());
        assert_eq!(set(&[3.0]).weighted_order(&mut rng).len(), 1);
    }

    /// First places follow the weights, and second places follow them among the rest: the
    /// order is weighted sampling without replacement, not only a weighted first pick.
    #[test]
    fn first_and_second_places_follow_the_weights() {
        let records = set(&[1.0, 2.0, 5.0]);
        // Seeded, so the counts are the same at every run; the tolerances would hold for
        // almost any seed (they are five standard deviations or more).
        let mut rng = StdRng::seed_from_u64(15);
        const DRAWS: usize = 40_000;
        let mut first = [0usize; 3];
        // After the heaviest (5) came first, the second is 0 or 1 in the ratio 1 : 2.
        let (mut after_heavy, mut one_second) = (0usize, 0usize);
        for _ in 0..DRAWS {
            let order: Vec<u8> = records
                .weighted_order(&mut rng)
                .iter()
                .map(last_octet)
                .collect();
            first[usize::from(order[0])] += 1;
            if order[0] == 2 {
                after_heavy += 1;
                one_second += usize::from(order[1] == 1);
            }
        }
        for (i, share) in [1.0 / 8.0, 2.0 / 8.0, 5.0 / 8.0].into_iter().enumerate() {
            let expected = DRAWS as f64 * share;
            let sd = (DRAWS as f64 * share * (1.0 - share)).sqrt();
            assert!(
                (first[i] as f64 - expected).abs() < 5.0 * sd,
                "first places {first:?}, expected {expected} for {i}"
            );
        }
        let expected = after_heavy as f64 * 2.0 / 3.0;
        let sd = (after_heavy as f64 * 2.0 / 9.0).sqrt();
        assert!(
            (one_second as f64 - expected).abs() < 5.0 * sd,
            "{one_second} of {after_heavy} second places, expected {expected}"
        );
    }

    #[test]
    fn a_record_without_weight_comes_last() {
        let records = set(&[0.0, 1.0, 1.0]);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let order = records.weighted_order(&mut rng);
            assert_eq!(last_octet(&order[2]), 0);
        }
    }
}
