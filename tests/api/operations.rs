//! Operations: health, readiness, metrics, structured logs, and graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use crate::exchange::github_app;
use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer_status_only_on_the_public_listener() {
    let (_fake, app) = github_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.text, "", "no detail on the public listener");
    assert_eq!(
        app.get("/metrics").await.status,
        404,
        "metrics are on the admin listener"
    );
}

/// `GET path` on the admin listener: status and body.
async fn admin_get(app: &TestApp, path: &str) -> (u16, Vec<u8>) {
    let response = tokenmint::edges::http::admin_router(app.service.state.clone())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, bytes.to_vec())
}

/// An issuer whose keys were never fetched cannot verify anything: every exchange would
/// answer 503, so the load balancer must not send traffic here either.
#[tokio::test]
async fn readiness_fails_while_no_issuer_has_usable_keys() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let app = AppBuilder::new()
        .config(&format!(
            "[issuers.github]\nissuer = \"http://127.0.0.1:{closed_port}\"\nkind = \"github\"\njwks_fetch_timeout = \"1s\"\n"
        ))
        .spawn()
        .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.text, "", "no detail on the public listener");

    let (status, bytes) = admin_get(&app, "/readyz").await;
    assert_eq!(status, 503);
    let detail: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(detail["ready"], false);
    assert_eq!(detail["store_healthy"], true);
    assert_eq!(detail["issuers"][0]["name"], "github");
    assert_eq!(detail["issuers"][0]["keys"], 0);
    assert_eq!(detail["issuers"][0]["usable"], false);
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_and_readiness_detail() {
    let (fake, app) = github_app().await;
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );
    assert_eq!(app.exchange("junk", "internal-api", &[]).await.status, 400);
    assert_eq!(
        app.post_form(&[("grant_type", "password")]).await.status,
        400
    );

    let (_, bytes) = admin_get(&app, "/metrics").await;
    let metrics = String::from_utf8_lossy(&bytes);
    for line in [
        "tokenmint_exchanges_total{outcome=\"allow\",reason=\"allowed\"} 1",
        "tokenmint_exchanges_total{outcome=\"deny\",reason=\"malformed_token\"} 1",
        "tokenmint_exchanges_total{outcome=\"rejected\",reason=\"unsupported_grant_type\"} 1",
        "tokenmint_exchange_duration_seconds_count 3",
        "tokenmint_jwks_fetches_total{issuer=\"github\",outcome=\"ok\"}",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    let (status, bytes) = admin_get(&app, "/readyz").await;
    assert_eq!(status, 200);
    let detail: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(detail["ready"], true);
    assert_eq!(detail["policies"], 1);
    assert_eq!(detail["issuers"][0]["name"], "github");
    assert_eq!(detail["issuers"][0]["keys"], 1);
    assert_eq!(detail["issuers"][0]["usable"], true);
}

#[tokio::test]
async fn a_target_with_a_fixed_signing_key_signs_with_it() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = tokenmint::adapters::signing::SigningKey::generate(
        tokenmint::adapters::signing::SigningAlgorithm::EdDSA,
    )
    .expect("key");
    let pem_path = dir.path().join("fixed.pem");
    {
        use secrecy::ExposeSecret as _;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pem_path)
            .expect("create");
        file.write_all(key.to_pkcs8_pem().expose_secret().as_bytes())
            .expect("write");
    }
    let app = AppBuilder::new()
        .github("github", &fake)
        .config(&format!(
            "[targets.internal-api]\nkind = \"local\"\naudience = \"https://api.internal.example\"\nalgorithm = \"EdDSA\"\nsigning_key_file = \"{}\"\n",
            pem_path.display()
        ))
        .policy("deploy-api.yaml", crate::exchange::DEPLOY_POLICY)
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let (header, _) =
        crate::exchange::jwt_parts(answer.body["access_token"].as_str().expect("token"));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key.kid());
    let jwks = app.get("/.well-known/jwks.json").await;
    assert!(
        jwks.body["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == key.kid())
    );
}

/// `tokenmint serve` on a free loopback port with JSON logs, its stderr lines collected
/// by a thread, running until [`ServiceProcess::terminate`].
pub struct ServiceProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Lines read so far.
    seen: Vec<String>,
    /// The bound address, from the "serving" log line.
    pub listen: String,
}

impl ServiceProcess {
    /// `serve --dev`.
    pub fn dev() -> ServiceProcess {
        Self::start(&["--dev"], None)
    }

    /// `serve --config FILE`, with `RUST_LOG` set to `log_filter` when given.
    pub fn with_config(file: &std::path::Path, log_filter: Option<&str>) -> ServiceProcess {
        let file = file.to_str().expect("UTF-8 path");
        Self::start(&["--config", file], log_filter)
    }

