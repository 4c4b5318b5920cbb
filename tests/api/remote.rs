//! Auth0 and OAuth2 targets against the fake tenant: the request tokenmint sends, the
//! checks on the tenant's answer, upstream faults, token reuse, and the audit trail.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::fake_auth0::*;
use crate::helpers::*;
use tokenmint::trust::audit::Outcome;

pub const CLIENT_ID: &str = "tmClient0123456789abcdefABCDEF01";

pub const TENANT_POLICY: &str = r#"
name: deploy-tenant
issuer: github
target: tenant-prod
scopes: [read:clients, update:clients]
claims:
  repository_id: "89012345"
  ref: refs/heads/main
"#;

/// The absolute path of a file in `tests/data/keys`.
pub fn key_path(name: &str) -> String {
    format!("{}/tests/data/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Writes `contents` to the file `secret` in `dir` and returns the target keys that
/// authenticate with it by `method` (`client_secret_post` or `client_secret_basic`).
pub fn secret_file_credential(dir: &std::path::Path, contents: &str, method: &str) -> String {
    let file = dir.join("secret");
    std::fs::write(&file, contents).expect("write secret");
    format!(
        "client_secret_file = \"{}\"\nauth_method = \"{method}\"\n",
        file.display()
    )
}

/// `[targets.tenant-prod]`, an auth0 target on `tenant` with the PKCS#8 client key,
/// plus `extra` lines (which may replace the credential: then pass `credential = false`).
pub fn auth0_target(tenant: &FakeTenant, extra: &str) -> String {
    let credential = if extra.contains("private_key_") || extra.contains("client_secret_") {
        String::new()
    } else {
        format!("private_key_file = \"{}\"\n", key_path("auth0-client.pem"))
    };
    format!(
        "[targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nbase_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n{credential}{extra}\n",
        tenant.base_url
    )
}

/// Issuer `github`, the fake tenant with `setup`, target `tenant-prod` (+ `extra`), policy `deploy-tenant`.
pub async fn tenant_app(setup: TenantSetup, extra: &str) -> (FakeIssuer, FakeTenant, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(setup).await;
    let app = tenant_builder(&fake, &tenant, extra).spawn().await;
    (fake, tenant, app)
}

/// The builder of [`tenant_app`], for tests that add a store or run several replicas.
pub fn tenant_builder(fake: &FakeIssuer, tenant: &FakeTenant, extra: &str) -> AppBuilder {
    AppBuilder::new()
        .github("github", fake)
        .config(&auth0_target(tenant, extra))
        .policy("deploy-tenant.yaml", TENANT_POLICY)
}

pub fn pkjwt() -> TenantSetup {
    TenantSetup::private_key_jwt(CLIENT_ID, "auth0-client.pem", "RS256")
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Every request the tenant received passed its checks.
fn assert_tenant_accepted_all(tenant: &FakeTenant) {
    for request in tenant.requests() {
        assert_eq!(request.rejected, None, "{request:?}");
    }
}

/// The audit records of one request.
async fn records_of(app: &TestApp, request_id: &str) -> Vec<tokenmint::trust::audit::AuditRecord> {
    app.records()
        .await
        .into_iter()
        .filter(|r| r.request_id == request_id)
        .collect()
}

fn request_id(answer: &Answer) -> String {
    answer.body["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned()
}

#[tokio::test]
async fn private_key_jwt_exchange_returns_the_tenant_token_unchanged() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.headers["cache-control"], "no-store");
    let issued = tenant.issued();
    assert_eq!(issued.len(), 1);
    let request_id = request_id(&answer);
    assert_eq!(
        answer.body,
        json!({
            "access_token": issued[0].access_token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 600,
            "scope": "read:clients update:clients",
            "target": "tenant-prod",
            "policy": "deploy-tenant",
            "request_id": request_id,
        })
    );

    // What the tenant received.
    assert_tenant_accepted_all(&tenant);
    let requests = tenant.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.field("grant_type"), Some("client_credentials"));
    assert_eq!(sent.field("client_id"), Some(CLIENT_ID));
    assert_eq!(sent.field("audience"), Some(MANAGEMENT_API));
    assert_eq!(sent.field("scope"), Some("read:clients update:clients"));
    assert_eq!(sent.field("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(sent.field("client_secret"), None);
    assert_eq!(sent.field("organization"), None);
    assert_eq!(
        sent.user_agent.as_deref(),
        Some(
            format!(
                "tokenmint/{} (request {request_id})",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        )
    );
    let header = sent.assertion_header.as_ref().expect("assertion header");
    assert_eq!(
        header,
        &json!({"alg": "RS256", "typ": "JWT", "kid": client_key_thumbprint("auth0-client.pem")})
    );
    let claims = sent.assertion_claims.as_ref().expect("assertion claims");
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["aud"], format!("{}/", tenant.base_url));
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        60
    );
    assert!(sent.assertion_len.expect("length") <= 2048);

    // Two records, append-only: the pending one and its completion.
    let records = records_of(&app, &request_id).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Pending);
    let record = &records[1];
    assert_eq!(record.outcome, Outcome::Allow);
    assert_eq!(record.reason, "allowed");
    assert_eq!(record.target.as_deref(), Some("tenant-prod"));
    assert_eq!(record.policy.as_deref(), Some("deploy-tenant"));
    assert_eq!(record.scope.as_deref(), Some("read:clients update:clients"));
    assert_eq!(
        record.token_sha256.as_deref(),
        Some(sha256_hex(&issued[0].access_token).as_str())
    );
    assert_eq!(record.token_jti, None, "Auth0 tokens carry no jti");
    assert!(!record.reused);
    let expires_at = record.expires_at.expect("expires_at").unix_timestamp();
    assert!((expires_at - now() - 600).abs() <= 2, "{expires_at}");
}

#[tokio::test]
async fn a_requested_scope_is_the_scope_sent_to_the_tenant() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "tenant-prod",
            &[("scope", "read:clients")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["scope"], "read:clients");
    assert_eq!(tenant.requests()[0].field("scope"), Some("read:clients"));
}

