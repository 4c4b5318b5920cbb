//! SQLite's single writer, with group commit: one task owns the only write connection,
//! takes every step waiting in its queue, applies them in one transaction and answers each
//! caller only once that transaction is durable (`synchronous = FULL`).
//!
//! A batch is closed when its transaction starts: a step that arrives while a commit is
//! running waits for the next one, so no step waits on more than one fsync it did not need.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::AnyConnection;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::steps::{Answer, ChainCursor, Op, apply};
use super::{Backend, CommitObserver};
use crate::trust::store::StoreError;

/// The most steps one transaction takes.
const MAX_BATCH: usize = 512;
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
        conn: AnyConnection,
        replica: String,
        observer: Arc<dyn CommitObserver>,
    ) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(run(conn, replica, jobs, observer, healthy.clone()));
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

fn stopped() -> StoreError {
    StoreError::Write("the SQLite writer stopped".into())
}

async fn run(
    mut conn: AnyConnection,
    replica: String,
    mut jobs: mpsc::Receiver<Job>,
    observer: Arc<dyn CommitObserver>,
    healthy: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        // Let tasks that are already running enqueue their steps (a scheduler round,
        // not a timer: nothing waits for steps that have not been made yet).
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        match commit(&mut conn, &replica, &batch).await {
            Ok((answers, records)) => {
                healthy.store(true, Ordering::Release);
                if records > 0 {
                    observer.committed(records, started.elapsed());
                }
                for (job, answer) in batch.drain(..).zip(answers) {
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(err) => {
                healthy.store(false, Ordering::Release);
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                tracing::error!(error = %err, steps = batch.len(), "the SQLite store could not commit; nothing of these steps was written");
                let text = err.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Write(text.clone().into())));
                }
            }
        }
    }
}

/// One transaction for the whole batch: every step's writes, then the chain head.
async fn commit(
    conn: &mut AnyConnection,
    replica: &str,
    batch: &[Job],
) -> Result<(Vec<Answer>, usize), sqlx::Error> {
    // IMMEDIATE takes the write lock now, so a second process on the same file waits
    // (busy_timeout) instead of failing half way.
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut chain = ChainCursor::new(replica.to_owned(), Backend::Sqlite);
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        answers.push(apply(conn, &mut chain, &job.op, job.now).await?);
    }
    chain.write_head(conn).await?;
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok((answers, chain.appended))
}
