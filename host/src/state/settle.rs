//! [`Settles`]: corrections to rate-limit buckets written behind the
//! response, so no request waits on them: token settles (refunds and extra
//! charges once actual usage is known) and returned leases.
//!
//! Corrections to one bucket are summed while they wait; a flush (at least
//! every [`FLUSH_EVERY`], and at shutdown) sends each namespace's buckets in
//! one limiter call per [`MAX_BUCKETS`], in `adjust` mode, to Redis only:
//! while Redis is failing they wait here and go when it answers again,
//! never into the local fallback. The queue is bounded by
//! [`MAX_PENDING_BUCKETS`] distinct buckets; corrections to further buckets
//! are dropped and counted.
//!
//! Summing reorders nothing that matters: an adjustment is a signed sum on
//! one bucket, capped at the limit only where refunds would overfill it, and
//! flushes are sent one after another, each after the previous answered.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::keys;
use super::leases::Returned;
use super::limiter::{LeaseTerms, MAX_BUCKETS};
use crate::policy::Bucket;

/// The longest a correction waits before it is sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most distinct buckets with corrections waiting.
pub const MAX_PENDING_BUCKETS: usize = 100_000;

/// One bucket's waiting corrections.
#[derive(Debug, Clone)]
struct Entry {
    /// The net cost to apply (negative: a refund).
    bucket: Bucket,
    /// Leased tokens to retire.
    retire: u64,
}

/// One limiter call's worth of corrections: one namespace, at most
/// [`MAX_BUCKETS`] buckets.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub ns: String,
    pub keys: Vec<String>,
    pub buckets: Vec<Bucket>,
    pub terms: Vec<LeaseTerms>,
}

/// The corrections waiting to be written, by namespace and bucket key.
#[derive(Default)]
pub(crate) struct Settles {
    pending: Mutex<BTreeMap<(String, String), Entry>>,
}

impl Settles {
    /// Queues `buckets`' costs in `ns`; false when some were dropped because
    /// the queue is full.
    pub fn push(&self, ns: &str, buckets: &[Bucket]) -> bool {
        let mut pending = self.pending.lock();
        let mut kept = true;
        for b in buckets.iter().filter(|b| b.cost != 0) {
            kept &= add(&mut pending, ns, b.clone(), 0);
        }
        kept
    }

    /// Queues a returned lease: its unused tokens come back, its grant is
    /// retired.
    pub fn push_returned(&self, r: Returned) -> bool {
        let bucket = Bucket {
            cost: -(r.unused as i64),
            ..r.bucket
        };
        add(&mut self.pending.lock(), &r.ns, bucket, r.granted)
    }

    /// Takes everything waiting, as limiter calls.
    pub fn take(&self) -> Vec<Batch> {
        let pending = std::mem::take(&mut *self.pending.lock());
        let mut batches: Vec<Batch> = Vec::new();
        for ((ns, _), entry) in pending {
            let fits = batches
                .last()
                .is_some_and(|b| b.ns == ns && b.buckets.len() < MAX_BUCKETS);
            if !fits {
                batches.push(Batch {
                    ns: ns.clone(),
                    keys: Vec::new(),
                    buckets: Vec::new(),
                    terms: Vec::new(),
                });
            }
            let batch = batches.last_mut().expect("pushed above");
            batch.keys.push(keys::bucket_key(&ns, &entry.bucket.key));
            batch.terms.push(LeaseTerms {
                retire: entry.retire,
                ..LeaseTerms::default()
            });
            batch.buckets.push(entry.bucket);
        }
        batches
    }

    /// Puts back a batch Redis did not take, merging with what arrived since.
    pub fn restore(&self, batch: Batch) {
        let mut pending = self.pending.lock();
        for (bucket, terms) in batch.buckets.into_iter().zip(batch.terms) {
            add(&mut pending, &batch.ns, bucket, terms.retire);
        }
    }

    /// Buckets with corrections waiting.
    pub fn depth(&self) -> usize {
        self.pending.lock().len()
    }
}

/// Adds one correction; false when it is new and the queue is full.
fn add(
    pending: &mut BTreeMap<(String, String), Entry>,
    ns: &str,
    bucket: Bucket,
    retire: u64,
) -> bool {
    let id = (ns.to_owned(), bucket.key.clone());
    if let Some(entry) = pending.get_mut(&id) {
        entry.bucket.cost = entry.bucket.cost.saturating_add(bucket.cost);
        entry.bucket.shape = bucket.shape;
        entry.retire += retire;
        return true;
    }
    if pending.len() >= MAX_PENDING_BUCKETS {
        return false;
    }
    pending.insert(id, Entry { bucket, retire });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Shape, Unit};

    fn bucket(key: &str, cost: i64) -> Bucket {
        Bucket {
            key: key.into(),
            shape: Shape::Window {
                limit: 100,
                window_ms: 1000,
            },
            cost,
            unit: Unit::Tokens,
        }
    }

    #[test]
    fn corrections_to_one_bucket_are_summed_and_batched_per_namespace() {
        let s = Settles::default();
        s.push("a", &[bucket("x", 5), bucket("y", -2)]);
        s.push("a", &[bucket("x", -3)]);
        s.push("b", &[bucket("x", 1)]);
        assert_eq!(s.depth(), 3);
        let batches = s.take();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].ns, "a");
        let costs: Vec<i64> = batches[0].buckets.iter().map(|b| b.cost).collect();
        assert_eq!(costs, vec![2, -2]);
        assert_eq!(s.depth(), 0);
        s.restore(batches[1].clone());
        s.push("b", &[bucket("x", 1)]);
        assert_eq!(s.take()[0].buckets[0].cost, 2);
    }

    #[test]
    fn a_batch_holds_at_most_max_buckets() {
        let s = Settles::default();
        let many: Vec<Bucket> = (0..MAX_BUCKETS + 1)
            .map(|i| bucket(&format!("k{i}"), 1))
            .collect();
        s.push("a", &many);
        let batches = s.take();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].buckets.len(), MAX_BUCKETS);
    }
}
