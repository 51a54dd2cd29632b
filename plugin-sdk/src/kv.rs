//! The bounded key-value store behind the `kv-*` host functions.
//!
//! The host keeps one [`KvStore`] per plugin, shared by every instance of
//! it; the test harness's fake host uses the same type, so a plugin's tests
//! see exactly the semantics it gets in production.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use crate::types::KvError;

/// Size bounds of a [`KvStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Entries kept; writing a new key into a full store first drops the
    /// expired entries, and only if none has expired evicts the entry
    /// written least recently.
    pub max_entries: usize,
    /// Longest key, in bytes.
    pub max_key_len: u32,
    /// Longest value, in bytes.
    pub max_value_len: u32,
}

impl KvLimits {
    /// Whether `key` (and `value`, when given) fit these bounds: what every
    /// store checks before it writes, the host's shared one included.
    pub fn check(&self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        if key.len() > self.max_key_len as usize {
            return Err(KvError::KeyTooLong(self.max_key_len));
        }
        if value.is_some_and(|v| v.len() > self.max_value_len as usize) {
            return Err(KvError::ValueTooLong(self.max_value_len));
        }
        Ok(())
    }
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            max_key_len: 256,
            max_value_len: 64 * 1024,
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    /// On the caller's millisecond clock.
    expires_at: Option<u64>,
    /// Write order, the key into `Inner::order`.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Write order → key, so eviction finds the oldest write in O(log n).
    order: BTreeMap<u64, String>,
    /// (expiry, key) of entries with a TTL, so a full store finds the
    /// expired ones without a scan.
    expiry: BTreeSet<(u64, String)>,
    next_seq: u64,
}

impl Inner {
    fn live(&mut self, key: &str, now_ms: u64) -> Option<&mut Entry> {
        let expired = match self.map.get(key) {
            None => return None,
            Some(e) => e.expires_at.is_some_and(|t| t <= now_ms),
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.map.remove(key) {
            Some(e) => {
                self.order.remove(&e.seq);
                if let Some(t) = e.expires_at {
                    self.expiry.remove(&(t, key.to_owned()));
                }
                true
            }
            None => false,
        }
    }

    fn touch(&mut self, key: &str) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(e) = self.map.get_mut(key) {
            self.order.remove(&e.seq);
            e.seq = seq;
            self.order.insert(seq, key.to_owned());
        }
    }

    fn insert(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<u64>,
        max: usize,
        now_ms: u64,
    ) {
        // Full: what has expired goes first, so a burst of new keys cannot
        // push out live entries while dead ones sit in the store.
        if self.map.len() >= max.max(1) {
            while let Some((t, k)) = self.expiry.first()
                && *t <= now_ms
            {
                let k = k.clone();
                self.remove(&k);
            }
        }
        while self.map.len() >= max.max(1) {
            let Some((_, oldest)) = self.order.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.remove(&oldest);
        }
        if let Some(t) = expires_at {
            self.expiry.insert((t, key.to_owned()));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.to_owned());
        self.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at,
                seq,
            },
        );
    }
}

/// A bounded, TTL-aware key-value store. All methods take the current time
/// in milliseconds so the caller owns the clock (real or fake).
#[derive(Debug, Default)]
pub struct KvStore {
    inner: Mutex<Inner>,
    limits: KvLimits,
}

impl KvStore {
    /// An empty store with these bounds.
    pub fn new(limits: KvLimits) -> Self {
        Self {
            inner: Mutex::default(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock cannot leave `Inner`
        // inconsistent in a way that matters more than losing the store.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        self.limits.check(key, None)
    }

    /// The value of `key`, unless missing or expired.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<Vec<u8>> {
        self.lock().live(key, now_ms).map(|e| e.value.clone())
    }

    /// Stores `value`; `ttl_ms` replaces any previous expiry.
    pub fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), KvError> {
        self.limits.check(key, Some(value))?;
        let expires_at = ttl_ms.map(|t| now_ms.saturating_add(t));
        let mut inner = self.lock();
        inner.remove(key);
        inner.insert(
            key,
            value.to_vec(),
            expires_at,
            self.limits.max_entries,
            now_ms,
        );
        Ok(())
    }

