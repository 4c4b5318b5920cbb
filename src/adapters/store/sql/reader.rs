//! Reading the audit trail for `tokenmint audit`: filtered lists, lookups by request id,
//! token SHA-256 or jti, and the chain walk of `verify`. It opens the store read-only, so
//! it works beside a running service and on a read-only copy of the SQLite file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use time::OffsetDateTime;

use super::steps::{QUERY_COLUMN_NAMES, QueryColumns};
use super::{Location, SQLITE_FILE, micros, migrate, sqlite_url};
use crate::adapters::store::chain::{
    AnchorAge, ChainBreak, ChainHead, ChainWalk, Checkpoint, CheckpointReport, StoredLink,
    verify_checkpoints,
};
use crate::trust::audit::AuditRecord;

/// Records fetched per round trip while verifying.
const PAGE: i64 = 2000;

/// One record as stored: its chain and place in it.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub replica: String,
    pub seq: u64,
    pub record: AuditRecord,
}

/// Which records `audit list` wants (all conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub repository: Option<String>,
    pub policy: Option<String>,
    pub target: Option<String>,
}

/// What `audit verify` found when every chain was intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// (replica, records checked, last seq, anchor seq: the oldest record kept, the ones
    /// before it purged; 0 when none were) per chain.
    pub chains: Vec<(String, u64, u64, u64)>,
    pub checkpoints: CheckpointReport,
}

/// A read-only view of the store.
pub struct AuditReader {
    pool: AnyPool,
    /// A private copy of the file and its WAL, when the original could not be read in
    /// place; removed with the reader.
    _scratch: Option<Scratch>,
}

