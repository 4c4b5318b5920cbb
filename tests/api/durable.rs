//! The durable stores: what survives a restart, what replicas sharing a store see, what a
//! store that cannot write does, and the audit chain. Every test runs against SQLite, and
//! against PostgreSQL when `TOKENMINT_TEST_DATABASE_URL` is set.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokenmint::adapters::store::chain::{AnchorAge, CheckpointReport};
use tokenmint::adapters::store::sql::reader::AuditReader;
use tokenmint::adapters::store::{Location, NoCommitObserver, SqlStore};
use tokenmint::trust::exchange::replay_keep_until;
use tokenmint::trust::store::ReplayKey;

use crate::exchange::deploy_builder;
use crate::helpers::*;
use crate::stores::{TestStore, postgres_url};

/// One durable store that the apps of a test share: the SQLite file (and the local
/// signing keys) in `dir`, or a PostgreSQL schema (holding the signing keys too, sealed
/// with the key-encryption key in `dir`).
pub struct Shared {
    pub kind: TestStore,
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
}

/// The key-encryption key file of a shared PostgreSQL store's replicas, in its `dir`.
pub const SHARED_KEK: &str = "kek";

impl Shared {
    /// A new SQLite store in a temporary directory.
    pub fn sqlite() -> Shared {
        Shared {
            kind: TestStore::Sqlite,
            dir: tempfile::tempdir().expect("tempdir"),
            url: None,
        }
    }

    /// SQLite always; PostgreSQL too when it is configured.
    pub async fn each() -> Vec<Shared> {
        let mut all = vec![Shared::sqlite()];
        if let Some(url) = postgres_url().await {
            all.push(Shared {
                kind: TestStore::Postgres,
                dir: tempfile::tempdir().expect("tempdir"),
                url: Some(url),
            });
        }
        all
    }

    /// A replica (or a restarted service) on this store.
    pub async fn app(&self, builder: AppBuilder) -> TestApp {
        let mut builder = builder.data_dir(self.dir.path());
        if self.url.is_some() {
            let kek = self.dir.path().join(SHARED_KEK);
            if !kek.exists() {
                write_key_encryption_key(&kek);
            }
            builder = builder.key_encryption_key_file(&kek);
        }
        builder
            .spawn_on(Some(self.kind), self.url.clone())
            .await
            .expect("service builds")
    }

    pub fn location(&self) -> Location {
        match &self.url {
            Some(url) => Location::Postgres(url.clone()),
            None => Location::DataDir(self.dir.path().to_owned()),
        }
    }

    pub async fn reader(&self) -> AuditReader {
        AuditReader::open(&self.location()).await.expect("reader")
    }
}

fn assert_replayed(answer: &Answer) {
    assert_error(
        answer,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
}

#[tokio::test]
async fn a_ci_token_used_before_a_restart_is_refused_after_it() {
    for shared in Shared::each().await {
        let fake = FakeIssuer::start(Shape::Github).await;
        let token = fake.token("github-push-main");
        let before = shared.app(deploy_builder(&fake, "")).await;
        let first = before.exchange(&token, "internal-api", &[]).await;
        assert_eq!(first.status, 200, "{:?}: {}", shared.kind, first.text);
        drop(before);
        let after = shared.app(deploy_builder(&fake, "")).await;
        let replayed = after.exchange(&token, "internal-api", &[]).await;
        assert_replayed(&replayed);
        let records = after.records().await;
        let reasons: Vec<_> = records.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["allowed", "token_replayed"], "{:?}", shared.kind);
        assert_eq!(
            records[0].token_sha256.as_deref(),
            Some(tokenmint::trust::audit::token_sha256(
                first.body["access_token"].as_str().expect("token")
            ))
            .as_deref()
        );
    }
}

