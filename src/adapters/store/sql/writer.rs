//! SQLite's single writer, with group commit: one task owns the only write connection,
//! takes every step waiting in its queue, applies them in one transaction and answers each
//! caller only once that transaction is durable (`synchronous = FULL`).
//!
//! A batch is closed when its transaction starts: a step that arrives while a commit is
//! running waits for the next one, so no step waits on more than one fsync it did not need.
//!
//! The writer owns its SQLite connection in-process (rusqlite): a batch's statements run
//! on the writer's own thread, with no round trip to another thread between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::db::{Db, DbError};
use super::steps::{Answer, ChainCursor, Op, apply};
use super::{Backend, CommitObserver};
use crate::trust::store::StoreError;

/// The most steps one transaction takes.
const MAX_BATCH: usize = 512;
/// Records after which the writer checkpoints the WAL itself, between two batches.
///
/// The passive checkpoints beside the writer (`spawn_checkpointer`) never finish while
/// commits keep coming: each copies the frames written before it started, and more have
/// arrived by its end, so the WAL is never started over and grows for as long as the load
/// lasts. The writer's own checkpoint runs while no commit can, so it copies every frame
/// and the next transaction starts the WAL from its beginning. Most frames are already
/// copied by then, so it costs the writer little.
const CHECKPOINT_EVERY_RECORDS: usize = 2048;
/// Steps that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

struct Job {
    op: Op,
    now: OffsetDateTime,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The way to the writer task.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
    /// Whether the last transaction committed.
    healthy: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer task on `conn`, appending to `replica`'s chain.
    pub(super) fn spawn(
        conn: rusqlite::Connection,
        replica: String,
        observer: Arc<dyn CommitObserver>,
    ) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        // The writer runs on a thread of its own, with its SQLite connection: on the
        // service's runtime it would wait in the queue behind every exchange being computed
        // each time a step arrived, and its statements would block that runtime's threads.
        let spawned = std::thread::Builder::new()
            .name("tokenmint-sqlite-writer".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(conn, replica, jobs, observer, flag)),
                    Err(err) => {
                        flag.store(false, Ordering::Release);
                        tracing::error!(error = %err, "the SQLite writer's runtime could not start");
                    }
                }
            });
        if let Err(err) = spawned {
            healthy.store(false, Ordering::Release);
            tracing::error!(error = %err, "the SQLite writer's thread could not start");
        }
        Writer { queue, healthy }
    }

    /// Queues `op` and waits until the transaction holding it is durable (or failed).
    pub(super) async fn submit(&self, op: Op, now: OffsetDateTime) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { op, now, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) fn last_commit_ok(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.queue.is_closed()
    }
}

/// A passive checkpoint on the writer's own connection (see [`CHECKPOINT_EVERY_RECORDS`]).
async fn checkpoint(conn: &mut rusqlite::Connection) {
    if let Err(err) = conn.fetch(super::PASSIVE_CHECKPOINT, &[]).await {
        tracing::debug!(error = %err, "the writer's WAL checkpoint failed; the next one retries");
    }
}

fn stopped() -> StoreError {
    StoreError::Write("the SQLite writer stopped".into())
}

async fn run(
    mut conn: rusqlite::Connection,
    replica: String,
    mut jobs: mpsc::Receiver<Job>,
    observer: Arc<dyn CommitObserver>,
    healthy: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The chain head as this writer last committed it; `None` after a failure, so the
    // next transaction reads it again.
    let mut head = None;
    let mut since_checkpoint = 0;
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        // Whatever queued up while the last transaction committed goes in this one;
        // nothing waits for steps that have not been made yet.
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let cached = head.take();
        let mut result = commit(&mut conn, &replica, cached.clone(), &batch).await;
        if result.is_err() && cached.is_some() {
            // Perhaps another process appended to this chain since our last commit (its
            // record took our next seq): read the head again and retry once.
            rollback(&mut conn).await;
            result = commit(&mut conn, &replica, None, &batch).await;
        }
        match result {
            Ok((answers, records, committed_head)) => {
                head = committed_head;
                healthy.store(true, Ordering::Release);
                if records > 0 {
                    observer.committed(records, started.elapsed());
                }
                for (job, answer) in batch.drain(..).zip(answers) {
                    let _ = job.reply.send(Ok(answer));
                }
                since_checkpoint += records;
                if since_checkpoint >= CHECKPOINT_EVERY_RECORDS {
                    since_checkpoint = 0;
                    checkpoint(&mut conn).await;
                }
            }
            Err(err) => {
                healthy.store(false, Ordering::Release);
                rollback(&mut conn).await;
                tracing::error!(error = %err, steps = batch.len(), "the SQLite store could not commit; nothing of these steps was written");
                let text = err.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Write(text.clone().into())));
                }
            }
        }
    }
}

