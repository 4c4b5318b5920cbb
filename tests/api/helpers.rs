//! Test harness: fake CI issuers on local HTTP servers, CI tokens from fixed test keys,
//! and `spawn_app` building the real service and router from a written configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::stores::{TestStore, postgres_url};
use time::OffsetDateTime;
use tokenmint::adapters::signing::{SigningAlgorithm, SigningKey, jws};
use tokenmint::adapters::store::MemoryStore;
use tokenmint::config::{Config, ConfigSource};
use tokenmint::edges::metrics::Metrics;
use tokenmint::edges::service::Service;
use tokenmint::trust::audit::AuditRecord;
use tokenmint::trust::store::{
    Abandon, Begin, Begun, Finish, Finished, ReplayKey, ReplayRecord, Seq, Settle, Store,
    StoreError,
};

/// The CI-token audience every test configuration uses (`server.public_url`).
pub const PUBLIC_URL: &str = "https://sts.example.com";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A fixed RSA test key of a fake CI issuer (`tests/data/keys/ci-issuer-a.pem`, `-b.pem`).
pub fn test_key(name: &str) -> SigningKey {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/keys/{name}.pem"));
    let pem = std::fs::read_to_string(&path).expect("test key file");
    SigningKey::from_pkcs8_pem(SigningAlgorithm::RS256, &pem).expect("test key parses")
}

/// A JWK of `key` published under `kid`, as CI issuers publish theirs.
pub fn jwk_with_kid(key: &SigningKey, kid: &str) -> Value {
    let mut jwk = key.public_jwk().clone();
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!("RS256");
    jwk
}

/// A realistic claim set from `tests/data/claims/NAME.json`.
pub fn fixture_claims(name: &str) -> Map<String, Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/claims/{name}.json"));
    let text = std::fs::read_to_string(&path).expect("claims fixture");
    match serde_json::from_str(&text).expect("claims fixture is JSON") {
        Value::Object(map) => map,
        _ => panic!("claims fixture is not an object"),
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Encodes a JWS with any header and payload, signed by `key` (RS256 signature bytes).
pub fn sign_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    jws::compact(&jws::encode_header(header), claims, |input| {
        key.sign_raw(input)
    })
    .expect("signing")
}

/// A compact JWS with an arbitrary (e.g. forged) signature.
pub fn unsigned_with(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// A fake CI issuer: discovery and JWKS on a local HTTP server, with a request counter.
#[derive(Clone)]
pub struct FakeIssuer {
    /// The issuer URL tokens carry (the base, or base + a path such as an enterprise slug).
    pub issuer: String,
    pub jwks: Arc<Mutex<Value>>,
    pub hits: Arc<AtomicUsize>,
    pub key: Arc<SigningKey>,
    pub kid: String,
}

#[derive(Clone)]
struct IssuerState {
    issuer: String,
    jwks_uri: String,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

/// Which platform's URL layout a fake issuer copies.
#[derive(Clone, Copy)]
pub enum Shape {
    /// `/.well-known/openid-configuration` → `/.well-known/jwks`.
    Github,
    /// The enterprise slug issuer `{base}/acme-corp` whose discovery points at the root JWKS.
    GithubEnterpriseSlug,
    /// `/.well-known/openid-configuration` → `/oauth/discovery/keys`.
    Gitlab,
}

impl FakeIssuer {
    pub async fn start(shape: Shape) -> FakeIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake issuer");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let key = Arc::new(test_key("ci-issuer-a"));
        let kid = "cc413527-173f-5a05-976e-9c52b1d7b431".to_owned();
        let jwks = Arc::new(Mutex::new(json!({ "keys": [jwk_with_kid(&key, &kid)] })));
        let hits = Arc::new(AtomicUsize::new(0));
        let (issuer, discovery_path, jwks_path) = match shape {
            Shape::Github => (
                base.clone(),
                "/.well-known/openid-configuration",
                "/.well-known/jwks",
            ),
            Shape::GithubEnterpriseSlug => (
                format!("{base}/acme-corp"),
                "/acme-corp/.well-known/openid-configuration",
                "/.well-known/jwks",
            ),
            Shape::Gitlab => (
                base.clone(),
                "/.well-known/openid-configuration",
                "/oauth/discovery/keys",
            ),
        };
        let state = IssuerState {
            issuer: issuer.clone(),
            jwks_uri: format!("{base}{jwks_path}"),
            jwks: jwks.clone(),
            hits: hits.clone(),
        };
        let app = Router::new()
            .route(
                discovery_path,
                get(|State(s): State<IssuerState>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "issuer": s.issuer,
                        "jwks_uri": s.jwks_uri,
                        "subject_types_supported": ["public", "pairwise"],
                        "response_types_supported": ["id_token"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }))
                }),
            )
            .route(
                jwks_path,
                get(|State(s): State<IssuerState>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let jwks = s.jwks.lock().expect("jwks lock").clone();
                    axum::Json(jwks)
                }),
            )
            .fallback(|State(s): State<IssuerState>| async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                StatusCode::NOT_FOUND
            })
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIssuer {
            issuer,
            jwks,
            hits,
            key,
            kid,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: Vec<Value>) {
        *self.jwks.lock().expect("jwks lock") = json!({ "keys": keys });
    }

    /// Claims from a fixture, re-issued by this issuer now for our audience.
    pub fn claims(&self, fixture: &str) -> Map<String, Value> {
        let mut claims = fixture_claims(fixture);
        let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
        let now = now();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(PUBLIC_URL));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now - 5));
        claims.insert("exp".into(), json!(now + lifetime.max(60)));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        claims
    }

    /// Signs `claims` with this issuer's key and kid.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        self.sign_as(&self.key, &self.kid, claims)
    }

    pub fn sign_as(&self, key: &SigningKey, kid: &str, claims: &Map<String, Value>) -> String {
        sign_with_header(
            key,
            &json!({"typ": "JWT", "alg": "RS256", "kid": kid}),
            &Value::Object(claims.clone()),
        )
    }

    /// A fresh token from a fixture.
    pub fn token(&self, fixture: &str) -> String {
        self.sign(&self.claims(fixture))
    }
}