#[tokio::test]
async fn the_target_audience_url_selects_the_auth0_target() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "organization = \"org_abc123\"\n").await;
    let answer = app
        .exchange(&fake.token("github-push-main"), MANAGEMENT_API, &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["target"], "tenant-prod");
    assert_eq!(
        tenant.requests()[0].field("organization"),
        Some("org_abc123")
    );
    assert_eq!(tenant.issued()[0].claims["org_id"], "org_abc123");
}

#[tokio::test]
async fn rs384_ps256_and_pkcs1_keys_sign_accepted_assertions() {
    for (alg, key) in [
        ("RS384", "auth0-client-pkcs1.pem"),
        ("PS256", "auth0-client.pem"),
    ] {
        let setup = TenantSetup::private_key_jwt(CLIENT_ID, key, alg);
        let extra = format!(
            "private_key_file = \"{}\"\nsigning_algorithm = \"{alg}\"\n",
            key_path(key)
        );
        let (fake, tenant, app) = tenant_app(setup, &extra).await;
        let answer = app
            .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
            .await;
        assert_eq!(answer.status, 200, "{alg}: {}", answer.text);
        assert_tenant_accepted_all(&tenant);
        let header = tenant.requests()[0]
            .assertion_header
            .clone()
            .expect("header");
        assert_eq!(header["alg"], alg);
        assert_eq!(header["kid"], client_key_thumbprint(key));
    }
}

#[tokio::test]
async fn client_secret_post_and_basic_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reserved characters: Basic credentials are form-urlencoded first (RFC 6749 §2.3.1).
    let secret = "s3cr3t+value/with:odd%chars~";
    for (setup, method) in [
        (
            TenantSetup::secret_post(CLIENT_ID, secret),
            "client_secret_post",
        ),
        (
            TenantSetup::secret_basic(CLIENT_ID, secret),
            "client_secret_basic",
        ),
    ] {
        let extra = secret_file_credential(dir.path(), &format!("{secret}\n"), method);
        let (fake, tenant, app) = tenant_app(setup, &extra).await;
        let answer = app
            .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
            .await;
        assert_eq!(answer.status, 200, "{method}: {}", answer.text);
        assert_tenant_accepted_all(&tenant);
        let sent = &tenant.requests()[0];
        assert_eq!(sent.field("client_assertion"), None);
        match method {
            "client_secret_post" => {
                assert_eq!(sent.field("client_secret"), Some(secret));
                assert_eq!(sent.authorization, None);
            }
            _ => {
                assert_eq!(sent.field("client_secret"), None);
                assert!(
                    sent.authorization
                        .as_deref()
                        .is_some_and(|a| a.starts_with("Basic "))
                );
            }
        }
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_502_naming_the_operator_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = TenantSetup::secret_post(CLIENT_ID, "right");
    let extra = secret_file_credential(dir.path(), "wrong", "client_secret_post");
    let (fake, tenant, app) = tenant_app(setup, &extra).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" refused tokenmint's client authentication (HTTP 401, access_denied); an operator must check the target's client_id and credentials",
    );
    assert_eq!(tenant.requests().len(), 1, "a refusal is not retried");
    let record = app.last_audit().await;
    assert_eq!(record.outcome, Outcome::Error);
    assert_eq!(record.reason, "upstream_unauthorized");
    assert_eq!(
        record.detail.as_deref(),
        Some("HTTP 401, access_denied: Unauthorized")
    );
}

