//! The store's steps in SQL, written once for both databases: each [`Op`] is applied
//! inside a transaction the caller opened (a SQLite batch, or one PostgreSQL transaction),
//! on any [`Db`], and answers as the trust core's [`Store`](crate::trust::store::Store)
//! promises.
//!
//! Taking a CI token is an `INSERT ... ON CONFLICT DO NOTHING` on its primary key, then a
//! locked read of the row that is there: two replicas racing with one CI token serialise
//! on that key, so at most one of them marks it used.

use time::OffsetDateTime;

use super::db::{Arg, Db, DbError, columns, texts};
use super::{Backend, micros};
use crate::adapters::store::chain::link_hash;
use crate::trust::audit::AuditRecord;
use crate::trust::store::{
    Abandon, Begin, Begun, Finish, Finished, ReplayKey, Seq, Settle, StoreError,
};

/// A store step with everything it borrows copied, so it can wait in a writer's queue.
#[derive(Debug)]
pub(super) enum Op {
    Begin {
        record: Prepared,
        reserve: Option<Claim>,
    },
    Finish {
        record: Prepared,
        settle: OwnedSettle,
    },
    Abandon {
        request_id: String,
        record: Prepared,
        reservation: Option<(String, String)>,
    },
    /// Forget up to `limit` replay rows that expired before `now`.
    PurgeReplay { limit: i64 },
    /// Purge up to `limit` records older than `before` from the oldest end of `chain`,
    /// moving its anchor.
    PurgeAudit {
        before: OffsetDateTime,
        limit: i64,
        chain: String,
    },
    /// Nothing but a write transaction: is the database writable?
    Probe,
}

/// A reservation or use to write into a CI token's replay row.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub key: String,
    pub holder: Option<String>,
    pub lease_until: Option<i64>,
    pub keep_until: i64,
}

impl Claim {
    /// The `used` column: 1 for a use, 0 for a reservation (which has a holder).
    fn used(&self) -> i64 {
        i64::from(self.holder.is_none())
    }
}

#[derive(Debug)]
pub(super) enum OwnedSettle {
    Nothing,
    Unused(String),
    Use(Claim),
    Consume { key: String, holder: String },
    Release { key: String, holder: String },
}

/// What a step answered.
#[derive(Debug)]
pub(super) enum Answer {
    Begun(Begun),
    Finished(Finished),
    Abandoned(Option<Seq>),
    Purged(u64),
    Probed,
}

impl Answer {
    pub(super) fn unexpected(self) -> StoreError {
        StoreError::Write(format!("the store answered a step with {self:?}").into())
    }
}

/// The replay row's primary key: the SHA-256 of the issuer and the token's id, so that
/// a long `jti` cannot make a row large.
pub(super) fn replay_key_hash(key: &ReplayKey) -> String {
    hex::encode(crate::trust::hash::sha256_of_parts([
        key.issuer.as_bytes(),
        b"\n",
        key.id.as_bytes(),
    ]))
}

/// A record ready to be appended: its JSON and query columns, made by the caller (so the
/// SQLite writer, which every step waits for, only hashes and inserts).
#[derive(Debug)]
pub(super) struct Prepared {
    json: String,
    time_us: i64,
    request_id: String,
    outcome: &'static str,
    reason: &'static str,
    repository: Option<String>,
    policy: Option<String>,
    target: Option<String>,
    token_sha256: Option<String>,
    token_jti: Option<String>,
}

impl Prepared {
    fn of(record: &AuditRecord) -> Result<Prepared, StoreError> {
        let json = serde_json::to_string(record).map_err(|err| StoreError::Write(Box::new(err)))?;
        let columns = QueryColumns::of(record);
        let own = |value: Option<&str>| value.map(str::to_owned);
        Ok(Prepared {
            json,
            time_us: columns.time_us,
            request_id: columns.request_id.to_owned(),
            outcome: columns.outcome,
            reason: columns.reason,
            repository: own(columns.repository),
            policy: own(columns.policy),
            target: own(columns.target),
            token_sha256: own(columns.token_sha256),
            token_jti: own(columns.token_jti),
        })
    }
}

