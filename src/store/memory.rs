//! The in-memory store: dev mode, tests, and single-process use without persistence.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{ReplayKey, Reservation, Store, StoreError};
use crate::audit::AuditRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayState {
    Reserved,
    Used,
}

#[derive(Default)]
struct Inner {
    replay: HashMap<ReplayKey, (ReplayState, OffsetDateTime)>,
    audit: VecDeque<AuditRecord>,
    /// Reservations since the last sweep of expired replay records.
    since_sweep: usize,
}

/// Everything in process memory; lost on exit. The audit trail keeps the newest
/// [`MAX_AUDIT_RECORDS`] records so that a flood of refused requests cannot exhaust memory;
/// the log line per decision is the durable copy.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

/// How many audit records the in-memory trail keeps.
pub const MAX_AUDIT_RECORDS: usize = 100_000;

/// Expired replay records are swept after this many reservations, so memory stays bounded
/// by the number of live CI tokens rather than growing forever.
const SWEEP_EVERY: usize = 1024;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError("in-memory store lock poisoned".to_owned()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn reserve(
        &self,
        key: &ReplayKey,
        keep_until: OffsetDateTime,
    ) -> Result<Reservation, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut inner = self.lock()?;
        inner.since_sweep += 1;
        if inner.since_sweep >= SWEEP_EVERY {
            inner.since_sweep = 0;
            inner.replay.retain(|_, (_, until)| *until > now);
        }
        match inner.replay.get(key) {
            Some((state, until)) if *until > now => Ok(match state {
                ReplayState::Used => Reservation::AlreadyUsed,
                ReplayState::Reserved => Reservation::InUse,
            }),
            _ => {
                inner
                    .replay
                    .insert(key.clone(), (ReplayState::Reserved, keep_until));
                Ok(Reservation::Reserved)
            }
        }
    }

    async fn consume(&self, key: &ReplayKey) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        match inner.replay.get_mut(key) {
            Some((state, _)) => {
                *state = ReplayState::Used;
                Ok(())
            }
            None => Err(StoreError(format!("replay key {key:?} was not reserved"))),
        }
    }

    async fn release(&self, key: &ReplayKey) -> Result<(), StoreError> {
        self.lock()?.replay.remove(key);
        Ok(())
    }

    async fn replay_expiry(&self, key: &ReplayKey) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.lock()?.replay.get(key).map(|(_, until)| *until))
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.audit.len() >= MAX_AUDIT_RECORDS {
            inner.audit.pop_front();
        }
        inner.audit.push_back(record.clone());
        Ok(())
    }

    async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self.lock()?.audit.iter().cloned().collect())
    }

    async fn healthy(&self) -> bool {
        self.inner.lock().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn key(id: &str) -> ReplayKey {
        ReplayKey {
            issuer: "github".to_owned(),
            id: format!("jti:{id}"),
        }
    }

    #[tokio::test]
    async fn a_reservation_is_exclusive_until_released_or_consumed() {
        let store = MemoryStore::new();
        let until = OffsetDateTime::now_utc() + Duration::minutes(5);
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::Reserved
        );
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::InUse
        );
        store.release(&key("a")).await.expect("release");
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::Reserved
        );
        store.consume(&key("a")).await.expect("consume");
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::AlreadyUsed
        );
        store
            .release(&key("a"))
            .await
            .expect("release undoes a consumption whose token was withheld");
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::Reserved
        );
    }

    #[tokio::test]
    async fn an_expired_record_no_longer_blocks() {
        let store = MemoryStore::new();
        let past = OffsetDateTime::now_utc() - Duration::seconds(1);
        store.reserve(&key("b"), past).await.expect("reserve");
        store.consume(&key("b")).await.expect("consume");
        let until = OffsetDateTime::now_utc() + Duration::minutes(5);
        assert_eq!(
            store.reserve(&key("b"), until).await.expect("reserve"),
            Reservation::Reserved
        );
    }
}