#[tokio::test]
async fn each_attempt_signs_a_new_assertion() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::Status {
        status: 500,
        body: "{}".to_owned(),
        headers: vec![],
    });
    tenant.push_fault(Fault::Drop);
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let requests = tenant.requests();
    assert_eq!(requests.len(), 3);
    let jtis: std::collections::BTreeSet<String> = requests
        .iter()
        .map(|r| r.assertion_claims.as_ref().expect("claims")["jti"].to_string())
        .collect();
    assert_eq!(jtis.len(), 3, "every attempt has its own jti");
    assert_tenant_accepted_all(&tenant);
}

#[tokio::test]
async fn server_errors_are_retried_twice_then_answered_502() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    for _ in 0..3 {
        tenant.push_fault(Fault::Status {
            status: 503,
            body: "{\"error\":\"server_error\",\"error_description\":\"down\"}".to_owned(),
            headers: vec![],
        });
    }
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" failed to issue a token (HTTP 503); retry later",
    );
    assert_eq!(tenant.requests().len(), 3);
    let record = app.last_audit().await;
    assert_eq!(record.reason, "upstream_error");
    assert_eq!(
        record.detail.as_deref(),
        Some("HTTP 503, server_error: down")
    );
    assert_eq!(record.token_sha256, None);
    let metrics = app.service.state.metrics.render();
    assert!(
        metrics.contains(
            "tokenmint_upstream_requests_total{target=\"tenant-prod\",outcome=\"server_error\"} 3\n"
        ),
        "{metrics}"
    );

    // The failure released the CI token: the same token works once the tenant is back.
    let retried = app.exchange(&token, "tenant-prod", &[]).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
}

#[tokio::test]
async fn an_unreachable_tenant_is_502() {
    let fake = FakeIssuer::start(Shape::Github).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let app = AppBuilder::new()
        .github("github", &fake)
        .config(&format!(
            "[targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nbase_url = \"http://127.0.0.1:{port}\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{}\"\n",
            key_path("auth0-client.pem")
        ))
        .policy("deploy-tenant.yaml", TENANT_POLICY)
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" could not be reached; retry later",
    );
    assert_eq!(app.last_audit().await.reason, "upstream_unreachable");
}

#[tokio::test]
async fn a_hanging_tenant_is_cut_off_at_the_timeout() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "timeout = \"1s\"\n").await;
    tenant.push_fault(Fault::Hang(Duration::from_secs(5)));
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" did not answer within 1s; retry later",
    );
    assert_eq!(app.last_audit().await.reason, "upstream_timeout");
}

#[tokio::test]
async fn a_short_rate_limit_is_waited_out() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::RateLimited {
        retry_after: Some(1),
        reset_in: None,
    });
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(tenant.requests().len(), 2);
}

#[tokio::test]
async fn a_rate_limit_beyond_the_budget_is_503_with_retry_after() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let token = fake.token("github-push-main");

    tenant.push_fault(Fault::Auth0Error("m2m_client_quota_exceeded"));
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &answer,
        503,
        "temporarily_unavailable",
        "target \"tenant-prod\" is rate-limiting tokenmint; retry after 1260s",
    );
    assert_eq!(answer.headers["retry-after"], "1260");
    assert_eq!(app.last_audit().await.reason, "upstream_rate_limited");

    // Only X-RateLimit-Reset: the wait is counted from now.
    tenant.push_fault(Fault::RateLimited {
        retry_after: None,
        reset_in: Some(600),
    });
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((598..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(tenant.requests().len(), 2, "neither 429 was retried");
}

#[tokio::test]
async fn missing_grant_and_disabled_grant_type_are_502() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let token = fake.token("github-push-main");
    tenant.push_fault(Fault::Auth0Error("client_not_authorized_for_api"));
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" refused the token request (HTTP 403, access_denied); an operator must check that tokenmint's client has a grant for audience \"https://acme.eu.auth0.com/api/v2/\"",
    );
    let detail = app.last_audit().await.detail.expect("detail");
    assert!(
        detail.starts_with("HTTP 403, access_denied: Client is not authorized to access"),
        "{detail}"
    );

    tenant.push_fault(Fault::Auth0Error("grant_type_not_allowed"));
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" does not allow the client-credentials grant for tokenmint's client (HTTP 403, unauthorized_client); an operator must enable it",
    );
    assert_eq!(tenant.requests().len(), 2);
}

