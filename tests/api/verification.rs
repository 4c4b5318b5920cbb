//! Verification of CI tokens: algorithms, keys, signature, registered claims, and the attacks on them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::exchange::github_app;
use crate::helpers::*;

async fn assert_invalid_grant(app: &TestApp, token: &str, description: &str) {
    let answer = app.exchange(token, "internal-api", &[]).await;
    assert_error(&answer, 400, "invalid_grant", description);
}

#[tokio::test]
async fn alg_none_is_never_accepted() {
    let (fake, app) = github_app().await;
    let claims = Value::Object(fake.claims("github-push-main"));
    let token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": fake.kid}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_invalid_grant(
        &app,
        &token,
        "the subject token is malformed: it is not a compact JWS (header.payload.signature)",
    )
    .await;
    let with_junk_signature =
        unsigned_with(&json!({"alg": "none", "kid": fake.kid}), &claims, b"x");
    assert_invalid_grant(
        &app,
        &with_junk_signature,
        "the subject token algorithm \"none\" is never accepted",
    )
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_rejected() {
    use aws_lc_rs::hmac;
    let (fake, app) = github_app().await;
    let claims = Value::Object(fake.claims("github-push-main"));
    let header = json!({"alg": "HS256", "kid": fake.kid, "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // The classic confusion attack: the public key (as published) used as the HMAC secret.
    let secret = fake.key.public_jwk().to_string();
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        signing_input.as_bytes(),
    );
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_invalid_grant(
        &app,
        &token,
        "the subject token algorithm \"HS256\" is never accepted",
    )
    .await;
}

#[tokio::test]
async fn a_token_without_kid_is_rejected() {
    let (fake, app) = github_app().await;
    let claims = Value::Object(fake.claims("github-push-main"));
    let token = sign_with_header(&fake.key, &json!({"alg": "RS256", "typ": "JWT"}), &claims);
    assert_invalid_grant(&app, &token, "the subject token header has no \"kid\"").await;
}

#[tokio::test]
async fn an_algorithm_the_issuer_does_not_allow_is_rejected() {
    let (fake, app) = github_app().await;
    let claims = Value::Object(fake.claims("github-push-main"));
    let token = unsigned_with(&json!({"alg": "ES256", "kid": fake.kid}), &claims, b"sig");
    assert_invalid_grant(
        &app,
        &token,
        "the subject token algorithm \"ES256\" is not allowed for issuer \"github\"",
    )
    .await;
}

#[tokio::test]
async fn embedded_and_linked_keys_in_the_header_are_ignored() {
    let (fake, app) = github_app().await;
    let attacker = test_key("ci-issuer-b");
    let claims = Value::Object(fake.claims("github-push-main"));
    let header = json!({
        "alg": "RS256",
        "kid": fake.kid,
        "jwk": attacker.public_jwk(),
        "jku": "http://127.0.0.1:9/attacker-jwks",
        "x5u": "http://127.0.0.1:9/cert",
    });
    let token = sign_with_header(&attacker, &header, &claims);
    assert_invalid_grant(&app, &token, "the subject token signature is invalid").await;
}

#[tokio::test]
async fn a_tampered_payload_fails_the_signature() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    let mut claims = fake.claims("github-push-main");
    claims.insert("ref".into(), json!("refs/heads/main"));
    claims.insert("repository_id".into(), json!("89012345"));
    let forged_payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_invalid_grant(&app, &forged, "the subject token signature is invalid").await;
}

#[tokio::test]
async fn duplicate_claim_names_are_rejected() {
    let (fake, app) = github_app().await;
    let claims = fake.claims("github-push-main");
    let mut payload = Value::Object(claims).to_string();
    payload.pop();
    payload.push_str(r#","repository_id":"1"}"#);
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": fake.kid}).to_string());
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(&payload));
    let signature = fake.key.sign_raw(signing_input.as_bytes()).expect("sign");
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_invalid_grant(
        &app,
        &token,
        "the subject token has the claim \"repository_id\" more than once",
    )
    .await;
}