    fn start(args: &[&str], log_filter: Option<&str>) -> ServiceProcess {
        let mut command = tokenmint();
        command
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
        if let Some(filter) = log_filter {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tokenmint");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let listen = loop {
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("a serving log line");
            seen.push(line.clone());
            if line.contains("tokenmint is serving") && line.starts_with('{') {
                let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
                assert_eq!(log["level"], "INFO");
                break log["listen"].as_str().expect("listen").to_owned();
            }
        };
        ServiceProcess {
            child,
            lines,
            seen,
            listen,
        }
    }

    /// Sends SIGTERM, waits for the exit code, and returns every log line.
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let code = self.child.wait().expect("wait").code();
        self.seen.extend(self.lines.iter());
        (code, self.seen)
    }

    /// Sends SIGKILL (the process ends at once, with no shutdown of any kind), waits for
    /// it, and returns the exit code (`None`: killed by a signal) and every log line.
    pub fn kill(mut self) -> (Option<i32>, Vec<String>) {
        self.child.kill().expect("SIGKILL");
        let code = self.child.wait().expect("wait").code();
        self.seen.extend(self.lines.iter());
        (code, self.seen)
    }
}

#[test]
fn sigterm_stops_the_service_and_exits_0() {
    let process = ServiceProcess::dev();
    assert!(
        process.listen.starts_with("127.0.0.1:"),
        "{}",
        process.listen
    );
    let (code, _) = process.terminate();
    assert_eq!(code, Some(0));
}

/// Security invariant: neither the CI token nor the minted token ever reaches the log.
#[test]
fn decisions_are_logged_as_json_lines_without_tokens() {
    let process = ServiceProcess::dev();
    let listen = process.listen.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (ci_token, access_token) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let ci: serde_json::Value = client
            .post(format!("http://{listen}/dev/ci-token"))
            .json(&serde_json::json!({"repository": "acme/app", "ref": "refs/heads/main"}))
            .send()
            .await
            .expect("ci-token")
            .json()
            .await
            .expect("json");
        let ci_token = ci["token"].as_str().expect("token").to_owned();
        let answer: serde_json::Value = client
            .post(format!("http://{listen}/token"))
            .json(&serde_json::json!({
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": ci_token,
                "subject_token_type": ID_TOKEN,
                "audience": "dev-api",
            }))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let access = answer["access_token"]
            .as_str()
            .expect("access token")
            .to_owned();
        (ci_token, access)
    });
    let (code, lines) = process.terminate();
    assert_eq!(code, Some(0));

    let decisions: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "exchange decided")
        .collect();
    assert_eq!(decisions.len(), 1, "one line per decision: {lines:?}");
    assert_eq!(decisions[0]["outcome"], "allow");
    // `target` is the log line's origin; the exchange's target has its own key, so a JSON
    // reader that keeps the last of two equal keys cannot pick the wrong one.
    assert_eq!(decisions[0]["target_name"], "dev-api");
    assert_eq!(decisions[0]["target"], "tokenmint::trust::audit");
    assert_eq!(decisions[0]["audit_seq"], 1);
    for line in lines.iter().filter(|line| line.starts_with('{')) {
        assert!(
            tokenmint::trust::json::parse_unique_object(line.as_bytes()).is_ok(),
            "a JSON log line with a repeated key: {line}"
        );
    }
    assert_eq!(decisions[0]["policy"], "dev-any-repository");
    assert_eq!(
        decisions[0]["token_sha256"],
        tokenmint::trust::audit::token_sha256(&access_token)
    );
    for line in &lines {
        assert!(
            !line.contains(&ci_token),
            "the CI token leaked into the log: {line}"
        );
        assert!(
            !line.contains(&access_token),
            "the access token leaked into the log: {line}"
        );
        // No JWT-looking segment at all.
        assert!(
            !line.contains("eyJ"),
            "something token-like leaked into the log: {line}"
        );
    }
}