    /// Adds `delta` to the i64 counter at `key` (missing or expired counts
    /// as 0, saturating at the i64 bounds) and returns the new value.
    /// `ttl_ms` applies only when the entry is created.
    pub fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<i64, KvError> {
        self.check_key(key)?;
        let mut inner = self.lock();
        if let Some(entry) = inner.live(key, now_ms) {
            let bytes: [u8; 8] = entry
                .value
                .as_slice()
                .try_into()
                .map_err(|_| KvError::NotACounter)?;
            let next = i64::from_le_bytes(bytes).saturating_add(delta);
            entry.value = next.to_le_bytes().to_vec();
            inner.touch(key);
            return Ok(next);
        }
        let expires_at = ttl_ms.map(|t| now_ms.saturating_add(t));
        inner.insert(
            key,
            delta.to_le_bytes().to_vec(),
            expires_at,
            self.limits.max_entries,
            now_ms,
        );
        Ok(delta)
    }

    /// Removes `key`; whether it was there (expired entries count as absent).
    pub fn delete(&self, key: &str, now_ms: u64) -> bool {
        let mut inner = self.lock();
        inner.live(key, now_ms).is_some() && inner.remove(key)
    }

    /// Entries held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry.
    pub fn purge_expired(&self, now_ms: u64) {
        let mut inner = self.lock();
        while let Some((t, k)) = inner.expiry.first()
            && *t <= now_ms
        {
            let k = k.clone();
            inner.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> KvStore {
        KvStore::new(KvLimits {
            max_entries: 3,
            max_key_len: 8,
            max_value_len: 4,
        })
    }

    #[test]
    fn ttl_expires_entries() {
        let kv = small();
        kv.set("a", b"1", Some(100), 1_000).unwrap();
        assert_eq!(kv.get("a", 1_099), Some(b"1".to_vec()));
        assert_eq!(kv.get("a", 1_100), None);
        assert!(kv.is_empty(), "reading an expired entry drops it");
    }

    #[test]
    fn full_store_evicts_least_recently_written() {
        let kv = small();
        for k in ["a", "b", "c"] {
            kv.set(k, b"x", None, 0).unwrap();
        }
        kv.set("a", b"y", None, 0).unwrap(); // rewrite: "b" is now the oldest
        kv.set("d", b"x", None, 0).unwrap();
        assert_eq!(kv.len(), 3);
        assert_eq!(kv.get("b", 0), None);
        assert_eq!(kv.get("a", 0), Some(b"y".to_vec()));
    }

    #[test]
    fn a_full_store_drops_expired_entries_before_live_ones() {
        let kv = small();
        let max = kv.limits.max_entries;
        // The oldest write has no TTL and stays live; the next ones expire at 10.
        kv.set("keep", b"v", None, 0).unwrap();
        for i in 1..max {
            kv.set(&format!("t{i}"), b"v", Some(10), 0).unwrap();
        }
        assert_eq!(kv.len(), max);
        kv.set("new", b"v", None, 20).unwrap();
        assert_eq!(kv.get("keep", 20), Some(b"v".to_vec()), "live entry kept");
        assert_eq!(kv.get("new", 20), Some(b"v".to_vec()));
        assert_eq!(kv.len(), 2, "every expired entry went, not just one");
        // Nothing expired: the least recently written goes.
        for i in 0..max {
            kv.set(&format!("n{i}"), b"v", None, 30).unwrap();
        }
        assert_eq!(kv.get("keep", 30), None);
        assert_eq!(kv.len(), max);
    }

    #[test]
    fn increment_counts_and_refuses_non_counters() {
        let kv = small();
        assert_eq!(kv.increment("n", 2, Some(50), 0), Ok(2));
        assert_eq!(kv.increment("n", -5, None, 10), Ok(-3));
        assert_eq!(
            kv.increment("n", 1, None, 50),
            Ok(1),
            "expired counter restarts"
        );
        kv.set("s", b"abc", None, 0).unwrap();
        assert_eq!(kv.increment("s", 1, None, 0), Err(KvError::NotACounter));
        assert_eq!(kv.increment("m", i64::MAX, None, 0), Ok(i64::MAX));
        assert_eq!(kv.increment("m", 1, None, 0), Ok(i64::MAX), "saturates");
    }

    #[test]
    fn bounds_are_errors_not_truncation() {
        let kv = small();
        assert_eq!(
            kv.set("123456789", b"", None, 0),
            Err(KvError::KeyTooLong(8))
        );
        assert_eq!(
            kv.set("k", b"12345", None, 0),
            Err(KvError::ValueTooLong(4))
        );
        assert!(kv.is_empty());
    }

    #[test]
    fn delete_and_purge() {
        let kv = small();
        kv.set("a", b"1", Some(10), 0).unwrap();
        kv.set("b", b"1", None, 0).unwrap();
        assert!(!kv.delete("a", 10));
        assert!(kv.delete("b", 10));
        kv.set("c", b"1", Some(5), 0).unwrap();
        kv.purge_expired(5);
        assert!(kv.is_empty());
    }
}
