//! Issuer key rotation and removal as seen through the exchange.

use crate::exchange::deploy_builder;
use crate::helpers::*;

/// The signing keys in the PostgreSQL database at `url`, as `tokenmint keys` opens them.
pub async fn database_ring(
    url: &str,
    kek_file: &std::path::Path,
) -> tokenmint::adapters::signing::DatabaseRing {
    let kek = tokenmint::adapters::signing::KeyEncryptionKey::read(
        kek_file,
        "storage.key_encryption_key_file",
    )
    .expect("key-encryption key");
    let pool = tokenmint::adapters::store::connect_postgres(url, 2)
        .await
        .expect("connect");
    tokenmint::adapters::signing::DatabaseRing::new(pool, kek)
}

#[tokio::test]
async fn a_new_issuer_key_is_found_and_a_removed_one_stops_working() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = deploy_builder(&fake, "jwks_refresh = \"1h\"").spawn().await;
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );

    // The issuer rotates: key B is added under a new kid, key A removed.
    let key_b = test_key("ci-issuer-b");
    let kid_b = "1F2AB83404C08EC9EA0BB99DAED02186B091DBF4";
    fake.publish(vec![jwk_with_kid(&key_b, kid_b)]);
    let with_b = fake.sign_as(&key_b, kid_b, &fake.claims("github-push-main"));
    let answer = app.exchange(&with_b, "internal-api", &[]).await;
    assert_eq!(
        answer.status, 200,
        "an unknown kid triggers a refetch: {}",
        answer.text
    );

    // The refetch replaced the key set, so the removed key A no longer verifies.
    let with_a = fake.token("github-push-main");
    let answer = app.exchange(&with_a, "internal-api", &[]).await;
    assert_error(
        &answer,
        400,
        "invalid_grant",
        &format!(
            "no key with kid \"{}\" is published by issuer \"github\"",
            fake.kid
        ),
    );
}

#[tokio::test]
async fn an_issuer_whose_keys_cannot_be_fetched_fails_closed_with_503() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = deploy_builder(&fake, "jwks_uri = \"http://127.0.0.1:9/jwks\"")
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(
        &answer,
        503,
        "temporarily_unavailable",
        "the CI issuer's signing keys are unavailable; retry later",
    );
    assert_eq!(answer.headers["retry-after"], "30");
    let record = app.last_audit().await;
    assert_eq!(record.outcome, tokenmint::trust::audit::Outcome::Error);
    assert_eq!(record.reason, "issuer_keys_unavailable");
}

#[tokio::test]
async fn a_running_service_picks_up_a_local_key_rotation() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = deploy_builder(&fake, "").spawn().await;
    let before = app.get("/.well-known/jwks.json").await.body["keys"].clone();
    let kids = |keys: &serde_json::Value| -> Vec<String> {
        keys.as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect()
    };
    let before = kids(&before);
    // What `tokenmint keys rotate --force` does, from another process's point of view:
    // in data_dir/keys, or in the database with PostgreSQL.
    let storage = &app.service.config.storage;
    let signer = app.service.state.published.signer();
    let ttl = |_| std::time::Duration::from_secs(900);
    let hour = std::time::Duration::from_secs(3600);
    let now = time::OffsetDateTime::now_utc();
    let report = match (&storage.database_url, &storage.key_encryption_key_file) {
        (Some(url), Some(kek)) => {
            let stored = database_ring(url, kek).await;
            let report = stored.rotate(hour, true, &ttl, now).await.expect("rotate");
            let reloaded = signer.reload_from_database(&stored).await.expect("reload");
            assert_eq!(
                reloaded,
                tokenmint::adapters::mint::KeyReload::Reloaded {
                    generation: report.generation
                }
            );
            report
        }
        _ => {
            let keys = app.data_dir.join("keys");
            let report =
                tokenmint::adapters::signing::rotate(&keys, hour, true, &ttl, now).expect("rotate");
            assert!(signer.reload_if_changed(&keys).expect("reload"));
            report
        }
    };
    let rotation = &report.algorithms[0];
    assert_eq!(
        rotation.new_current, before[1],
        "next was promoted to current"
    );
    let after = kids(&app.get("/.well-known/jwks.json").await.body["keys"]);
    assert_eq!(
        after.len(),
        3,
        "current, next and previous are published: {after:?}"
    );
    for kid in &before {
        assert!(after.contains(kid), "{kid} is still published");
    }
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    let (header, _) =
        crate::exchange::jwt_parts(answer.body["access_token"].as_str().expect("token"));
    assert_eq!(
        header["kid"],
        rotation.new_current.as_str(),
        "new tokens use the new current key"
    );
}

/// Security: a configured `jwks_uri` that would send a remote issuer's key fetches to
/// this host stops the service at start, naming the key.
#[tokio::test]
async fn a_remote_issuer_configured_with_a_loopback_jwks_uri_does_not_start() {
    let err = AppBuilder::new()
        .config(
            "[issuers.gitlab]\nissuer = \"https://gitlab.com\"\njwks_uri = \"https://127.0.0.1:9090/jwks\"\n",
        )
        .try_spawn()
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "issuers.gitlab.jwks_uri: refusing to fetch https://127.0.0.1:9090/jwks: a remote issuer's key fetches may not reach this host"
    );
}
