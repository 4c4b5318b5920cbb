//! Successful exchanges: the RFC 8693 response, the local token's claims, and its audit record.

use serde_json::{Value, json};

use crate::helpers::*;

pub const LOCAL_TARGET: &str = r#"
[targets.internal-api]
kind = "local"
audience = "https://api.internal.example"
max_ttl = "15m"
"#;

pub const DEPLOY_POLICY: &str = r#"
name: deploy-api
description: main of acme/identity-config may deploy
issuer: github
target: internal-api
scopes: [deploy, read]
claims:
  repository_id: "89012345"
  ref: refs/heads/main
"#;

/// The standard set-up: issuer `github` served by `fake` (plus `issuer_extra` TOML
/// lines), target `internal-api`, policy `deploy-api`.
pub fn deploy_builder(fake: &FakeIssuer, issuer_extra: &str) -> AppBuilder {
    AppBuilder::new()
        .issuer("github", "github", fake, issuer_extra)
        .config(LOCAL_TARGET)
        .policy("deploy-api.yaml", DEPLOY_POLICY)
}

pub async fn github_app() -> (FakeIssuer, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = deploy_builder(&fake, "").spawn().await;
    (fake, app)
}

/// Decodes a JWT's header and payload without checking it (tests only).
#[expect(
    clippy::disallowed_methods,
    reason = "tests inspect the tokens the service hands out"
)]
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let mut decode = || {
        let segment = parts.next().expect("segment");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("json")
    };
    (decode(), decode())
}

#[tokio::test]
async fn github_push_on_main_gets_a_local_token() {
    let (fake, app) = github_app().await;
    let claims = fake.claims("github-push-main");
    let answer = app.exchange(&fake.sign(&claims), "internal-api", &[]).await;

    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.headers["cache-control"], "no-store");
    let request_id = answer.body["request_id"].as_str().expect("request_id");
    let access_token = answer.body["access_token"].as_str().expect("access_token");
    assert_eq!(
        answer.body,
        json!({
            "access_token": access_token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 900,
            "scope": "deploy read",
            "target": "internal-api",
            "policy": "deploy-api",
            "request_id": request_id,
        })
    );

    let (header, payload) = jwt_parts(access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let iat = payload["iat"].as_i64().expect("iat");
    let jti = payload["jti"].as_str().expect("jti").to_owned();
    assert_eq!(
        payload,
        json!({
            "iss": PUBLIC_URL,
            "sub": "github:repo:acme/identity-config:ref:refs/heads/main",
            "aud": "https://api.internal.example",
            "client_id": "deploy-api",
            "scope": "deploy read",
            "jti": jti,
            "iat": iat,
            "exp": iat + 900,
            "ci": {
                "issuer": fake.issuer,
                "repository": "acme/identity-config",
                "repository_id": "89012345",
                "repository_owner_id": "1234567",
                "ref": "refs/heads/main",
                "sha": "363a0c94e511346808fe5f3d96a84939e49450a3",
                "workflow_ref": "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main",
                "job_workflow_ref": "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main",
                "run_id": "29223225591",
                "run_attempt": "1",
                "actor": "alice-acme",
                "event_name": "push",
            },
        })
    );

    let record = app.last_audit().await;
    assert_eq!(record.request_id, request_id);
    assert_eq!(record.outcome, tokenmint::trust::audit::Outcome::Allow);
    assert_eq!(record.reason, "allowed");
    assert_eq!(record.policy.as_deref(), Some("deploy-api"));
    assert_eq!(record.target.as_deref(), Some("internal-api"));
    assert_eq!(record.scope.as_deref(), Some("deploy read"));
    assert_eq!(record.repository.as_deref(), Some("acme/identity-config"));
    assert_eq!(record.repository_id.as_deref(), Some("89012345"));
    assert_eq!(record.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(record.run_id.as_deref(), Some("29223225591"));
    assert_eq!(record.token_jti.as_deref(), Some(jti.as_str()));
    assert_eq!(
        record.token_sha256.as_deref(),
        Some(tokenmint::trust::audit::token_sha256(access_token).as_str())
    );
    assert_eq!(
        record.expires_at.map(|t| t.unix_timestamp()),
        Some(iat + 900)
    );
    let serialized = serde_json::to_string(&app.audit().await).expect("json");
    assert!(
        !serialized.contains(access_token),
        "the audit trail never holds a token"
    );
}

#[tokio::test]
async fn the_local_token_verifies_with_the_published_jwks() {
    let (fake, app) = github_app().await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    let access_token = answer.body["access_token"].as_str().expect("token");
    let (header, _) = jwt_parts(access_token);

    let discovery = app.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.body["issuer"], PUBLIC_URL);
    assert_eq!(
        discovery.body["jwks_uri"],
        format!("{PUBLIC_URL}/.well-known/jwks.json")
    );
    assert_eq!(
        discovery.body["token_endpoint"],
        format!("{PUBLIC_URL}/token")
    );
    assert_eq!(
        discovery.body["grant_types_supported"],
        json!(["urn:ietf:params:oauth:grant-type:token-exchange"])
    );

    let jwks = app.get("/.well-known/jwks.json").await;
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "current and next ES256 keys are published");
    let jwk_value = keys
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the signing key is published")
        .clone();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_value).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://api.internal.example"]);
    validation.set_issuer(&[PUBLIC_URL]);
    let decoded = jsonwebtoken::decode::<Value>(access_token, &key, &validation).expect("verifies");
    assert_eq!(decoded.claims["client_id"], "deploy-api");
}

