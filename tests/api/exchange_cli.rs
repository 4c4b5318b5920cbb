//! `tokenmint exchange` end to end: the real binary against `tokenmint serve --dev`, with a
//! recording front server before the service (to see the exact bytes and to script 503s),
//! and a fake GitHub runner OIDC endpoint. Each format's exact output; each token source and
//! their order; a denial; a retry after `Retry-After`; the refusals (exit 2, empty stdout).

use std::collections::VecDeque;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::exchange::jwt_parts;
use crate::helpers::{ID_TOKEN, TOKEN_EXCHANGE, tokenmint};
use crate::operations::ServiceProcess;

const UA: &str = concat!("tokenmint-exchange/", env!("CARGO_PKG_VERSION"));
const GENERIC_DENIAL: &str = r#"no trust policy for target "dev-api" matches this workload"#;

/// `serve --dev`, stopped when dropped (also when a test fails).
struct Dev {
    process: Option<ServiceProcess>,
    url: String,
}

impl Dev {
    async fn start() -> Dev {
        let process = tokio::task::spawn_blocking(ServiceProcess::dev)
            .await
            .expect("start");
        let url = format!("http://{}", process.listen);
        Dev {
            process: Some(process),
            url,
        }
    }

    /// A fresh dev CI token carrying `claims` (the dev issuer fills in the rest).
    async fn ci_token(&self, claims: Value) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/dev/ci-token", self.url))
            .json(&claims)
            .send()
            .await
            .expect("ci-token")
            .json()
            .await
            .expect("json");
        answer["token"].as_str().expect("token").to_owned()
    }

    async fn token_for(&self, repository: &str) -> String {
        self.ci_token(json!({"repository": repository, "ref": "refs/heads/main"}))
            .await
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.terminate();
        }
    }
}

/// One request the front server saw, and what it answered.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    user_agent: String,
    content_type: String,
    form: Vec<(String, String)>,
    status: u16,
    body: String,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A canned answer of the front server.
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

#[derive(Clone)]
struct FrontState {
    upstream: String,
    script: Arc<Mutex<VecDeque<Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A server in front of the service's `POST /token`: answers from its script first, then
/// forwards; records every request and the exact bytes of every answer.
struct Front {
    url: String,
    state: FrontState,
}

impl Front {
    async fn start(upstream: &str) -> Front {
        let state = FrontState {
            upstream: upstream.to_owned(),
            script: Arc::default(),
            seen: Arc::default(),
        };
        let app = Router::new()
            .route("/token", post(front_token))
            .with_state(state.clone());
        let url = serve(app).await;
        Front { url, state }
    }

