//! One token exchange: a GitHub-shaped CI token (RS256) verified, a policy chosen, an
//! ES256 local token signed, the replay record and the audit record written. This is the
//! hot path; it should cost little more than its cryptography and, on a durable store,
//! its share of an fsync.
//!
//! Run with `cargo bench --bench exchange`. Each exchange gets a fresh CI token (signed
//! in the untimed set-up) so that replay protection does its real work. Measured on the
//! in-memory store, SQLite (`synchronous = FULL`) and, when `TOKENMINT_BENCH_DATABASE_URL`
//! names a PostgreSQL database, PostgreSQL; one at a time and with 64 always in flight. Also
//! measured: parsing a request's scope, which runs before verification.

use std::path::Path;
mod common;

use std::sync::Arc;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value, json};

use tokenmint::adapters::signing::{SigningAlgorithm, SigningKey};
use tokenmint::config::{Config, ConfigSource};
use tokenmint::edges::metrics::Metrics;
use tokenmint::edges::service::Service;

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const PUBLIC_URL: &str = "https://sts.example.com";

const POLICY: &str = r#"
name: deploy-api
issuer: github
target: internal-api
scopes: [deploy, read]
claims:
  repository_id: "89012345"
  ref: refs/heads/main
  event_name: [push, workflow_dispatch]
  workflow_ref: { glob: "acme/identity-config/.github/workflows/*.yml@refs/heads/main" }
"#;

/// The store an exchange benchmark runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// 32 random bytes (two v4 UUIDs' worth of randomness is plenty for a bench's KEK).
fn rand_bytes() -> Vec<u8> {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

struct Bench {
    _dir: tempfile::TempDir,
    service: Service,
    ci_key: SigningKey,
    claims: Map<String, Value>,
}

fn manifest(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn set_up(
    runtime: &tokio::runtime::Runtime,
    store: StoreKind,
    database_url: Option<&str>,
) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = std::fs::read_to_string(manifest("tests/data/keys/ci-issuer-a.pem")).expect("key");
    let ci_key = SigningKey::from_pkcs8_pem(SigningAlgorithm::RS256, &pem).expect("CI key");
    let jwks = dir.path().join("github-jwks.json");
    std::fs::write(&jwks, json!({"keys": [ci_key.public_jwk()]}).to_string()).expect("jwks");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("policies dir");
    std::fs::write(policies.join("deploy-api.yaml"), POLICY).expect("policy");
    let config_file = dir.path().join("tokenmint.toml");
    std::fs::write(
        &config_file,
        format!(
            r#"
[server]
public_url = "{PUBLIC_URL}"
admin_listen = ""

[storage]
data_dir = "{data}"
{database_url}

[policies]
dir = "{policies}"

[issuers.github]
issuer = "{ISSUER}"
jwks_file = "{jwks}"

[targets.internal-api]
kind = "local"
audience = "https://api.internal.example"
algorithm = "ES256"
max_ttl = "15m"
"#,
            data = dir.path().join("data").display(),
            database_url = database_url
                .map(|url| {
                    // Replicas on PostgreSQL share sealed signing keys: a 32-byte, 0600 KEK.
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let kek = dir.path().join("kek");
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&kek)
                        .expect("kek");
                    std::io::Write::write_all(&mut file, &rand_bytes()).expect("kek");
                    format!(
                        "database_url = \"{url}\"\nkey_encryption_key_file = \"{}\"",
                        kek.display()
                    )
                })
                .unwrap_or_default(),
            policies = policies.display(),
            jwks = jwks.display(),
        ),
    )
    .expect("config");
    let config = Config::load(&ConfigSource {
        file: Some(config_file),
        listen: None,
    })
    .expect("config loads");
    let metrics = Arc::new(Metrics::new());
    let service = runtime
        .block_on(match store {
            StoreKind::Memory => Box::pin(Service::build(config, metrics))
                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
            StoreKind::Sqlite | StoreKind::Postgres => Box::pin(Service::open(config, metrics)),
        })
        .expect("service builds");
    let fixture = std::fs::read_to_string(manifest("tests/data/claims/github-push-main.json"))
        .expect("claims fixture");
    let Value::Object(claims) = serde_json::from_str(&fixture).expect("claims JSON") else {
        panic!("claims fixture is not an object");
    };
    Bench {
        _dir: dir,
        service,
        ci_key,
        claims,
    }
}

impl Bench {
    /// A fresh CI token (new `jti`, valid now).
    fn ci_token(&self) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = self.claims.clone();
        claims.insert("iss".into(), json!(ISSUER));
        claims.insert("aud".into(), json!(PUBLIC_URL));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now - 5));
        claims.insert("exp".into(), json!(now + 300));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        self.ci_key
            .sign_jwt(&Value::Object(claims))
            .expect("CI token signs")
    }
}

