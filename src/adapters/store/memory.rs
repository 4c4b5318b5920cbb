//! The in-memory store: dev mode, tests, and single-process use without persistence.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{IfNotPending, ReplayKey, Reservation, ReservationId, Store, StoreError};
use crate::trust::audit::AuditRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayState {
    Reserved,
    Used,
}

struct ReplayRecord {
    state: ReplayState,
    until: OffsetDateTime,
    holder: ReservationId,
}

#[derive(Default)]
struct Inner {
    replay: HashMap<ReplayKey, ReplayRecord>,
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
            inner.replay.retain(|_, record| record.until > now);
        }
        match inner.replay.get(key) {
            Some(record) if record.until > now => Ok(match record.state {
                ReplayState::Used => Reservation::AlreadyUsed,
                ReplayState::Reserved => Reservation::InUse,
            }),
            _ => {
                let holder = ReservationId::new();
                inner.replay.insert(
                    key.clone(),
                    ReplayRecord {
                        state: ReplayState::Reserved,
                        until: keep_until,
                        holder: holder.clone(),
                    },
                );
                Ok(Reservation::Reserved(holder))
            }
        }
    }

    async fn consume(&self, key: &ReplayKey, holder: &ReservationId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        match inner.replay.get_mut(key) {
            Some(record) if record.holder == *holder => {
                record.state = ReplayState::Used;
                Ok(())
            }
            _ => Err(StoreError(format!(
                "replay key {key:?} is not reserved by this request"
            ))),
        }
    }

    async fn release(&self, key: &ReplayKey, holder: &ReservationId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner
            .replay
            .get(key)
            .is_some_and(|record| record.holder == *holder)
        {
            inner.replay.remove(key);
        }
        Ok(())
    }

    async fn replay_expiry(&self, key: &ReplayKey) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.lock()?.replay.get(key).map(|record| record.until))
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.audit.len() >= MAX_AUDIT_RECORDS {
            inner.audit.pop_front();
        }
        inner.audit.push_back(record.clone());
        Ok(())
    }

    async fn complete_audit(
        &self,
        record: &AuditRecord,
        if_not_pending: IfNotPending,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let pending = inner.audit.iter_mut().rev().find(|r| {
            r.request_id == record.request_id && r.outcome == crate::trust::audit::Outcome::Pending
        });
        match (pending, if_not_pending) {
            (Some(slot), _) => {
                *slot = record.clone();
                return Ok(true);
            }
            (None, IfNotPending::Append) => {
                if inner.audit.len() >= MAX_AUDIT_RECORDS {
                    inner.audit.pop_front();
                }
                inner.audit.push_back(record.clone());
            }
            (None, IfNotPending::Skip) => {}
        }
        Ok(false)
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

    async fn reserved(
        store: &MemoryStore,
        key: &ReplayKey,
        until: OffsetDateTime,
    ) -> ReservationId {
        match store.reserve(key, until).await.expect("reserve") {
            Reservation::Reserved(holder) => holder,
            other => panic!("expected a reservation, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reservation_is_exclusive_until_released_or_consumed() {
        let store = MemoryStore::new();
        let until = OffsetDateTime::now_utc() + Duration::minutes(5);
        let first = reserved(&store, &key("a"), until).await;
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::InUse
        );
        store.release(&key("a"), &first).await.expect("release");
        let second = reserved(&store, &key("a"), until).await;
        store.consume(&key("a"), &second).await.expect("consume");
        assert_eq!(
            store.reserve(&key("a"), until).await.expect("reserve"),
            Reservation::AlreadyUsed
        );
        store
            .release(&key("a"), &second)
            .await
            .expect("release undoes a consumption whose token was withheld");
        reserved(&store, &key("a"), until).await;
    }

    #[tokio::test]
    async fn only_the_holder_can_consume_or_release() {
        let store = MemoryStore::new();
        let until = OffsetDateTime::now_utc() + Duration::minutes(5);
        let stale = reserved(&store, &key("c"), until).await;
        store.release(&key("c"), &stale).await.expect("release");
        let holder = reserved(&store, &key("c"), until).await;
        // A late release or consume by the earlier holder changes nothing.
        store.release(&key("c"), &stale).await.expect("no-op");
        assert!(store.consume(&key("c"), &stale).await.is_err());
        assert_eq!(
            store.reserve(&key("c"), until).await.expect("reserve"),
            Reservation::InUse
        );
        store.consume(&key("c"), &holder).await.expect("consume");
        store.release(&key("c"), &stale).await.expect("no-op");
        assert_eq!(
            store.reserve(&key("c"), until).await.expect("reserve"),
            Reservation::AlreadyUsed
        );
    }

    #[tokio::test]
    async fn an_expired_record_no_longer_blocks() {
        let store = MemoryStore::new();
        let past = OffsetDateTime::now_utc() - Duration::seconds(1);
        let holder = reserved(&store, &key("b"), past).await;
        store.consume(&key("b"), &holder).await.expect("consume");
        let until = OffsetDateTime::now_utc() + Duration::minutes(5);
        reserved(&store, &key("b"), until).await;
    }
}