/// A running service under test, driven through its real router.
pub struct TestApp {
    pub service: Service,
    pub router: Router,
    pub policies_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The configuration file the service was built from (for running commands on it).
    pub config_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Writes a fresh key-encryption key (32 random bytes, mode 0600) to `path`.
pub fn write_key_encryption_key(path: &Path) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the key-encryption key file");
    file.write_all(&rand::random::<[u8; 32]>())
        .expect("write the key-encryption key");
}

/// Builds configuration text, policies and the service.
pub struct AppBuilder {
    store: Option<Arc<dyn Store>>,
    data_dir: Option<PathBuf>,
    key_encryption_key_file: Option<PathBuf>,
    config: String,
    policies_section: String,
    policies: BTreeMap<String, String>,
}

impl AppBuilder {
    pub fn new() -> Self {
        Self {
            store: None,
            data_dir: None,
            key_encryption_key_file: None,
            config: String::new(),
            policies_section: String::new(),
            policies: BTreeMap::new(),
        }
    }

    /// Appends TOML (issuers, targets, ...) to the configuration.
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    /// A GitHub-kind issuer named `name` served by `fake`, with short test timings.
    pub fn github(self, name: &str, fake: &FakeIssuer) -> Self {
        self.issuer(name, "github", fake, "")
    }

    /// An issuer served by `fake`; unless `extra` sets it, the unknown-kid refetch
    /// cooldown is 0s so rotation tests need not wait.
    pub fn issuer(self, name: &str, kind: &str, fake: &FakeIssuer, extra: &str) -> Self {
        let cooldown = if extra.contains("jwks_refetch_cooldown") {
            ""
        } else {
            "jwks_refetch_cooldown = \"0s\"\n"
        };
        self.config(&format!(
            "[issuers.{name}]\nissuer = \"{}\"\nkind = \"{kind}\"\njwks_fetch_timeout = \"2s\"\n{cooldown}{extra}\n",
            fake.issuer
        ))
    }

    /// Runs the service on `store` instead of a fresh in-memory one.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps state in `dir` (which outlives the app) instead of the app's own temporary one.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// With PostgreSQL, seals the signing keys with the key in `path` (which outlives the
    /// app) instead of a fresh one in the app's temporary directory; replicas sharing a
    /// database share it.
    pub fn key_encryption_key_file(mut self, path: &Path) -> Self {
        self.key_encryption_key_file = Some(path.to_owned());
        self
    }

