//! The state store behind one trait: replay records of CI tokens and the audit trail.
//!
//! This release ships [`MemoryStore`]; the persistent stores (SQLite, PostgreSQL) implement
//! the same trait, so the exchange never knows which one it talks to.

mod memory;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::trust::audit::AuditRecord;
pub use memory::MemoryStore;

/// What a CI token is remembered by: (issuer name, `jti`) or (issuer name, SHA-256 of the signing input).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub issuer: String,
    /// `jti:<value>` or `sha256:<hex>`.
    pub id: String,
}

/// Who holds a reservation: [`Store::consume`] and [`Store::release`] act only for the
/// holder, so a late release can never undo another request's reservation or success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationId(pub String);

impl ReservationId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl Default for ReservationId {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Ours now; call [`Store::consume`] once a token is handed out, else [`Store::release`].
    Reserved(ReservationId),
    /// An earlier exchange returned a token for this CI token.
    AlreadyUsed,
    /// Another request holds the reservation right now.
    InUse,
}

/// The store failed; the exchange answers 503 and hands nothing out.
#[derive(Debug, thiserror::Error)]
#[error("store failure: {0}")]
pub struct StoreError(pub String);

/// What [`Store::complete_audit`] does when the request has no pending record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNotPending {
    /// Append the record (the final record of an exchange must be on record).
    Append,
    /// Do nothing (a cancellation must not add a record the pending write never made).
    Skip,
}

/// Replay records and audit records, in one place so that both see the same truth.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Atomically reserves `key` until `keep_until` unless it is reserved or used.
    async fn reserve(
        &self,
        key: &ReplayKey,
        keep_until: OffsetDateTime,
    ) -> Result<Reservation, StoreError>;
    /// Marks a key reserved by `holder` as used: the CI token bought its access token.
    /// Fails if `holder` no longer holds it.
    async fn consume(&self, key: &ReplayKey, holder: &ReservationId) -> Result<(), StoreError>;
    /// Forgets a reservation (or a consumption) whose exchange did not hand out a token;
    /// a no-op unless `holder` holds the key.
    async fn release(&self, key: &ReplayKey, holder: &ReservationId) -> Result<(), StoreError>;
    /// When a used or reserved key will be forgotten, if it is known.
    async fn replay_expiry(&self, key: &ReplayKey) -> Result<Option<OffsetDateTime>, StoreError>;
    /// Appends one audit record; it must be durable when this returns.
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Replaces the `pending` record of `record.request_id` by its final version; when no
    /// pending record of that request is held, does what `if_not_pending` says. Returns
    /// whether a pending record was replaced.
    async fn complete_audit(
        &self,
        record: &AuditRecord,
        if_not_pending: IfNotPending,
    ) -> Result<bool, StoreError>;
    /// Audit records in the order they were written.
    async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError>;
    /// Whether the store can take writes (readiness).
    async fn healthy(&self) -> bool;
}
