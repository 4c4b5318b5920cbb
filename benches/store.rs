//! The store alone: the final step of an exchange (mark a fresh CI token used and append
//! its audit record, atomically and durably) with 1, 16 and 64 concurrent callers, on the
//! in-memory store, SQLite (`synchronous = FULL`, group commit) and, when
//! `TOKENMINT_BENCH_DATABASE_URL` names a PostgreSQL database, PostgreSQL.
//!
//! Run with `cargo bench --bench store`. N callers keep N steps in flight at all times;
//! throughput is in steps per second; for SQLite the
//! records per commit of each run are printed (from the writer's histogram).

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;

use tokenmint::adapters::store::{CommitObserver, Location, MemoryStore, SqlStore};
use tokenmint::trust::audit::{AuditRecord, Reason};
use tokenmint::trust::store::{Finish, ReplayKey, Settle, Store};

/// Counts the SQLite writer's commits and the records they held.
#[derive(Default)]
struct Commits {
    records: std::sync::atomic::AtomicUsize,
    commits: std::sync::atomic::AtomicUsize,
}

impl CommitObserver for Commits {
    fn committed(&self, records: usize, _took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.records.fetch_add(records, Relaxed);
        self.commits.fetch_add(1, Relaxed);
    }
}

/// A record shaped like an allowed exchange's.
fn record() -> Arc<AuditRecord> {
    let mut record = AuditRecord::new(
        &uuid::Uuid::new_v4().to_string(),
        OffsetDateTime::now_utc(),
        Reason::Allowed,
    );
    record.repository = Some("acme/identity-config".to_owned());
    record.repository_id = Some("89012345".to_owned());
    record.git_ref = Some("refs/heads/main".to_owned());
    record.workflow_ref =
        Some("acme/identity-config/.github/workflows/deploy.yml@refs/heads/main".to_owned());
    record.run_id = Some("9876543210".to_owned());
    record.run_attempt = Some("1".to_owned());
    record.sha = Some("4c5f0e1d2a3b4c5f0e1d2a3b4c5f0e1d2a3b4c5f".to_owned());
    record.policy = Some("deploy-api".to_owned());
    record.target = Some("internal-api".to_owned());
    record.scope = Some("deploy".to_owned());
    record.token_sha256 = Some("ab".repeat(32));
    record.token_jti = Some(uuid::Uuid::new_v4().to_string());
    Arc::new(record)
}

async fn final_step(store: Arc<dyn Store>) {
    let key = ReplayKey {
        issuer: "github".to_owned(),
        id: format!("jti:{}", uuid::Uuid::new_v4()),
    };
    let now = OffsetDateTime::now_utc();
    let finished = store
        .finish(
            Finish {
                record: record(),
                settle: Settle::Use {
                    key: &key,
                    keep_until: now + time::Duration::minutes(12),
                },
            },
            now,
        )
        .await
        .expect("the step commits");
    assert!(finished.seq().is_some());
}

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let commits = Arc::new(Commits::default());
    let mut stores: Vec<(&str, Arc<dyn Store>)> = vec![("memory", Arc::new(MemoryStore::new()))];
    let sqlite = runtime
        .block_on(SqlStore::open(
            Location::DataDir(dir.path().to_owned()),
            commits.clone(),
        ))
        .expect("SQLite store");
    stores.push(("sqlite", Arc::new(sqlite)));
    match common::postgres_schema_url(&runtime) {
        Some(url) => {
            let pg = runtime
                .block_on(SqlStore::open(
                    Location::Postgres(url),
                    Arc::new(tokenmint::adapters::store::NoCommitObserver),
                ))
                .expect("PostgreSQL store");
            stores.push(("postgres", Arc::new(pg)));
        }
        None => {
            eprintln!("store/*/postgres skipped: set TOKENMINT_BENCH_DATABASE_URL to measure it")
        }
    }
    let mut group = c.benchmark_group("store_final_step");
    for (name, store) in stores {
        for callers in [1usize, 16, 64] {
            use std::sync::atomic::Ordering::Relaxed;
            let before = (commits.records.load(Relaxed), commits.commits.load(Relaxed));
            group.throughput(Throughput::Elements(callers as u64));
            group.bench_function(format!("{name}/{callers}"), |b| {
                b.to_async(&runtime).iter_custom(|iterations| {
                    let store = store.clone();
                    let steps = (0..iterations as usize * callers).collect();
                    common::closed_loop(steps, callers, move |_| final_step(store.clone()))
                });
            });
            if name == "sqlite" {
                let records = commits.records.load(Relaxed) - before.0;
                let count = commits.commits.load(Relaxed) - before.1;
                eprintln!(
                    "store_final_step/sqlite/{callers}: {records} records in {count} commits, {:.1} per commit",
                    records as f64 / count.max(1) as f64
                );
            }
        }
    }
    group.finish();
}

/// The disk's own cost: one 4 KiB write plus fsync in the store's directory, which bounds
/// how many commits per second SQLite with `synchronous = FULL` can make.
fn fsync(c: &mut Criterion) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("file");
    let block = vec![0u8; 4096];
    c.bench_function("disk/write_4k_and_fsync", |b| {
        b.iter(|| {
            file.write_all(&block).expect("write");
            file.sync_data().expect("fsync");
        })
    });
}

criterion_group!(benches, store, fsync);
criterion_main!(benches);
