//! The store's steps in SQL, written once for both databases: each [`Op`] is applied
//! inside a transaction the caller opened (a SQLite batch, or one PostgreSQL transaction),
//! and answers as the trust core's [`Store`](crate::trust::store::Store) promises.
//!
//! Taking a CI token is an `INSERT ... ON CONFLICT DO NOTHING` on its primary key, then a
//! locked read of the row that is there: two replicas racing with one CI token serialise
//! on that key, so at most one of them marks it used.

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

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
    /// Purge records older than `before` from the oldest end of every chain, up to
    /// `limit` per chain, moving each chain's anchor.
    PurgeAudit { before: OffsetDateTime, limit: i64 },
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

/// `audit_records`' columns, in the order [`bind_audit_row`] binds them: the chain's,
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

/// `replay`'s columns, in the order [`bind_claim`] binds them.
const REPLAY_COLUMNS: [&str; 5] = [
    "key_hash",
    "used",
    "holder",
    "lease_until_us",
    "keep_until_us",
];

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_audit_row<'q>(
    query: AnyQuery<'q>,
    replica: &'q str,
    row: &'q AuditRow<'_>,
) -> AnyQuery<'q> {
    let record = row.record;
    query
        .bind(replica)
        .bind(row.seq)
        .bind(&row.prev_hash)
        .bind(&row.hash)
        .bind(record.time_us)
        .bind(&record.request_id)
        .bind(record.outcome)
        .bind(record.reason)
        .bind(&record.repository)
        .bind(&record.policy)
        .bind(&record.target)
        .bind(&record.token_sha256)
        .bind(&record.token_jti)
        .bind(&record.json)
}

