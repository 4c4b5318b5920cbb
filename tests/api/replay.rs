//! What one CI token buys: one access token; refusals leave it unused.

use crate::exchange::github_app;
use crate::helpers::*;
use tokenmint::exchange::{REPLAY_MARGIN, replay_keep_until};
use tokenmint::store::ReplayKey;

#[tokio::test]
async fn a_ci_token_buys_exactly_one_access_token() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    assert_eq!(app.exchange(&token, "internal-api", &[]).await.status, 200);
    let again = app.exchange(&token, "internal-api", &[]).await;
    assert_error(
        &again,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
    assert_eq!(app.last_audit().await.reason, "token_replayed");
}

#[tokio::test]
async fn a_denial_does_not_use_the_token_up() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    let too_much = app
        .exchange(&token, "internal-api", &[("scope", "admin")])
        .await;
    assert_eq!(too_much.status, 400, "{}", too_much.text);
    let unknown_target = app.exchange(&token, "nope", &[]).await;
    assert_eq!(unknown_target.status, 400, "{}", unknown_target.text);
    let retried = app
        .exchange(&token, "internal-api", &[("scope", "read")])
        .await;
    assert_eq!(retried.status, 200, "{}", retried.text);
}

#[tokio::test]
async fn tokens_without_jti_are_remembered_by_their_signing_input() {
    let (fake, app) = github_app().await;
    let mut claims = fake.claims("github-push-main");
    claims.remove("jti");
    let token = fake.sign(&claims);
    assert_eq!(app.exchange(&token, "internal-api", &[]).await.status, 200);
    let again = app.exchange(&token, "internal-api", &[]).await;
    assert_error(
        &again,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
}

#[tokio::test]
async fn replay_allow_lets_a_token_be_exchanged_again() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = AppBuilder::new()
        .issuer("github", "github", &fake, "replay = \"allow\"")
        .config(crate::exchange::LOCAL_TARGET)
        .policy("deploy-api.yaml", crate::exchange::DEPLOY_POLICY)
        .spawn()
        .await;
    let token = fake.token("github-push-main");
    assert_eq!(app.exchange(&token, "internal-api", &[]).await.status, 200);
    assert_eq!(app.exchange(&token, "internal-api", &[]).await.status, 200);
}

/// Security invariant: the replay record outlives the CI token's `exp` plus the issuer's
/// leeway plus 60 s, so a token can never be replayed while any check would still accept it.
#[tokio::test]
async fn replay_record_outlives_token_expiry_plus_leeway() {
    let (fake, app) = github_app().await;
    let claims = fake.claims("github-push-main");
    let exp = claims["exp"].as_i64().expect("exp");
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    assert_eq!(
        app.exchange(&fake.sign(&claims), "internal-api", &[])
            .await
            .status,
        200
    );
    let kept_until = app
        .service
        .state
        .exchanger
        .store
        .replay_expiry(&ReplayKey {
            issuer: "github".to_owned(),
            id: format!("jti:{jti}"),
        })
        .await
        .expect("store")
        .expect("the key is remembered");
    assert_eq!(kept_until.unix_timestamp(), exp + 60 + 60);
    assert_eq!(REPLAY_MARGIN.as_secs(), 60);
    assert_eq!(
        replay_keep_until(exp, std::time::Duration::from_secs(60)),
        kept_until
    );
}

#[tokio::test]
async fn two_concurrent_requests_with_one_token_get_one_access_token() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    let (a, b) = tokio::join!(
        app.exchange(&token, "internal-api", &[]),
        app.exchange(&token, "internal-api", &[])
    );
    let statuses = [a.status.as_u16(), b.status.as_u16()];
    assert!(
        statuses.contains(&200) && statuses.contains(&400),
        "{statuses:?}"
    );
}