    /// Extra keys for the `[policies]` section.
    pub fn policies_config(mut self, toml: &str) -> Self {
        self.policies_section.push_str(toml);
        self.policies_section.push('\n');
        self
    }

    pub fn policy(mut self, file: &str, yaml: &str) -> Self {
        self.policies.insert(file.to_owned(), yaml.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        self.try_spawn().await.expect("service builds")
    }

    pub async fn try_spawn(self) -> anyhow::Result<TestApp> {
        let test_store = match self.store {
            Some(_) => None,
            None => Some(TestStore::from_env()),
        };
        let database_url = match test_store {
            Some(TestStore::Postgres) => Some(
                postgres_url()
                    .await
                    .expect("TOKENMINT_TEST_STORE=postgres needs TOKENMINT_TEST_DATABASE_URL"),
            ),
            _ => None,
        };
        self.spawn_on(test_store, database_url).await
    }

    /// Spawns on the store given to [`AppBuilder::store`], or else on `test_store` (with
    /// PostgreSQL at `database_url`).
    pub async fn spawn_on(
        self,
        test_store: Option<TestStore>,
        database_url: Option<String>,
    ) -> anyhow::Result<TestApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let policies_dir = dir.path().join("policies");
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&policies_dir).expect("policies dir");
        for (file, yaml) in &self.policies {
            std::fs::write(policies_dir.join(file), yaml).expect("write policy");
        }
        // With PostgreSQL the signing keys live in the database, sealed with a
        // key-encryption key: the given one, or a fresh one of this app's own.
        let database_url = match database_url {
            Some(url) => {
                let kek = match &self.key_encryption_key_file {
                    Some(path) => path.clone(),
                    None => {
                        let path = dir.path().join("kek");
                        write_key_encryption_key(&path);
                        path
                    }
                };
                format!(
                    "database_url = \"{url}\"\nkey_encryption_key_file = \"{}\"\n",
                    kek.display()
                )
            }
            None => String::new(),
        };
        let toml = format!(
            "[server]\npublic_url = \"{PUBLIC_URL}\"\nadmin_listen = \"\"\n\n[storage]\ndata_dir = \"{}\"\n{database_url}\n[policies]\ndir = \"{}\"\n{}\n{}",
            data_dir.display(),
            policies_dir.display(),
            self.policies_section,
            self.config
        );
        let config_file = dir.path().join("tokenmint.toml");
        std::fs::write(&config_file, toml).expect("write config");
        let config = Config::load(&ConfigSource {
            file: Some(config_file.clone()),
            listen: None,
        })?;
        let metrics = Arc::new(Metrics::new());
        let service = match (self.store, test_store) {
            (Some(store), _) => Service::build_with_store(config, metrics, store).await?,
            (None, Some(TestStore::Memory) | None) => {
                Service::build_with_store(config, metrics, Arc::new(MemoryStore::new())).await?
            }
            (None, Some(TestStore::Sqlite | TestStore::Postgres)) => {
                Service::open(config, metrics).await?
            }
        };
        let router = tokenmint::edges::http::router(service.state.clone());
        Ok(TestApp {
            service,
            router,
            policies_dir,
            data_dir,
            config_file,
            _dir: dir,
        })
    }
}

/// A response with its body parsed as JSON (or `Value::Null`).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn request(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// `POST /token` with a form body built from `fields`.
    pub async fn post_form(&self, fields: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(
            Request::post("/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
    }

    /// A standard exchange of `token` for `audience`, with optional extra fields.
    pub async fn exchange(&self, token: &str, audience: &str, extra: &[(&str, &str)]) -> Answer {
        let mut fields = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token),
            ("subject_token_type", ID_TOKEN),
            ("audience", audience),
        ];
        fields.extend_from_slice(extra);
        self.post_form(&fields).await
    }

    /// Each request once, in its latest state, as `audit list` shows them.
    pub async fn audit(&self) -> Vec<AuditRecord> {
        tokenmint::trust::audit::latest_per_request(&self.records().await)
    }

    /// Every audit record, in append order (a remote exchange has two).
    pub async fn records(&self) -> Vec<AuditRecord> {
        self.service
            .state
            .exchanger
            .store
            .audit_records()
            .await
            .expect("audit records")
    }

    pub async fn last_audit(&self) -> AuditRecord {
        self.audit().await.pop().expect("an audit record")
    }
}

