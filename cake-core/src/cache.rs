//! [`TtlCache`]: a small in-process cache for hot, rarely changing reads (identities behind
//! tokens, provider settings). Entries live for a fixed time and are dropped on the writes this
//! process makes; another replica's writes show after at most the TTL. It uses the monotonic
//! clock of `std`, not [`crate::ports::Clock`]: expiry of a cache entry is no domain rule.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A bounded map whose entries expire.
pub struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    ttl: Duration,
    max: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache keeping entries for `ttl`, at most `max` of them (it empties when full).
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self { map: Mutex::new(HashMap::new()), ttl, max: max.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut map = self.lock();
        match map.get(key) {
            Some((v, at)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores a value.
    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max {
            map.clear();
        }
        map.insert(key, (value, Instant::now()));
    }

    /// Drops one entry.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Drops every entry whose value matches.
    pub fn remove_where(&self, pred: impl Fn(&V) -> bool) {
        self.lock().retain(|_, (v, _)| !pred(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_evicts_and_bounds() {
        let c = TtlCache::new(Duration::from_millis(30), 2);
        c.insert(1, "a");
        assert_eq!(c.get(&1), Some("a"));
        c.remove(&1);
        assert_eq!(c.get(&1), None);
        c.insert(1, "a");
        c.insert(2, "b");
        c.insert(3, "c"); // full: emptied first
        assert_eq!((c.get(&1), c.get(&3)), (None, Some("c")));
        c.remove_where(|v| *v == "c");
        assert_eq!(c.get(&3), None);
        c.insert(4, "d");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&4), None);
        let off = TtlCache::new(Duration::ZERO, 2);
        off.insert(1, "a");
        assert_eq!(off.get(&1), None);
    }
}
