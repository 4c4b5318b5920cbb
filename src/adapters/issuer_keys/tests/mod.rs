//! Tests of the key store against fake issuers served by axum on 127.0.0.1:0, and fakes
//! of `KeySource` and `FetchObserver`.

mod http_source;
mod issuer_keys;
mod outbound;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Semaphore;
use url::Url;

use super::{FetchError, FetchObserver, FetchOutcome, KeySource, KeystoreSettings};

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/", $path))
    };
}

pub(super) const GITHUB_JWKS: &str = fixture!("github/jwks.json");
pub(super) const GITHUB_JWKS_PREVIOUS: &str = fixture!("github/jwks-previous.json");
pub(super) const GITHUB_DISCOVERY: &str = fixture!("github/openid-configuration.json");
pub(super) const GITHUB_SLUG_DISCOVERY: &str =
    fixture!("github/openid-configuration-enterprise-slug.json");
pub(super) const GITLAB_JWKS: &str = fixture!("gitlab/jwks.json");
pub(super) const GITLAB_DISCOVERY: &str = fixture!("gitlab/openid-configuration.json");
pub(super) const TERRAFORM_DISCOVERY: &str = fixture!("terraform/openid-configuration.json");

pub(super) const GITHUB_ORIGIN: &str = "https://token.actions.githubusercontent.com";
pub(super) const GITLAB_ORIGIN: &str = "https://gitlab.com";
pub(super) const TERRAFORM_ORIGIN: &str = "https://app.terraform.io";

/// kids in both `github/jwks-previous.json` and `github/jwks.json`.
pub(super) const KID_KEPT: &str = "cc413527-173f-5a05-976e-9c52b1d7b431";
pub(super) const KID_KEPT_X5C: &str = "38826b17-6a30-5f9b-b169-8beb8202f723";
/// kid only in `github/jwks-previous.json`: removed by the rotation.
pub(super) const KID_REMOVED: &str = "1F2AB83404C08EC9EA0BB99DAED02186B091DBF4";
/// kid only in `github/jwks.json`: added by the rotation.
pub(super) const KID_ADDED: &str = "38E9B30B3A023A1B72309921A69A42FCC496C42C";

/// Settings whose timers never fire during a test unless the test shortens them.
pub(super) fn settings() -> KeystoreSettings {
    KeystoreSettings {
        fetch_timeout: Duration::from_secs(5),
        max_body_bytes: super::DEFAULT_MAX_BODY_BYTES,
        refresh_interval: Duration::from_secs(3600),
        max_stale: Duration::from_secs(3600),
        refetch_cooldown: Duration::from_secs(3600),
    }
}

/// A recorded document with the real issuer's origin replaced by the fake's.
pub(super) fn rebase(document: &str, real_origin: &str, fake_base: &str) -> String {
    document.replace(real_origin, fake_base)
}

/// What the fake issuer answers on one path.
#[derive(Clone)]
pub(super) enum Reply {
    Json(String),
    Status(u16),
    /// 302 to this absolute URL.
    Redirect(String),
    /// Waits this long, then answers the JSON.
    Slow(Duration, String),
    /// Waits for a permit of the semaphore, then answers the JSON.
    Gated(Arc<Semaphore>, String),
}

#[derive(Default)]
struct FakeState {
    routes: Mutex<HashMap<String, Reply>>,
    hits: Mutex<HashMap<String, usize>>,
    user_agents: Mutex<Vec<String>>,
}

/// An issuer on 127.0.0.1 with a random port. Unknown paths answer 404.
pub(super) struct FakeIssuer {
    /// `http://127.0.0.1:PORT`, no trailing slash: also the issuer URL.
    pub base: String,
    pub port: u16,
    state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeIssuer {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("fake issuer serves");
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            state,
            server,
        }
    }

    /// From now on, answer `path` with `reply`.
    pub fn set(&self, path: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .expect("routes lock")
            .insert(path.to_owned(), reply);
    }

    /// Requests received on `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        let hits = self.state.hits.lock().expect("hits lock");
        hits.get(path).copied().unwrap_or(0)
    }

    pub fn user_agents(&self) -> Vec<String> {
        self.state.user_agents.lock().expect("ua lock").clone()
    }

    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.base)).expect("fake issuer URL")
    }

    /// The GitHub shape: discovery at the root, keys at `/.well-known/jwks`.
    pub async fn github(jwks: &str) -> Self {
        let fake = Self::start().await;
        fake.set(
            "/.well-known/openid-configuration",
            Reply::Json(rebase(GITHUB_DISCOVERY, GITHUB_ORIGIN, &fake.base)),
        );
        fake.set("/.well-known/jwks", Reply::Json(jwks.to_owned()));
        fake
    }
}

async fn answer(State(state): State<Arc<FakeState>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    *state
        .hits
        .lock()
        .expect("hits lock")
        .entry(path.clone())
        .or_default() += 1;
    if let Some(agent) = headers.get(header::USER_AGENT) {
        let agent = String::from_utf8_lossy(agent.as_bytes()).into_owned();
        state.user_agents.lock().expect("ua lock").push(agent);
    }
    let reply = state
        .routes
        .lock()
        .expect("routes lock")
        .get(&path)
        .cloned();
    let json = |body: String| ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    match reply {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Reply::Json(body)) => json(body),
        Some(Reply::Status(code)) => StatusCode::from_u16(code)
            .expect("valid status")
            .into_response(),
        Some(Reply::Redirect(location)) => {
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        Some(Reply::Slow(delay, body)) => {
            tokio::time::sleep(delay).await;
            json(body)
        }
        Some(Reply::Gated(gate, body)) => {
            let _permit = gate.acquire().await.expect("gate open");
            json(body)
        }
    }
}

/// A `KeySource` whose answer the test sets, counting fetches.
pub(super) struct ScriptedSource {
    /// `Some(jwks json)`: answer it; `None`: fail with HTTP 503.
    answer: Mutex<Option<String>>,
    calls: AtomicUsize,
}

impl ScriptedSource {
    pub fn new(jwks: Option<&str>) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(jwks.map(str::to_owned)),
            calls: AtomicUsize::new(0),
        })
    }

    pub fn answer(&self, jwks: Option<&str>) {
        *self.answer.lock().expect("answer lock") = jwks.map(str::to_owned);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySource for ScriptedSource {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().expect("answer lock").clone();
        match answer {
            Some(json) => Ok(serde_json::from_str(&json).expect("scripted JWKS parses")),
            None => Err(FetchError::Status {
                url: self.describe(),
                status: 503,
            }),
        }
    }

    fn describe(&self) -> String {
        "scripted://keys".to_owned()
    }
}

/// Counts fetch outcomes, as the metrics observer does.
#[derive(Default)]
pub(super) struct CountingObserver {
    pub ok: AtomicUsize,
    pub error: AtomicUsize,
}

impl FetchObserver for CountingObserver {
    fn fetched(&self, issuer_name: &str, outcome: FetchOutcome) {
        assert_eq!(issuer_name, "github", "observer gets the issuer name");
        match outcome {
            FetchOutcome::Ok => self.ok.fetch_add(1, Ordering::SeqCst),
            FetchOutcome::Error => self.error.fetch_add(1, Ordering::SeqCst),
        };
    }
}

/// Polls `done` every few milliseconds; panics if it stays false for 5 s (a hang guard,
/// not a speed assertion).
pub(super) async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..2500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("gave up waiting until {what}");
}