impl Op {
    pub(super) fn begin(step: Begin<'_>) -> Result<Op, StoreError> {
        Ok(Op::Begin {
            record: Prepared::of(&step.record)?,
            reserve: step.reserve.map(|r| Claim {
                key: replay_key_hash(r.key),
                holder: Some(r.holder.0.clone()),
                lease_until: Some(micros(r.lease_until)),
                keep_until: micros(r.keep_until),
            }),
        })
    }

    pub(super) fn finish(step: Finish<'_>) -> Result<Op, StoreError> {
        let settle = match step.settle {
            Settle::Nothing => OwnedSettle::Nothing,
            Settle::Unused(key) => OwnedSettle::Unused(replay_key_hash(key)),
            Settle::Use { key, keep_until } => OwnedSettle::Use(Claim {
                key: replay_key_hash(key),
                holder: None,
                lease_until: None,
                keep_until: micros(keep_until),
            }),
            Settle::Consume { key, holder } => OwnedSettle::Consume {
                key: replay_key_hash(key),
                holder: holder.0.clone(),
            },
            Settle::Release { key, holder } => OwnedSettle::Release {
                key: replay_key_hash(key),
                holder: holder.0.clone(),
            },
        };
        Ok(Op::Finish {
            record: Prepared::of(&step.record)?,
            settle,
        })
    }

    pub(super) fn abandon(step: Abandon<'_>) -> Result<Op, StoreError> {
        Ok(Op::Abandon {
            request_id: step.request_id.to_owned(),
            record: Prepared::of(&step.record)?,
            reservation: step
                .reservation
                .map(|(key, holder)| (replay_key_hash(key), holder.0.clone())),
        })
    }
}

/// What a CI token's replay row says at `now`.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    Free,
    Used,
    HeldBy(String),
}

/// The tail of one replica's chain while a transaction appends to it. Appended rows are
/// written in multi-row inserts when the transaction ends (or before anything reads the
/// audit table), so a batch of steps costs a few statements, not one per record.
pub(super) struct ChainCursor<'r> {
    pub replica: String,
    backend: Backend,
    /// (last seq, last hash), once read in this transaction.
    head: Option<(u64, String)>,
    /// Records appended in this transaction.
    pub appended: usize,
    /// Appended rows not yet inserted.
    unwritten: Vec<AuditRow<'r>>,
}

/// One `audit_records` row, ready to insert.
struct AuditRow<'r> {
    seq: i64,
    prev_hash: String,
    hash: String,
    record: &'r Prepared,
}

/// The most rows one insert statement takes: 14 parameters each, well under every
/// database's limit.
const ROWS_PER_INSERT: usize = 64;

/// `items` cut into runs of 64, 32, ..., 2, 1 (largest first): multi-row statements come in
/// seven shapes only, so the connection's statement cache keeps every one prepared (a
/// statement per batch size would evict each other and be compiled again and again).
fn power_of_two_chunks<T>(items: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let size = ROWS_PER_INSERT.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// `audit_records`' columns, in the order [`audit_row_args`] gives them: the chain's,
/// the query columns ([`QUERY_COLUMN_NAMES`]), then the record.
const AUDIT_COLUMNS: [&str; 14] = {
    let chain = ["replica_id", "seq", "prev_hash", "hash"];
    let mut all = ["record"; 14];
    let mut i = 0;
    while i < chain.len() {
        all[i] = chain[i];
        i += 1;
    }
    let mut j = 0;
    while j < QUERY_COLUMN_NAMES.len() {
        all[chain.len() + j] = QUERY_COLUMN_NAMES[j];
        j += 1;
    }
    all
};

fn audit_row_args<'q>(replica: &'q str, row: &'q AuditRow<'_>) -> [Arg<'q>; 14] {
    let record = row.record;
    [
        replica.into(),
        row.seq.into(),
        (&row.prev_hash).into(),
        (&row.hash).into(),
        record.time_us.into(),
        (&record.request_id).into(),
        record.outcome.into(),
        record.reason.into(),
        (&record.repository).into(),
        (&record.policy).into(),
        (&record.target).into(),
        (&record.token_sha256).into(),
        (&record.token_jti).into(),
        (&record.json).into(),
    ]
}

impl<'r> ChainCursor<'r> {
    pub(super) fn new(replica: String, backend: Backend) -> Self {
        Self::starting_at(replica, backend, None)
    }