#[tokio::test]
async fn malformed_answers_are_502_and_never_handed_out() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let token = fake.token("github-push-main");
    let description = "target \"tenant-prod\" answered the token request in a form tokenmint cannot use; an operator must check the target's token endpoint";
    for (fault, detail) in [
        (Fault::NonJson, "HTTP 200 OK: the answer is not JSON"),
        (
            Fault::Json(json!({"token_type": "Bearer", "expires_in": 60})),
            "HTTP 200 OK: the answer has no access_token",
        ),
        (
            Fault::Json(
                json!({"access_token": "abc", "token_type": "Bearer", "expires_in": "soon"}),
            ),
            "HTTP 200 OK: expires_in \"soon\" is not a whole number of seconds",
        ),
        (
            Fault::Json(
                json!({"access_token": "abc", "token_type": "mac", "expires_in": 60, "scope": "read:clients"}),
            ),
            "HTTP 200 OK: token_type is \"mac\", not Bearer",
        ),
    ] {
        tenant.push_fault(fault);
        let answer = app.exchange(&token, "tenant-prod", &[]).await;
        assert_error(&answer, 502, "temporarily_unavailable", description);
        let record = app.last_audit().await;
        assert_eq!(record.reason, "upstream_malformed");
        assert_eq!(record.detail.as_deref(), Some(detail));
    }
    assert_eq!(
        tenant.requests().len(),
        4,
        "malformed answers are not retried"
    );
}

#[tokio::test]
async fn wider_scope_is_never_handed_out() {
    let mut setup = pkjwt();
    setup.scope_handling = ScopeHandling::Ignore;
    let (fake, tenant, app) = tenant_app(setup, "").await;
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" issued a token with more scopes than the policy grants (it did not narrow to the requested scope); the token was not handed out; an operator must give this target its own M2M application whose client grant has exactly the policy's scopes",
    );
    assert!(!answer.text.contains(&tenant.issued()[0].access_token));
    let record = app.last_audit().await;
    assert_eq!(record.outcome, Outcome::Error);
    assert_eq!(record.reason, "upstream_scope_wider");
    let withheld = sha256_hex(&tenant.issued()[0].access_token);
    assert_eq!(
        record.detail,
        Some(format!(
            "withheld token sha256 {withheld}; granted \"read:clients update:clients\", the token carries \"read:clients update:clients read:resource_servers\" (extra: read:resource_servers)"
        ))
    );
    assert_eq!(record.token_sha256, None);

    // A tenant that narrows gets the same CI token through.
    tenant.set_scope_handling(ScopeHandling::Narrow);
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn undeterminable_scope_is_never_handed_out() {
    let mut setup = pkjwt();
    setup.scope_handling = ScopeHandling::Omit;
    let (fake, _tenant, app) = tenant_app(setup, "").await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" did not say which scopes the token carries, so tokenmint cannot check it against the policy; the token was not handed out",
    );
    assert_eq!(app.last_audit().await.reason, "upstream_scope_unknown");
}

#[tokio::test]
async fn a_scope_stated_only_in_the_token_is_checked_and_returned() {
    let mut setup = pkjwt();
    setup.scope_handling = ScopeHandling::ClaimOnly;
    setup.grant_scopes = vec!["read:clients".to_owned(), "update:clients".to_owned()];
    let (fake, _tenant, app) = tenant_app(setup, "").await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["scope"], "read:clients update:clients");
}

#[tokio::test]
async fn long_lived_tenant_token_is_refused() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.set_expires_in(86_400);
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" issued a token living 86400s, longer than its max_ttl of 3600s; the token was not handed out; an operator must shorten the API's token lifetime in the tenant (APIs > the API > Settings > Maximum Access Token Lifetime) or raise max_ttl",
    );
    assert_eq!(app.last_audit().await.reason, "upstream_ttl_exceeded");
}

#[tokio::test]
async fn enforce_max_ttl_false_hands_out_long_lived_tokens() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "enforce_max_ttl = false\n").await;
    tenant.set_expires_in(86_400);
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["expires_in"], 86_400);
}

#[tokio::test]
async fn two_concurrent_requests_with_one_ci_token_reach_the_tenant_once() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::Hang(Duration::from_millis(400)));
    let token = fake.token("github-push-main");
    let (first, second) = tokio::join!(app.exchange(&token, "tenant-prod", &[]), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.exchange(&token, "tenant-prod", &[]).await
    });
    assert_eq!(first.status, 200, "{}", first.text);
    assert_error(
        &second,
        400,
        "invalid_grant",
        "the subject token is being exchanged by another request; retry",
    );
    assert_eq!(tenant.requests().len(), 1);
    let again = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &again,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
    assert_eq!(tenant.requests().len(), 1);
}

