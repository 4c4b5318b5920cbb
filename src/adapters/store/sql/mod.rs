//! The durable stores: SQLite in `storage.data_dir` (the default) and PostgreSQL when
//! `storage.database_url` is set. Both run the same SQL ([`steps`], on [`db::Db`]); they
//! differ in how steps become transactions:
//!
//! - SQLite has one writer: every step goes through [`writer`], which commits whatever is
//!   queued in one transaction (group commit), on its own rusqlite connection; migrations
//!   and reads go through sqlx;
//! - PostgreSQL commits each step in its own transaction on a pooled connection (the
//!   server groups commits itself), and the replay table's primary key decides races
//!   between replicas.
//!
//! Migrations under `migrations/{sqlite,postgres}` are compiled in and applied at start.

mod db;
mod migrate;
pub mod reader;
mod steps;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use time::OffsetDateTime;

use self::steps::{Answer, ChainCursor, Op, apply, replay_key_hash};
use self::writer::Writer;
use crate::adapters::store::chain::{CHECKPOINT_MESSAGE, Checkpoint, GENESIS_HASH};
use crate::trust::audit::AuditRecord;
use crate::trust::store::{
    Abandon, Begin, Begun, Finish, Finished, ReplayKey, ReplayRecord, Seq, Store, StoreError,
};

/// The SQLite database's file name in `storage.data_dir`.
pub const SQLITE_FILE: &str = "tokenmint.db";
/// How long a SQLite statement waits for another process's lock before failing.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 2000;
/// How long a PostgreSQL step waits for a pooled connection.
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections to PostgreSQL per replica.
const POSTGRES_POOL_SIZE: u32 = 16;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// Where the durable store is.
#[derive(Debug, Clone)]
pub enum Location {
    /// The SQLite file in this directory.
    DataDir(PathBuf),
    /// A PostgreSQL URL (a secret: it may carry a password; never logged as is).
    Postgres(String),
}

impl Location {
    pub fn backend(&self) -> Backend {
        match self {
            Location::DataDir(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// For messages: the SQLite path, or the PostgreSQL URL without its password, in the
    /// user part or in a query parameter (`?password=`, `?sslpassword=`).
    pub fn describe(&self) -> String {
        match self {
            Location::DataDir(dir) => dir.join(SQLITE_FILE).display().to_string(),
            Location::Postgres(url) => match url::Url::parse(url) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    let secret = |name: &str| name.to_ascii_lowercase().contains("password");
                    if parsed.query_pairs().any(|(name, _)| secret(&name)) {
                        let pairs: Vec<(String, String)> = parsed
                            .query_pairs()
                            .map(|(name, value)| {
                                let value = if secret(&name) { "***".into() } else { value };
                                (name.into_owned(), value.into_owned())
                            })
                            .collect();
                        parsed.query_pairs_mut().clear().extend_pairs(pairs);
                    }
                    parsed.to_string()
                }
                Err(_) => "the PostgreSQL database (unparsable URL)".to_owned(),
            },
        }
    }
}

/// Told after each commit of the SQLite writer how many records it held and how long
/// it took (the `/metrics` histogram of records per commit).
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, records: usize, took: Duration);
}

/// A [`CommitObserver`] that ignores everything.
pub struct NoCommitObserver;

impl CommitObserver for NoCommitObserver {
    fn committed(&self, _records: usize, _took: Duration) {}
}