#[tokio::test]
async fn json_bodies_audience_urls_and_jwt_token_type_are_accepted() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    let body = json!({
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "audience": "https://api.internal.example",
        "scope": "read",
        "requested_token_type": "urn:ietf:params:oauth:token-type:jwt",
    });
    let answer = app
        .request(
            axum::http::Request::post("/token")
                .header("content-type", "application/json; charset=utf-8")
                .body(axum::body::Body::from(body.to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["scope"], "read");
    assert_eq!(answer.body["target"], "internal-api");
    assert_eq!(
        answer.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    let (_, payload) = jwt_parts(answer.body["access_token"].as_str().expect("token"));
    assert_eq!(payload["scope"], "read");
}

#[tokio::test]
async fn gitlab_tokens_with_an_audience_array_are_accepted_when_not_strict() {
    let fake = FakeIssuer::start(Shape::Gitlab).await;
    let app = AppBuilder::new()
        .issuer(
            "gitlab",
            "gitlab",
            &fake,
            "strict_audience = false\nmax_token_lifetime = \"2h\"",
        )
        .config(LOCAL_TARGET)
        .policy(
            "gitlab-deploy.yaml",
            r#"
issuer: gitlab
target: internal-api
scopes: [deploy]
claims:
  project_id: "78213456"
  ref_protected: "true"
"#,
        )
        .spawn()
        .await;
    let mut claims = fake.claims("gitlab-multi-audience");
    claims.insert(
        "aud".into(),
        json!([PUBLIC_URL, "https://vault.acme.example"]),
    );
    let answer = app.exchange(&fake.sign(&claims), "internal-api", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["policy"], "gitlab-deploy");
    let record = app.last_audit().await;
    assert_eq!(record.repository.as_deref(), Some("acme/identity-config"));
    assert_eq!(record.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(record.project_id.as_deref(), Some("78213456"));
}

#[tokio::test]
async fn the_enterprise_slug_issuer_uses_the_root_jwks_from_discovery() {
    let fake = FakeIssuer::start(Shape::GithubEnterpriseSlug).await;
    let app = AppBuilder::new()
        .github("github-acme", &fake)
        .config(LOCAL_TARGET)
        .policy(
            "deploy.yaml",
            &DEPLOY_POLICY.replace("issuer: github", "issuer: github-acme"),
        )
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn hcp_terraform_runs_bind_on_their_workspace_id() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = AppBuilder::new()
        .issuer("terraform", "terraform", &fake, "")
        .config(LOCAL_TARGET)
        .policy(
            "tf-apply.yaml",
            r#"
issuer: terraform
target: internal-api
scopes: [deploy]
claims:
  terraform_workspace_id: ws-neKNifJ1AS9WcLP7
  terraform_run_phase: [plan, apply]
"#,
        )
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("terraform-plan"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let record = app.last_audit().await;
    assert_eq!(
        record.repository.as_deref(),
        Some("organization:acme:project:Identity:workspace:identity-config-prod")
    );
}
