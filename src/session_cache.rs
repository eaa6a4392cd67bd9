//! A bounded, short-lived memory of sessions the database confirmed, for the two hot write routes:
//! placing an order (guest token) and moving an order's status over REST (staff token).
//!
//! Why: under load every such request paid a Postgres round trip to look its session up before the
//! write, which itself goes to Postgres in a group-committed batch — the lookups were as many statements
//! as the writes. A hit here skips the lookup.
//!
//! Why it is safe: a hit is never the last word. The request carries the session's token hash to the
//! persistence writer, which checks every such session inside the batch's own transaction (one
//! statement per batch) and writes nothing for an op whose session has ended — logged out, password
//! changed, staff removed, expired, or moved into the past by an operator. Every other route (reads
//! included) still asks the database each time. Logout, password change and removal also drop the
//! entries here at once, so the common revocations do not even reach a restaurant.
//!
//! Bounded: at most `capacity` entries, each trusted for at most `ttl` and never past the session's own
//! `expires_at`; when full, stale entries are dropped, and if none are stale the new one is not kept (the
//! request still works, it just asks the database).

use std::hash::Hash;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use scan2order_schema::models::StaffUserRow;
use scan2order_schema::tokens::token_hash;

/// SHA-256 of a token: the key, as the database stores it.
pub type TokenHash = [u8; 32];

/// The cache key for a stored token hash (`None` when it is not a SHA-256).
pub fn key_of(hash: &[u8]) -> Option<TokenHash> {
    hash.try_into().ok()
}

struct Entry<V> {
    value: V,
    /// The session's own end, as the database said.
    expires_at: DateTime<Utc>,
    /// When the database confirmed it.
    confirmed: Instant,
}

/// Sessions confirmed by the database, keyed by token hash.
pub struct SessionCache<V, K = TokenHash> {
    map: DashMap<K, Entry<V>>,
    ttl: Duration,
    capacity: usize,
}

impl<V: Clone, K: Eq + Hash + Clone> SessionCache<V, K> {
    /// A cache trusting an entry for `ttl` and holding at most `capacity` (0 or a zero TTL: off).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        SessionCache {
            map: DashMap::new(),
            ttl,
            capacity,
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    fn fresh(&self, e: &Entry<V>, now: DateTime<Utc>, at: Instant) -> bool {
        e.expires_at > now && at.saturating_duration_since(e.confirmed) < self.ttl
    }