/// Microseconds since the Unix epoch: how times are stored.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The inverse of [`micros`].
pub(crate) fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn sqlite_url(path: &Path, params: &str) -> String {
    // Percent-encode the path so that `?`, `#`, `%` or spaces in it survive the URL.
    let mut url = String::from("sqlite://");
    for byte in path.to_string_lossy().bytes() {
        if byte.is_ascii_alphanumeric() || b"/._-~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url.push('?');
    url.push_str(params);
    url
}

/// Every SQLite connection's set-up: wait for the write lock rather than fail at once.
async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The writer connection's set-up, after [`sqlite_pragmas`]'s.
const WRITER_PRAGMAS: &str = concat!(
    "PRAGMA journal_mode = WAL;",
    // Checkpoints run beside the writer (see `spawn_checkpointer`) and between its batches,
    // never inside a commit.
    "PRAGMA wal_autocheckpoint = 0;",
    // A WAL file that grew during a burst is cut back to 64 MiB once checkpointed.
    "PRAGMA journal_size_limit = 67108864;",
    "PRAGMA synchronous = FULL;",
    // A multi-row insert keeps a statement journal (to undo itself alone); past 64 KiB
    // SQLite spills it to a temporary file, created, written and deleted per batch.
    // In memory it costs a few hundred KiB at most.
    "PRAGMA temp_store = MEMORY;",
);

/// Opens the single writer's connection on `path`, in-process (see `db`).
fn open_sqlite_writer(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS)))?;
    conn.execute_batch(WRITER_PRAGMAS)?;
    // Every statement shape the steps use stays prepared (the seven insert shapes and
    // about twenty others).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Copies what it can of the WAL into the database without waiting for anyone.
const PASSIVE_CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

enum Mode {
    Sqlite {
        writer: Writer,
        /// Aborted when the store is dropped.
        checkpointer: tokio::task::JoinHandle<()>,
    },
    Postgres,
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        if let Mode::Sqlite { checkpointer, .. } = &self.mode {
            checkpointer.abort();
        }
    }
}

/// How often the SQLite WAL is copied back into the database file.
const CHECKPOINT_WAL_EVERY: Duration = Duration::from_secs(1);

/// Copies committed pages from the WAL into the database file every second, on a read
/// connection: the writer never pays for a checkpoint in a commit, and a passive
/// checkpoint never waits for the writer.
fn spawn_checkpointer(pool: AnyPool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_WAL_EVERY);
        loop {
            tick.tick().await;
            if let Err(err) = sqlx::query(PASSIVE_CHECKPOINT).execute(&pool).await {
                tracing::debug!(error = %err, "SQLite WAL checkpoint failed; retrying");
            }
        }
    })
}

/// A durable [`Store`]: SQLite or PostgreSQL.
pub struct SqlStore {
    location: Location,
    replica: String,
    mode: Mode,
    /// Reads (and, with PostgreSQL, every step).
    pool: AnyPool,
}

fn write_error(err: sqlx::Error) -> StoreError {
    StoreError::Write(Box::new(err))
}