    /// A cursor that trusts `head` (the writer's own, from its last commit) instead of
    /// reading it. Should another process have appended meanwhile, the first insert
    /// collides with its record on (replica_id, seq) and the transaction fails whole.
    pub(super) fn starting_at(
        replica: String,
        backend: Backend,
        head: Option<(u64, String)>,
    ) -> Self {
        Self {
            replica,
            backend,
            head,
            appended: 0,
            unwritten: Vec::new(),
        }
    }

    /// The chain head after this transaction's appends (or as it started).
    pub(super) fn head(&self) -> Option<(u64, String)> {
        self.head.clone()
    }

    /// Reads (with PostgreSQL: locks until the transaction ends) this replica's chain head.
    async fn read_head(&self, db: &mut impl Db) -> Result<(u64, String), DbError> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT last_seq, last_hash FROM replicas WHERE replica_id = $1",
            Backend::Postgres => {
                "SELECT last_seq, last_hash FROM replicas WHERE replica_id = $1 FOR UPDATE"
            }
        };
        let row = db
            .fetch(sql, &[self.replica.as_str().into()])
            .await?
            .into_iter()
            .next()
            .ok_or("this replica's chain is not in the store")?;
        let [seq, hash] = columns(row)?;
        Ok((seq.int()? as u64, hash.text()?))
    }

    /// Holds the chain head from now until the transaction ends (PostgreSQL: its row lock),
    /// so that what this transaction reads next cannot miss an append of this replica
    /// whose commit is in flight on another connection.
    async fn hold_head(&mut self, db: &mut impl Db) -> Result<(), DbError> {
        if self.head.is_none() {
            self.head = Some(self.read_head(db).await?);
        }
        Ok(())
    }

    /// Appends `record` after the chain's tail. The first append of a transaction reads
    /// (with PostgreSQL: locks) the chain head, so one replica's appends are serialised.
    async fn append(&mut self, db: &mut impl Db, record: &'r Prepared) -> Result<Seq, DbError> {
        let (last_seq, last_hash) = match self.head.take() {
            Some(head) => head,
            None => self.read_head(db).await?,
        };
        let seq = last_seq + 1;
        let hash = link_hash(&self.replica, seq, &last_hash, &record.json);
        self.unwritten.push(AuditRow {
            seq: seq as i64,
            prev_hash: last_hash,
            hash: hash.clone(),
            record,
        });
        self.head = Some((seq, hash));
        self.appended += 1;
        Ok(Seq(seq))
    }

    /// Inserts the rows appended so far, in multi-row statements of seven shapes.
    pub(super) async fn flush(&mut self, db: &mut impl Db) -> Result<(), DbError> {
        let rows = std::mem::take(&mut self.unwritten);
        let columns = AUDIT_COLUMNS.len();
        for chunk in power_of_two_chunks(&rows) {
            let mut sql = format!(
                "INSERT INTO audit_records ({}) VALUES ",
                AUDIT_COLUMNS.join(", ")
            );
            for index in 0..chunk.len() {
                let first = index * columns;
                if index > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for column in 1..=columns {
                    if column > 1 {
                        sql.push_str(", ");
                    }
                    // SQLite binds anonymous `?` without looking each name up.
                    match self.backend {
                        Backend::Sqlite => sql.push('?'),
                        Backend::Postgres => sql.push_str(&format!("${}", first + column)),
                    }
                }
                sql.push(')');
            }
            let args: Vec<Arg<'_>> = chunk
                .iter()
                .flat_map(|row| audit_row_args(&self.replica, row))
                .collect();
            db.exec(&sql, &args).await?;
        }
        Ok(())
    }

    /// Inserts the appended rows and writes the new chain head, if anything was appended.
    /// Part of the same transaction.
    pub(super) async fn write_head(&mut self, db: &mut impl Db) -> Result<(), DbError> {
        self.flush(db).await?;
        if let (Some((seq, hash)), true) = (&self.head, self.appended > 0) {
            db.exec(
                "UPDATE replicas SET last_seq = $2, last_hash = $3 WHERE replica_id = $1",
                &[
                    self.replica.as_str().into(),
                    (*seq as i64).into(),
                    hash.into(),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

/// The columns stored beside a record's JSON, for queries. `audit verify` derives them
/// again from the JSON and compares.
pub(crate) struct QueryColumns<'a> {
    pub time_us: i64,
    pub request_id: &'a str,
    pub outcome: &'static str,
    pub reason: &'static str,
    pub repository: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub target: Option<&'a str>,
    pub token_sha256: Option<&'a str>,
    pub token_jti: Option<&'a str>,
}

impl<'a> QueryColumns<'a> {
    pub(crate) fn of(record: &'a AuditRecord) -> Self {
        Self {
            time_us: micros(record.time),
            request_id: &record.request_id,
            outcome: record.outcome.as_str(),
            reason: record.reason.as_str(),
            repository: record.repository.as_deref(),
            policy: record.policy.as_deref(),
            target: record.target.as_deref(),
            token_sha256: record.token_sha256.as_deref(),
            token_jti: record.token_jti.as_deref(),
        }
    }

    /// As (column, text) pairs, in table order.
    pub(crate) fn as_text(&self) -> Vec<(&'static str, Option<String>)> {
        let own = |value: Option<&str>| value.map(str::to_owned);
        let values = [
            Some(self.time_us.to_string()),
            Some(self.request_id.to_owned()),
            Some(self.outcome.to_owned()),
            Some(self.reason.to_owned()),
            own(self.repository),
            own(self.policy),
            own(self.target),
            own(self.token_sha256),
            own(self.token_jti),
        ];
        QUERY_COLUMN_NAMES.into_iter().zip(values).collect()
    }
}

/// The query columns' names, in the order [`QueryColumns::as_text`] gives them.
pub(crate) const QUERY_COLUMN_NAMES: [&str; 9] = [
    "time_us",
    "request_id",
    "outcome",
    "reason",
    "repository",
    "policy",
    "target",
    "token_sha256",
    "token_jti",
];

async fn standing(
    db: &mut impl Db,
    backend: Backend,
    key: &str,
    now: i64,
) -> Result<Option<Standing>, DbError> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT used, holder, lease_until_us, keep_until_us FROM replay WHERE key_hash = $1"
        }
        Backend::Postgres => {
            "SELECT used, holder, lease_until_us, keep_until_us FROM replay WHERE key_hash = $1 FOR UPDATE"
        }
    };
    let Some(row) = db.fetch(sql, &[key.into()]).await?.into_iter().next() else {
        return Ok(None);
    };
    let [used, holder, lease_until, keep_until] = columns(row)?;
    let (used, lease_until, keep_until) = (used.int()?, lease_until.opt_int()?, keep_until.int()?);
    let holder = holder.opt_text()?;
    Ok(Some(if keep_until <= now {
        Standing::Free
    } else if used != 0 {
        Standing::Used
    } else {
        match (holder, lease_until) {
            (Some(holder), Some(lease)) if lease > now => Standing::HeldBy(holder),
            _ => Standing::Free,
        }
    }))
}

