//! Answers prepared as wire bytes when a service's records are built, so that the UDP fast
//! path (`dns::fast`) answers a query by copying bytes instead of building records.
//!
//! The bytes are hickory's: every record is encoded once by hickory's encoder, and a query
//! only lays the pieces out the way hickory's encoder would for the same records in the same
//! order (the tests below compare both byte for byte, for every order of several sets). What
//! that layout depends on, read from hickory-proto 0.26's `BinEncoder` and `Name::emit`:
//! - the question is copied from the query and is never a compression target (hickory stores
//!   the whole question, type and class included, as one candidate, which no name equals);
//! - the first answer writes its owner in full; every later answer shares that owner and
//!   writes a pointer to it;
//! - SRV targets are written in full (RFC 2782: no compression inside SRV data), and each of
//!   their label suffixes becomes a compression candidate;
//! - an additional record's owner (an SRV target) is a pointer to the first candidate with its
//!   bytes: a suffix of the answers' owner, else the target of the first SRV record, in the
//!   answer's order, that ends with it. That pointer is what moves with the order.
//!
//! hickory stops compressing past 64 candidates and 120 compressed names; a set that could
//! reach either is not prepared and takes the ordinary path, as does any set of more than
//! [`MAX_RECORDS`] records (far beyond what fits a UDP answer).

use hickory_proto::{
    rr::Record,
    serialize::binary::{BinEncodable, BinEncoder},
};

use super::weighted::WeightedRecords;

/// The most answer records a prepared answer holds. An A record takes 16 bytes after the
/// first, so no more than about 75 fit the largest UDP answer we send (1232 bytes).
pub const MAX_RECORDS: usize = 64;

/// hickory's encoder keeps at most this many names to point to (`COMPRESSION_CANDIDATE_LIMIT`).
const COMPRESSION_CANDIDATES: usize = 64;

/// hickory compresses at most this many names per message (`COMPRESSED_NAME_LIMIT`).
const COMPRESSED_NAMES: usize = 120;

/// Where the answer section starts for a question of `question_len` bytes (header, then the
/// question).
const HEADER_LEN: usize = 12;

/// The prepared answers of one service, one per query the fast path answers.
#[derive(Debug, Default)]
pub struct PreparedAnswers {
    /// `<service>.service.D` A.
    pub a: Option<Prepared>,
    /// `<service>.service.D` AAAA.
    pub aaaa: Option<Prepared>,
    /// `<service>.service.D` SRV, with the targets' addresses.
    pub srv: Option<Prepared>,
    /// `_<service>._tcp.service.D` SRV, with the targets' addresses.
    pub srv_rfc2782: Option<Prepared>,
}

/// One answer in pieces: the answer records after their shared owner, their weights, and
/// the additional records after theirs.
#[derive(Debug)]
pub struct Prepared {
    /// The answers' owner name in wire form (its labels and the root's zero byte).
    owner: Box<[u8]>,
    /// Each answer record after its owner: type, class, TTL, data length and data.
    answers: Vec<Box<[u8]>>,
    /// The answers' weights, as [`WeightedRecords`] holds them.
    weights: Vec<f64>,
    uneven: bool,
    /// The additional section, in order.
    additionals: Vec<Additional>,
    /// The distinct owners of the additional records.
    targets: Vec<Target>,
    /// Bytes of the answer and additional sections together (the same in every order).
    len: usize,
}

/// An additional record: which target owns it, and what follows its owner.
#[derive(Debug)]
struct Additional {
    target: usize,
    tail: Box<[u8]>,
}

/// Where the owner of some additional records can point to.
#[derive(Debug)]
struct Target {
    /// Offset in the answers' owner of a suffix equal to this name.
    in_owner: Option<u16>,
    /// For each answer record, the offset in its tail of a suffix (of its SRV target) equal
    /// to this name.
    in_answers: Vec<Option<u16>>,
}