#[tokio::test]
async fn registered_claims_are_enforced() {
    let (fake, app) = github_app().await;
    let now = now();
    let with = |changes: &[(&str, Value)]| {
        let mut claims = fake.claims("github-push-main");
        for (name, value) in changes {
            if value.is_null() {
                claims.remove(*name);
            } else {
                claims.insert((*name).to_owned(), value.clone());
            }
        }
        fake.sign(&claims)
    };
    assert_invalid_grant(
        &app,
        &with(&[("aud", json!("https://github.com/acme"))]),
        &format!("the subject token audience \"https://github.com/acme\" does not include \"{PUBLIC_URL}\""),
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("aud", json!([PUBLIC_URL, "https://other.example"]))]),
        &format!("the subject token names audiences other than \"{PUBLIC_URL}\": [\"{PUBLIC_URL}\",\"https://other.example\"]"),
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("exp", Value::Null)]),
        "the subject token has no valid \"exp\" claim",
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("iat", Value::Null)]),
        "the subject token has no valid \"iat\" claim",
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("exp", json!("soon"))]),
        "the subject token has no valid \"exp\" claim",
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("iat", json!(now - 400)), ("exp", json!(now - 61))]),
        &format!("the subject token expired at {} (leeway 1m)", now - 61),
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("nbf", json!(now + 120)), ("exp", json!(now + 300))]),
        &format!(
            "the subject token is not valid before {} (leeway 1m)",
            now + 120
        ),
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("iat", json!(now + 120)), ("exp", json!(now + 300))]),
        &format!(
            "the subject token was issued in the future (iat {}, leeway 1m)",
            now + 120
        ),
    )
    .await;
    assert_invalid_grant(
        &app,
        &with(&[("iat", json!(now)), ("exp", json!(now + 7 * 3600))]),
        "the subject token lives 25200s (exp - iat), longer than the 6h this issuer allows",
    )
    .await;
}

#[tokio::test]
async fn within_the_leeway_is_still_valid() {
    let (fake, app) = github_app().await;
    let now = now();
    let mut claims = fake.claims("github-push-main");
    claims.insert("iat".into(), json!(now - 330));
    claims.insert("exp".into(), json!(now - 30));
    claims.insert("nbf".into(), json!(now + 30));
    let answer = app.exchange(&fake.sign(&claims), "internal-api", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn an_unknown_issuer_is_rejected_without_being_contacted() {
    let (fake, app) = github_app().await;
    let stranger = FakeIssuer::start(Shape::Github).await;
    let mut claims = fake.claims("github-push-main");
    claims.insert("iss".into(), json!(stranger.issuer));
    let token = stranger.sign(&claims);
    assert_invalid_grant(
        &app,
        &token,
        &format!(
            "the subject token issuer \"{}\" is not trusted here",
            stranger.issuer
        ),
    )
    .await;
    assert_eq!(
        stranger.hits(),
        0,
        "an unconfigured issuer is never fetched from"
    );
    let record = app.last_audit().await;
    assert_eq!(record.reason, "unknown_issuer");
}

#[tokio::test]
async fn an_unknown_kid_is_rejected_after_one_refetch() {
    let (fake, app) = github_app().await;
    // Let the first fetch (discovery + JWKS) happen.
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );
    let before = fake.hits();
    let token = fake.sign_as(&fake.key, "not-published", &fake.claims("github-push-main"));
    assert_invalid_grant(
        &app,
        &token,
        "no key with kid \"not-published\" is published by issuer \"github\"",
    )
    .await;
    assert_eq!(fake.hits() - before, 1, "one JWKS refetch, no rediscovery");
}

#[tokio::test]
async fn unknown_kids_within_the_cooldown_do_not_reach_the_issuer() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = crate::exchange::deploy_builder(&fake, "jwks_refetch_cooldown = \"1h\"")
        .spawn()
        .await;
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );
    let before = fake.hits();
    for n in 0..5 {
        let token = fake.sign_as(
            &fake.key,
            &format!("forged-{n}"),
            &fake.claims("github-push-main"),
        );
        let answer = app.exchange(&token, "internal-api", &[]).await;
        assert_eq!(answer.status, 400, "{}", answer.text);
    }
    assert!(
        fake.hits() - before <= 1,
        "at most one refetch within the cooldown, got {}",
        fake.hits() - before
    );
}