#[tokio::test]
async fn the_request_is_pending_on_record_while_the_tenant_is_called() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::Hang(Duration::from_millis(400)));
    let token = fake.token("github-push-main");
    let exchange = app.exchange(&token, "tenant-prod", &[]);
    let watch = async {
        loop {
            if !tenant.requests().is_empty() {
                return app.audit().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (answer, during) = tokio::join!(exchange, watch);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(during.len(), 1, "{during:?}");
    assert_eq!(during[0].outcome, Outcome::Pending);
    assert_eq!(during[0].reason, "pending");
    assert_eq!(during[0].policy.as_deref(), Some("deploy-tenant"));
    assert_eq!(during[0].token_sha256, None);
    // The request's latest state is its completion; the pending record stays beside it.
    let after = app.audit().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].outcome, Outcome::Allow);
    assert_eq!(after[0].request_id, during[0].request_id);
    let records = app.records().await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0], during[0], "a record is never rewritten");
}

#[tokio::test]
async fn a_cancelled_remote_request_completes_its_record_and_frees_the_token() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::Hang(Duration::from_millis(500)));
    let token = fake.token("github-push-main");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(150),
        app.exchange(&token, "tenant-prod", &[]),
    )
    .await;
    assert!(cancelled.is_err(), "the exchange was still running");
    let mut record = None;
    for _ in 0..100 {
        let records = app.audit().await;
        if records.iter().all(|r| r.outcome != Outcome::Pending) {
            record = records.into_iter().next();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = record.expect("the pending record was completed");
    assert_eq!(record.outcome, Outcome::Error);
    assert_eq!(record.reason, "cancelled");
    let retried = app.exchange(&token, "tenant-prod", &[]).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
}

#[tokio::test]
async fn reuse_tokens_hands_out_the_cached_token_within_half_its_life() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "reuse_tokens = true\n").await;
    let first = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    let second = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.body["access_token"], first.body["access_token"]);
    let remaining = second.body["expires_in"].as_u64().expect("expires_in");
    assert!((598..=600).contains(&remaining), "{remaining}");
    assert_eq!(tenant.issued().len(), 1);
    let records = app.audit().await;
    assert_eq!(records.len(), 2);
    assert!(!records[0].reused);
    assert!(records[1].reused);
    assert_eq!(records[1].token_sha256, records[0].token_sha256);
    assert_ne!(records[1].request_id, records[0].request_id);

    // Another scope is another token.
    let narrower = app
        .exchange(
            &fake.token("github-push-main"),
            "tenant-prod",
            &[("scope", "read:clients")],
        )
        .await;
    assert_eq!(narrower.status, 200, "{}", narrower.text);
    assert_ne!(narrower.body["access_token"], first.body["access_token"]);
    assert_eq!(tenant.issued().len(), 2);
}

#[tokio::test]
async fn a_reused_token_is_not_handed_out_past_half_its_life() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "reuse_tokens = true\n").await;
    tenant.set_expires_in(2);
    let first = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_ne!(second.body["access_token"], first.body["access_token"]);
    assert_eq!(tenant.issued().len(), 2);
}

#[tokio::test]
async fn without_reuse_every_exchange_gets_its_own_token() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    for _ in 0..2 {
        let answer = app
            .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    assert_eq!(tenant.issued().len(), 2);
}

#[tokio::test]
async fn a_denied_request_never_reaches_the_tenant() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let answer = app
        .exchange(
            &fake.token("github-workflow-dispatch-tag"),
            "tenant-prod",
            &[],
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert!(tenant.requests().is_empty());
    let record = app.last_audit().await;
    assert_eq!(record.outcome, Outcome::Deny);
}

#[tokio::test]
async fn the_audit_record_holds_only_the_token_hash() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200);
    let record = app.last_audit().await;
    let serialized = serde_json::to_string(&record).expect("json");
    assert!(!serialized.contains(&tenant.issued()[0].access_token));
    let value: Value = serde_json::from_str(&serialized).expect("json");
    assert_eq!(value["reused"], false);
}