/// Writes `claim` into the CI token's row unless `allowed` refuses what is there.
/// Returns what the row said before (`Free` when there was none, or it had expired).
///
/// The first step on a fresh CI token (almost every step) costs one insert: the row is
/// not there, so the insert takes it.
async fn take(
    db: &mut impl Db,
    backend: Backend,
    claim: &Claim,
    now: i64,
    allowed: impl Fn(&Standing) -> bool,
) -> Result<Standing, DbError> {
    // A row that disappears between the insert and the read (released by an earlier step
    // of this transaction, or by another replica) is inserted again.
    for _ in 0..3 {
        let inserted = db
            .exec(
                "INSERT INTO replay (key_hash, used, holder, lease_until_us, keep_until_us) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
                &claim_args(claim),
            )
            .await?;
        if inserted == 1 {
            return Ok(Standing::Free);
        }
        // A row is there (with PostgreSQL, committed: the insert waited for its writer),
        // and is now locked by this transaction until it ends.
        let Some(before) = standing(db, backend, &claim.key, now).await? else {
            continue;
        };
        if allowed(&before) {
            db.exec(
                "UPDATE replay SET used = $2, holder = $3, lease_until_us = $4, keep_until_us = $5 \
                 WHERE key_hash = $1",
                &claim_args(claim),
            )
            .await?;
        }
        return Ok(before);
    }
    Err("the CI token's replay row kept disappearing while it was taken".into())
}

