//! The in-memory store: dev mode, tests, and single-process use without persistence.
//!
//! One mutex guards replay records and the audit trail together, so every step of
//! [`Store`] is atomic. Nothing here awaits while holding it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::trust::audit::AuditRecord;
use crate::trust::store::{
    Abandon, Begin, Begun, Finish, Finished, ReplayKey, ReplayRecord, ReservationId, Seq, Settle,
    Store, StoreError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplayState {
    Reserved {
        holder: ReservationId,
        lease_until: OffsetDateTime,
    },
    Used,
}

#[derive(Debug)]
struct ReplayEntry {
    state: ReplayState,
    keep_until: OffsetDateTime,
}

/// What a CI token's replay entry says right now.
enum Standing {
    Free,
    Used,
    HeldBy(ReservationId),
}

#[derive(Default)]
struct Inner {
    replay: HashMap<ReplayKey, ReplayEntry>,
    audit: VecDeque<Arc<AuditRecord>>,
    /// Requests whose pending record is written and whose final record is not.
    pending: HashSet<String>,
    last_seq: u64,
    /// Writes since the last sweep of expired replay records.
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

/// Expired replay records are swept after this many writes, so memory stays bounded by
/// the number of live CI tokens rather than growing forever.
const SWEEP_EVERY: usize = 1024;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl Inner {
    fn standing(&self, key: &ReplayKey, now: OffsetDateTime) -> Standing {
        match self.replay.get(key) {
            Some(entry) if entry.keep_until > now => match &entry.state {
                ReplayState::Used => Standing::Used,
                ReplayState::Reserved {
                    holder,
                    lease_until,
                } if *lease_until > now => Standing::HeldBy(holder.clone()),
                ReplayState::Reserved { .. } => Standing::Free,
            },
            _ => Standing::Free,
        }
    }

    fn append(&mut self, record: Arc<AuditRecord>) -> Seq {
        if self.audit.len() >= MAX_AUDIT_RECORDS {
            self.audit.pop_front();
        }
        self.audit.push_back(record);
        self.last_seq += 1;
        Seq(self.last_seq)
    }

    fn set(&mut self, key: &ReplayKey, state: ReplayState, keep_until: OffsetDateTime) {
        self.replay
            .insert(key.clone(), ReplayEntry { state, keep_until });
    }

    fn is_held_by(&self, key: &ReplayKey, holder: &ReservationId) -> bool {
        matches!(
            self.replay.get(key).map(|entry| &entry.state),
            Some(ReplayState::Reserved { holder: held, .. }) if held == holder
        )
    }

    fn sweep_now_and_then(&mut self, now: OffsetDateTime) {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.replay.retain(|_, entry| entry.keep_until > now);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn begin(&self, step: Begin<'_>, now: OffsetDateTime) -> Result<Begun, StoreError> {
        let mut inner = self.lock()?;
        inner.sweep_now_and_then(now);
        if let Some(reserve) = &step.reserve {
            match inner.standing(reserve.key, now) {
                Standing::Used => return Ok(Begun::AlreadyUsed),
                Standing::HeldBy(holder) if holder != *reserve.holder => {
                    return Ok(Begun::InUse);
                }
                Standing::HeldBy(_) | Standing::Free => {}
            }
            inner.set(
                reserve.key,
                ReplayState::Reserved {
                    holder: reserve.holder.clone(),
                    lease_until: reserve.lease_until,
                },
                reserve.keep_until,
            );
        }
        inner.pending.insert(step.record.request_id.clone());
        Ok(Begun::Reserved(inner.append(step.record)))
    }

    async fn finish(&self, step: Finish<'_>, now: OffsetDateTime) -> Result<Finished, StoreError> {
        let mut inner = self.lock()?;
        inner.sweep_now_and_then(now);
        match step.settle {
            Settle::Nothing => {}
            Settle::Unused(key) => match inner.standing(key, now) {
                Standing::Used => return Ok(Finished::AlreadyUsed),
                Standing::HeldBy(_) => return Ok(Finished::InUse),
                Standing::Free => {}
            },
            Settle::Use { key, keep_until } => match inner.standing(key, now) {
                Standing::Used => return Ok(Finished::AlreadyUsed),
                Standing::HeldBy(_) => return Ok(Finished::InUse),
                Standing::Free => inner.set(key, ReplayState::Used, keep_until),
            },
            Settle::Consume { key, holder } => {
                if !inner.is_held_by(key, holder) {
                    return Ok(Finished::ReservationLost);
                }
                if let Some(entry) = inner.replay.get_mut(key) {
                    entry.state = ReplayState::Used;
                }
            }
            Settle::Release { key, holder } => {
                if inner.is_held_by(key, holder) {
                    inner.replay.remove(key);
                }
            }
        }
        inner.pending.remove(&step.record.request_id);
        Ok(Finished::Recorded(inner.append(step.record)))
    }

    async fn abandon(
        &self,
        step: Abandon<'_>,
        _now: OffsetDateTime,
    ) -> Result<Option<Seq>, StoreError> {
        let mut inner = self.lock()?;
        if !inner.pending.remove(step.request_id) {
            return Ok(None);
        }
        if let Some((key, holder)) = step.reservation
            && inner.is_held_by(key, holder)
        {
            inner.replay.remove(key);
        }
        Ok(Some(inner.append(step.record)))
    }

    async fn replay_record(
        &self,
        key: &ReplayKey,
        now: OffsetDateTime,
    ) -> Result<Option<ReplayRecord>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .replay
            .get(key)
            .filter(|entry| entry.keep_until > now)
            .map(|entry| ReplayRecord {
                used: entry.state == ReplayState::Used,
                keep_until: entry.keep_until,
            }))
    }

    async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self
            .lock()?
            .audit
            .iter()
            .map(|record| AuditRecord::clone(record))
            .collect())
    }

    async fn healthy(&self) -> bool {
        self.inner.lock().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::audit::AuditRecord;
    use crate::trust::audit::Reason;
    use time::Duration;

    fn key(id: &str) -> ReplayKey {
        ReplayKey {
            issuer: "github".to_owned(),
            id: format!("jti:{id}"),
        }
    }

    fn record(request_id: &str, reason: Reason) -> Arc<AuditRecord> {
        Arc::new(AuditRecord::new(
            request_id,
            OffsetDateTime::now_utc(),
            reason,
        ))
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    async fn begin(store: &MemoryStore, key: &ReplayKey, holder: &ReservationId) -> Begun {
        let at = now();
        store
            .begin(
                Begin {
                    record: record("r", Reason::Pending),
                    reserve: Some(crate::trust::store::Reserve {
                        key,
                        holder,
                        lease_until: at + Duration::seconds(30),
                        keep_until: at + Duration::minutes(5),
                    }),
                },
                at,
            )
            .await
            .expect("begin")
    }

    async fn finish(store: &MemoryStore, request_id: &str, settle: Settle<'_>) -> Finished {
        store
            .finish(
                Finish {
                    record: record(request_id, Reason::Allowed),
                    settle,
                },
                now(),
            )
            .await
            .expect("finish")
    }

    #[tokio::test]
    async fn a_reservation_is_exclusive_until_released_or_consumed() {
        let store = MemoryStore::new();
        let (first, second) = (ReservationId::new(), ReservationId::new());
        assert!(matches!(
            begin(&store, &key("a"), &first).await,
            Begun::Reserved(_)
        ));
        assert_eq!(begin(&store, &key("a"), &second).await, Begun::InUse);
        let k = key("a");
        finish(
            &store,
            "r",
            Settle::Release {
                key: &k,
                holder: &first,
            },
        )
        .await;
        assert!(matches!(
            begin(&store, &key("a"), &second).await,
            Begun::Reserved(_)
        ));
        finish(
            &store,
            "r",
            Settle::Consume {
                key: &k,
                holder: &second,
            },
        )
        .await;
        assert_eq!(begin(&store, &key("a"), &first).await, Begun::AlreadyUsed);
        // A late release by a holder changes nothing once the token is used.
        finish(
            &store,
            "r",
            Settle::Release {
                key: &k,
                holder: &second,
            },
        )
        .await;
        assert_eq!(begin(&store, &key("a"), &first).await, Begun::AlreadyUsed);
    }

    #[tokio::test]
    async fn only_the_holder_can_consume_or_release() {
        let store = MemoryStore::new();
        let (stale, holder) = (ReservationId::new(), ReservationId::new());
        let k = key("c");
        begin(&store, &k, &stale).await;
        finish(
            &store,
            "r",
            Settle::Release {
                key: &k,
                holder: &stale,
            },
        )
        .await;
        begin(&store, &k, &holder).await;
        finish(
            &store,
            "late",
            Settle::Release {
                key: &k,
                holder: &stale,
            },
        )
        .await;
        assert_eq!(
            finish(
                &store,
                "late",
                Settle::Consume {
                    key: &k,
                    holder: &stale
                }
            )
            .await,
            Finished::ReservationLost
        );
        assert_eq!(begin(&store, &k, &stale).await, Begun::InUse);
        assert!(matches!(
            finish(
                &store,
                "r",
                Settle::Consume {
                    key: &k,
                    holder: &holder
                }
            )
            .await,
            Finished::Recorded(_)
        ));
        assert_eq!(begin(&store, &k, &stale).await, Begun::AlreadyUsed);
    }

    #[tokio::test]
    async fn use_marks_a_free_token_used_once() {
        let store = MemoryStore::new();
        let k = key("u");
        let keep_until = now() + Duration::minutes(5);
        assert!(matches!(
            finish(
                &store,
                "a",
                Settle::Use {
                    key: &k,
                    keep_until
                }
            )
            .await,
            Finished::Recorded(Seq(1))
        ));
        assert_eq!(
            finish(
                &store,
                "b",
                Settle::Use {
                    key: &k,
                    keep_until
                }
            )
            .await,
            Finished::AlreadyUsed
        );
        assert_eq!(
            finish(&store, "c", Settle::Unused(&k)).await,
            Finished::AlreadyUsed,
            "a refusal of a used token is not recorded as a refusal"
        );
        let records = store.audit_records().await.expect("records");
        assert_eq!(
            records.len(),
            1,
            "nothing is written when a step is refused"
        );
    }

    #[tokio::test]
    async fn a_lapsed_lease_frees_the_token_and_loses_the_reservation() {
        let store = MemoryStore::new();
        let (crashed, next) = (ReservationId::new(), ReservationId::new());
        let k = key("l");
        let at = now() - Duration::minutes(1);
        store
            .begin(
                Begin {
                    record: record("crashed", Reason::Pending),
                    reserve: Some(crate::trust::store::Reserve {
                        key: &k,
                        holder: &crashed,
                        lease_until: at + Duration::seconds(10),
                        keep_until: at + Duration::minutes(5),
                    }),
                },
                at,
            )
            .await
            .expect("begin");
        assert!(matches!(begin(&store, &k, &next).await, Begun::Reserved(_)));
        assert_eq!(
            finish(
                &store,
                "crashed",
                Settle::Consume {
                    key: &k,
                    holder: &crashed
                }
            )
            .await,
            Finished::ReservationLost
        );
    }

    #[tokio::test]
    async fn an_expired_record_no_longer_blocks() {
        let store = MemoryStore::new();
        let k = key("b");
        let past = now() - Duration::seconds(1);
        finish(
            &store,
            "a",
            Settle::Use {
                key: &k,
                keep_until: past,
            },
        )
        .await;
        assert!(matches!(
            finish(
                &store,
                "b",
                Settle::Use {
                    key: &k,
                    keep_until: now() + Duration::minutes(5)
                }
            )
            .await,
            Finished::Recorded(_)
        ));
    }

    #[tokio::test]
    async fn abandon_acts_only_while_the_request_is_pending() {
        let store = MemoryStore::new();
        let holder = ReservationId::new();
        let k = key("x");
        begin(&store, &k, &holder).await;
        let abandoned = store
            .abandon(
                Abandon {
                    request_id: "r",
                    record: record("r", Reason::Cancelled),
                    reservation: Some((&k, &holder)),
                },
                now(),
            )
            .await
            .expect("abandon");
        assert_eq!(abandoned, Some(Seq(2)));
        assert!(
            store
                .replay_record(&k, now())
                .await
                .expect("read")
                .is_none(),
            "the reservation is released"
        );
        let again = store
            .abandon(
                Abandon {
                    request_id: "r",
                    record: record("r", Reason::Cancelled),
                    reservation: Some((&k, &holder)),
                },
                now(),
            )
            .await
            .expect("abandon");
        assert_eq!(again, None, "once finished or abandoned, nothing more");
        let reasons: Vec<Reason> = store
            .audit_records()
            .await
            .expect("records")
            .iter()
            .map(|r| r.reason)
            .collect();
        assert_eq!(reasons, [Reason::Pending, Reason::Cancelled]);
    }
}
