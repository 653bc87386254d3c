//! A linearizability checker for the history of one instance key.
//!
//! **Model.** The key is a register holding *present* or *absent*, absent at first:
//! - register: makes it present; answered 201 (created) when it was absent, 200 (updated)
//!   when it was present;
//! - deregister: makes it absent; answered 200 when it was present, 404 `instance_not_found`
//!   when it was absent;
//! - discover: observes present or absent, and changes nothing.
//!
//! A write whose outcome is unknown (503 `no_leader`, no answer) may have taken effect at any
//! moment after its invocation, or never: it has no completion time (it stays concurrent with
//! everything after its invocation), may be linearized with whatever answer the model gives,
//! or be left out. A read that failed changed nothing and is dropped.
//!
//! **Algorithm** (Wing & Gong's search, with Lowe's memoisation, as in Knossos and Porcupine).
//! A history is linearizable when its operations can be put in one sequence that the model
//! accepts (each with the answer it got) and that keeps real-time order: an operation that
//! completed before another was invoked comes first. Depth-first search builds the sequence
//! from the front. At each step, the candidates for the next place are the operations not yet
//! placed that were invoked before the earliest completion among the *known* operations not
//! yet placed (anything invoked after that completion must come after that operation). For each
//! candidate the model is stepped; when it accepts, the search goes on from the new state,
//! otherwise the next candidate is tried (backtracking). The search succeeds when every known
//! operation is placed (operations of unknown outcome may remain: they never happened).
//! Two partial sequences that placed the same set of operations and reached the same model
//! state have the same futures, so each (set, state) pair that was explored and failed is
//! remembered and never explored again; this bounds the work by the number of distinct pairs,
//! small for the histories the tests make (a few clients, tens of operations per key).

use std::collections::HashSet;

/// What was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Register,
    Deregister,
    Discover,
}

/// What the answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Register: 201 (`created`: it was absent) or 200 (it was present).
    Registered { created: bool },
    /// Deregister: 200 (it was present).
    Deregistered,
    /// Deregister: 404 `instance_not_found` (it was absent).
    NotFound,
    /// Discover: what the read saw.
    Observed { present: bool },
    /// No answer, or 503 `no_leader`: a write may or may not have happened.
    Unknown,
}

/// One operation on one key: invoked at `call`, answered at `ret` (`None`: never, for an
/// unknown outcome), in microseconds since a common origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub client: usize,
    pub op: Op,
    pub call: u64,
    pub ret: Option<u64>,
    pub outcome: Outcome,
}

/// The model: the state after `op` with answer `outcome` from state `present`, or `None`
/// when that answer is impossible in that state.
fn step(present: bool, op: Op, outcome: Outcome) -> Option<bool> {
    match (op, outcome) {
        (Op::Register, Outcome::Registered { created }) => (created != present).then_some(true),
        (Op::Register, Outcome::Unknown) => Some(true),
        (Op::Deregister, Outcome::Deregistered) => present.then_some(false),
        (Op::Deregister, Outcome::NotFound) => (!present).then_some(false),
        (Op::Deregister, Outcome::Unknown) => Some(false),
        (Op::Discover, Outcome::Observed { present: seen }) => (seen == present).then_some(present),
        _ => None,
    }
}

/// Which operations are placed, as bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Placed(Vec<u64>);

impl Placed {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

struct Search<'a> {
    ops: &'a [Event],
    /// Explored (placed, state) pairs from which no linearization was found.
    failed: HashSet<(Placed, bool)>,
    /// The sequence being built (for the report).
    order: Vec<usize>,
    /// The longest sequence reached (for the report of a failure).
    best: Vec<usize>,
}

impl Search<'_> {
    fn dfs(&mut self, placed: &mut Placed, present: bool) -> bool {
        // The earliest completion among the known operations not yet placed.
        let Some(horizon) = (0..self.ops.len())
            .filter(|i| !placed.has(*i))
            .filter_map(|i| self.ops[i].ret)
            .min()
        else {
            return true; // every known operation is placed
        };
        for i in 0..self.ops.len() {
            let e = &self.ops[i];
            // `ops` is sorted by invocation: none after this one can be placed next either.
            if e.call > horizon {
                break;
            }
            if placed.has(i) {
                continue;
            }
            let Some(next) = step(present, e.op, e.outcome) else {
                continue;
            };
            placed.set(i);
            self.order.push(i);
            if self.order.len() > self.best.len() {
                self.best = self.order.clone();
            }
            if !self.failed.contains(&(placed.clone(), next)) {
                if self.dfs(placed, next) {
                    return true;
                }
                self.failed.insert((placed.clone(), next));
            }
            self.order.pop();
            placed.clear(i);
        }
        false
    }
}

/// Whether the history of one key (absent at first) is linearizable; on failure, a report:
/// the history in invocation order and the longest sequence the search could build.
pub fn check(history: &[Event]) -> Result<(), String> {
    let mut ops: Vec<Event> = history
        .iter()
        .filter(|e| !(e.op == Op::Discover && e.outcome == Outcome::Unknown))
        .copied()
        .collect();
    ops.sort_by_key(|e| (e.call, e.ret));
    let mut search = Search {
        ops: &ops,
        failed: HashSet::new(),
        order: Vec::new(),
        best: Vec::new(),
    };
    if search.dfs(&mut Placed::new(ops.len()), false) {
        return Ok(());
    }
    let ms = |t: u64| format!("{}.{:03}", t / 1000, t % 1000);
    let mut report = String::from("not linearizable; operations (ms since start):\n");
    for (i, e) in ops.iter().enumerate() {
        report.push_str(&format!(
            "  #{i:<3} client {} {:?} [{} .. {}] -> {:?}\n",
            e.client,
            e.op,
            ms(e.call),
            e.ret.map_or_else(|| "?".to_owned(), ms),
            e.outcome
        ));
    }
    report.push_str(&format!("longest valid order found: {:?}\n", search.best));
    Err(report)
}