/// `claim` as (key_hash, used, holder, lease_until_us, keep_until_us).
fn claim_args(claim: &Claim) -> [Arg<'_>; 5] {
    [
        (&claim.key).into(),
        claim.used().into(),
        (&claim.holder).into(),
        claim.lease_until.into(),
        claim.keep_until.into(),
    ]
}

/// Applies one step inside the caller's open transaction. A step that refuses (the CI
/// token is used or held) writes nothing.
pub(super) async fn apply<'r>(
    db: &mut impl Db,
    chain: &mut ChainCursor<'r>,
    op: &'r Op,
    now: OffsetDateTime,
) -> Result<Answer, DbError> {
    let backend = chain.backend;
    let now_us = micros(now);
    match op {
        Op::Begin { record, reserve } => {
            if let Some(claim) = reserve {
                let holder = claim.holder.as_deref().unwrap_or_default();
                let before = take(db, backend, claim, now_us, |standing| match standing {
                    Standing::Free => true,
                    Standing::HeldBy(other) => other == holder,
                    Standing::Used => false,
                })
                .await?;
                match before {
                    Standing::Used => return Ok(Answer::Begun(Begun::AlreadyUsed)),
                    Standing::HeldBy(other) if other != holder => {
                        return Ok(Answer::Begun(Begun::InUse));
                    }
                    Standing::HeldBy(_) | Standing::Free => {}
                }
            }
            let seq = chain.append(db, record).await?;
            Ok(Answer::Begun(Begun::Reserved(seq)))
        }
        Op::Finish { record, settle } => {
            match settle {
                OwnedSettle::Nothing => {}
                OwnedSettle::Unused(key) => match standing(db, backend, key, now_us).await? {
                    Some(Standing::Used) => return Ok(Answer::Finished(Finished::AlreadyUsed)),
                    Some(Standing::HeldBy(_)) => return Ok(Answer::Finished(Finished::InUse)),
                    Some(Standing::Free) | None => {}
                },
                OwnedSettle::Use(claim) => {
                    match take(db, backend, claim, now_us, |s| *s == Standing::Free).await? {
                        Standing::Used => return Ok(Answer::Finished(Finished::AlreadyUsed)),
                        Standing::HeldBy(_) => return Ok(Answer::Finished(Finished::InUse)),
                        Standing::Free => {}
                    }
                }
                OwnedSettle::Consume { key, holder } => {
                    let consumed = db
                        .exec(
                            "UPDATE replay SET used = 1, holder = NULL, lease_until_us = NULL \
                             WHERE key_hash = $1 AND used = 0 AND holder = $2",
                            &[key.into(), holder.into()],
                        )
                        .await?;
                    if consumed == 0 {
                        return Ok(Answer::Finished(Finished::ReservationLost));
                    }
                }
                OwnedSettle::Release { key, holder } => {
                    release(db, key, holder).await?;
                }
            }
            let seq = chain.append(db, record).await?;
            Ok(Answer::Finished(Finished::Recorded(seq)))
        }
        Op::Abandon {
            request_id,
            record,
            reservation,
        } => {
            // A `finish` of this request may be committing on another connection (PostgreSQL:
            // the request was dropped while its last step was in flight). Take the locks in
            // the order `finish` takes them, the reservation's replay row and then the chain
            // head, so this waits for that commit and then sees its record; reading first
            // would miss it and record `cancelled` after `allowed`.
            if let (Backend::Postgres, Some((key, _))) = (backend, reservation) {
                db.fetch(
                    "SELECT key_hash FROM replay WHERE key_hash = $1 FOR UPDATE",
                    &[key.into()],
                )
                .await?;
            }
            chain.hold_head(db).await?;
            // Records appended earlier in this transaction count too.
            chain.flush(db).await?;
            // All records of a request carry the request's time, so the time index finds
            // them (SQLite keeps no index on request ids).
            let outcomes = db
                .fetch(
                    "SELECT outcome FROM audit_records WHERE time_us = $1 AND request_id = $2",
                    &[record.time_us.into(), request_id.into()],
                )
                .await
                .and_then(texts)?;
            let pending = outcomes.iter().any(|o| o == "pending");
            let ended = outcomes.iter().any(|o| o != "pending");
            if !pending || ended {
                return Ok(Answer::Abandoned(None));
            }
            if let Some((key, holder)) = reservation {
                release(db, key, holder).await?;
            }
            let seq = chain.append(db, record).await?;
            Ok(Answer::Abandoned(Some(seq)))
        }
        Op::PurgeReplay { limit } => {
            // Security: with replicas, a row is forgotten only once both this replica's
            // clock and the database's have passed its keep-until, so one replica whose
            // clock runs fast cannot forget a CI token the others must still refuse.
            let purged = db
                .exec(
                    match backend {
                        Backend::Sqlite => {
                            "DELETE FROM replay WHERE key_hash IN \
                             (SELECT key_hash FROM replay WHERE keep_until_us <= $1 LIMIT $2)"
                        }
                        Backend::Postgres => {
                            "DELETE FROM replay WHERE key_hash IN \
                             (SELECT key_hash FROM replay WHERE keep_until_us <= LEAST($1, \
                             (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT) LIMIT $2)"
                        }
                    },
                    &[now_us.into(), (*limit).into()],
                )
                .await?;
            Ok(Answer::Purged(purged))
        }
        Op::PurgeAudit {
            before,
            limit,
            chain,
        } => purge_audit(db, backend, micros(*before), *limit, chain)
            .await
            .map(Answer::Purged),
        Op::Probe => Ok(Answer::Probed),
    }
}