/// An `oauth2` target: the assertion's `aud` defaults to the token endpoint, and the
/// audience goes in the configured parameter (or none).
#[tokio::test]
async fn oauth2_targets_use_the_token_endpoint_as_assertion_audience() {
    for param in ["resource", "none"] {
        let fake = FakeIssuer::start(Shape::Github).await;
        let mut setup = pkjwt();
        setup.audience = "api://deploy".to_owned();
        setup.audience_param = param;
        setup.assertion_audience = AssertionAudience::TokenEndpoint;
        let tenant = FakeTenant::start(setup).await;
        let app = AppBuilder::new()
            .github("github", &fake)
            .config(&format!(
                "[targets.tenant-prod]\nkind = \"oauth2\"\ntoken_endpoint = \"{}\"\naudience = \"api://deploy\"\naudience_param = \"{param}\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{}\"\n",
                tenant.token_url(),
                key_path("auth0-client.pem")
            ))
            .policy("deploy-tenant.yaml", TENANT_POLICY)
            .spawn()
            .await;
        let answer = app
            .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
            .await;
        assert_eq!(answer.status, 200, "{param}: {}", answer.text);
        assert_tenant_accepted_all(&tenant);
        let sent = &tenant.requests()[0];
        assert_eq!(
            sent.assertion_claims.as_ref().expect("claims")["aud"],
            tenant.token_url()
        );
        assert_eq!(sent.field("audience"), None);
        let expected_resource = (param == "resource").then_some("api://deploy");
        assert_eq!(sent.field("resource"), expected_resource);
    }
}

/// One `reqwest::Client` per target: sequential exchanges share its pooled connection.
#[tokio::test]
async fn connections_to_the_tenant_are_reused() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    for _ in 0..3 {
        let answer = app
            .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    assert_tenant_accepted_all(&tenant);
    let connections: Vec<usize> = tenant.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 3);
    assert_eq!(
        connections, [connections[0]; 3],
        "every exchange reused the first connection"
    );
}

/// A pooled connection the tenant cuts is not reused: the retry opens a new one, which the
/// next exchange then reuses.
#[tokio::test]
async fn a_dropped_connection_is_replaced() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let first = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    tenant.push_fault(Fault::Drop);
    let second = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    let third = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(third.status, 200, "{}", third.text);

    assert_tenant_accepted_all(&tenant);
    let connections: Vec<usize> = tenant.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 4, "the dropped attempt was retried once");
    let (pooled, replacement) = (connections[0], connections[2]);
    assert_eq!(
        connections[1], pooled,
        "the cut attempt came on the pooled connection"
    );
    assert_ne!(replacement, pooled, "the retry came on a new connection");
    assert_eq!(
        connections[3], replacement,
        "the new connection is pooled in turn"
    );
    assert_eq!(tenant.issued().len(), 3);
}

/// A JWT-shaped token with `claims` (unsigned: tokenmint never verifies a tenant's token,
/// it only reads what the token says about itself).
fn jwt_with(claims: Value) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(json!({"alg": "RS256", "typ": "JWT"})),
        b64(claims)
    )
}

#[tokio::test]
async fn a_token_claiming_more_than_its_answer_is_refused() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let token = fake.token("github-push-main");
    // The answer echoes the requested scope; the token itself carries more, or lives longer.
    let wide = jwt_with(
        json!({"scope": "read:clients update:clients delete:clients", "exp": now() + 600}),
    );
    let long =
        jwt_with(json!({"scope": "read:clients update:clients", "exp": now() + 30 * 86_400}));
    for (access_token, reason) in [
        (wide, "upstream_scope_wider"),
        (long, "upstream_ttl_exceeded"),
    ] {
        tenant.push_fault(Fault::Json(json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": 600,
            "scope": "read:clients update:clients",
        })));
        let answer = app.exchange(&token, "tenant-prod", &[]).await;
        assert_eq!(answer.status, 502, "{}", answer.text);
        assert!(!answer.text.contains(&access_token));
        let record = app.last_audit().await;
        assert_eq!(record.reason, reason);
        assert_eq!(record.token_sha256, None);
        let detail = record.detail.expect("detail");
        assert!(
            detail.starts_with(&format!(
                "withheld token sha256 {};",
                sha256_hex(&access_token)
            )),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn absurd_and_empty_answers_fail_closed_without_panicking() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "enforce_max_ttl = false\n").await;
    let token = fake.token("github-push-main");
    let cases = [
        (
            json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": u64::MAX, "scope": "read:clients"}),
            "upstream_malformed",
        ),
        (
            json!({"access_token": jwt_with(json!({"exp": i64::MIN})), "token_type": "Bearer", "expires_in": 60, "scope": "read:clients"}),
            "upstream_malformed",
        ),
        (
            json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 60, "scope": ""}),
            "upstream_scope_empty",
        ),
    ];
    for (body, reason) in cases {
        tenant.push_fault(Fault::Json(body));
        let answer = app.exchange(&token, "tenant-prod", &[]).await;
        assert_eq!(answer.status, 502, "{}", answer.text);
        assert_eq!(app.last_audit().await.reason, reason);
    }
    // None of them used the CI token up.
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn a_rate_limit_reset_within_the_budget_is_waited_out() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::RateLimited {
        retry_after: None,
        reset_in: Some(1),
    });
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(tenant.requests().len(), 2);
}