    fn script(&self, canned: Canned) {
        self.state.script.lock().expect("lock").push_back(canned);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// The only request's record.
    fn one(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen[0].clone()
    }
}

async fn front_token(
    State(state): State<FrontState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let form = url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let canned = state.script.lock().expect("lock").pop_front();
    let (status, answer_headers, answer_body) = match canned {
        Some(canned) => (canned.status, canned.headers, canned.body),
        None => {
            let response = reqwest::Client::new()
                .post(format!("{}/token", state.upstream))
                .header("content-type", header("content-type"))
                .header("user-agent", header("user-agent"))
                .body(body)
                .send()
                .await
                .expect("upstream");
            let status = response.status().as_u16();
            let mut kept = Vec::new();
            for name in [
                "content-type",
                "x-request-id",
                "cache-control",
                "retry-after",
            ] {
                if let Some(value) = response.headers().get(name) {
                    kept.push((name, value.to_str().expect("ascii").to_owned()));
                }
            }
            (status, kept, response.text().await.expect("body"))
        }
    };
    state.seen.lock().expect("lock").push(Seen {
        at: Instant::now(),
        user_agent: header("user-agent"),
        content_type: header("content-type"),
        form,
        status,
        body: answer_body.clone(),
    });
    let mut response = (StatusCode::from_u16(status).expect("status"), answer_body).into_response();
    for (name, value) in answer_headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// A fake GitHub Actions runner: `GET /idtoken?api-version=2.0&audience=...` with the
/// runner's bearer token answers `{"count", "value"}` with a dev CI token of `repository`.
struct Runner {
    url: String,
    audiences: Arc<Mutex<Vec<String>>>,
}

const RUNNER_BEARER: &str = "runner-request-token";

#[derive(Clone)]
struct RunnerState {
    dev: String,
    repository: String,
    audiences: Arc<Mutex<Vec<String>>>,
}

impl Runner {
    async fn start(dev: &Dev, repository: &str) -> Runner {
        let audiences = Arc::<Mutex<Vec<String>>>::default();
        let state = RunnerState {
            dev: dev.url.clone(),
            repository: repository.to_owned(),
            audiences: audiences.clone(),
        };
        let app = Router::new()
            .route("/idtoken", get(runner_token))
            .with_state(state);
        let url = serve(app).await;
        Runner { url, audiences }
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL`, with its query as the runner gives it.
    fn request_url(&self) -> String {
        format!("{}/idtoken?api-version=2.0", self.url)
    }

    fn audiences(&self) -> Vec<String> {
        self.audiences.lock().expect("lock").clone()
    }
}

async fn runner_token(
    State(state): State<RunnerState>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {RUNNER_BEARER}"))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let find = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(find("api-version").as_deref(), Some("2.0"));
    let audience = find("audience").expect("audience");
    state.audiences.lock().expect("lock").push(audience);
    // The dev issuer's tokens are for the dev service; what was asked is recorded above.
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/dev/ci-token", state.dev))
        .json(&json!({"repository": state.repository, "ref": "refs/heads/main"}))
        .send()
        .await
        .expect("ci-token")
        .json()
        .await
        .expect("json");
    axum::Json(json!({"count": 1, "value": answer["token"]})).into_response()
}

/// Serves `app` on a free loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

/// What a run of the binary printed.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `tokenmint exchange ARGS` with exactly the token variables in `env` (none inherited),
/// and `stdin` on its standard input.
async fn exchange(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = tokenmint();
    command.arg("exchange").args(args);
    for name in [
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "TFC_WORKLOAD_IDENTITY_TOKEN",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "GITHUB_ACTIONS",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("run tokenmint exchange");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        let output = child.wait_with_output().expect("wait");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    })
    .await
    .expect("join")
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The success answer the front server passed on; checks what the client sent.
fn success(seen: &Seen, ci_token: &str) -> Value {
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.user_agent, UA);
    assert_eq!(seen.content_type, "application/x-www-form-urlencoded");
    assert_eq!(seen.field("grant_type"), Some(TOKEN_EXCHANGE));
    assert_eq!(seen.field("subject_token_type"), Some(ID_TOKEN));
    assert_eq!(seen.field("audience"), Some("dev-api"));
    assert_eq!(seen.field("subject_token"), Some(ci_token));
    serde_json::from_str(&seen.body).expect("JSON answer")
}

/// stderr names the request id and the token's SHA-256, and never a token.
fn assert_traceable(run: &Run, answer: &Value, secrets: &[&str]) {
    let access_token = answer["access_token"].as_str().expect("access_token");
    let request_id = answer["request_id"].as_str().expect("request_id");
    assert!(
        run.stderr
            .contains(&format!("tokenmint exchange: request_id: {request_id}\n")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "tokenmint exchange: token_sha256: {}\n",
            sha256_hex(access_token)
        )),
        "{}",
        run.stderr
    );
    for secret in secrets.iter().chain([&access_token]) {
        assert!(
            !run.stderr.contains(secret),
            "a token on stderr: {}",
            run.stderr
        );
    }
}

fn repository_of(access_token: &str) -> String {
    let (_, claims) = jwt_parts(access_token);
    claims["sub"].as_str().expect("sub").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_the_services_answer_byte_for_byte_on_one_line() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    let ci_token = dev.token_for("acme/app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ci-token");
    std::fs::write(&file, format!("{ci_token}\n")).expect("write");

    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--scope",
            "read",
            "--token-file",
            file.to_str().expect("path"),
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = front.one();
    assert_eq!(seen.field("scope"), Some("read"));
    assert_eq!(seen.field("policy"), None);
    let answer = success(&seen, &ci_token);
    // The server's bytes, which the shared type re-serialises identically.
    assert_eq!(run.stdout, format!("{}\n", seen.body));
    let members: Vec<&str> = answer
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        [
            "access_token",
            "issued_token_type",
            "token_type",
            "expires_in",
            "scope",
            "target",
            "policy",
            "request_id"
        ]
    );
    assert_eq!(answer["scope"], "read");
    assert_eq!(answer["target"], "dev-api");
    assert_eq!(answer["token_type"], "Bearer");
    assert!(
        run.stderr.contains(&format!(
            "tokenmint exchange: reading the CI token from --token-file {:?}\n",
            file.to_str().expect("path")
        )),
        "{}",
        run.stderr
    );
    assert_traceable(&run, &answer, &[&ci_token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_the_bare_token_read_from_stdin() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--policy",
            "dev-any-repository",
            "--format",
            "token",
            "--token-file",
            "-",
        ],
        &[],
        Some(&format!("{ci_token}\n")),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = front.one();
    assert_eq!(seen.field("policy"), Some("dev-any-repository"));
    assert_eq!(seen.field("scope"), None);
    let answer = success(&seen, &ci_token);
    let access_token = answer["access_token"].as_str().expect("token");
    assert_eq!(run.stdout, format!("{access_token}\n"));
    assert!(run.stderr.contains("from standard input (--token-file -)"));
    assert_traceable(&run, &answer, &[&ci_token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_prints_an_export_line_for_a_token_from_tokenmint_id_token() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--format",
            "env",
            "--export",
            "AUTH0_API_TOKEN",
        ],
        &[("TOKENMINT_ID_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer = success(&front.one(), &ci_token);
    let access_token = answer["access_token"].as_str().expect("token");
    assert_eq!(
        run.stdout,
        format!("export AUTH0_API_TOKEN='{access_token}'\n")
    );
    assert!(
        run.stderr
            .contains("reading the CI token from $TOKENMINT_ID_TOKEN")
    );
    assert_traceable(&run, &answer, &[&ci_token]);

    // --export alone means --format env.
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--export",
            "T",
        ],
        &[("TOKENMINT_ID_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer: Value = serde_json::from_str(&front.seen()[1].body).expect("JSON");
    assert_eq!(
        run.stdout,
        format!(
            "export T='{}'\n",
            answer["access_token"].as_str().expect("token")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hcp_terraform_s_workload_identity_token_is_used() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    let ci_token = dev.token_for("acme/infra").await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--format",
            "token",
        ],
        &[("TFC_WORKLOAD_IDENTITY_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer = success(&front.one(), &ci_token);
    let access_token = answer["access_token"].as_str().expect("token");
    assert_eq!(run.stdout, format!("{access_token}\n"));
    assert!(
        run.stderr
            .contains("reading the CI token from $TFC_WORKLOAD_IDENTITY_TOKEN")
    );
    assert_eq!(
        repository_of(access_token),
        "dev:repo:acme/infra:ref:refs/heads/main"
    );
    assert_traceable(&run, &answer, &[&ci_token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_job_s_token_is_requested_from_the_runner_for_the_url() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    let runner = Runner::start(&dev, "acme/from-github").await;
    let request_url = runner.request_url();
    let github = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNNER_BEARER),
    ];
    // The default OIDC audience is --url without its trailing slash.
    let url = format!("{}/", front.url);
    let run = exchange(
        &["--url", &url, "--audience", "dev-api", "--format", "token"],
        &github,
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(runner.audiences(), [front.url.as_str()]);
    let seen = front.one();
    let ci_token = seen
        .field("subject_token")
        .expect("subject_token")
        .to_owned();
    let answer = success(&seen, &ci_token);
    let access_token = answer["access_token"].as_str().expect("token");
    assert_eq!(run.stdout, format!("{access_token}\n"));
    assert_eq!(
        repository_of(access_token),
        "dev:repo:acme/from-github:ref:refs/heads/main"
    );
    assert!(
        run.stderr.contains(
            "reading the CI token from the GitHub Actions runner ($ACTIONS_ID_TOKEN_REQUEST_URL)"
        ),
        "{}",
        run.stderr
    );
    assert_traceable(&run, &answer, &[&ci_token, RUNNER_BEARER]);

    // --oidc-audience is passed on as given, URL-encoded.
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--oidc-audience",
            "https://sts.example.com/a b&c",
        ],
        &github,
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(runner.audiences()[1], "https://sts.example.com/a b&c");

    // A runner that refuses names the missing permission.
    let run = exchange(
        &["--url", &front.url, "--audience", "dev-api"],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "wrong"),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("failed with HTTP 401; the job needs `permissions: id-token: write`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("wrong"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_then_the_runner_then_tokenmint_id_token_then_tfc() {
    let dev = Dev::start().await;
    let runner = Runner::start(&dev, "acme/runner").await;
    let request_url = runner.request_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    let mut repositories = Vec::new();
    for sources in 0..4 {
        std::fs::write(&file, dev.token_for("acme/file").await).expect("write");
        let var = dev.token_for("acme/var").await;
        let tfc = dev.token_for("acme/tfc").await;
        let mut env = vec![
            ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNNER_BEARER),
            ("TOKENMINT_ID_TOKEN", var.as_str()),
            ("TFC_WORKLOAD_IDENTITY_TOKEN", tfc.as_str()),
        ];
        let mut args = vec![
            "--url",
            dev.url.as_str(),
            "--audience",
            "dev-api",
            "--format",
            "token",
            "--oidc-audience",
            dev.url.as_str(),
        ];
        // 0: every source; 1: no file; 2: nor the runner; 3: only TFC's variable.
        match sources {
            0 => args.extend(["--token-file", file.to_str().expect("path")]),
            1 => {}
            2 => drop(env.drain(..2)),
            _ => drop(env.drain(..3)),
        }
        let run = exchange(&args, &env, None).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        repositories.push(repository_of(run.stdout.trim_end()));
    }
    assert_eq!(
        repositories,
        [
            "dev:repo:acme/file:ref:refs/heads/main",
            "dev:repo:acme/runner:ref:refs/heads/main",
            "dev:repo:acme/var:ref:refs/heads/main",
            "dev:repo:acme/tfc:ref:refs/heads/main",
        ]
    );
    // The runner was asked only when it was the first source present.
    assert_eq!(runner.audiences(), [dev.url.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_prints_the_error_its_description_and_the_request_id_and_exits_1() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    // The built-in policy wants a repository claim.
    let ci_token = dev.ci_token(json!({"ref": "refs/heads/main"})).await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--format",
            "token",
        ],
        &[("TOKENMINT_ID_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let seen = front.one();
    assert_eq!(seen.status, 403);
    let body: Value = serde_json::from_str(&seen.body).expect("JSON");
    let request_id = body["request_id"].as_str().expect("request_id");
    assert_eq!(
        body,
        json!({"error": "access_denied", "error_description": GENERIC_DENIAL, "request_id": request_id})
    );
    assert_eq!(
        run.stderr,
        format!(
            "tokenmint exchange: reading the CI token from $TOKENMINT_ID_TOKEN\n\
             tokenmint exchange: HTTP 403 access_denied: {GENERIC_DENIAL} (request_id: {request_id})\n"
        )
    );

    // A scope beyond the policy: the same shape, another error.
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--scope",
            "admin",
        ],
        &[("TOKENMINT_ID_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    let body: Value = serde_json::from_str(&front.seen()[1].body).expect("JSON");
    assert_eq!(body["error"], "invalid_scope");
    assert!(
        run.stderr.contains(&format!(
            "tokenmint exchange: HTTP 400 invalid_scope: {} (request_id: {})\n",
            body["error_description"].as_str().expect("description"),
            body["request_id"].as_str().expect("request_id"),
        )),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_after_its_retry_after_with_the_same_ci_token() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    front.script(Canned {
        status: 503,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("retry-after", "1".to_owned()),
            ("x-request-id", "busy-1".to_owned()),
        ],
        body: json!({"error": "temporarily_unavailable", "error_description": "overloaded", "request_id": "busy-1"})
            .to_string(),
    });
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--format",
            "token",
        ],
        &[("TOKENMINT_ID_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = front.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].status, 503);
    assert_eq!(seen[0].field("subject_token"), Some(ci_token.as_str()));
    assert!(
        seen[1].at - seen[0].at >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let answer = success(&seen[1], &ci_token);
    assert_eq!(
        run.stdout,
        format!("{}\n", answer["access_token"].as_str().expect("token"))
    );
    let retry_line = run
        .stderr
        .lines()
        .find(|line| line.contains("retrying"))
        .expect("a retry line");
    assert!(
        retry_line.starts_with(
            "tokenmint exchange: HTTP 503 temporarily_unavailable: overloaded (request_id: busy-1); retrying in 1."
        ) && retry_line.ends_with("s (attempt 2 of 4)"),
        "{retry_line}"
    );
    assert_traceable(&run, &answer, &[&ci_token]);

    // With --retries 0 the 503 is the answer.
    front.script(Canned {
        status: 503,
        headers: vec![("retry-after", "1".to_owned())],
        body: "busy".to_owned(),
    });
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--retries",
            "0",
        ],
        &[("TOKENMINT_ID_TOKEN", &ci_token)],
        None,
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.ends_with(
            "tokenmint exchange: HTTP 503, and the body is not a tokenmint error (content-type: text/plain; charset=utf-8; not shown)\n"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_2_with_nothing_on_stdout() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    let ci_token = dev.token_for("acme/app").await;
    let with_token = [("TOKENMINT_ID_TOKEN", ci_token.as_str())];
    let refused = |run: &Run, message: &str| {
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(run.stdout, "");
        assert!(run.stderr.contains(message), "{}", run.stderr);
        assert!(!run.stderr.contains(&ci_token), "{}", run.stderr);
    };

    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--export",
            "1BAD",
        ],
        &with_token,
        None,
    )
    .await;
    refused(
        &run,
        "tokenmint exchange: --export \"1BAD\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)\n",
    );
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--export",
            "A-B;",
        ],
        &with_token,
        None,
    )
    .await;
    refused(&run, "is not a variable name");

    let run = exchange(
        &["--url", "http://sts.example.com", "--audience", "dev-api"],
        &with_token,
        None,
    )
    .await;
    refused(
        &run,
        "tokenmint exchange: refusing http:// to sts.example.com, which is not a loopback host",
    );

    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--format",
            "env",
        ],
        &with_token,
        None,
    )
    .await;
    refused(&run, "--format env needs --export NAME");

    // A CI token that is not one.
    let run = exchange(
        &["--url", &front.url, "--audience", "dev-api"],
        &[("TOKENMINT_ID_TOKEN", "abc'; rm -rf /")],
        None,
    )
    .await;
    refused(
        &run,
        "the CI token has characters outside [A-Za-z0-9._~+/=-]",
    );
    assert!(!run.stderr.contains("rm -rf"), "{}", run.stderr);

    // A token on the command line is refused without being echoed.
    let run = exchange(
        &["--url", &front.url, "--audience", "dev-api", &ci_token],
        &[],
        None,
    )
    .await;
    refused(&run, "unexpected argument (not shown)");
    assert!(front.seen().is_empty(), "nothing was sent");

    // An access token that the shell quoting cannot carry is not printed.
    front.script(Canned {
        status: 200,
        headers: vec![("content-type", "application/json".to_owned())],
        body: json!({
            "access_token": "abc'def", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer", "expires_in": 60, "scope": "read", "target": "dev-api",
            "policy": "p", "request_id": "odd-1",
        })
        .to_string(),
    });
    let run = exchange(
        &[
            "--url",
            &front.url,
            "--audience",
            "dev-api",
            "--export",
            "TOKEN",
        ],
        &with_token,
        None,
    )
    .await;
    refused(
        &run,
        "the service returned an access token with characters outside [A-Za-z0-9._~+/=-]; not printing it",
    );
    assert!(run.stderr.contains("request_id: odd-1\n"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("token_sha256: {}\n", sha256_hex("abc'def"))),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("abc'def"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_source_the_error_lists_the_four() {
    let run = exchange(
        &["--url", "https://sts.example.com", "--audience", "dev-api"],
        // Half of GitHub's pair is no GitHub job; empty variables are absent.
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", "https://runner.example/x"),
            ("TOKENMINT_ID_TOKEN", ""),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    for source in [
        "no CI token found",
        "--token-file FILE (- for stdin)",
        "$ACTIONS_ID_TOKEN_REQUEST_URL and $ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "permissions: id-token: write",
        "$TOKENMINT_ID_TOKEN",
        "$TFC_WORKLOAD_IDENTITY_TOKEN (HCP Terraform)",
        "never taken from the command line",
    ] {
        assert!(run.stderr.contains(source), "{source}: {}", run.stderr);
    }
}

/// In a GitHub Actions job, the CI token and the access token are masked (`::add-mask::`
/// on stderr, which the runner reads) before anything else could print them, and no
/// other line carries either; a server's `##[stop-commands]` in an error description,
/// which would make the runner print later mask lines as plain text, is defused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_github_job_both_tokens_are_masked_and_server_text_cannot_stop_commands() {
    let dev = Dev::start().await;
    let front = Front::start(&dev.url).await;
    front.script(Canned {
        status: 503,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("retry-after", "1".to_owned()),
            ("x-request-id", "##[stop-commands]id".to_owned()),
        ],
        body: json!({"error": "temporarily_unavailable", "error_description": "##[stop-commands]pwn ###[x]", "request_id": "##[stop-commands]id"})
            .to_string(),
    });
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &["--url", &front.url, "--audience", "dev-api", "--scope", ""],
        &[
            ("TOKENMINT_ID_TOKEN", &ci_token),
            ("GITHUB_ACTIONS", "true"),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = front.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].field("scope"), None, "an empty --scope is no scope");
    let answer = success(&seen[1], &ci_token);
    let access_token = answer["access_token"].as_str().expect("token");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let ci_mask = format!("::add-mask::{ci_token}");
    let access_mask = format!("::add-mask::{access_token}");
    let at = |wanted: &str| lines.iter().position(|line| *line == wanted);
    let (ci_at, access_at) = (
        at(&ci_mask).expect("the CI token masked"),
        at(&access_mask).expect("the access token masked"),
    );
    assert!(ci_at < access_at, "{}", run.stderr);
    for (index, line) in lines.iter().enumerate() {
        if index != ci_at && index != access_at {
            assert!(
                !line.contains(&ci_token) && !line.contains(access_token),
                "a token outside its mask line: {line}"
            );
        }
        assert!(!line.contains("##["), "a v1 workflow command: {line}");
    }
    let retry_line = lines
        .iter()
        .find(|line| line.contains("retrying"))
        .expect("a retry line");
    assert!(
        retry_line.starts_with(
            "tokenmint exchange: HTTP 503 temporarily_unavailable: # #[stop-commands]pwn ## #[x] (request_id: # #[stop-commands]id); retrying in 1."
        ),
        "{retry_line}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);

    // Outside a GitHub job nothing is masked (there is no runner to read it).
    let ci_token = dev.token_for("acme/app").await;
    let run = exchange(
        &[
            "--url",
            &dev.url,
            "--audience",
            "dev-api",
            "--format",
            "token",
        ],
        &[
            ("TOKENMINT_ID_TOKEN", &ci_token),
            ("GITHUB_ACTIONS", "false"),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("::add-mask::"), "{}", run.stderr);
}