impl Prepared {
    /// Prepares `set` with `additionals` after it, or `None` when the set is empty, too large,
    /// or laid out in a way this module does not reproduce (then the ordinary path answers).
    pub fn new(set: &WeightedRecords, additionals: &[Record]) -> Option<Self> {
        let records = set.records();
        if records.is_empty()
            || records.len() > MAX_RECORDS
            || records.len() + additionals.len() + 1 >= COMPRESSED_NAMES
        {
            return None;
        }
        let mut owner: Option<Box<[u8]>> = None;
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            let (name, tail) = encode(record)?;
            match &owner {
                None => owner = Some(name),
                Some(first) if *first == name => {}
                // Every answer of a set shares its owner; a set that does not is not ours.
                Some(_) => return None,
            }
            answers.push(tail);
        }
        let owner = owner?;
        // The question, the owner's labels and every SRV target's labels are candidates.
        let mut candidates = 1 + label_starts(&owner).len();
        for tail in &answers {
            candidates += srv_target(tail).map_or(0, |t| label_starts(t).len());
        }
        if candidates > COMPRESSION_CANDIDATES {
            return None;
        }
        let mut targets: Vec<(Box<[u8]>, Target)> = Vec::new();
        let mut extra = Vec::with_capacity(additionals.len());
        for record in additionals {
            let (name, tail) = encode(record)?;
            let target = match targets.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    let target = Target {
                        in_owner: suffix_at(&owner, &name),
                        in_answers: answers
                            .iter()
                            .map(|tail| {
                                let at = srv_target(tail)?;
                                let offset = tail.len() - at.len();
                                let found = suffix_at(at, &name)?;
                                u16::try_from(offset).ok()?.checked_add(found)
                            })
                            .collect(),
                    };
                    // An additional owner that nothing before it ends with would be written
                    // in full, or partly compressed: not reproduced here.
                    if target.in_owner.is_none() && target.in_answers.iter().all(Option::is_none) {
                        return None;
                    }
                    targets.push((name, target));
                    targets.len() - 1
                }
            };
            extra.push(Additional { target, tail });
        }
        let len = owner.len()
            + answers.iter().map(|t| t.len()).sum::<usize>()
            + 2 * (answers.len() - 1)
            + extra.iter().map(|a| 2 + a.tail.len()).sum::<usize>();
        Some(Self {
            owner,
            answers,
            weights: set.weights().to_vec(),
            uneven: set.uneven(),
            additionals: extra,
            targets: targets.into_iter().map(|(_, t)| t).collect(),
            len,
        })
    }

    /// The answers' weights and whether they differ, to draw an order with.
    pub fn weights(&self) -> (&[f64], bool) {
        (&self.weights, self.uneven)
    }

    /// The answer's size for a question of `question_len` bytes, OPT record aside.
    pub fn message_len(&self, question_len: usize) -> usize {
        HEADER_LEN + question_len + self.len
    }

    /// Appends the answer and additional sections to `out`, which holds the header and the
    /// question, with the answers in `order` (a permutation of the answers' indices). Returns
    /// the number of answer and additional records written.
    pub fn write(&self, out: &mut Vec<u8>, order: &[usize]) -> (u16, u16) {
        debug_assert_eq!(order.len(), self.answers.len());
        let owner_at = out.len();
        let mut tail_at = [0usize; MAX_RECORDS];
        for (position, &i) in order.iter().enumerate() {
            if position == 0 {
                out.extend_from_slice(&self.owner);
            } else {
                out.extend_from_slice(&pointer(owner_at));
            }
            tail_at[i] = out.len();
            out.extend_from_slice(&self.answers[i]);
        }
        for additional in &self.additionals {
            let target = &self.targets[additional.target];
            let at = match target.in_owner {
                Some(offset) => owner_at + usize::from(offset),
                None => order
                    .iter()
                    .find_map(|&i| Some(tail_at[i] + usize::from(target.in_answers[i]?)))
                    .unwrap_or(owner_at),
            };
            out.extend_from_slice(&pointer(at));
            out.extend_from_slice(&additional.tail);
        }
        // Both are at most MAX_RECORDS plus what fits a UDP answer: far below u16::MAX.
        (self.answers.len() as u16, self.additionals.len() as u16)
    }
}

/// A compression pointer to `offset` (RFC 1035 4.1.4).
fn pointer(offset: usize) -> [u8; 2] {
    (0xC000 | offset as u16).to_be_bytes()
}

/// Wire bytes, as kept here.
type Bytes = Box<[u8]>;

/// A record encoded alone by hickory: its owner name (wire form) and the rest.
fn encode(record: &Record) -> Option<(Bytes, Bytes)> {
    let mut bytes = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut bytes);
    record.emit(&mut encoder).ok()?;
    let name_len = name_len(&bytes)?;
    let tail = bytes.split_off(name_len);
    Some((bytes.into_boxed_slice(), tail.into_boxed_slice()))
}

/// The length of the uncompressed name at the start of `bytes`, zero byte included.
fn name_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*bytes.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// The offsets at which the labels of the wire-form `name` start.
fn label_starts(name: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(&len) = name.get(at) {
        if len == 0 {
            break;
        }
        starts.push(at);
        at += 1 + usize::from(len);
    }
    starts
}

/// The offset in `name` of the suffix equal to `other` (both in wire form), if it has one.
/// hickory compares a name's bytes up to its zero byte, case included.
fn suffix_at(name: &[u8], other: &[u8]) -> Option<u16> {
    label_starts(name)
        .into_iter()
        .find(|&at| name[at..] == *other)
        .and_then(|at| u16::try_from(at).ok())
}

/// The target name of an SRV record's tail (type, class, TTL, length, then priority, weight
/// and port before the target), or `None` for another type.
fn srv_target(tail: &[u8]) -> Option<&[u8]> {
    const SRV: [u8; 2] = 33u16.to_be_bytes();
    if tail.get(..2)? != SRV {
        return None;
    }
    tail.get(16..)
}

#[cfg(test)]
mod tests;
