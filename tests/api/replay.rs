//! What one CI token buys: one access token; refusals leave it unused.

use crate::exchange::github_app;
use crate::helpers::*;
use tokenmint::trust::exchange::{REPLAY_MARGIN, replay_keep_until};
use tokenmint::trust::store::ReplayKey;

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
    assert_error(
        &too_much,
        400,
        "invalid_scope",
        "the requested scope exceeds every matching policy (\"deploy-api\")",
    );
    let unknown_target = app.exchange(&token, "nope", &[]).await;
    assert_error(&unknown_target, 400, "invalid_target", "no target \"nope\"");
    let retried = app
        .exchange(&token, "internal-api", &[("scope", "read")])
        .await;
    assert_eq!(retried.status, 200, "{}", retried.text);
}

#[tokio::test]
async fn an_access_denied_answer_does_not_use_the_token_up() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = AppBuilder::new()
        .github("github", &fake)
        .config(crate::exchange::LOCAL_TARGET)
        .policy(
            "deploy-api.yaml",
            &crate::exchange::DEPLOY_POLICY
                .replace("ref: refs/heads/main", "environment: production"),
        )
        .spawn()
        .await;
    let token = fake.token("github-push-main");
    let denied = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    // The operator fixes the policy; the job retries with the same CI token.
    std::fs::write(
        app.policies_dir.join("deploy-api.yaml"),
        crate::exchange::DEPLOY_POLICY,
    )
    .expect("write");
    app.service.reloader.as_ref().expect("reloader").reload();
    let retried = app.exchange(&token, "internal-api", &[]).await;
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
    let app = crate::exchange::deploy_builder(&fake, "replay = \"allow\"")
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
        .replay_record(
            &ReplayKey {
                issuer: "github".to_owned(),
                id: format!("jti:{jti}"),
            },
            time::OffsetDateTime::now_utc(),
        )
        .await
        .expect("store")
        .expect("the key is remembered");
    assert!(kept_until.used);
    let kept_until = kept_until.keep_until;
    assert_eq!(kept_until.unix_timestamp(), exp + 60 + 60);
    assert_eq!(REPLAY_MARGIN.as_secs(), 60);
    assert_eq!(
        replay_keep_until(exp, std::time::Duration::from_secs(60)),
        kept_until
    );
}

async fn slow_app(delay_ms: u64) -> (FakeIssuer, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = crate::exchange::deploy_builder(&fake, "")
        .store(std::sync::Arc::new(FaultyStore::slow(
            std::time::Duration::from_millis(delay_ms),
        )))
        .spawn()
        .await;
    (fake, app)
}

#[tokio::test]
async fn two_concurrent_requests_with_one_token_get_one_access_token() {
    let (fake, app) = slow_app(100).await;
    let token = fake.token("github-push-main");
    let (a, b) = tokio::join!(
        app.exchange(&token, "internal-api", &[]),
        app.exchange(&token, "internal-api", &[])
    );
    let (winner, loser) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!(winner.status, 200, "{}", winner.text);
    assert_error(
        &loser,
        400,
        "invalid_grant",
        "the subject token is being exchanged by another request; retry",
    );
    let again = app.exchange(&token, "internal-api", &[]).await;
    assert_error(
        &again,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
}

#[tokio::test]
async fn a_cancelled_request_does_not_use_the_token_up() {
    let (fake, app) = slow_app(300).await;
    let token = fake.token("github-push-main");
    // The client goes away while the exchange waits on the store.
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        app.exchange(&token, "internal-api", &[]),
    )
    .await;
    assert!(cancelled.is_err(), "the exchange was still running");
    // Nothing was committed (the store was still waiting), and the in-flight mark is
    // dropped with the request.
    tokio::task::yield_now().await;
    let retried = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
}

/// Two replicas on one store: a CI token used on one is refused on the other, by the
/// store's atomic step (the second replica has never seen the token).
#[tokio::test]
async fn a_token_used_on_one_replica_is_refused_on_another() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let store: std::sync::Arc<dyn tokenmint::trust::store::Store> =
        std::sync::Arc::new(tokenmint::adapters::store::MemoryStore::new());
    let first = crate::exchange::deploy_builder(&fake, "")
        .store(store.clone())
        .spawn()
        .await;
    let second = crate::exchange::deploy_builder(&fake, "")
        .store(store)
        .spawn()
        .await;
    let token = fake.token("github-push-main");
    assert_eq!(
        first.exchange(&token, "internal-api", &[]).await.status,
        200
    );
    let replayed = second.exchange(&token, "internal-api", &[]).await;
    assert_error(
        &replayed,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
    let record = second.last_audit().await;
    assert_eq!(record.reason, "token_replayed");
    assert_eq!(record.token_sha256, None);
}

/// Two replicas on one store, one CI token, a slow tenant: only one request reaches it.
#[tokio::test]
async fn concurrent_requests_on_two_replicas_reach_the_tenant_once() {
    use crate::fake_auth0::{FakeTenant, Fault};
    use crate::remote::pkjwt;
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(pkjwt()).await;
    tenant.push_fault(Fault::Hang(std::time::Duration::from_millis(300)));
    let store: std::sync::Arc<dyn tokenmint::trust::store::Store> =
        std::sync::Arc::new(tokenmint::adapters::store::MemoryStore::new());
    let replica = || {
        crate::remote::tenant_builder(&fake, &tenant, "")
            .store(store.clone())
            .spawn()
    };
    let (first, second) = (replica().await, replica().await);
    let token = fake.token("github-push-main");
    let (a, b) = tokio::join!(first.exchange(&token, "tenant-prod", &[]), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        second.exchange(&token, "tenant-prod", &[]).await
    });
    assert_eq!(a.status, 200, "{}", a.text);
    assert_error(
        &b,
        400,
        "invalid_grant",
        "the subject token is being exchanged by another request; retry",
    );
    assert_eq!(tenant.requests().len(), 1);
    let again = second.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &again,
        400,
        "invalid_grant",
        "the subject token was already used",
    );
    assert_eq!(tenant.requests().len(), 1);
}