#[tokio::test]
async fn the_replay_record_is_kept_until_exp_plus_leeway_plus_60s_across_a_restart() {
    for shared in Shared::each().await {
        let fake = FakeIssuer::start(Shape::Github).await;
        let claims = fake.claims("github-push-main");
        let exp = claims["exp"].as_i64().expect("exp");
        let jti = claims["jti"].as_str().expect("jti").to_owned();
        let before = shared.app(deploy_builder(&fake, "")).await;
        let answer = before
            .exchange(&fake.sign(&claims), "internal-api", &[])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        drop(before);
        let after = shared.app(deploy_builder(&fake, "")).await;
        let key = ReplayKey {
            issuer: "github".to_owned(),
            id: format!("jti:{jti}"),
        };
        let store = &after.service.state.exchanger.store;
        let record = store
            .replay_record(&key, OffsetDateTime::now_utc())
            .await
            .expect("store")
            .expect("the CI token is remembered");
        assert!(record.used);
        // The default leeway is 60 s; the margin another 60 s.
        assert_eq!(record.keep_until.unix_timestamp(), exp + 60 + 60);
        assert_eq!(
            record.keep_until,
            replay_keep_until(exp, Duration::from_secs(60))
        );
        // Still remembered a moment before, forgotten only after.
        let just_before = record.keep_until - time::Duration::seconds(1);
        assert!(
            store
                .replay_record(&key, just_before)
                .await
                .expect("store")
                .is_some()
        );
        assert!(
            store
                .replay_record(&key, record.keep_until)
                .await
                .expect("store")
                .is_none()
        );
    }
}

#[tokio::test]
async fn expired_replay_rows_are_purged_in_batches() {
    for shared in Shared::each().await {
        let store = SqlStore::open(shared.location(), Arc::new(NoCommitObserver))
            .await
            .expect("store");
        let past = OffsetDateTime::now_utc() - time::Duration::minutes(10);
        for n in 0..7 {
            let key = ReplayKey {
                issuer: "github".to_owned(),
                id: format!("jti:{n}"),
            };
            let record = Arc::new(tokenmint::trust::audit::AuditRecord::new(
                &format!("r{n}"),
                past,
                tokenmint::trust::audit::Reason::Allowed,
            ));
            use tokenmint::trust::store::{Finish, Settle, Store};
            store
                .finish(
                    Finish {
                        record,
                        settle: Settle::Use {
                            key: &key,
                            keep_until: past + time::Duration::minutes(1),
                        },
                    },
                    past,
                )
                .await
                .expect("finish");
        }
        assert_eq!(store.purge_replay(3).await.expect("purge"), 3);
        assert_eq!(store.purge_replay(3).await.expect("purge"), 3);
        assert_eq!(store.purge_replay(3).await.expect("purge"), 1);
        assert_eq!(store.purge_replay(3).await.expect("purge"), 0);
    }
}

#[tokio::test]
async fn two_replicas_share_replay_protection_and_records() {
    for shared in Shared::each().await {
        let fake = FakeIssuer::start(Shape::Github).await;
        let first = shared.app(deploy_builder(&fake, "")).await;
        let second = shared.app(deploy_builder(&fake, "")).await;
        let token = fake.token("github-push-main");
        assert_eq!(
            first.exchange(&token, "internal-api", &[]).await.status,
            200
        );
        assert_replayed(&second.exchange(&token, "internal-api", &[]).await);
        // Both see both records, and the chains (one per replica) verify.
        let seen_by_first: Vec<String> = first
            .records()
            .await
            .iter()
            .map(|r| r.reason.as_str().to_owned())
            .collect();
        let mut sorted = seen_by_first.clone();
        sorted.sort();
        assert_eq!(sorted, ["allowed", "token_replayed"], "{:?}", shared.kind);
        assert_eq!(second.records().await.len(), 2);
        let report = shared
            .reader()
            .await
            .verify(&[], &no_purge_yet())
            .await
            .expect("read")
            .expect("intact");
        let expected_chains = match shared.kind {
            // One file, one chain: both processes append to it in turn.
            TestStore::Sqlite => 1,
            _ => 2,
        };
        assert_eq!(report.chains.len(), expected_chains, "{report:?}");
    }
}