impl SqlStore {
    /// Opens (creating the SQLite file if needed) and migrates the store, and registers
    /// this process's audit chain. With SQLite the chain is the file's own, kept across
    /// restarts; with PostgreSQL every process start is a replica with its own chain.
    pub async fn open(
        location: Location,
        observer: Arc<dyn CommitObserver>,
    ) -> anyhow::Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let what = location.describe();
        match &location {
            Location::DataDir(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|err| anyhow::anyhow!("creating {}: {err}", dir.display()))?;
                let path = dir.join(SQLITE_FILE);
                let mut conn = AnyConnection::connect(&sqlite_url(&path, "mode=rwc"))
                    .await
                    .map_err(|err| anyhow::anyhow!("opening the SQLite store {what}: {err}"))?;
                sqlite_pragmas(&mut conn)
                    .await
                    .map_err(|err| anyhow::anyhow!("setting up the SQLite store {what}: {err}"))?;
                // The file is in WAL mode before the readers open; the rest of the writer's
                // set-up is per connection and waits for the writer's own.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut conn)
                    .await
                    .map_err(|err| anyhow::anyhow!("setting up the SQLite store {what}: {err}"))?;
                migrate::run(&mut conn, Backend::Sqlite, &what).await?;
                let replica = sqlite_replica(&mut conn)
                    .await
                    .map_err(|err| anyhow::anyhow!("reading the SQLite store {what}: {err}"))?;
                let pool = AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn)))
                    .connect(&sqlite_url(&path, "mode=rw"))
                    .await
                    .map_err(|err| anyhow::anyhow!("opening the SQLite store {what}: {err}"))?;
                // Migrations ran on sqlx; from here on the writer is the only one to write.
                conn.close()
                    .await
                    .map_err(|err| anyhow::anyhow!("setting up the SQLite store {what}: {err}"))?;
                let writer_conn = open_sqlite_writer(&path)
                    .map_err(|err| anyhow::anyhow!("opening the SQLite store {what}: {err}"))?;
                let writer = Writer::spawn(writer_conn, replica.clone(), observer);
                let checkpointer = spawn_checkpointer(pool.clone());
                Ok(SqlStore {
                    location,
                    replica,
                    mode: Mode::Sqlite {
                        writer,
                        checkpointer,
                    },
                    pool,
                })
            }
            Location::Postgres(url) => {
                let pool = connect_postgres(url, POSTGRES_POOL_SIZE).await?;
                let replica = uuid::Uuid::new_v4().to_string();
                let host = std::env::var("HOSTNAME").unwrap_or_default();
                sqlx::query(
                    "INSERT INTO replicas (replica_id, created_us, host, last_seq, last_hash, \
                     anchor_seq, anchor_hash) VALUES ($1, $2, $3, 0, $4, 0, $4)",
                )
                .bind(&replica)
                .bind(micros(OffsetDateTime::now_utc()))
                .bind(host)
                .bind(GENESIS_HASH)
                .execute(&pool)
                .await
                .map_err(|err| anyhow::anyhow!("registering this replica at {what}: {err}"))?;
                Ok(SqlStore {
                    location,
                    replica,
                    mode: Mode::Postgres,
                    pool,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.location.backend()
    }

    /// The connection pool, for what else lives in the same database (the signing keys
    /// with PostgreSQL).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// This process's audit chain.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    async fn run(&self, op: Op, now: OffsetDateTime) -> Result<Answer, StoreError> {
        match &self.mode {
            Mode::Sqlite { writer, .. } => writer.submit(op, now).await,
            Mode::Postgres => {
                let mut tx = self.pool.begin().await.map_err(write_error)?;
                let mut chain = ChainCursor::new(self.replica.clone(), Backend::Postgres);
                let answer = apply(&mut *tx, &mut chain, &op, now)
                    .await
                    .map_err(StoreError::Write)?;
                chain
                    .write_head(&mut *tx)
                    .await
                    .map_err(StoreError::Write)?;
                tx.commit().await.map_err(write_error)?;
                Ok(answer)
            }
        }
    }

    /// Forgets expired replay rows, `limit` at a time; returns how many went.
    pub async fn purge_replay(&self, limit: i64) -> Result<u64, StoreError> {
        self.purge_replay_at(OffsetDateTime::now_utc(), limit).await
    }

    /// [`purge_replay`](Self::purge_replay) as if this process's clock read `now`
    /// (PostgreSQL also waits for the database's clock).
    pub async fn purge_replay_at(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<u64, StoreError> {
        match self.run(Op::PurgeReplay { limit }, now).await? {
            Answer::Purged(n) => Ok(n),
            other => Err(other.unexpected()),
        }
    }

    /// Removes audit records older than `before`, `limit` per chain at a time, each chain
    /// in a transaction of its own. On PostgreSQL a chain whose head stays locked (its
    /// replica stalled mid-step) is logged and left for the next purge.
    pub async fn purge_audit(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        let chains: Vec<String> =
            sqlx::query_scalar("SELECT replica_id FROM replicas ORDER BY replica_id")
                .fetch_all(&self.pool)
                .await
                .map_err(write_error)?;
        let mut purged = 0;
        for chain in chains {
            let op = Op::PurgeAudit {
                before,
                limit,
                chain: chain.clone(),
            };
            match self.run(op, OffsetDateTime::now_utc()).await {
                Ok(Answer::Purged(n)) => purged += n,
                Ok(other) => return Err(other.unexpected()),
                Err(err) if matches!(self.mode, Mode::Postgres) => tracing::warn!(
                    error = %err,
                    replica = %chain,
                    "purging this chain's old audit records failed; the next purge retries it"
                ),
                Err(err) => return Err(err),
            }
        }
        Ok(purged)
    }

    /// This replica's chain head, as a checkpoint for `audit verify --checkpoint`.
    pub async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let row = sqlx::query("SELECT last_seq, last_hash FROM replicas WHERE replica_id = $1")
            .bind(&self.replica)
            .fetch_one(&self.pool)
            .await
            .map_err(write_error)?;
        Ok(Checkpoint {
            replica: self.replica.clone(),
            seq: row.try_get::<i64, _>(0).map_err(write_error)? as u64,
            hash: row.try_get(1).map_err(write_error)?,
        })
    }

    /// Logs this replica's checkpoint line (hourly, and at shutdown).
    pub async fn log_checkpoint(&self) {
        match self.checkpoint().await {
            Ok(cp) => tracing::info!(
                replica = %cp.replica,
                seq = cp.seq,
                hash = %cp.hash,
                "{CHECKPOINT_MESSAGE}"
            ),
            Err(err) => tracing::error!(error = %err, "the audit checkpoint could not be read"),
        }
    }

    /// Closes the pool (the SQLite writer stops once every handle is gone).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Connects to PostgreSQL at `url` with at most `max_connections` and applies the
/// migrations, registering no replica: for [`SqlStore::open`], and for the commands that
/// need the database but write no audit record (`keys rotate`, `keys reseal`).
pub async fn connect_postgres(url: &str, max_connections: u32) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let what = Location::Postgres(url.to_owned()).describe();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .connect(url)
        .await
        .map_err(|err| anyhow::anyhow!("connecting to PostgreSQL at {what}: {err}"))?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|err| anyhow::anyhow!("connecting to PostgreSQL at {what}: {err}"))?;
    migrate::run(&mut conn, Backend::Postgres, &what).await?;
    Ok(pool)
}