/// Ends a failed transaction, if one is open (a failed `COMMIT` may have ended it).
async fn rollback(conn: &mut rusqlite::Connection) {
    if !conn.is_autocommit()
        && let Err(err) = conn.exec("ROLLBACK", &[]).await
    {
        tracing::debug!(error = %err, "rolling back the SQLite writer's transaction failed");
    }
}

/// One transaction for the whole batch: every step's writes, then the chain head.
async fn commit(
    conn: &mut rusqlite::Connection,
    replica: &str,
    head: Option<(u64, String)>,
    batch: &[Job],
) -> Result<(Vec<Answer>, usize, Option<(u64, String)>), DbError> {
    let mut chain = ChainCursor::starting_at(replica.to_owned(), Backend::Sqlite, head);
    // IMMEDIATE takes the write lock now, so a second process on the same file waits
    // (busy_timeout) instead of failing half way.
    conn.exec("BEGIN IMMEDIATE", &[]).await?;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        answers.push(apply(conn, &mut chain, &job.op, job.now).await?);
    }
    chain.write_head(conn).await?;
    conn.exec("COMMIT", &[]).await?;
    Ok((answers, chain.appended, chain.head()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::OffsetDateTime;

    use crate::adapters::store::{Location, NoCommitObserver, SqlStore};
    use crate::trust::audit::{AuditRecord, Reason};
    use crate::trust::store::{Finish, Finished, ReplayKey, Settle, Store};

    async fn finish(store: &SqlStore, key: &ReplayKey, settle_use: bool) -> Finished {
        let now = OffsetDateTime::now_utc();
        let settle = if settle_use {
            Settle::Use {
                key,
                keep_until: now + time::Duration::minutes(5),
            }
        } else {
            Settle::Unused(key)
        };
        let record = Arc::new(AuditRecord::new(
            &uuid::Uuid::new_v4().to_string(),
            now,
            if settle_use {
                Reason::Allowed
            } else {
                Reason::NoPolicyMatched
            },
        ));
        store
            .finish(Finish { record, settle }, now)
            .await
            .expect("finish")
    }

    /// Under load that never pauses, the WAL still starts over: the writer checkpoints it
    /// itself every few thousand records, so it holds a bounded number of frames however
    /// long the load lasts (with only the passive checkpoints beside the writer it held
    /// every frame written since the load began).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_load_that_never_pauses() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqlStore::open(
                Location::DataDir(dir.path().to_owned()),
                Arc::new(NoCommitObserver),
            )
            .await
            .expect("store"),
        );
        let records = 4 * super::CHECKPOINT_EVERY_RECORDS;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let callers: Vec<_> = (0..64)
            .map(|_| {
                let (store, next) = (store.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < records {
                        let key = ReplayKey {
                            issuer: "github".to_owned(),
                            id: uuid::Uuid::new_v4().to_string(),
                        };
                        assert!(matches!(
                            finish(&store, &key, true).await,
                            Finished::Recorded(_)
                        ));
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.expect("caller");
        }
        let url = format!("sqlite://{}", dir.path().join("tokenmint.db").display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await
            .expect("checkpoint");
        let frames: i64 = sqlx::Row::try_get(&row, 1).expect("log frames");
        // Each record dirties about two pages; the WAL holds at most the frames of one
        // checkpoint interval plus a batch, never the whole run's.
        let bound = 3 * (super::CHECKPOINT_EVERY_RECORDS + super::MAX_BATCH) as i64;
        assert!(
            frames < bound,
            "the WAL holds {frames} frames after {records} records (bound {bound})"
        );
    }

    /// Steps on one CI token queued together land in one transaction: the first takes
    /// the token, the others see it used, in order.
    #[tokio::test]
    async fn steps_on_one_token_in_one_batch_keep_their_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlStore::open(
            Location::DataDir(dir.path().to_owned()),
            Arc::new(NoCommitObserver),
        )
        .await
        .expect("store");
        let key = ReplayKey {
            issuer: "github".to_owned(),
            id: "jti:one".to_owned(),
        };
        let (refusal, first, second, third) = tokio::join!(
            finish(&store, &key, false),
            finish(&store, &key, true),
            finish(&store, &key, true),
            finish(&store, &key, false),
        );
        assert!(matches!(refusal, Finished::Recorded(_)), "{refusal:?}");
        assert!(matches!(first, Finished::Recorded(_)), "{first:?}");
        assert_eq!(second, Finished::AlreadyUsed);
        assert_eq!(third, Finished::AlreadyUsed);
        let tokens: Vec<ReplayKey> = (0..40)
            .map(|n| ReplayKey {
                issuer: "github".to_owned(),
                id: format!("jti:{}", n % 20),
            })
            .collect();
        let answers =
            futures_util::future::join_all(tokens.iter().map(|key| finish(&store, key, true)))
                .await;
        let recorded = answers
            .iter()
            .filter(|a| matches!(a, Finished::Recorded(_)))
            .count();
        assert_eq!(recorded, 20, "each of 20 tokens is used once");
    }
}