/// Asserts an error answer exactly: status, body members, request id in the header, no-store.
pub fn assert_error(answer: &Answer, status: u16, error: &str, description: &str) {
    assert_eq!(answer.status.as_u16(), status, "status of {}", answer.text);
    let request_id = answer.body["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned();
    assert_eq!(
        answer.body,
        json!({"error": error, "error_description": description, "request_id": request_id}),
    );
    assert_eq!(answer.headers["x-request-id"], request_id.as_str());
    assert_eq!(answer.headers["cache-control"], "no-store");
}

/// A socket address helper for tests that need one.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The `tokenmint` binary with no configuration variables or log filter inherited.
pub fn tokenmint() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenmint"));
    command.env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("TOKENMINT_") {
            command.env_remove(name);
        }
    }
    command
}

/// A step of the store, as [`FaultyStore`] counts and fails them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// `begin`: reserve the CI token, append the pending record.
    Begin,
    /// `finish` that uses the CI token up (`Use`, `Consume`): a token is handed out.
    FinishHandOut,
    /// `finish` that releases a reservation (a remote exchange that failed).
    FinishRelease,
    /// `finish` of a refusal (`Unused`, `Nothing`).
    FinishRecordOnly,
    /// `abandon`: a cancelled remote request.
    Abandon,
}

/// The in-memory store with faults on demand: each step can be made to fail (nothing is
/// written, as a real store's failed transaction), `finish` can be slowed down so that
/// requests overlap, and every step is counted.
pub struct FaultyStore {
    pub inner: MemoryStore,
    pub finish_delay: std::time::Duration,
    failing: Mutex<std::collections::HashSet<Step>>,
    calls: Mutex<Vec<Step>>,
}

impl FaultyStore {
    pub fn new() -> Self {
        Self::slow(std::time::Duration::ZERO)
    }

    /// Every `finish` takes `delay` before it happens.
    pub fn slow(delay: std::time::Duration) -> Self {
        Self {
            inner: MemoryStore::new(),
            finish_delay: delay,
            failing: Mutex::new(std::collections::HashSet::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// `step` fails until [`FaultyStore::heal`].
    pub fn fail(&self, step: Step) {
        self.failing.lock().expect("lock").insert(step);
    }

    pub fn heal(&self) {
        self.failing.lock().expect("lock").clear();
    }

    /// The steps made so far, failed ones included.
    pub fn calls(&self) -> Vec<Step> {
        self.calls.lock().expect("lock").clone()
    }

    fn enter(&self, step: Step) -> Result<(), StoreError> {
        self.calls.lock().expect("lock").push(step);
        if self.failing.lock().expect("lock").contains(&step) {
            return Err(StoreError::Write("disk full".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn begin(&self, step: Begin<'_>, now: OffsetDateTime) -> Result<Begun, StoreError> {
        self.enter(Step::Begin)?;
        self.inner.begin(step, now).await
    }

    async fn finish(&self, step: Finish<'_>, now: OffsetDateTime) -> Result<Finished, StoreError> {
        tokio::time::sleep(self.finish_delay).await;
        let kind = match step.settle {
            Settle::Use { .. } | Settle::Consume { .. } => Step::FinishHandOut,
            Settle::Release { .. } => Step::FinishRelease,
            Settle::Unused(_) | Settle::Nothing => Step::FinishRecordOnly,
        };
        self.enter(kind)?;
        self.inner.finish(step, now).await
    }

    async fn abandon(
        &self,
        step: Abandon<'_>,
        now: OffsetDateTime,
    ) -> Result<Option<Seq>, StoreError> {
        self.enter(Step::Abandon)?;
        self.inner.abandon(step, now).await
    }

    async fn replay_record(
        &self,
        key: &ReplayKey,
        now: OffsetDateTime,
    ) -> Result<Option<ReplayRecord>, StoreError> {
        self.inner.replay_record(key, now).await
    }

    async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_records().await
    }

    async fn healthy(&self) -> bool {
        true
    }
}
