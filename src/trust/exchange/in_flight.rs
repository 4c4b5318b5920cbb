//! CI tokens this process is exchanging right now, and those it recently used up.
//!
//! A second request with the same CI token while the first runs is told at once that the
//! token is being exchanged (and may retry), and a replay of a token this process used
//! up is refused before any policy is evaluated, token signed or store asked. Both are
//! only shortcuts within one process: the store's atomic steps are what guarantee that
//! one CI token buys one access token, across replicas.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::trust::store::ReplayKey;

/// The replay keys of the exchanges in flight.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    keys: Arc<Mutex<HashSet<ReplayKey>>>,
}

/// Held while an exchange of `key` runs; dropping it (also on cancellation) frees the key.
#[derive(Debug)]
pub(super) struct InFlightGuard {
    keys: Arc<Mutex<HashSet<ReplayKey>>>,
    key: ReplayKey,
}

impl InFlight {
    /// Marks `key` in flight; `None` when another exchange of it is.
    pub fn enter(&self, key: &ReplayKey) -> Option<InFlightGuard> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.insert(key.clone()).then(|| InFlightGuard {
            keys: Arc::clone(&self.keys),
            key: key.clone(),
        })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.remove(&self.key);
    }
}

/// How many used CI tokens a process remembers, and for how long. Forgetting early only
/// costs a store round trip; remembering past the replay record's expiry is harmless,
/// as verification refuses such an expired token first.
const RECENTLY_USED_CAPACITY: u64 = 100_000;
const RECENTLY_USED_FOR: Duration = Duration::from_secs(3600);

/// CI tokens this process used up, remembered by the SHA-256 of their replay key (a
/// `jti` may be kilobytes long; the digest keeps each entry small).
pub(super) struct RecentlyUsed {
    keys: moka::sync::Cache<[u8; 32], ()>,
}

impl Default for RecentlyUsed {
    fn default() -> Self {
        Self {
            keys: moka::sync::Cache::builder()
                .max_capacity(RECENTLY_USED_CAPACITY)
                .time_to_live(RECENTLY_USED_FOR)
                .build(),
        }
    }
}

impl RecentlyUsed {
    pub fn remember(&self, key: &ReplayKey) {
        self.keys.insert(digest(key), ());
    }

    pub fn contains(&self, key: &ReplayKey) -> bool {
        self.keys.contains_key(&digest(key))
    }
}

/// Issuer names cannot contain NUL, so this encoding is unambiguous.
fn digest(key: &ReplayKey) -> [u8; 32] {
    crate::trust::hash::sha256_of_parts([key.issuer.as_bytes(), b"\0", key.id.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_in_flight_until_its_guard_drops() {
        let in_flight = InFlight::default();
        let key = ReplayKey {
            issuer: "github".to_owned(),
            id: "jti:a".to_owned(),
        };
        let guard = in_flight.enter(&key).expect("free");
        assert!(in_flight.enter(&key).is_none());
        drop(guard);
        assert!(in_flight.enter(&key).is_some());
    }
}