/// A directory of our own under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the SQLite file at `path` without writing anything beside it when that can be
/// avoided, and without missing commits still in its WAL:
///
/// - no `-wal` and no `-shm` beside it (no service has it open; a copy or a backup):
///   read it as immutable, which creates nothing;
/// - otherwise read it in place (sharing a running service's WAL index);
/// - and if that fails (a read-only copy whose WAL index cannot be made), read a private
///   copy of the file and its WAL.
async fn open_sqlite_read_only(path: &Path) -> anyhow::Result<(AnyPool, Option<Scratch>)> {
    let beside = |suffix: &str| path.with_file_name(format!("{SQLITE_FILE}{suffix}"));
    let connect = |path: &Path, params: &'static str| {
        let url = sqlite_url(path, params);
        async move {
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            sqlx::query("SELECT 1 FROM replicas LIMIT 1")
                .fetch_optional(&pool)
                .await?;
            Ok::<_, sqlx::Error>(pool)
        }
    };
    let (wal, shm) = (beside("-wal"), beside("-shm"));
    if !wal.exists() && !shm.exists() {
        return Ok((connect(path, "mode=ro&immutable=1").await?, None));
    }
    if let Ok(pool) = connect(path, "mode=ro").await {
        return Ok((pool, None));
    }
    let scratch = Scratch(
        std::env::temp_dir().join(format!("tokenmint-audit-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir(&scratch.0).with_context(|| format!("creating {}", scratch.0.display()))?;
    let copy = scratch.0.join(SQLITE_FILE);
    std::fs::copy(path, &copy).with_context(|| format!("copying {}", path.display()))?;
    if wal.exists() {
        std::fs::copy(&wal, scratch.0.join(format!("{SQLITE_FILE}-wal")))
            .with_context(|| format!("copying {}", wal.display()))?;
    }
    Ok((connect(&copy, "mode=ro").await?, Some(scratch)))
}

impl AuditReader {
    /// Opens the store at `location` read-only. A missing SQLite file is an error (there
    /// is nothing to read), and so is a schema newer than this binary's.
    pub async fn open(location: &Location) -> anyhow::Result<AuditReader> {
        sqlx::any::install_default_drivers();
        let what = location.describe();
        let mut scratch = None;
        let pool = match location {
            Location::DataDir(dir) => {
                let path = dir.join(SQLITE_FILE);
                if !path.is_file() {
                    bail!(
                        "no audit store at {}: has `tokenmint serve` run with this storage.data_dir?",
                        path.display()
                    );
                }
                let (pool, copy) = open_sqlite_read_only(&path)
                    .await
                    .with_context(|| format!("opening the SQLite store {what} read-only"))?;
                scratch = copy;
                pool
            }
            Location::Postgres(url) => AnyPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {what}"))?,
        };
        let mut conn = pool.acquire().await?;
        let version = migrate::applied(&mut conn)
            .await
            .with_context(|| format!("reading the schema version of {what}"))?;
        let backend = location.backend();
        match version {
            None => bail!("{what} holds no tokenmint store (no migrations were applied)"),
            Some(version) if version > migrate::latest(backend) => bail!(
                "the {} store {what} was migrated by a newer tokenmint (schema version {version}; \
                 this binary knows up to {}): use that version to read it",
                backend.name(),
                migrate::latest(backend)
            ),
            Some(_) => {}
        }
        drop(conn);
        Ok(AuditReader {
            pool,
            _scratch: scratch,
        })
    }

    /// Records matching `filter`, oldest first.
    pub async fn records(&self, filter: &AuditFilter) -> anyhow::Result<Vec<StoredRecord>> {
        let mut conditions = Vec::new();
        let mut texts = Vec::new();
        let mut times = Vec::new();
        if let Some(since) = filter.since {
            times.push(micros(since));
            conditions.push(format!("time_us >= ${}", times.len()));
        }
        if let Some(until) = filter.until {
            times.push(micros(until));
            conditions.push(format!("time_us <= ${}", times.len()));
        }
        for (column, value) in [
            ("repository", &filter.repository),
            ("policy", &filter.policy),
            ("target", &filter.target),
        ] {
            if let Some(value) = value {
                texts.push(value.clone());
                conditions.push(format!("{column} = ${}", times.len() + texts.len()));
            }
        }
        let mut sql = String::from("SELECT replica_id, seq, record FROM audit_records");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY time_us, replica_id, seq");
        let mut query = sqlx::query(&sql);
        for time in times {
            query = query.bind(time);
        }
        for text in texts {
            query = query.bind(text);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(stored_record).collect()
    }

    /// Every record of the request, or of the token with this SHA-256 (in either case of
    /// hex) or jti.
    pub async fn find(&self, id: &str) -> anyhow::Result<Vec<StoredRecord>> {
        let sha256 = id.to_ascii_lowercase();
        let rows = sqlx::query(
            "SELECT replica_id, seq, record FROM audit_records \
             WHERE request_id = $1 OR token_sha256 = $2 OR token_jti = $1 \
             ORDER BY time_us, replica_id, seq",
        )
        .bind(id)
        .bind(&sha256)
        .fetch_all(&self.pool)
        .await?;
        let mut found: Vec<StoredRecord> = rows
            .iter()
            .map(stored_record)
            .collect::<anyhow::Result<_>>()?;
        // A token's records lead to its request's other records (the pending one).
        let requests: Vec<String> = found
            .iter()
            .filter(|r| r.record.request_id != id)
            .map(|r| r.record.request_id.clone())
            .collect();
        for request in requests {
            for extra in self.find_request(&request).await? {
                if !found
                    .iter()
                    .any(|r| r.replica == extra.replica && r.seq == extra.seq)
                {
                    found.push(extra);
                }
            }
        }
        found.sort_by_key(|r| (r.record.time, r.replica.clone(), r.seq));
        Ok(found)
    }

    async fn find_request(&self, request_id: &str) -> anyhow::Result<Vec<StoredRecord>> {
        let rows =
            sqlx::query("SELECT replica_id, seq, record FROM audit_records WHERE request_id = $1")
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(stored_record).collect()
    }

    /// Walks every chain, then checks `checkpoints`. `Ok(Err(..))` names the first bad
    /// record; `Err` is a failure to read. `anchor_age` is how old retention leaves a
    /// chain's first record.
    pub async fn verify(
        &self,
        checkpoints: &[Checkpoint],
        anchor_age: &AnchorAge,
    ) -> anyhow::Result<Result<VerifyReport, ChainBreak>> {
        // One snapshot for the whole walk: a service appending or purging meanwhile must
        // not look like tampering.
        let mut conn = self.pool.acquire().await?;
        let snapshot = if conn.backend_name() == "PostgreSQL" {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            "BEGIN"
        };
        sqlx::query(snapshot).execute(&mut *conn).await?;
        let verdict = self.verify_in(&mut conn, checkpoints, anchor_age).await;
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        verdict
    }

    async fn verify_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        checkpoints: &[Checkpoint],
        anchor_age: &AnchorAge,
    ) -> anyhow::Result<Result<VerifyReport, ChainBreak>> {
        let heads = heads(&mut *conn).await?;
        let orphans: Vec<(String, i64)> = sqlx::query(
            "SELECT replica_id, MIN(seq) FROM audit_records \
             WHERE replica_id NOT IN (SELECT replica_id FROM replicas) GROUP BY replica_id",
        )
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        if let Some((replica, seq)) = orphans.into_iter().next() {
            return Ok(Err(ChainBreak {
                replica,
                seq: seq as u64,
                what: "belongs to no known chain: it was inserted, or its chain was removed"
                    .to_owned(),
            }));
        }
        let columns = |json: &str| -> Result<Vec<(&'static str, Option<String>)>, String> {
            let record: AuditRecord = serde_json::from_str(json)
                .map_err(|err| format!("is not an audit record ({err})"))?;
            Ok(QueryColumns::of(&record).as_text())
        };
        let page = format!(
            "SELECT seq, prev_hash, hash, record, {} FROM audit_records \
             WHERE replica_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            QUERY_COLUMN_NAMES.join(", ")
        );
        let mut chains = Vec::new();
        for head in &heads {
            let mut walk = ChainWalk::new(head, &columns, anchor_age.clone());
            let mut after = i64::MIN;
            loop {
                let rows = sqlx::query(&page)
                    .bind(&head.replica)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *conn)
                    .await?;
                let count = rows.len();
                for row in rows {
                    let link = stored_link(&row)?;
                    after = link.seq as i64;
                    if let Err(err) = walk.push(link) {
                        return Ok(Err(err));
                    }
                }
                if count < PAGE as usize {
                    break;
                }
            }
            match walk.finish() {
                Ok(checked) => chains.push((
                    head.replica.clone(),
                    checked,
                    head.last_seq,
                    head.anchor_seq,
                )),
                Err(err) => return Ok(Err(err)),
            }
        }
        let mut hashes = HashMap::new();
        for checkpoint in checkpoints {
            let hash: Option<String> = sqlx::query_scalar(
                "SELECT hash FROM audit_records WHERE replica_id = $1 AND seq = $2",
            )
            .bind(&checkpoint.replica)
            .bind(checkpoint.seq as i64)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(hash) = hash {
                hashes.insert((checkpoint.replica.clone(), checkpoint.seq), hash);
            }
        }
        let checked = verify_checkpoints(&heads, checkpoints, |replica, seq| {
            hashes.get(&(replica.to_owned(), seq)).cloned()
        });
        Ok(checked.map(|checkpoints| VerifyReport {
            chains,
            checkpoints,
        }))
    }
}

/// Every chain's head.
async fn heads(conn: &mut sqlx::AnyConnection) -> anyhow::Result<Vec<ChainHead>> {
    let rows = sqlx::query(
        "SELECT replica_id, last_seq, last_hash, anchor_seq, anchor_hash FROM replicas \
             ORDER BY created_us, replica_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ChainHead {
                replica: row.try_get(0)?,
                last_seq: row.try_get::<i64, _>(1)? as u64,
                last_hash: row.try_get(2)?,
                anchor_seq: row.try_get::<i64, _>(3)? as u64,
                anchor_hash: row.try_get(4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

fn stored_record(row: &sqlx::any::AnyRow) -> anyhow::Result<StoredRecord> {
    let replica: String = row.try_get(0)?;
    let seq = row.try_get::<i64, _>(1)? as u64;
    let json: String = row.try_get(2)?;
    let record = serde_json::from_str(&json).with_context(|| {
        format!("record {seq} of replica {replica} is not an audit record (run `tokenmint audit verify`)")
    })?;
    Ok(StoredRecord {
        replica,
        seq,
        record,
    })
}

fn stored_link(row: &sqlx::any::AnyRow) -> Result<StoredLink, sqlx::Error> {
    let text = |index: usize| row.try_get::<Option<String>, _>(index);
    Ok(StoredLink {
        seq: row.try_get::<i64, _>(0)? as u64,
        prev_hash: row.try_get(1)?,
        hash: row.try_get(2)?,
        record_json: row.try_get(3)?,
        // Selected after the first four: `time_us` (a number), then the texts.
        columns: QUERY_COLUMN_NAMES
            .into_iter()
            .enumerate()
            .map(|(index, name)| match index {
                0 => Ok((name, Some(row.try_get::<i64, _>(4)?.to_string()))),
                _ => Ok((name, text(4 + index)?)),
            })
            .collect::<Result<_, sqlx::Error>>()?,
    })
}