/// How often expired replay rows and records past retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Rows removed per transaction, so a purge never holds the writer for long.
const PURGE_BATCH: i64 = 500;
/// How often the chain head is logged as a checkpoint (and once at start and shutdown).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(3600);

/// The store's background work: purging expired replay rows and records older than
/// `retention` in small batches, and logging a checkpoint every hour.
pub fn spawn_maintenance(store: Arc<SqlStore>, retention: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        store.log_checkpoint().await;
        let mut purge = tokio::time::interval(PURGE_EVERY);
        let mut checkpoint = tokio::time::interval(CHECKPOINT_EVERY);
        purge.tick().await;
        checkpoint.tick().await;
        loop {
            tokio::select! {
                _ = purge.tick() => store.purge_once(retention).await,
                _ = checkpoint.tick() => store.log_checkpoint().await,
            }
        }
    })
}

impl SqlStore {
    /// One round of purging: batches until a batch comes back short.
    pub async fn purge_once(&self, retention: Duration) {
        loop {
            match self.purge_replay(PURGE_BATCH).await {
                Ok(n) if n as i64 == PURGE_BATCH => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "purging expired replay records failed; retrying later");
                    break;
                }
            }
        }
        let before = OffsetDateTime::now_utc() - retention;
        loop {
            match self.purge_audit(before, PURGE_BATCH).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(
                        records = n,
                        "audit records past storage.audit_retention purged; the chain anchor moved"
                    );
                    tokio::task::yield_now().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "purging old audit records failed; retrying later");
                    break;
                }
            }
        }
    }
}

