//! A bounded in-memory cache of the read API's one-pair answers (pair id -> the JSON of
//! [`crate::ports::TimedRecord::canonical_json`]), in front of a store whose reads block.
//! A hit is a map lookup under a shared lock: no IO, no hop to another thread.
//!
//! Invariants: the cache never shows what is not durable, nor a record older than the
//! durable one once a newer write has returned. A writer calls [`ReadCache::committed`]
//! after its commit, which replaces the entries of the pairs it wrote (if cached) and
//! advances a generation; a reader that missed fills the entry only if no write
//! committed since it began its read ([`ReadCache::generation`] before the read,
//! [`ReadCache::fill`] after, both under the same lock as `committed`), so a value read
//! before a commit can never be put in after that commit's entries. Eviction drops
//! whole entries (the map is cleared when it reaches its capacity), never changes one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Cached answers of one store.
#[derive(Debug)]
pub struct ReadCache {
    capacity: usize,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    map: HashMap<String, Arc<[u8]>>,
}

impl ReadCache {
    /// A cache of at most `capacity` pairs (0: caches nothing).
    pub fn new(capacity: usize) -> ReadCache {
        ReadCache { capacity, inner: RwLock::new(Inner::default()) }
    }

    /// The cached answer of pair `id`.
    pub fn get(&self, id: &str) -> Option<Arc<[u8]>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).map.get(id).cloned()
    }

    /// The generation to pass to [`Self::fill`]: read it before reading the store.
    pub fn generation(&self) -> u64 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).generation
    }

    /// Caches `json` for pair `id`, read from the store after [`Self::generation`]
    /// returned `generation`; ignored when a write committed since (the value may be
    /// older than that write).
    pub fn fill(&self, generation: u64, id: &str, json: Arc<[u8]>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= self.capacity && !inner.map.contains_key(id) {
            inner.map.clear();
        }
        inner.map.insert(id.to_string(), json);
    }

    /// After a durable write of `written` (pair id, what was written): replaces the
    /// cached entries of those pairs with `encode(what)` (called only for cached pairs),
    /// and makes every fill that began before it a no-op.
    pub fn committed<T>(&self, written: &[(String, T)], encode: impl Fn(&T) -> Option<Vec<u8>>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        for (id, what) in written {
            if inner.map.contains_key(id) {
                match encode(what) {
                    Some(j) => inner.map.insert(id.clone(), j.into()),
                    // Not encodable: the next read goes to the store (and fails there).
                    None => inner.map.remove(id),
                };
            }
        }
    }

    /// After a durable deletion of every record: forgets every entry, and makes every
    /// fill that began before it a no-op.
    pub fn cleared(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        inner.map.clear();
    }

    /// Pairs cached now.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn a_fill_that_began_before_a_commit_is_dropped() {
        let c = ReadCache::new(10);
        let enc = |s: &&str| (*s != "bad").then(|| s.as_bytes().to_vec());
        let g = c.generation();
        // The reader read "old"; a write of "new" commits before it fills.
        c.committed(&[("p".to_string(), "new")], enc);
        c.fill(g, "p", bytes("old"));
        assert_eq!(c.get("p"), None, "a stale read is never cached");
        // A read that began after the commit fills.
        let g = c.generation();
        c.fill(g, "p", bytes("new"));
        assert_eq!(c.get("p").as_deref(), Some(&b"new"[..]));
        // The next commit replaces a cached entry in place.
        c.committed(&[("p".to_string(), "newer")], enc);
        assert_eq!(c.get("p").as_deref(), Some(&b"newer"[..]));
        // A commit of an uncached pair does not add it (the writer does not fill).
        c.committed(&[("q".to_string(), "x")], enc);
        assert_eq!(c.get("q"), None);
        // An entry that cannot be encoded is dropped, not kept stale.
        c.committed(&[("p".to_string(), "bad")], enc);
        assert_eq!(c.get("p"), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = ReadCache::new(2);
        for id in ["a", "b", "c"] {
            let g = c.generation();
            c.fill(g, id, bytes(id));
            assert!(c.len() <= 2);
        }
        assert_eq!(c.get("c").as_deref(), Some(&b"c"[..]));
        let off = ReadCache::new(0);
        off.fill(off.generation(), "a", bytes("a"));
        assert!(off.is_empty());
    }
}