/// Binds `count` NULLs: the unused slots of a padded statement.
fn bind_nulls(query: AnyQuery<'_>, count: usize) -> AnyQuery<'_> {
    (0..count).fold(query, |query, _| query.bind(None::<String>))
}

/// SQLite's writer sends a whole batch in two calls to sqlx's SQLite thread, because each
/// call is a round trip between threads that costs more than the statements in it. A
/// call holds several statements, so their text must not depend on the batch's size
/// (each distinct text is prepared again): rows go in fixed statements of
/// [`ROWS_PER_INSERT`] slots, the unused slots bound to NULL and skipped by a `WHERE`.
/// A batch of up to 512 steps needs at most eight such statements of each kind.
fn padded_chunks<T>(items: &[T]) -> Vec<Vec<Option<&T>>> {
    items
        .chunks(ROWS_PER_INSERT)
        .map(|chunk| {
            let mut slots: Vec<Option<&T>> = chunk.iter().map(Some).collect();
            slots.resize(ROWS_PER_INSERT, None);
            slots
        })
        .collect()
}

/// `INSERT INTO table (columns) SELECT * FROM (VALUES (?, ...), ...) WHERE column1 IS
/// NOT NULL` with [`ROWS_PER_INSERT`] rows of one parameter per column; `tail` follows it
/// (an `ON CONFLICT` clause, which SQLite parses after a `WHERE` only).
fn padded_insert(table: &str, columns: &[&str], tail: &str) -> String {
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    format!(
        "INSERT INTO {table} ({}) SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL{tail}",
        columns.join(", "),
        vec![row; ROWS_PER_INSERT].join(", ")
    )
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

    /// SQLite only: inserts the appended rows, writes the chain head and runs `trailer`
    /// (`COMMIT`), all in one call to the database (see [`padded_chunks`]).
    pub(super) async fn write_all_then(
        &mut self,
        conn: &mut AnyConnection,
        trailer: &str,
    ) -> Result<(), sqlx::Error> {
        let rows = std::mem::take(&mut self.unwritten);
        let chunks = padded_chunks(&rows);
        let mut sql = String::new();
        for _ in &chunks {
            sql.push_str(&padded_insert("audit_records", &AUDIT_COLUMNS, ""));
            sql.push_str("; ");
        }
        let head = self.head.as_ref().filter(|_| self.appended > 0);
        if head.is_some() {
            sql.push_str("UPDATE replicas SET last_seq = ?, last_hash = ? WHERE replica_id = ?; ");
        }
        sql.push_str(trailer);
        let mut query = sqlx::query(&sql);
        for chunk in chunks {
            for slot in chunk {
                query = match slot {
                    Some(row) => bind_audit_row(query, &self.replica, row),
                    None => bind_nulls(query, AUDIT_COLUMNS.len()),
                };
            }
        }
        if let Some((seq, hash)) = head {
            query = query.bind(*seq as i64).bind(hash).bind(&self.replica);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }

    /// Reads (with PostgreSQL: locks until the transaction ends) this replica's chain head.
    async fn read_head(&self, conn: &mut AnyConnection) -> Result<(u64, String), sqlx::Error> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT last_seq, last_hash FROM replicas WHERE replica_id = $1",
            Backend::Postgres => {
                "SELECT last_seq, last_hash FROM replicas WHERE replica_id = $1 FOR UPDATE"
            }
        };
        let row = sqlx::query(sql)
            .bind(&self.replica)
            .fetch_one(&mut *conn)
            .await?;
        Ok((
            row.try_get::<i64, _>(0)? as u64,
            row.try_get::<String, _>(1)?,
        ))
    }

    /// Holds the chain head from now until the transaction ends (PostgreSQL: its row lock),
    /// so that what this transaction reads next cannot miss an append of this replica
    /// whose commit is in flight on another connection.
    async fn hold_head(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if self.head.is_none() {
            self.head = Some(self.read_head(conn).await?);
        }
        Ok(())
    }

    /// Appends `record` after the chain's tail. The first append of a transaction reads
    /// (with PostgreSQL: locks) the chain head, so one replica's appends are serialised.
    async fn append(
        &mut self,
        conn: &mut AnyConnection,
        record: &'r Prepared,
    ) -> Result<Seq, sqlx::Error> {
        let (last_seq, last_hash) = match self.head.take() {
            Some(head) => head,
            None => self.read_head(conn).await?,
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

    /// Inserts the rows appended so far.
    pub(super) async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
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
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = bind_audit_row(query, &self.replica, row);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Inserts the appended rows and writes the new chain head, if anything was appended.
    /// Part of the same transaction.
    pub(super) async fn write_head(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        self.flush(conn).await?;
        if let (Some((seq, hash)), true) = (&self.head, self.appended > 0) {
            sqlx::query("UPDATE replicas SET last_seq = $2, last_hash = $3 WHERE replica_id = $1")
                .bind(&self.replica)
                .bind(*seq as i64)
                .bind(hash)
                .execute(&mut *conn)
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
    conn: &mut AnyConnection,
    backend: Backend,
    key: &str,
    now: i64,
) -> Result<Option<Standing>, sqlx::Error> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT used, holder, lease_until_us, keep_until_us FROM replay WHERE key_hash = $1"
        }
        Backend::Postgres => {
            "SELECT used, holder, lease_until_us, keep_until_us FROM replay WHERE key_hash = $1 FOR UPDATE"
        }
    };
    let Some(row) = sqlx::query(sql)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let used: i64 = row.try_get(0)?;
    let holder: Option<String> = row.try_get(1)?;
    let lease_until: Option<i64> = row.try_get(2)?;
    let keep_until: i64 = row.try_get(3)?;
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
async fn take(
    conn: &mut AnyConnection,
    backend: Backend,
    claim: &Claim,
    now: i64,
    taken: bool,
    allowed: impl Fn(&Standing) -> bool,
) -> Result<Standing, sqlx::Error> {
    if taken {
        // Inserted fresh by `take_fresh` in this transaction.
        return Ok(Standing::Free);
    }
    // A row that disappears between the insert and the read (released by an earlier step
    // of this transaction, or by another replica) is inserted again.
    for _ in 0..3 {
        let insert = sqlx::query(
            "INSERT INTO replay (key_hash, used, holder, lease_until_us, keep_until_us) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
        );
        let inserted = bind_claim(insert, claim)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(Standing::Free);
        }
        // A row is there (with PostgreSQL, committed: the insert waited for its writer),
        // and is now locked by this transaction until it ends.
        let Some(before) = standing(conn, backend, &claim.key, now).await? else {
            continue;
        };
        if allowed(&before) {
            let update = sqlx::query(
                "UPDATE replay SET used = $2, holder = $3, lease_until_us = $4, keep_until_us = $5 \
                 WHERE key_hash = $1",
            );
            bind_claim(update, claim).execute(&mut *conn).await?;
        }
        return Ok(before);
    }
    Err(sqlx::Error::Protocol(
        "the CI token's replay row kept disappearing while it was taken".to_owned(),
    ))
}

/// Binds `claim` as (key_hash, used, holder, lease_until_us, keep_until_us).
fn bind_claim<'q>(query: AnyQuery<'q>, claim: &'q Claim) -> AnyQuery<'q> {
    query
        .bind(&claim.key)
        .bind(claim.used())
        .bind(claim.holder.as_deref())
        .bind(claim.lease_until)
        .bind(claim.keep_until)
}

/// The claim a step would write into a CI token's replay row, if any.
pub(super) fn claim_of(op: &Op) -> Option<&Claim> {
    match op {
        Op::Begin {
            reserve: Some(claim),
            ..
        }
        | Op::Finish {
            settle: OwnedSettle::Use(claim),
            ..
        } => Some(claim),
        _ => None,
    }
}

/// The replay row a step reads or writes, if any.
pub(super) fn key_of(op: &Op) -> Option<&str> {
    match op {
        Op::Begin { reserve, .. } => reserve.as_ref().map(|c| c.key.as_str()),
        Op::Finish { settle, .. } => match settle {
            OwnedSettle::Nothing => None,
            OwnedSettle::Unused(key)
            | OwnedSettle::Consume { key, .. }
            | OwnedSettle::Release { key, .. } => Some(key),
            OwnedSettle::Use(claim) => Some(&claim.key),
        },
        Op::Abandon { reservation, .. } => reservation.as_ref().map(|(key, _)| key.as_str()),
        Op::PurgeReplay { .. } | Op::PurgeAudit { .. } | Op::Probe => None,
    }
}

/// Inserts the rows of `claims` that are new and returns the keys inserted. The caller
/// passes only claims on rows no earlier step of its transaction touches, so for those
/// steps the insert is exactly what their own [`take`] would have done first.
///
/// SQLite only: `leader` (`BEGIN IMMEDIATE`), a query for which of the rows are already
/// there and the insert of the others go in one call (see [`padded_chunks`]). Under the
/// write lock `leader` takes, nothing else writes until the commit, so the rows the query
/// finds are exactly those the insert skips. Asking which rows are *present* (almost
/// never any) rather than `RETURNING` the inserted ones matters: sqlx hands each returned
/// row from its SQLite thread to the caller separately, a round trip per CI token.
pub(super) async fn take_fresh(
    conn: &mut AnyConnection,
    leader: &str,
    claims: &[&Claim],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let chunks = padded_chunks(claims);
    let mut statements = vec![leader.to_owned()];
    for _ in &chunks {
        statements.push(format!(
            "SELECT key_hash FROM replay WHERE key_hash IN ({})",
            vec!["?"; ROWS_PER_INSERT].join(", ")
        ));
        statements.push(padded_insert(
            "replay",
            &REPLAY_COLUMNS,
            " ON CONFLICT (key_hash) DO NOTHING",
        ));
    }
    let sql = statements.join("; ");
    let mut query = sqlx::query(&sql);
    for chunk in &chunks {
        for slot in chunk {
            query = query.bind(slot.map(|claim| claim.key.as_str()));
        }
        for slot in chunk {
            query = match slot {
                Some(claim) => bind_claim(query, claim),
                None => bind_nulls(query, REPLAY_COLUMNS.len()),
            };
        }
    }
    let present = query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<std::collections::HashSet<String>, _>>()?;
    Ok(claims
        .iter()
        .filter(|claim| !present.contains(&claim.key))
        .map(|claim| claim.key.clone())
        .collect())
}

/// Applies one step inside the caller's open transaction. A step that refuses (the CI
/// token is used or held) writes nothing.
///
/// `taken`: the step's claim row was already inserted, fresh, by [`take_fresh`] (so the CI
/// token was free and is now this step's).
pub(super) async fn apply<'r>(
    conn: &mut AnyConnection,
    chain: &mut ChainCursor<'r>,
    op: &'r Op,
    now: OffsetDateTime,
    taken: bool,
) -> Result<Answer, sqlx::Error> {
    let backend = chain.backend;
    let now_us = micros(now);
    match op {
        Op::Begin { record, reserve } => {
            if let Some(claim) = reserve {
                let holder = claim.holder.as_deref().unwrap_or_default();
                let before = take(
                    conn,
                    backend,
                    claim,
                    now_us,
                    taken,
                    |standing| match standing {
                        Standing::Free => true,
                        Standing::HeldBy(other) => other == holder,
                        Standing::Used => false,
                    },
                )
                .await?;
                match before {
                    Standing::Used => return Ok(Answer::Begun(Begun::AlreadyUsed)),
                    Standing::HeldBy(other) if other != holder => {
                        return Ok(Answer::Begun(Begun::InUse));
                    }
                    Standing::HeldBy(_) | Standing::Free => {}
                }
            }
            let seq = chain.append(conn, record).await?;
            Ok(Answer::Begun(Begun::Reserved(seq)))
        }
        Op::Finish { record, settle } => {
            match settle {
                OwnedSettle::Nothing => {}
                OwnedSettle::Unused(key) => match standing(conn, backend, key, now_us).await? {
                    Some(Standing::Used) => return Ok(Answer::Finished(Finished::AlreadyUsed)),
                    Some(Standing::HeldBy(_)) => return Ok(Answer::Finished(Finished::InUse)),
                    Some(Standing::Free) | None => {}
                },
                OwnedSettle::Use(claim) => {
                    match take(conn, backend, claim, now_us, taken, |s| {
                        *s == Standing::Free
                    })
                    .await?
                    {
                        Standing::Used => return Ok(Answer::Finished(Finished::AlreadyUsed)),
                        Standing::HeldBy(_) => return Ok(Answer::Finished(Finished::InUse)),
                        Standing::Free => {}
                    }
                }
                OwnedSettle::Consume { key, holder } => {
                    let consumed = sqlx::query(
                        "UPDATE replay SET used = 1, holder = NULL, lease_until_us = NULL \
                         WHERE key_hash = $1 AND used = 0 AND holder = $2",
                    )
                    .bind(key)
                    .bind(holder)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if consumed == 0 {
                        return Ok(Answer::Finished(Finished::ReservationLost));
                    }
                }
                OwnedSettle::Release { key, holder } => {
                    release(conn, key, holder).await?;
                }
            }
            let seq = chain.append(conn, record).await?;
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
                sqlx::query("SELECT key_hash FROM replay WHERE key_hash = $1 FOR UPDATE")
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await?;
            }
            chain.hold_head(conn).await?;
            // Records appended earlier in this transaction count too.
            chain.flush(conn).await?;
            let outcomes: Vec<String> =
                // All records of a request carry the request's time, so the time index
                // finds them (SQLite keeps no index on request ids).
                sqlx::query_scalar(
                    "SELECT outcome FROM audit_records WHERE time_us = $1 AND request_id = $2",
                )
                .bind(record.time_us)
                .bind(request_id)
                    .fetch_all(&mut *conn)
                    .await?;
            let pending = outcomes.iter().any(|o| o == "pending");
            let ended = outcomes.iter().any(|o| o != "pending");
            if !pending || ended {
                return Ok(Answer::Abandoned(None));
            }
            if let Some((key, holder)) = reservation {
                release(conn, key, holder).await?;
            }
            let seq = chain.append(conn, record).await?;
            Ok(Answer::Abandoned(Some(seq)))
        }
        Op::PurgeReplay { limit } => {
            let purged = sqlx::query(
                "DELETE FROM replay WHERE key_hash IN \
                 (SELECT key_hash FROM replay WHERE keep_until_us <= $1 LIMIT $2)",
            )
            .bind(now_us)
            .bind(*limit)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(Answer::Purged(purged))
        }
        Op::PurgeAudit { before, limit } => purge_audit(conn, backend, micros(*before), *limit)
            .await
            .map(Answer::Purged),
        Op::Probe => Ok(Answer::Probed),
    }
}

