//! What the exchange benchmarks share: a service with one local target and one GitHub-shaped
//! issuer, on the store being measured, and requests carrying fresh CI tokens.

use std::path::Path;
use std::sync::Arc;

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
pub enum StoreKind {
    Memory,
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
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

pub struct Bench {
    _dir: tempfile::TempDir,
    pub service: Service,
    ci_key: SigningKey,
    claims: Map<String, Value>,
}

fn manifest(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn set_up(
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

/// `count` fresh CI tokens, signed on two threads.
pub fn ci_tokens(bench: &Bench, count: usize) -> Vec<String> {
    std::thread::scope(|scope| {
        let half = count / 2;
        let first = scope.spawn(move || (0..half).map(|_| bench.ci_token()).collect::<Vec<_>>());
        let mut tokens: Vec<_> = (half..count).map(|_| bench.ci_token()).collect();
        tokens.extend(first.join().expect("signing thread"));
        tokens
    })
}

/// `count` exchange requests, each with a fresh CI token.
pub fn sign_requests(
    bench: &Bench,
    count: usize,
) -> Vec<tokenmint::trust::exchange::ExchangeRequest> {
    ci_tokens(bench, count).into_iter().map(request).collect()
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

/// The SQLite writer's (records, commits, seconds spent committing) so far, read from
/// `/metrics`.
pub fn group_commit(metrics: &str) -> (f64, f64, f64) {
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

/// The runtime the exchange benchmarks run on, as the service runs on this machine: one
/// worker per core (two here).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The stores to measure (PostgreSQL when `TOKENMINT_BENCH_DATABASE_URL` is set), each
/// with the database URL it opens.
pub fn stores(runtime: &tokio::runtime::Runtime) -> Vec<(StoreKind, Option<String>)> {
    let mut stores = vec![(StoreKind::Memory, None), (StoreKind::Sqlite, None)];
    match super::common::postgres_schema_url(runtime) {
        Some(url) => stores.push((StoreKind::Postgres, Some(url))),
        None => eprintln!("postgres skipped: set TOKENMINT_BENCH_DATABASE_URL to measure it"),
    }
    stores
}

/// Runs every request through `bench`'s exchanger, `callers` at a time, asserting each
/// succeeds; returns how long that took.
pub fn exchange_all(
    bench: &Bench,
    requests: Vec<tokenmint::trust::exchange::ExchangeRequest>,
    callers: usize,
) -> impl std::future::Future<Output = std::time::Duration> + use<> {
    let exchanger = bench.service.state.exchanger.clone();
    super::common::closed_loop(requests, callers, move |request| {
        let exchanger = exchanger.clone();
        async move {
            let result = exchanger
                .exchange(&request, time::OffsetDateTime::now_utc())
                .await;
            assert!(result.is_ok(), "the exchange succeeds");
        }
    })
}
