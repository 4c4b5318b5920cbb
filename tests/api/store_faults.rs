//! The exchange against a store that fails on demand at each step: a token leaves only
//! with its audit record, a failed write never uses the CI token up, and an exchange
//! makes as few durable steps as it can.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::exchange::deploy_builder;
use crate::fake_auth0::FakeTenant;
use crate::helpers::*;
use crate::remote::{pkjwt, tenant_builder};
use tokenmint::trust::audit::{Outcome, Reason};

async fn local_app(store: &Arc<FaultyStore>) -> (FakeIssuer, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = deploy_builder(&fake, "").store(store.clone()).spawn().await;
    (fake, app)
}

async fn remote_app(store: &Arc<FaultyStore>) -> (FakeIssuer, FakeTenant, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(pkjwt()).await;
    let app = tenant_builder(&fake, &tenant, "")
        .store(store.clone())
        .spawn()
        .await;
    (fake, tenant, app)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

const STORE_DOWN: &str = "the replay store cannot record this request; retry later";

/// Security invariant: a token is never returned unless its audit record was written in
/// the same step that used the CI token up; when that step fails, nothing left and the
/// CI token can be exchanged again.
#[tokio::test]
async fn no_token_without_its_audit_record() {
    let store = Arc::new(FaultyStore::new());
    let (fake, app) = local_app(&store).await;
    store.fail(Step::FinishHandOut);
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "internal-api", &[]).await;
    assert_error(&answer, 503, "temporarily_unavailable", STORE_DOWN);
    assert_eq!(answer.headers["retry-after"], "5");
    let records = app.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Error);
    assert_eq!(records[0].reason, Reason::StoreUnavailable);
    assert_eq!(records[0].token_sha256, None, "no token was handed out");
    let detail = records[0].detail.as_deref().expect("detail");
    assert!(
        detail.starts_with("withheld token sha256 ")
            && detail.ends_with("; store failure: disk full"),
        "{detail}"
    );

    store.heal();
    let retried = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(
        retried.status, 200,
        "the CI token was not used up: {}",
        retried.text
    );
    let access_token = retried.body["access_token"].as_str().expect("token");
    let allowed = app.last_audit().await;
    assert_eq!(allowed.outcome, Outcome::Allow);
    assert_eq!(allowed.token_sha256, Some(sha256_hex(access_token)));
}

/// When not even the refusal can be recorded, the answer is 503 and nothing is on
/// record; the CI token stays unused.
#[tokio::test]
async fn a_store_that_writes_nothing_hands_out_nothing() {
    let store = Arc::new(FaultyStore::new());
    let (fake, app) = local_app(&store).await;
    for step in [
        Step::FinishHandOut,
        Step::FinishRecordOnly,
        Step::FinishRelease,
    ] {
        store.fail(step);
    }
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "internal-api", &[]).await;
    assert_error(&answer, 503, "temporarily_unavailable", STORE_DOWN);
    assert_eq!(answer.body.get("access_token"), None);
    assert!(app.records().await.is_empty());
    // A refusal that cannot be recorded is not answered as if it were.
    let denied = app.exchange(&token, "no-such-target", &[]).await;
    assert_error(
        &denied,
        503,
        "temporarily_unavailable",
        "the audit trail cannot record this request; retry later",
    );
    store.heal();
    assert_eq!(app.exchange(&token, "internal-api", &[]).await.status, 200);
}

/// Security invariant: when the step that hands a remote target's token out fails, the
/// token is withheld (its hash kept, as the tenant cannot revoke it) and the CI token's
/// reservation is released, so the job can retry.
#[tokio::test]
async fn a_failed_write_releases_the_ci_token() {
    let store = Arc::new(FaultyStore::new());
    let (fake, tenant, app) = remote_app(&store).await;
    store.fail(Step::FinishHandOut);
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(&answer, 503, "temporarily_unavailable", STORE_DOWN);
    let records = app.records().await;
    let reasons: Vec<Reason> = records.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, [Reason::Pending, Reason::StoreUnavailable]);
    assert_eq!(records[0].request_id, records[1].request_id);
    assert_eq!(
        records[1].detail,
        Some(format!(
            "withheld token sha256 {}; store failure: disk full",
            sha256_hex(&tenant.issued()[0].access_token)
        ))
    );
    assert_eq!(
        store.calls(),
        [Step::Begin, Step::FinishHandOut, Step::FinishRelease]
    );

    store.heal();
    let retried = app.exchange(&token, "tenant-prod", &[]).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert_eq!(tenant.requests().len(), 2);
}

/// When the pending record cannot be written, the tenant is not called at all.
#[tokio::test]
async fn a_failed_pending_write_calls_no_tenant() {
    let store = Arc::new(FaultyStore::new());
    let (fake, tenant, app) = remote_app(&store).await;
    store.fail(Step::Begin);
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(
        &answer,
        503,
        "temporarily_unavailable",
        "the audit trail cannot record this request; retry later",
    );
    assert!(tenant.requests().is_empty());
    let record = app.last_audit().await;
    assert_eq!(record.reason, Reason::AuditUnavailable);
    assert_eq!(record.detail.as_deref(), Some("store failure: disk full"));
    store.heal();
    assert_eq!(app.exchange(&token, "tenant-prod", &[]).await.status, 200);
}

/// A final step that fails for a remote target is completed in the background: the
/// pending record gets its completion and the reservation is released.
#[tokio::test]
async fn a_remote_exchange_whose_final_steps_fail_is_completed_in_the_background() {
    let store = Arc::new(FaultyStore::new());
    let (fake, tenant, app) = remote_app(&store).await;
    store.fail(Step::FinishHandOut);
    store.fail(Step::FinishRelease);
    let token = fake.token("github-push-main");
    let answer = app.exchange(&token, "tenant-prod", &[]).await;
    assert_error(&answer, 503, "temporarily_unavailable", STORE_DOWN);
    let mut records = Vec::new();
    for _ in 0..100 {
        records = app.records().await;
        if records.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reasons: Vec<Reason> = records.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, [Reason::Pending, Reason::StoreUnavailable]);
    assert_eq!(store.calls().last(), Some(&Step::Abandon));
    store.heal();
    assert_eq!(app.exchange(&token, "tenant-prod", &[]).await.status, 200);
    assert_eq!(tenant.requests().len(), 2);
}

/// On the success path a local target's exchange is one durable step, a remote target's
/// two; a refusal is one.
#[tokio::test]
async fn an_exchange_makes_one_durable_step_and_a_remote_one_two() {
    let store = Arc::new(FaultyStore::new());
    let (fake, app) = local_app(&store).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(store.calls(), [Step::FinishHandOut]);
    let denied = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "admin")],
        )
        .await;
    assert_eq!(denied.status, 400, "{}", denied.text);
    assert_eq!(store.calls(), [Step::FinishHandOut, Step::FinishRecordOnly]);

    let store = Arc::new(FaultyStore::new());
    let (fake, _tenant, app) = remote_app(&store).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(store.calls(), [Step::Begin, Step::FinishHandOut]);
    assert_eq!(
        app.records()
            .await
            .iter()
            .map(|r| r.outcome)
            .collect::<Vec<_>>(),
        [Outcome::Pending, Outcome::Allow],
        "append-only: the pending record and its completion"
    );
}
