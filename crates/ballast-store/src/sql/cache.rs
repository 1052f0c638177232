//! A read-through cache for hot point reads (alias resolution, version lookups).
//!
//! Every entry is stamped with the store's write generation, read *before* the database read
//! that filled it. The writer bumps the generation after each commit and *before* answering the
//! callers of that commit, so once a write is acknowledged no reader can be served an entry
//! from before it: a stale entry carries an older generation and is a miss.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Most entries per map; a full map is cleared (the next reads refill it).
const CAPACITY: usize = 4096;

/// The write generation shared by the writer and the readers.
#[derive(Debug, Default)]
pub(super) struct Generation(AtomicU64);

impl Generation {
    /// The current generation; read it before the database read whose result is cached.
    pub(super) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Called by the writer after a commit, before anyone learns of it.
    pub(super) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Entries of one kind, each valid for one generation.
#[derive(Debug)]
pub(super) struct Cached<K, V> {
    map: RwLock<HashMap<K, (u64, V)>>,
}

impl<K, V> Default for Cached<K, V> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Cached<K, V> {
    /// The entry for `key`, if it was filled in generation `generation`.
    pub(super) fn get(&self, key: &K, generation: u64) -> Option<V> {
        let map = self.map.read().ok()?;
        map.get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, v)| v.clone())
    }

    /// Remembers `value`, read from the database after `generation` was read.
    pub(super) fn put(&self, key: K, generation: u64, value: V) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= CAPACITY {
                map.retain(|_, (g, _)| *g == generation);
                if map.len() >= CAPACITY {
                    map.clear();
                }
            }
            map.insert(key, (generation, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_the_generation() {
        let generation = Generation::default();
        let cache: Cached<u32, &str> = Cached::default();
        let g = generation.current();
        cache.put(1, g, "one");
        assert_eq!(cache.get(&1, generation.current()), Some("one"));
        generation.bump();
        assert_eq!(cache.get(&1, generation.current()), None);
        for i in 0..(CAPACITY as u32 + 10) {
            cache.put(i, generation.current(), "x");
        }
        assert!(cache.map.read().map(|m| m.len()).unwrap_or(0) <= CAPACITY);
    }
}