    /// The value of a session that is unexpired and was confirmed less than `ttl` before `at`.
    pub fn get(&self, key: &K, now: DateTime<Utc>, at: Instant) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let hit = self
            .map
            .get(key)
            .map(|e| self.fresh(&e, now, at).then(|| e.value.clone()));
        match hit {
            Some(Some(v)) => Some(v),
            Some(None) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a session the database just confirmed at `at`.
    pub fn insert(
        &self,
        key: K,
        value: V,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        at: Instant,
    ) {
        if !self.enabled() || expires_at <= now {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.map.retain(|_, e| self.fresh(e, now, at));
            if self.map.len() >= self.capacity {
                return;
            }
        }
        self.map.insert(
            key,
            Entry {
                value,
                expires_at,
                confirmed: at,
            },
        );
    }

    /// Forgets one session (logout).
    pub fn remove(&self, key: &K) {
        self.map.remove(key);
    }

    /// Forgets every session whose value matches (all sessions of one staff account).
    pub fn remove_where(&self, mut f: impl FnMut(&V) -> bool) {
        self.map.retain(|_, e| !f(&e.value));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The sessions the hot write routes may take from memory (see the module's header).
pub struct SessionCaches {
    /// Customer token hash → phone.
    pub customers: SessionCache<String>,
    /// Staff token hash → the account.
    pub staff: SessionCache<StaffUserRow>,
}

impl SessionCaches {
    pub fn new(ttl: std::time::Duration, capacity: usize) -> SessionCaches {
        SessionCaches {
            customers: SessionCache::new(ttl, capacity),
            staff: SessionCache::new(ttl, capacity),
        }
    }

    /// Forgets one staff session (logout).
    pub fn end_staff_session(&self, token: &str) {
        if let Some(key) = key_of(&token_hash(token)) {
            self.staff.remove(&key);
        }
    }

    /// Forgets every session of one staff account (password change, removal).
    pub fn end_staff_user(&self, user: uuid::Uuid) {
        self.staff.remove_where(|row| row.id == user);
    }
}

/// Applies other nodes' news to this node's caches, so a session that ended anywhere in the fleet is
/// refused here at once (not after the cache's TTL). Notices missed while the node fell behind clear
/// the staff cache: it refills from Postgres.
pub async fn follow_fleet(
    caches: std::sync::Arc<SessionCaches>,
    mut notices: tokio::sync::broadcast::Receiver<scan2order_actors::cluster::fleet::Notice>,
) {
    use scan2order_actors::cluster::fleet::Notice;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match notices.recv().await {
            Ok(Notice::StaffSessionEnded { token_hash }) => {
                let hash: Option<Vec<u8>> = (0..token_hash.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(token_hash.get(i..i + 2)?, 16).ok())
                    .collect();
                if let Some(key) = hash.as_deref().and_then(key_of) {
                    caches.staff.remove(&key);
                }
            }
            Ok(Notice::StaffUserEnded { staff_id, .. }) => caches.end_staff_user(staff_id.get()),
            Ok(Notice::TokensDied { .. }) => {}
            Err(RecvError::Lagged(_)) => caches.staff.remove_where(|_| true),
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_s: u64, cap: usize) -> SessionCache<&'static str, u32> {
        SessionCache::new(Duration::from_secs(ttl_s), cap)
    }

    #[test]
    fn an_entry_is_trusted_until_its_session_expires() {
        let c = cache(60, 10);
        let (now, at) = (Utc::now(), Instant::now());
        c.insert(1, "a", now + chrono::Duration::seconds(5), now, at);
        assert_eq!(c.get(&1, now, at), Some("a"));
        assert_eq!(c.get(&1, now + chrono::Duration::seconds(5), at), None);
        assert!(c.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn an_entry_is_trusted_for_the_ttl_only() {
        let c = cache(60, 10);
        let (now, at) = (Utc::now(), Instant::now());
        c.insert(1, "a", now + chrono::Duration::days(30), now, at);
        assert_eq!(c.get(&1, now, at + Duration::from_secs(59)), Some("a"));
        assert_eq!(c.get(&1, now, at + Duration::from_secs(60)), None);
    }

    #[test]
    fn expired_sessions_are_not_remembered() {
        let c = cache(60, 10);
        let (now, at) = (Utc::now(), Instant::now());
        c.insert(1, "a", now, now, at);
        assert_eq!(c.get(&1, now, at), None);
    }

    #[test]
    fn removal_by_key_and_by_value() {
        let c = cache(60, 10);
        let (now, at) = (Utc::now(), Instant::now());
        let later = now + chrono::Duration::hours(1);
        c.insert(1, "chef", later, now, at);
        c.insert(2, "chef", later, now, at);
        c.insert(3, "admin", later, now, at);
        c.remove(&3);
        assert_eq!(c.get(&3, now, at), None);
        c.remove_where(|v| *v == "chef");
        assert!(c.is_empty());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let c = cache(60, 2);
        let (now, at) = (Utc::now(), Instant::now());
        let later = now + chrono::Duration::hours(1);
        c.insert(1, "a", later, now, at);
        c.insert(2, "b", later, now, at);
        c.insert(3, "c", later, now, at);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&3, now, at), None, "full of fresh entries: not kept");
        // Once the old ones are stale, a new one replaces them.
        let at2 = at + Duration::from_secs(61);
        c.insert(3, "c", later, now, at2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&3, now, at2), Some("c"));
    }

    #[test]
    fn a_zero_capacity_or_ttl_turns_it_off() {
        let (now, at) = (Utc::now(), Instant::now());
        let later = now + chrono::Duration::hours(1);
        for c in [cache(0, 10), cache(60, 0)] {
            c.insert(1, "a", later, now, at);
            assert_eq!(c.get(&1, now, at), None);
        }
    }
}