/// `count` exchange requests, each with a fresh CI token.
fn sign_requests(bench: &Bench, count: usize) -> Vec<tokenmint::trust::exchange::ExchangeRequest> {
    std::thread::scope(|scope| {
        let half = count / 2;
        let first = scope.spawn(move || {
            (0..half)
                .map(|_| request(bench.ci_token()))
                .collect::<Vec<_>>()
        });
        let mut requests: Vec<_> = (half..count).map(|_| request(bench.ci_token())).collect();
        requests.extend(first.join().expect("signing thread"));
        requests
    })
}

fn request(token: String) -> tokenmint::trust::exchange::ExchangeRequest {
    tokenmint::trust::exchange::ExchangeRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        subject_token: token.into(),
        audience: "internal-api".to_owned(),
        scope: Some(vec!["deploy".to_owned()]),
        policy: None,
        requested_token_type: None,
        client_ip: Some("10.1.2.3".to_owned()),
        user_agent: Some("bench".to_owned()),
    }
}

fn exchange(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pg_url = common::postgres_schema_url(&runtime);
    let mut kinds = vec![StoreKind::Memory, StoreKind::Sqlite];
    if pg_url.is_some() {
        kinds.push(StoreKind::Postgres);
    } else {
        eprintln!("exchange/*/postgres skipped: set TOKENMINT_BENCH_DATABASE_URL to measure it");
    }
    let mut group = c.benchmark_group("exchange");
    for kind in kinds {
        let bench = set_up(
            &runtime,
            kind,
            pg_url.as_deref().filter(|_| kind == StoreKind::Postgres),
        );
        let exchanger = bench.service.state.exchanger.clone();
        for callers in [1usize, 64] {
            let before = group_commit(&bench.service.state.metrics.render());
            group.throughput(Throughput::Elements(callers as u64));
            // With 64 callers, criterion's default (100 samples) made each sample a burst
            // of ~200 exchanges after a pause for signing their CI tokens, measuring the
            // ramp from idle more than the service under load: 10 samples of thousands of
            // exchanges each measure the steady state (the in-memory rate nearly doubles).
            if callers > 1 {
                group.sample_size(10).sampling_mode(SamplingMode::Flat);
            } else {
                group.sample_size(100).sampling_mode(SamplingMode::Auto);
            }
            group.bench_function(format!("local_es256/{}/{callers}", kind.name()), |b| {
                b.to_async(&runtime).iter_custom(|iterations| {
                    // Tokens are signed before the clock starts, on two threads.
                    let requests = sign_requests(&bench, iterations as usize * callers);
                    let exchanger = exchanger.clone();
                    common::closed_loop(requests, callers, move |request| {
                        let exchanger = exchanger.clone();
                        async move {
                            let result = exchanger
                                .exchange(&request, time::OffsetDateTime::now_utc())
                                .await;
                            assert!(result.is_ok(), "the exchange succeeds");
                        }
                    })
                });
            });
            if kind == StoreKind::Sqlite {
                let after = group_commit(&bench.service.state.metrics.render());
                let (records, commits) = (after.0 - before.0, after.1 - before.1);
                let committing = after.2 - before.2;
                eprintln!(
                    "exchange/local_es256/sqlite/{callers}: {records} records in {commits} commits, \
                     {:.1} per commit, {:.2} ms per commit",
                    records / commits.max(1.0),
                    committing * 1000.0 / commits.max(1.0)
                );
            }
        }
    }
    group.finish();
}

/// The SQLite writer's (records, commits, seconds spent committing) so far, read from
/// `/metrics`.
fn group_commit(metrics: &str) -> (f64, f64, f64) {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("tokenmint_store_records_per_commit_sum "),
        value("tokenmint_store_records_per_commit_count "),
        value("tokenmint_store_commit_duration_seconds_sum "),
    )
}

/// Scopes are parsed before the CI token is verified, so anyone can send 64 KiB of
/// them: this must stay linear (it took 0.8 s when it was quadratic).
fn parse_scope(c: &mut Criterion) {
    let scopes: Vec<String> = (0..15_000).map(|n| format!("{n:x}")).collect();
    let text = scopes.join(" ");
    c.bench_function("scope/parse_15000_distinct", |b| {
        b.iter(|| tokenmint::edges::http::token::parse_scope(std::hint::black_box(&text)))
    });
}

criterion_group!(benches, exchange, parse_scope);
criterion_main!(benches);