async fn sqlite_replica(conn: &mut AnyConnection) -> Result<String, sqlx::Error> {
    if let Some(replica) = sqlx::query_scalar::<_, String>("SELECT replica_id FROM local_replica")
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(replica);
    }
    let replica = uuid::Uuid::new_v4().to_string();
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO replicas (replica_id, created_us, last_seq, last_hash, anchor_seq, \
         anchor_hash) VALUES ($1, $2, 0, $3, 0, $3)",
    )
    .bind(&replica)
    .bind(micros(OffsetDateTime::now_utc()))
    .bind(GENESIS_HASH)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO local_replica (singleton, replica_id) VALUES (1, $1)")
        .bind(&replica)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(replica)
}

#[async_trait]
impl Store for SqlStore {
    async fn begin(&self, step: Begin<'_>, now: OffsetDateTime) -> Result<Begun, StoreError> {
        match self.run(Op::begin(step)?, now).await? {
            Answer::Begun(begun) => Ok(begun),
            other => Err(other.unexpected()),
        }
    }

    async fn finish(&self, step: Finish<'_>, now: OffsetDateTime) -> Result<Finished, StoreError> {
        match self.run(Op::finish(step)?, now).await? {
            Answer::Finished(finished) => Ok(finished),
            other => Err(other.unexpected()),
        }
    }

    async fn abandon(
        &self,
        step: Abandon<'_>,
        now: OffsetDateTime,
    ) -> Result<Option<Seq>, StoreError> {
        match self.run(Op::abandon(step)?, now).await? {
            Answer::Abandoned(seq) => Ok(seq),
            other => Err(other.unexpected()),
        }
    }

    async fn replay_record(
        &self,
        key: &ReplayKey,
        now: OffsetDateTime,
    ) -> Result<Option<ReplayRecord>, StoreError> {
        let row = sqlx::query("SELECT used, keep_until_us FROM replay WHERE key_hash = $1")
            .bind(replay_key_hash(key))
            .fetch_optional(&self.pool)
            .await
            .map_err(write_error)?;
        let Some(row) = row else { return Ok(None) };
        let used: i64 = row.try_get(0).map_err(write_error)?;
        let keep_until = from_micros(row.try_get(1).map_err(write_error)?);
        Ok((keep_until > now).then_some(ReplayRecord {
            used: used != 0,
            keep_until,
        }))
    }

    async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT a.record FROM audit_records a JOIN replicas r ON r.replica_id = a.replica_id \
             ORDER BY r.created_us, a.replica_id, a.seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(write_error)?;
        rows.iter()
            .map(|json| serde_json::from_str(json).map_err(|err| StoreError::Write(Box::new(err))))
            .collect()
    }

    async fn healthy(&self) -> bool {
        match &self.mode {
            Mode::Sqlite { writer, .. } => {
                writer.last_commit_ok()
                    || matches!(
                        writer.submit(Op::Probe, OffsetDateTime::now_utc()).await,
                        Ok(Answer::Probed)
                    )
            }
            // Writable, not merely reachable: a standby after a failover answers reads.
            Mode::Postgres => sqlx::query_scalar::<_, i64>(
                "SELECT CASE WHEN pg_is_in_recovery() \
                 OR current_setting('transaction_read_only') = 'on' THEN 0 ELSE 1 END::BIGINT",
            )
            .fetch_one(&self.pool)
            .await
            .is_ok_and(|writable| writable == 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Location;

    /// The URL is logged at start and named in errors: no password reaches either, in
    /// the user part or as a query parameter.
    #[test]
    fn a_described_database_url_carries_no_password() {
        let describe = |url: &str| Location::Postgres(url.to_owned()).describe();
        assert_eq!(
            describe("postgres://tm:s3cret@db:5432/tokenmint"),
            "postgres://tm:***@db:5432/tokenmint"
        );
        assert_eq!(
            describe("postgres://tm@db/tokenmint?sslmode=require&password=s3cret&SSLPassword=k"),
            "postgres://tm@db/tokenmint?sslmode=require&password=***&SSLPassword=***"
        );
        assert_eq!(
            describe("postgres://tm@db/tokenmint?sslmode=require"),
            "postgres://tm@db/tokenmint?sslmode=require"
        );
    }
}