#[tokio::test]
async fn a_huge_retry_after_is_capped_at_an_hour() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::RateLimited {
        retry_after: Some(u64::MAX),
        reset_in: None,
    });
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        503,
        "temporarily_unavailable",
        "target \"tenant-prod\" is rate-limiting tokenmint; retry after 3600s",
    );
    assert_eq!(answer.headers["retry-after"], "3600");
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    tenant.push_fault(Fault::Status {
        status: 200,
        body: format!("{{\"padding\":\"{}\"}}", "x".repeat(70 * 1024)),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
    });
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    let record = app.last_audit().await;
    assert_eq!(record.reason, "upstream_malformed");
    assert_eq!(
        record.detail.as_deref(),
        Some("HTTP 200 OK: answer larger than 65536 bytes")
    );
}

#[tokio::test]
async fn requested_jwt_type_is_honoured_only_for_jwt_tokens() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let jwt_type = [(
        "requested_token_type",
        "urn:ietf:params:oauth:token-type:jwt",
    )];
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &jwt_type)
        .await;
    assert_eq!(
        answer.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    tenant.push_fault(Fault::Json(json!({
        "access_token": "opaque-token", "token_type": "Bearer", "expires_in": 60,
        "scope": "read:clients update:clients",
    })));
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &jwt_type)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
}

/// A token that was withheld (here: the CI token could not be marked used) is never
/// offered for reuse: a later request gets a token of its own.
#[tokio::test]
async fn a_withheld_token_is_never_reused() {
    let store = std::sync::Arc::new(FaultyStore::new());
    store.fail(Step::FinishHandOut);
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(pkjwt()).await;
    let app = tenant_builder(&fake, &tenant, "reuse_tokens = true\n")
        .store(store.clone())
        .spawn()
        .await;
    let withheld = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(withheld.status, 503, "{}", withheld.text);
    let record = app.last_audit().await;
    assert_eq!(record.reason, "store_unavailable");
    assert_eq!(record.token_sha256, None);
    // The tenant issued it and cannot revoke it: its hash stays on record.
    assert_eq!(
        record.detail,
        Some(format!(
            "withheld token sha256 {}; store failure: disk full",
            sha256_hex(&tenant.issued()[0].access_token)
        ))
    );

    store.heal();
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let issued = tenant.issued();
    assert_eq!(issued.len(), 2, "the second request got a fresh token");
    assert_eq!(answer.body["access_token"], issued[1].access_token);
    assert!(!app.last_audit().await.reused);
}

/// A connect timeout is retried like any network error; only the end of the budget is final.
#[tokio::test]
async fn a_connect_timeout_is_retried_not_final() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so connecting
    // times out. Nothing is ever accepted.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut filler = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            filler.push(stream);
        }
    }
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = AppBuilder::new()
        .github("github", &fake)
        .config(&format!(
            "[targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nbase_url = \"http://{addr}\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{}\"\nconnect_timeout = \"300ms\"\ntimeout = \"5s\"\n",
            key_path("auth0-client.pem")
        ))
        .policy("deploy-tenant.yaml", TENANT_POLICY)
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" could not be reached; retry later",
    );
    let record = app.last_audit().await;
    assert_eq!(record.reason, "upstream_unreachable");
    let detail = record.detail.expect("detail");
    assert!(detail.contains("client error (Connect)"), "{detail}");
    let metrics = app.service.state.metrics.render();
    assert!(
        metrics.contains(
            "tokenmint_upstream_requests_total{target=\"tenant-prod\",outcome=\"network_error\"} 3\n"
        ),
        "{metrics}"
    );
    drop(filler);
    drop(listener);
}

/// A tenant ignoring the narrowing with its whole Management API grant: the detail is cut
/// to the recorded size, and the withheld token's hash survives the cut.
#[tokio::test]
async fn the_withheld_hash_survives_a_long_scope_list() {
    let mut setup = pkjwt();
    setup.scope_handling = ScopeHandling::Ignore;
    setup.grant_scopes = (0..82)
        .map(|i| format!("update:management_api_resource_{i:02}"))
        .chain(["read:clients".to_owned(), "update:clients".to_owned()])
        .collect();
    let (fake, tenant, app) = tenant_app(setup, "").await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    let detail = app.last_audit().await.detail.expect("detail");
    let withheld = sha256_hex(&tenant.issued()[0].access_token);
    assert!(
        detail.starts_with(&format!("withheld token sha256 {withheld};")),
        "{detail}"
    );
    assert!(detail.len() < 1024, "{}", detail.len());
}