#[tokio::test]
async fn concurrent_requests_with_one_token_on_two_replicas_mint_at_most_once() {
    for shared in Shared::each().await {
        let fake = FakeIssuer::start(Shape::Github).await;
        let first = shared.app(deploy_builder(&fake, "")).await;
        let second = shared.app(deploy_builder(&fake, "")).await;
        let token = fake.token("github-push-main");
        let attempts = (0..16).map(|n| {
            let app = if n % 2 == 0 { &first } else { &second };
            app.exchange(&token, "internal-api", &[])
        });
        let answers = futures_util::future::join_all(attempts).await;
        let granted = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(granted, 1, "{:?}: exactly one access token", shared.kind);
        for answer in answers.iter().filter(|a| a.status != 200) {
            assert_eq!(answer.status, 400, "{}", answer.text);
            assert_eq!(answer.body["error"], "invalid_grant", "{}", answer.text);
        }
        let allowed = first
            .records()
            .await
            .iter()
            .filter(|r| r.reason == "allowed")
            .count();
        assert_eq!(allowed, 1);
    }
}

/// Holds SQLite's write lock from another connection, as another process would.
async fn lock_sqlite(dir: &Path) -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rw", dir.join("tokenmint.db").display());
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut conn)
        .await
        .expect("lock");
    conn
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_and_recovers_without_restart() {
    let shared = Shared::sqlite();
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = shared.app(deploy_builder(&fake, "")).await;
    let token = fake.token("github-push-main");
    let mut lock = lock_sqlite(shared.dir.path()).await;
    let refused = app.exchange(&token, "internal-api", &[]).await;
    assert_error(
        &refused,
        503,
        "temporarily_unavailable",
        "the replay store cannot record this request; retry later",
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert!(refused.body.get("access_token").is_none());
    assert!(!app.service.state.exchanger.store.healthy().await);
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    drop(lock);
    assert!(app.service.state.exchanger.store.healthy().await);
    // The CI token was not used up by the failed attempt.
    let retried = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    let reasons: Vec<String> = app
        .records()
        .await
        .iter()
        .map(|r| r.reason.as_str().to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["allowed"],
        "nothing of the failed attempt was written"
    );
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
struct Cuttable {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(upstream: String) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = open.clone();
        let task = tokio::spawn(async move {
            let mut links: Vec<tokio::task::JoinHandle<()>> = Vec::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let flag = flag.clone();
                links.push(tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                }));
            }
        });
        Cuttable {
            port,
            open,
            _task: task,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_unreachable_postgres_answers_503_and_recovers_without_restart() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let parsed = url::Url::parse(&url).expect("url");
    let upstream = format!(
        "{}:{}",
        parsed.host_str().expect("host"),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Cuttable::start(upstream).await;
    let mut through = parsed.clone();
    through.set_host(Some("127.0.0.1")).expect("host");
    through.set_port(Some(proxy.port)).expect("port");
    let shared = Shared {
        kind: TestStore::Postgres,
        dir: tempfile::tempdir().expect("tempdir"),
        url: Some(through.to_string()),
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = shared.app(deploy_builder(&fake, "")).await;
    let token = fake.token("github-push-main");
    proxy.set_open(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.body["error"], "temporarily_unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(refused.body.get("access_token").is_none());
    assert!(!app.service.state.exchanger.store.healthy().await);
    proxy.set_open(true);
    let mut retried = app.exchange(&token, "internal-api", &[]).await;
    for _ in 0..20 {
        if retried.status == 200 {
            break;
        }
        // The pool drops its dead connections and opens new ones.
        tokio::time::sleep(Duration::from_millis(100)).await;
        retried = app.exchange(&token, "internal-api", &[]).await;
    }
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert!(app.service.state.exchanger.store.healthy().await);
}

#[tokio::test]
async fn a_store_migrated_by_a_newer_binary_is_refused() {
    use sqlx::Connection as _;
    for shared in Shared::each().await {
        let store = SqlStore::open(shared.location(), Arc::new(NoCommitObserver))
            .await
            .expect("store");
        store.close().await;
        drop(store);
        let url = match &shared.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rw",
                shared.dir.path().join("tokenmint.db").display()
            ),
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', TRUE, $1, 1)",
        )
        .bind(vec![0u8; 48])
        .execute(&mut conn)
        .await
        .expect("insert");
        let err = SqlStore::open(shared.location(), Arc::new(NoCommitObserver))
            .await
            .err()
            .expect("refused")
            .to_string();
        // PostgreSQL's second migration adds the shared signing keys.
        let (backend, latest) = match shared.kind {
            TestStore::Postgres => ("PostgreSQL", 2),
            _ => ("SQLite", 1),
        };
        assert!(err.starts_with(&format!("the {backend} store ")), "{err}");
        assert!(
            err.ends_with(&format!(
                "was migrated by a newer tokenmint (schema version 99; this binary knows up to {latest}): run that version, or restore a backup taken before the upgrade"
            )),
            "{err}"
        );
    }
}

#[tokio::test]
async fn requests_with_long_fields_make_records_of_a_few_kib_at_most() {
    let shared = Shared::sqlite();
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = shared.app(deploy_builder(&fake, "")).await;
    let long = "x".repeat(20_000);
    // A token that fails verification: the request reaches verification, so it is
    // recorded, with everything the caller chose.
    let forged = format!("{}x", fake.token("github-push-main"));
    let answer = app
        .request(
            axum::http::Request::post("/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("user-agent", long.as_str())
                .body(axum::body::Body::from(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs([
                            ("grant_type", TOKEN_EXCHANGE),
                            ("subject_token", forged.as_str()),
                            ("subject_token_type", ID_TOKEN),
                            ("audience", long.as_str()),
                            ("scope", long.as_str()),
                        ])
                        .finish(),
                ))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    use sqlx::Connection as _;
    let url = format!(
        "sqlite://{}?mode=ro",
        shared.dir.path().join("tokenmint.db").display()
    );
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let sizes: Vec<i64> = sqlx::query_scalar("SELECT length(record) FROM audit_records")
        .fetch_all(&mut conn)
        .await
        .expect("sizes");
    assert_eq!(sizes.len(), 1);
    assert!(sizes[0] < 4096, "a record of {} bytes", sizes[0]);

    // A token that verifies, with a long subject and long values for the claims the
    // policy checks: the record copies them, each capped, and stays as small.
    let mut claims = fake.claims("github-push-main");
    let claim = "y".repeat(1_800);
    for name in ["sub", "ref", "workflow_ref", "event_name"] {
        claims.insert(name.to_owned(), serde_json::json!(claim));
    }
    let answer = app.exchange(&fake.sign(&claims), "internal-api", &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    let record = app.last_audit().await;
    assert!(record.subject.as_deref().is_some_and(|s| s.len() < 600));
    let actuals: Vec<usize> = record
        .decisions
        .iter()
        .flat_map(|d| &d.conditions)
        .filter_map(|c| c.actual.as_ref().map(String::len))
        .collect();
    assert!(
        !actuals.is_empty() && actuals.iter().all(|&len| len < 600),
        "{actuals:?}"
    );
    let sizes: Vec<i64> =
        sqlx::query_scalar("SELECT length(record) FROM audit_records ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .expect("sizes");
    assert_eq!(sizes.len(), 2);
    assert!(sizes[1] < 6144, "a record of {} bytes", sizes[1]);
}

#[tokio::test]
async fn the_metrics_show_records_per_commit() {
    let shared = Shared::sqlite();
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = shared.app(deploy_builder(&fake, "")).await;
    let tokens: Vec<String> = (0..8).map(|_| fake.token("github-push-main")).collect();
    let answers =
        futures_util::future::join_all(tokens.iter().map(|t| app.exchange(t, "internal-api", &[])))
            .await;
    assert!(answers.iter().all(|a| a.status == 200));
    let metrics = app.service.state.metrics.render();
    let sum = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tokenmint_store_records_per_commit_sum "))
        .expect("the histogram is exported");
    assert_eq!(sum.parse::<f64>().expect("a number"), 8.0, "{metrics}");
    assert!(metrics.contains("tokenmint_store_commit_duration_seconds_count"));
}

/// How old a chain's anchor must be at `now` under a retention of `days`.
fn retention_of(now: OffsetDateTime, days: i64) -> AnchorAge {
    let newest = now - time::Duration::days(days);
    AnchorAge {
        newest_us: i64::try_from(newest.unix_timestamp_nanos() / 1000).expect("in range"),
        retention: format!("{days}d"),
    }
}

/// A retention no record of these tests is older than.
fn no_purge_yet() -> AnchorAge {
    retention_of(OffsetDateTime::now_utc(), 400)
}

#[tokio::test]
async fn retention_purges_the_oldest_records_and_the_chain_still_verifies() {
    for shared in Shared::each().await {
        let store = SqlStore::open(shared.location(), Arc::new(NoCommitObserver))
            .await
            .expect("store");
        let now = OffsetDateTime::now_utc();
        let times = [500, 450, 401, 10, 1].map(|days| now - time::Duration::days(days));
        for (n, at) in times.iter().enumerate() {
            append(&store, &format!("r{n}"), *at).await;
        }
        let checkpoint = store.checkpoint().await.expect("checkpoint");
        let retention = |days| retention_of(now, days);
        // Only record 1 is past a 460-day retention: it would be the anchor, with nothing
        // before it, so nothing moves and any retention still verifies.
        let before = now - time::Duration::days(460);
        assert_eq!(store.purge_audit(before, 1).await.expect("purge"), 0);
        shared
            .reader()
            .await
            .verify(&[], &retention(1000))
            .await
            .expect("read")
            .expect("nothing was purged");
        let before = now - time::Duration::days(400);
        // One per batch: three records are past retention; the newest of them stays as
        // the chain's anchor.
        assert_eq!(store.purge_audit(before, 1).await.expect("purge"), 1);
        assert_eq!(store.purge_audit(before, 1).await.expect("purge"), 1);
        assert_eq!(store.purge_audit(before, 1).await.expect("purge"), 0);
        let reader = shared.reader().await;
        let left: Vec<String> = reader
            .records(&Default::default())
            .await
            .expect("records")
            .into_iter()
            .map(|r| r.record.request_id)
            .collect();
        assert_eq!(left, ["r2", "r3", "r4"], "{:?}", shared.kind);
        let report = reader
            .verify(std::slice::from_ref(&checkpoint), &retention(400))
            .await
            .expect("read")
            .expect("the chain verifies from its anchor");
        assert_eq!(report.chains[0].1, 3, "the anchor and the two after it");
        assert_eq!(report.chains[0].3, 3, "the chain starts at record 3");
        assert_eq!(
            report.checkpoints,
            CheckpointReport {
                matched: 1,
                purged: 0
            }
        );
        // Had retention been 402 days, record 3 (401 days old) could not have been purged,
        // nor the ones before it.
        let err = reader
            .verify(&[], &retention(402))
            .await
            .expect("read")
            .expect_err("too young to be purged");
        assert_eq!(err.seq, 3);
        assert!(err.what.contains("they were removed, not purged"), "{err}");
    }
}

#[tokio::test]
async fn audit_correlate_names_the_job_through_the_binary() {
    let shared = Shared::sqlite();
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = crate::fake_auth0::FakeTenant::start(crate::remote::pkjwt()).await;
    let app = shared
        .app(crate::remote::tenant_builder(&fake, &tenant, ""))
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let record = app.last_audit().await;
    let issued = tenant.issued().pop().expect("the tenant issued a token");
    let event = serde_json::json!({
        "log_id": "90020250101000000000000000000000000000000000000000000001",
        "type": "seccft",
        "date": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("date"),
        "client_id": issued.client_id,
        "user_agent": issued.user_agent,
        "details": { "access_token_jti": issued.access_token_jti },
    });
    let export = shared.dir.path().join("export.jsonl");
    std::fs::write(
        &export,
        format!("{event}\n{{\"type\":\"s\",\"log_id\":\"x\"}}\n"),
    )
    .expect("export");
    let output = tokenmint()
        .args(["audit", "correlate", "--format", "json", "--config"])
        .arg(&app.config_file)
        .arg(&export)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(found.as_array().map(Vec::len), Some(2));
    assert_eq!(found[0]["request_id"], record.request_id.as_str());
    assert_eq!(found[0]["repository"], "acme/identity-config");
    assert_eq!(found[0]["target"], "tenant-prod");
    assert_eq!(
        found[0]["joined_by"],
        serde_json::json!(["user_agent.request_id", "client_id", "date"])
    );
    assert_eq!(found[1]["request_id"], serde_json::Value::Null);
    assert_eq!(found[1]["joined_by"], serde_json::json!([]));
}

/// Waits until `count` connections named `application` wait on a lock.
async fn wait_for_lock_waiters(admin: &mut sqlx::AnyConnection, application: &str, count: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_one(&mut *admin)
        .await
        .expect("pg_stat_activity");
        if waiting >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{count} connections of {application} never waited on a lock");
}

/// A request dropped while its last step commits on another connection (PostgreSQL): the
/// background `abandon` waits for that commit, then sees the request ended and records
/// nothing. Read before the commit, it recorded `cancelled` after `allowed`. (SQLite's
/// single writer orders the two steps anyway.)
#[tokio::test]
async fn an_abandon_racing_the_requests_last_commit_records_nothing() {
    use sqlx::Connection as _;
    use tokenmint::trust::audit::{AuditRecord, Reason};
    use tokenmint::trust::store::{
        Abandon, Begin, Begun, Finish, Finished, ReservationId, Reserve, Settle, Store,
    };
    let Some(url) = postgres_url().await else {
        return;
    };
    let application = format!("tm_race_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{url}&application_name={application}");
    let store = Arc::new(
        SqlStore::open(Location::Postgres(url.clone()), Arc::new(NoCommitObserver))
            .await
            .expect("store"),
    );
    let key = ReplayKey {
        issuer: "github".to_owned(),
        id: "jti:race".to_owned(),
    };
    let holder = ReservationId::new();
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = OffsetDateTime::now_utc();
    let record = |reason| Arc::new(AuditRecord::new(&request_id, now, reason));
    let begun = store
        .begin(
            Begin {
                record: record(Reason::Pending),
                reserve: Some(Reserve {
                    key: &key,
                    holder: &holder,
                    lease_until: now + time::Duration::minutes(1),
                    keep_until: now + time::Duration::minutes(10),
                }),
            },
            now,
        )
        .await
        .expect("begin");
    assert!(matches!(begun, Begun::Reserved(_)), "{begun:?}");

    // Another connection holds this replica's chain head, so the finish stops half way:
    // the CI token's row is consumed (and locked), its record not yet appended.
    let mut blocker = hold_chain_head(&url, store.replica()).await;
    let mut admin = sqlx::AnyConnection::connect(&url).await.expect("admin");

    let finish = tokio::spawn({
        let (store, key, holder, allowed) = (
            store.clone(),
            key.clone(),
            holder.clone(),
            record(Reason::Allowed),
        );
        async move {
            store
                .finish(
                    Finish {
                        record: allowed,
                        settle: Settle::Consume {
                            key: &key,
                            holder: &holder,
                        },
                    },
                    now,
                )
                .await
        }
    });
    wait_for_lock_waiters(&mut admin, &application, 1).await;
    let abandon = tokio::spawn({
        let (store, key, holder, cancelled, request_id) = (
            store.clone(),
            key.clone(),
            holder.clone(),
            record(Reason::Cancelled),
            request_id.clone(),
        );
        async move {
            store
                .abandon(
                    Abandon {
                        request_id: &request_id,
                        record: cancelled,
                        reservation: Some((&key, &holder)),
                    },
                    now,
                )
                .await
        }
    });
    wait_for_lock_waiters(&mut admin, &application, 2).await;
    sqlx::query("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("commit");

    let finished = finish.await.expect("finish task").expect("finish");
    assert!(matches!(finished, Finished::Recorded(_)), "{finished:?}");
    let abandoned = abandon.await.expect("abandon task").expect("abandon");
    assert_eq!(abandoned, None, "the request had ended: nothing to cancel");
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM audit_records WHERE request_id = $1 ORDER BY seq")
            .bind(&request_id)
            .fetch_all(&mut admin)
            .await
            .expect("records");
    assert_eq!(outcomes, ["pending", "allow"]);
}

/// PostgreSQL: a replica stalled mid-step holds its chain head; another replica's purge
/// leaves that chain for later instead of waiting, and its own exchanges go on.
#[tokio::test]
async fn a_stalled_replica_does_not_hold_up_another_replicas_purge() {
    for shared in Shared::each().await {
        let Some(url) = shared.url.clone() else {
            continue;
        };
        let open = || SqlStore::open(shared.location(), Arc::new(NoCommitObserver));
        let (first, second) = (open().await.expect("first"), open().await.expect("second"));
        let now = OffsetDateTime::now_utc();
        append(&first, "on-first", now).await;
        append(&second, "on-second", now).await;
        // The second replica's head, held as a step stalled half way would hold it.
        let mut stalled = hold_chain_head(&url, second.replica()).await;
        let purge = tokio::time::timeout(
            Duration::from_secs(10),
            first.purge_audit(now - time::Duration::days(1), 10),
        );
        let exchange = tokio::time::timeout(Duration::from_secs(10), append(&first, "during", now));
        let (purge, exchange) = tokio::join!(purge, exchange);
        assert!(
            matches!(purge, Ok(Ok(0))),
            "the purge waited for the stalled chain: {purge:?}"
        );
        assert!(exchange.is_ok(), "the first replica's step waited");
        sqlx::query("ROLLBACK")
            .execute(&mut stalled)
            .await
            .expect("rollback");
    }
}

/// PostgreSQL: a chain whose replica appends all the time is still purged (its head is
/// held for milliseconds at a time; the purge waits for it rather than skipping it).
#[tokio::test]
async fn a_busy_chain_is_still_purged() {
    for shared in Shared::each().await {
        let store = Arc::new(
            SqlStore::open(shared.location(), Arc::new(NoCommitObserver))
                .await
                .expect("store"),
        );
        let old = OffsetDateTime::now_utc() - time::Duration::days(3);
        for n in 0..300 {
            append(&store, &format!("old-{n}"), old).await;
        }
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let appenders: Vec<_> = (0..8)
            .map(|task| {
                let (store, busy) = (store.clone(), busy.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while busy.load(std::sync::atomic::Ordering::Relaxed) {
                        let now = OffsetDateTime::now_utc();
                        append(&store, &format!("new-{task}-{n}"), now).await;
                        n += 1;
                    }
                })
            })
            .collect();
        let before = OffsetDateTime::now_utc() - time::Duration::days(1);
        let mut purged = 0;
        loop {
            match store.purge_audit(before, 50).await.expect("purge") {
                0 => break,
                n => purged += n,
            }
        }
        busy.store(false, std::sync::atomic::Ordering::Relaxed);
        for appender in appenders {
            appender.await.expect("appender");
        }
        // All but the newest old record, which stays as the anchor.
        assert_eq!(purged, 299, "{:?}", shared.kind);
    }
}

/// A connection holding `replica`'s chain head in an open transaction, as a step stalled
/// half way would (end it with `ROLLBACK`).
async fn hold_chain_head(url: &str, replica: &str) -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    let mut holder = sqlx::AnyConnection::connect(url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT last_seq FROM replicas WHERE replica_id = $1 FOR UPDATE")
        .bind(replica)
        .fetch_one(&mut holder)
        .await
        .expect("lock the chain head");
    holder
}

async fn append(store: &SqlStore, id: &str, at: OffsetDateTime) {
    use tokenmint::trust::audit::{AuditRecord, Reason};
    use tokenmint::trust::store::{Finish, Settle, Store};
    let record = Arc::new(AuditRecord::new(id, at, Reason::Allowed));
    let step = Finish {
        record,
        settle: Settle::Nothing,
    };
    store.finish(step, at).await.expect("finish");
}

/// A replica whose clock runs an hour fast forgets no replay row before its time on
/// PostgreSQL, where other replicas rely on it: the database's clock must agree. (One
/// SQLite file has one clock, the process's.)
#[tokio::test]
async fn a_fast_clock_does_not_forget_replay_rows_other_replicas_need() {
    use tokenmint::trust::audit::{AuditRecord, Reason};
    use tokenmint::trust::store::{Finish, Settle, Store};
    for shared in Shared::each().await {
        let store = SqlStore::open(shared.location(), Arc::new(NoCommitObserver))
            .await
            .expect("store");
        let now = OffsetDateTime::now_utc();
        let key = ReplayKey {
            issuer: "github".to_owned(),
            id: "jti:fast-clock".to_owned(),
        };
        let step = Finish {
            record: Arc::new(AuditRecord::new("r-fast", now, Reason::Allowed)),
            settle: Settle::Use {
                key: &key,
                keep_until: now + time::Duration::minutes(10),
            },
        };
        store.finish(step, now).await.expect("finish");
        let an_hour_fast = now + time::Duration::hours(1);
        let purged = store
            .purge_replay_at(an_hour_fast, 100)
            .await
            .expect("purge");
        let expected = match shared.kind {
            TestStore::Sqlite => 1,
            _ => 0,
        };
        assert_eq!(purged, expected, "{:?}", shared.kind);
    }
}