async fn release(db: &mut impl Db, key: &str, holder: &str) -> Result<(), DbError> {
    db.exec(
        "DELETE FROM replay WHERE key_hash = $1 AND used = 0 AND holder = $2",
        &[key.into(), holder.into()],
    )
    .await?;
    Ok(())
}

/// How long a PostgreSQL purge waits for a chain's head before leaving that chain for the
/// next purge.
const PURGE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

/// Retention: removes `replica`'s oldest records older than `before` (at most `limit`),
/// keeping the chain contiguous, and moves its anchor to the newest record older than
/// `before`, which stays: `audit verify` starts there.
async fn purge_audit(
    db: &mut impl Db,
    backend: Backend,
    before: i64,
    limit: i64,
    replica: &str,
) -> Result<u64, DbError> {
    // PostgreSQL purges one chain per transaction and waits for its head only briefly: a
    // busy replica holds its head for milliseconds at a time, a stalled one until it
    // recovers, and then this chain waits for the next purge while the other chains, and
    // their replicas' exchanges, go on. (SQLite's single writer needs no lock.)
    if backend == Backend::Postgres {
        db.exec(PURGE_LOCK_TIMEOUT, &[]).await?;
        db.fetch(
            "SELECT replica_id FROM replicas WHERE replica_id = $1 FOR UPDATE",
            &[replica.into()],
        )
        .await?;
    }
    let rows = db
        .fetch(
            "SELECT seq, hash, time_us FROM audit_records WHERE replica_id = $1 \
             ORDER BY seq LIMIT $2",
            // The first row is the anchor, which stays.
            &[replica.into(), limit.saturating_add(1).into()],
        )
        .await?;
    let mut anchor: Option<(i64, String)> = None;
    for (index, row) in rows.into_iter().enumerate() {
        let [seq, hash, time_us] = columns(row)?;
        if time_us.int()? >= before {
            break;
        }
        // The oldest record left (the anchor, or record 1) only becomes the anchor once
        // there is something before it to remove.
        if index > 0 {
            anchor = Some((seq.int()?, hash.text()?));
        }
    }
    let Some((seq, hash)) = anchor else {
        return Ok(0);
    };
    // The newest purgeable record stays, as the anchor: its time is what shows `audit
    // verify` that the records before it were old enough to go.
    let purged = db
        .exec(
            "DELETE FROM audit_records WHERE replica_id = $1 AND seq < $2",
            &[replica.into(), seq.into()],
        )
        .await?;
    db.exec(
        "UPDATE replicas SET anchor_seq = $2, anchor_hash = $3 WHERE replica_id = $1",
        &[replica.into(), seq.into(), hash.as_str().into()],
    )
    .await?;
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::power_of_two_chunks;

    #[test]
    fn batches_are_cut_into_seven_statement_shapes() {
        let sizes = |n: usize| -> Vec<usize> {
            power_of_two_chunks(&vec![0u8; n])
                .iter()
                .map(|c| c.len())
                .collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(46), [32, 8, 4, 2]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(200), [64, 64, 64, 8]);
    }
}