/// The token's own lifetime is `exp - iat`: a tenant clock a second ahead of ours does
/// not make a token of exactly `max_ttl` look longer.
#[tokio::test]
async fn a_tenant_clock_ahead_does_not_stretch_the_lifetime() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "max_ttl = \"10m\"\n").await;
    let ahead = now() + 5;
    tenant.push_fault(Fault::Json(json!({
        "access_token": jwt_with(json!({"scope": "read:clients update:clients", "iat": ahead, "exp": ahead + 600})),
        "token_type": "Bearer", "expires_in": 600, "scope": "read:clients update:clients",
    })));
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["expires_in"], 600);
}

/// Security: whatever a token endpoint (or anything in front of it) says goes to the
/// log and the audit record, so our credentials are scrubbed from it: an endpoint that
/// echoes the request cannot put the client secret or the assertion there, in any form.
#[tokio::test]
async fn upstream_text_never_carries_our_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "s3cr3t+value/with:odd%chars~&more=";
    let secret_config = |method: &str| secret_file_credential(dir.path(), secret, method);
    let form_prefix = format!("grant_type=client_credentials&client_id={CLIENT_ID}");
    let form_suffix = "audience=https%3A%2F%2Facme.eu.auth0.com%2Fapi%2Fv2%2F&scope=read%3Aclients+update%3Aclients";
    for (setup, extra, expected) in [
        (
            TenantSetup::secret_post(CLIENT_ID, secret),
            secret_config("client_secret_post"),
            format!(
                "HTTP 401, invalid_client: rejected: {form_prefix}&client_secret=[REDACTED]&{form_suffix}; authorization: none"
            ),
        ),
        (
            TenantSetup::secret_basic(CLIENT_ID, secret),
            secret_config("client_secret_basic"),
            format!(
                "HTTP 401, invalid_client: rejected: grant_type=client_credentials&{form_suffix}; authorization: [REDACTED]"
            ),
        ),
        (
            pkjwt(),
            String::new(),
            format!(
                "HTTP 401, invalid_client: rejected: {form_prefix}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=[REDACTED]&{form_suffix}; authorization: none"
            ),
        ),
    ] {
        let (fake, tenant, app) = tenant_app(setup, &extra).await;
        tenant.push_fault(Fault::Echo);
        let answer = app
            .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
            .await;
        assert_eq!(answer.status, 502, "{}", answer.text);
        let record = app.last_audit().await;
        assert_eq!(record.reason, "upstream_unauthorized");
        let detail = record.detail.expect("detail");
        // The endpoint's text is cut at 300 bytes (after scrubbing): what survives is
        // exactly the start of what is expected.
        let cut = detail
            .strip_suffix('…')
            .filter(|kept| expected.starts_with(kept));
        assert!(
            detail == expected || cut.is_some(),
            "\n got {detail}\nwant {expected}"
        );
        let sent = &tenant.requests()[0];
        for credential in [
            Some(secret.to_owned()),
            sent.field("client_assertion").map(str::to_owned),
            sent.authorization.clone(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(!detail.contains(&credential), "{detail}");
            assert!(!answer.text.contains(&credential), "{}", answer.text);
        }
    }
}

/// Security: an endpoint's error code reaches the caller only when it is a known one,
/// and words of a successful answer quoted in a refusal are scrubbed too: an echoed
/// secret shaped like an error code, or smuggled into the scope, reaches neither the
/// caller nor the record.
#[tokio::test]
async fn a_secret_in_an_error_code_or_a_scope_reaches_no_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Shaped like an error code (and like an Auth0 client secret).
    let secret = "AbCdEf0123456789-secret_value.xyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123";
    let extra = secret_file_credential(dir.path(), secret, "client_secret_post");
    let (fake, tenant, app) = tenant_app(TenantSetup::secret_post(CLIENT_ID, secret), &extra).await;

    tenant.push_fault(Fault::Status {
        status: 400,
        body: json!({"error": secret, "error_description": "x"}).to_string(),
        headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
    });
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_error(
        &answer,
        502,
        "temporarily_unavailable",
        "target \"tenant-prod\" rejected the token request (HTTP 400); an operator must check the target's configuration",
    );
    assert_eq!(
        app.last_audit().await.detail.as_deref(),
        Some("HTTP 400, [REDACTED]: x")
    );

    tenant.push_fault(Fault::Json(json!({
        "access_token": "opaque-token", "token_type": "Bearer", "expires_in": 60,
        "scope": format!("read:clients {secret}"),
    })));
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert!(!answer.text.contains(secret), "{}", answer.text);
    let record = app.last_audit().await;
    assert_eq!(record.reason, "upstream_scope_wider");
    let detail = record.detail.expect("detail");
    assert!(
        detail.ends_with(
            "; granted \"read:clients update:clients\", the token carries \"read:clients [REDACTED]\" (extra: [REDACTED])"
        ),
        "{detail}"
    );
}