async fn release(conn: &mut AnyConnection, key: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM replay WHERE key_hash = $1 AND used = 0 AND holder = $2")
        .bind(key)
        .bind(holder)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Retention: removes each chain's oldest records older than `before` (at most `limit`
/// per chain), keeping the chain contiguous, and moves the chain's anchor to the last
/// removed record so `audit verify` starts there.
async fn purge_audit(
    conn: &mut AnyConnection,
    backend: Backend,
    before: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    };
    let replicas: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT replica_id FROM replicas ORDER BY replica_id{lock}"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut purged = 0;
    for replica in replicas {
        let rows = sqlx::query(
            "SELECT seq, hash, time_us FROM audit_records WHERE replica_id = $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(&replica)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut anchor: Option<(i64, String)> = None;
        for row in rows {
            if row.try_get::<i64, _>(2)? >= before {
                break;
            }
            anchor = Some((row.try_get(0)?, row.try_get(1)?));
        }
        let Some((seq, hash)) = anchor else { continue };
        purged += sqlx::query("DELETE FROM audit_records WHERE replica_id = $1 AND seq <= $2")
            .bind(&replica)
            .bind(seq)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        sqlx::query("UPDATE replicas SET anchor_seq = $2, anchor_hash = $3 WHERE replica_id = $1")
            .bind(&replica)
            .bind(seq)
            .bind(&hash)
            .execute(&mut *conn)
            .await?;
    }
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