/// Security invariant: at `RUST_LOG=trace`, against a token endpoint that echoes the
/// request in its error, no credential reaches the log in any form: not the client
/// secret (as is or form-encoded), not the `Authorization` header, not an assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_trace_level_no_credential_reaches_the_log() {
    use crate::fake_auth0::{FakeTenant, Fault, TenantSetup};
    use crate::remote::{CLIENT_ID, TENANT_POLICY, key_path, secret_file_credential};
    let fake = FakeIssuer::start(Shape::Github).await;
    let secret = "s3cr3t+value/with:odd%chars~&more=";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
    std::fs::write(
        dir.path().join("policies/deploy-tenant.yaml"),
        TENANT_POLICY,
    )
    .expect("policy");
    let mut sent = Vec::new();
    for (setup, credential) in [
        (
            TenantSetup::secret_post(CLIENT_ID, secret),
            secret_file_credential(dir.path(), secret, "client_secret_post"),
        ),
        (
            TenantSetup::secret_basic(CLIENT_ID, secret),
            secret_file_credential(dir.path(), secret, "client_secret_basic"),
        ),
        (
            TenantSetup::private_key_jwt(CLIENT_ID, "auth0-client.pem", "RS256"),
            format!("private_key_file = \"{}\"\n", key_path("auth0-client.pem")),
        ),
    ] {
        let tenant = FakeTenant::start(setup).await;
        tenant.push_fault(Fault::Echo);
        let config = dir.path().join("tokenmint.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\npublic_url = \"{PUBLIC_URL}\"\nadmin_listen = \"\"\n[storage]\ndata_dir = \"{data}\"\n[policies]\ndir = \"{policies}\"\n\
                 [issuers.github]\nissuer = \"{issuer}\"\nkind = \"github\"\n\
                 [targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nbase_url = \"{base}\"\nclient_id = \"{CLIENT_ID}\"\n{credential}",
                data = dir.path().join("data").display(),
                policies = dir.path().join("policies").display(),
                issuer = fake.issuer,
                base = tenant.base_url,
            ),
        )
        .expect("config");
        let process = tokio::task::spawn_blocking(move || {
            ServiceProcess::with_config(&config, Some("trace"))
        })
        .await
        .expect("start");
        let answer = reqwest::Client::new()
            .post(format!("http://{}/token", process.listen))
            .json(&serde_json::json!({
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": fake.token("github-push-main"),
                "subject_token_type": ID_TOKEN,
                "audience": "tenant-prod",
            }))
            .send()
            .await
            .expect("exchange");
        assert_eq!(answer.status(), 502);
        let (code, lines) = tokio::task::spawn_blocking(move || process.terminate())
            .await
            .expect("stop");
        assert_eq!(code, Some(0));
        let log = lines.join("\n");
        assert!(log.contains("[REDACTED]"), "the echo was logged, scrubbed");
        let request = &tenant.requests()[0];
        sent.extend(request.field("client_assertion").map(str::to_owned));
        sent.extend(request.authorization.clone());
        sent.push(secret.to_owned());
        sent.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
        for credential in &sent {
            assert!(
                !log.contains(credential.as_str()),
                "a credential reached the log: {credential}"
            );
        }
    }
}

/// The admin readiness detail says, per policy file, what a reload found (and since
/// when a file fails), which incident switches are on, and what audit-mode policies
/// would have allowed.
#[tokio::test]
async fn the_readiness_detail_shows_policy_files_switches_and_would_allow_counts() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = crate::exchange::deploy_builder(&fake, "")
        .policy(
            "shadow.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [read]\nmode: audit\nclaims:\n  repository_id: \"89012345\"\n",
        )
        .spawn()
        .await;
    assert_eq!(
        app.exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "read")]
        )
        .await
        .status,
        200
    );
    std::fs::write(
        app.policies_dir.join("shadow.yaml"),
        "issuer: github\nclaims: [\n",
    )
    .expect("break");
    std::fs::write(
        app.policies_dir.join("deny.yaml"),
        "repository_owner_id: [\"9\", \"10\"]\n",
    )
    .expect("deny");
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let report = crate::reload::reload(&app);
    assert_eq!(report.kept_stale.len(), 1, "{report:?}");

    let (status, bytes) = admin_get(&app, "/readyz").await;
    assert_eq!(status, 200);
    let detail: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let files = detail["policy_files"].as_array().expect("policy_files");
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        files[0],
        serde_json::json!({
            "file": app.policies_dir.join("deploy-api.yaml").display().to_string(),
            "state": "ok",
            "line": null,
            "error": null,
            "failing_since": null,
        })
    );
    assert_eq!(files[1]["state"], "stale");
    assert_eq!(files[1]["line"], 3);
    assert!(
        files[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("shadow.yaml:3: yaml: ")),
        "{}",
        files[1]
    );
    let since = time::OffsetDateTime::parse(
        files[1]["failing_since"].as_str().expect("since"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!(since >= before, "{since} {before}");
    assert_eq!(
        detail["switches"],
        serde_json::json!({ "denied_values": 2, "disabled_targets": [] })
    );
    assert_eq!(detail["would_allow"], serde_json::json!({ "shadow": 1 }));
    let (_, bytes) = admin_get(&app, "/metrics").await;
    let metrics = String::from_utf8_lossy(&bytes);
    assert!(
        metrics.contains("tokenmint_policy_would_allow_total{policy=\"shadow\"} 1"),
        "{metrics}"
    );
}
