//! A bounded in-memory cache of byte bodies that never change for their key (a photo by its hash, a
//! guest menu compressed for one menu version and table). When a new entry would take it over its
//! budget, other entries are dropped first (any will do: each is cheap to make again), so the cache
//! never holds more than its budget whatever keys clients ask for.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::web::Bytes;
use dashmap::DashMap;

pub struct ByteCache<K: Eq + Hash + Clone> {
    entries: DashMap<K, Bytes>,
    bytes: AtomicUsize,
    budget: usize,
}

impl<K: Eq + Hash + Clone> ByteCache<K> {
    pub fn new(budget: usize) -> Self {
        ByteCache {
            entries: DashMap::new(),
            bytes: AtomicUsize::new(0),
            budget,
        }
    }

    pub fn get(&self, key: &K) -> Option<Bytes> {
        self.entries.get(key).map(|e| e.value().clone())
    }

    /// Keeps `value` unless it alone would take more than an eighth of the budget.
    pub fn put(&self, key: K, value: Bytes) {
        let size = value.len();
        if size > self.budget / 8 {
            return;
        }
        while self.bytes.load(Ordering::Relaxed) + size > self.budget {
            let Some(victim) = self.entries.iter().next().map(|e| e.key().clone()) else {
                break;
            };
            if let Some((_, old)) = self.entries.remove(&victim) {
                self.bytes.fetch_sub(old.len(), Ordering::Relaxed);
            }
        }
        match self.entries.insert(key, value) {
            Some(old) => {
                self.bytes.fetch_add(size, Ordering::Relaxed);
                self.bytes.fetch_sub(old.len(), Ordering::Relaxed);
            }
            None => {
                self.bytes.fetch_add(size, Ordering::Relaxed);
            }
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_holds_more_than_its_budget() {
        let cache = ByteCache::new(1000);
        for i in 0..100u32 {
            cache.put(i, Bytes::from(vec![0u8; 100]));
            assert!(cache.held() <= 1000, "{} after {i}", cache.held());
        }
        cache.put(7, Bytes::from(vec![0u8; 200]));
        assert!(
            cache.get(&7).is_none(),
            "an entry over an eighth of the budget is not kept"
        );
        cache.put(1, Bytes::from(vec![1u8; 50]));
        cache.put(1, Bytes::from(vec![2u8; 60]));
        assert_eq!(cache.get(&1).map(|b| b[0]), Some(2));
        assert!(cache.held() <= 1000);
    }
}
