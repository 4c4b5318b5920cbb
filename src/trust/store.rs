//! The store the exchange needs, shaped like the exchange: replay protection of CI tokens
//! and the append-only audit trail, changed together in atomic steps.
//!
//! An exchange makes one durable step on its way out, and a remote target one more
//! before it is called:
//!
//! - [`Store::begin`] (remote targets): reserve the CI token and append the `pending`
//!   record, atomically, before the tenant is called;
//! - [`Store::finish`]: settle the CI token ([`Settle`]: use it up, consume or release a
//!   reservation, or only check that it is unused) and append the final record,
//!   atomically: a token is handed out only once both are durable, and when either fails
//!   neither happened;
//! - [`Store::abandon`]: a request dropped while its tenant call was pending releases its
//!   reservation and appends a `cancelled` record, unless its final record made it first.
//!
//! Records are never rewritten: a remote exchange's pending record and its completion are
//! two records with the same `request_id`. Every append returns the record's [`Seq`].
//! Every operation is given `now`, so that expiry is decided by the caller's clock (and
//! tests can move it).

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::trust::audit::AuditRecord;
pub use crate::trust::verify::ReplayKey;

/// Who holds a reservation. Chosen by the exchange before [`Store::begin`], so that a
/// request cancelled while `begin` runs still knows what to release.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// A record's place in the audit trail: 1, 2, 3, ... in append order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

/// A CI token reserved by [`Store::begin`] while its remote target is called.
#[derive(Debug, Clone)]
pub struct Reserve<'a> {
    pub key: &'a ReplayKey,
    pub holder: &'a ReservationId,
    /// After this the reservation lapses (a crashed holder must not block the CI token
    /// until it expires): another request may then take the CI token over, after which
    /// the first holder's [`Settle::Consume`] fails. Until another does, it succeeds.
    pub lease_until: OffsetDateTime,
    /// When the replay record may be forgotten once used: `exp + leeway + 60s`.
    pub keep_until: OffsetDateTime,
}

/// The pending step of a remote exchange.
#[derive(Debug, Clone)]
pub struct Begin<'a> {
    /// The `pending` record.
    pub record: Arc<AuditRecord>,
    /// `None` with `replay = "allow"`.
    pub reserve: Option<Reserve<'a>>,
}

/// The answer to [`Store::begin`]; nothing was written unless `Reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// The CI token is ours and the pending record is durable.
    Reserved(Seq),
    /// An earlier exchange handed out a token for this CI token.
    AlreadyUsed,
    /// Another request holds the CI token right now.
    InUse,
}

/// What the final step does to the CI token.
#[derive(Debug, Clone)]
pub enum Settle<'a> {
    /// Nothing: `replay = "allow"`, or the request never got a replay key (verification
    /// failed), or a probe by `doctor`.
    Nothing,
    /// A refusal: the record is appended only while the CI token is neither used nor
    /// held by another request; otherwise [`Finished::AlreadyUsed`] or
    /// [`Finished::InUse`], and nothing is written (the caller is then told that, which
    /// the contract ranks before every policy refusal).
    Unused(&'a ReplayKey),
    /// A token is handed out and nothing was reserved (a local target, a reused tenant
    /// token): mark the CI token used unless it is used or held already.
    Use {
        key: &'a ReplayKey,
        keep_until: OffsetDateTime,
    },
    /// A remote target's token is handed out: the reservation becomes used. Fails with
    /// [`Finished::ReservationLost`] unless `holder` still holds it (its lease may have
    /// lapsed, as long as no other request took the CI token over).
    Consume {
        key: &'a ReplayKey,
        holder: &'a ReservationId,
    },
    /// A remote exchange failed after [`Store::begin`]: release the reservation (a no-op
    /// unless `holder` holds it), so the CI token can be tried again.
    Release {
        key: &'a ReplayKey,
        holder: &'a ReservationId,
    },
}

/// The final step of an exchange.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub record: Arc<AuditRecord>,
    pub settle: Settle<'a>,
}

/// The answer to [`Store::finish`]; nothing was written unless `Recorded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Recorded(Seq),
    /// The CI token was used by an earlier exchange.
    AlreadyUsed,
    /// Another request holds the CI token.
    InUse,
    /// [`Settle::Consume`]: this request's reservation lapsed and is gone.
    ReservationLost,
}

impl Finished {
    /// The record's place in the trail, when it was written.
    pub fn seq(self) -> Option<Seq> {
        match self {
            Finished::Recorded(seq) => Some(seq),
            _ => None,
        }
    }
}

/// A request dropped while its remote target was called.
#[derive(Debug, Clone)]
pub struct Abandon<'a> {
    pub request_id: &'a str,
    /// The `cancelled` record to append.
    pub record: Arc<AuditRecord>,
    /// The reservation to release, if the request made one.
    pub reservation: Option<(&'a ReplayKey, &'a ReservationId)>,
}

/// What the store knows of one CI token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRecord {
    pub used: bool,
    /// When the record may be forgotten.
    pub keep_until: OffsetDateTime,
}

/// Boxed error of a store's backend (I/O, database driver).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The store failed; the exchange hands nothing out and answers 503.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A step could not be made durable; it did not happen.
    #[error("store failure: {0}")]
    Write(#[source] BoxError),
    /// A writer panicked while holding the in-memory store's lock.
    #[error("store failure: the in-memory store's lock is poisoned")]
    Poisoned,
}

/// Replay records and audit records, in one place so that both see the same truth.
///
/// Invariants every implementation keeps (pinned by `tests/api/store_faults.rs` and the
/// in-memory store's unit tests): each step is all or nothing; a CI token is used by at
/// most one `finish`; a record, once appended, is never changed or removed (except that
/// the in-memory store forgets the oldest beyond its cap).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reserves the CI token (when `reserve` is set) and appends the pending record.
    async fn begin(&self, step: Begin<'_>, now: OffsetDateTime) -> Result<Begun, StoreError>;
    /// Settles the CI token and appends the final record.
    async fn finish(&self, step: Finish<'_>, now: OffsetDateTime) -> Result<Finished, StoreError>;
    /// Unless the request's final record is written: releases its reservation and
    /// appends `record`. `None` when there was nothing to do.
    async fn abandon(
        &self,
        step: Abandon<'_>,
        now: OffsetDateTime,
    ) -> Result<Option<Seq>, StoreError>;
    /// What is known of a CI token, if anything.
    async fn replay_record(
        &self,
        key: &ReplayKey,
        now: OffsetDateTime,
    ) -> Result<Option<ReplayRecord>, StoreError>;
    /// Every audit record, in append order (chain after chain when replicas share a store).
    async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError>;
    /// Whether the store can take writes (readiness).
    async fn healthy(&self) -> bool;
}
