//! Which offsets may be stored: per partition, the offsets in flight, and the last one
//! of the unbroken run of completed offsets from the oldest in flight.
//!
//! Invariant: an offset is stored only when it and every offset before it (of those
//! begun on its partition) are complete, and stored offsets of a partition only move
//! forward, also when completions race ([`OffsetTracker::complete_and_store`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Per partition, the offsets in flight; yields the offset to store once an unbroken
/// run from the oldest in-flight offset is complete.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), BTreeMap<i64, bool>>,
}

impl OffsetTracker {
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions.entry((topic.to_string(), partition)).or_default().insert(offset, false);
    }

    /// Marks `offset` complete; returns the last offset of the completed prefix when it
    /// advanced (store it: librdkafka commits it + 1).
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        *p.get_mut(&offset)? = true;
        let mut last = None;
        while let Some((&o, &done)) = p.iter().next() {
            if !done {
                break;
            }
            p.remove(&o);
            last = Some(o);
        }
        last
    }

    /// Marks `offset` complete in `tracker` and, when the completed prefix advanced,
    /// passes its last offset to `store` while still holding the lock: completions race
    /// (one task per message), and a lower offset stored after a higher one would move
    /// the partition's commit back and hold it there until the next completion.
    pub fn complete_and_store(
        tracker: &Mutex<OffsetTracker>,
        topic: &str,
        partition: i32,
        offset: i64,
        store: impl FnOnce(i64),
    ) {
        let Ok(mut t) = tracker.lock() else { return };
        if let Some(o) = t.complete(topic, partition, offset) {
            store(o);
        }
    }

    /// Offsets of a partition begun but not complete yet.
    pub fn pending(&self, topic: &str, partition: i32) -> usize {
        self.partitions.get(&(topic.to_string(), partition)).map_or(0, |p| p.values().filter(|done| !**done).count())
    }

    /// Forgets a revoked partition.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn offsets_are_stored_only_over_unbroken_runs() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.begin("d", 0, o);
        }
        t.begin("d", 1, 3);
        assert_eq!(t.complete("d", 0, 12), None, "a gap before 12");
        assert_eq!(t.complete("d", 0, 11), None);
        assert_eq!(t.complete("d", 0, 10), Some(12), "10..=12 complete");
        assert_eq!(t.complete("d", 1, 3), Some(3), "partitions are independent");
        assert_eq!(t.complete("d", 0, 14), None);
        assert_eq!(t.in_flight(), 2);
        t.revoke("d", 0);
        assert_eq!(t.complete("d", 0, 13), None, "revoked partitions are forgotten");
        assert_eq!(t.complete("x", 0, 1), None, "unknown partitions are ignored");
        assert_eq!(t.in_flight(), 0);
    }

    /// Completions race (one task per message): the offsets they store must still only
    /// move forward, or a lower one stored last holds the partition's commit back.
    #[test]
    fn racing_completions_store_offsets_in_order() {
        for round in 0..50 {
            let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
            let n = 64i64;
            for o in 0..n {
                tracker.lock().unwrap().begin("d", 0, o);
            }
            let stored = Arc::new(Mutex::new(Vec::new()));
            let threads: Vec<_> = (0..4)
                .map(|k| {
                    let (tracker, stored) = (tracker.clone(), stored.clone());
                    std::thread::spawn(move || {
                        // Each thread completes every fourth offset, from the end or the start.
                        let mine: Vec<i64> = (0..n).filter(|o| o % 4 == k).collect();
                        let order: Vec<i64> =
                            if (round + k) % 2 == 0 { mine } else { mine.into_iter().rev().collect() };
                        for o in order {
                            OffsetTracker::complete_and_store(&tracker, "d", 0, o, |s| {
                                // A slow store widens any window between the lock and the store.
                                std::thread::yield_now();
                                stored.lock().unwrap().push(s);
                            });
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            let stored = stored.lock().unwrap();
            assert!(stored.windows(2).all(|w| w[0] < w[1]), "stored out of order: {stored:?}");
            assert_eq!(stored.last(), Some(&(n - 1)), "the last offset is stored");
        }
    }
}
