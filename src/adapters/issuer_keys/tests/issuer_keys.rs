//! `IssuerKeys`: rotation, single flight, cooldown, keeping good keys, staleness, the
//! refresher, and the file source.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use url::Url;

use super::*;
use crate::adapters::issuer_keys::{
    FetchError, FileKeySource, HttpKeySource, IssuerKeys, KeyError, KeyFetchClient, KeySource,
    KeyType, KeystoreSettings, NoopObserver, Reach,
};

const JWKS_PATH: &str = "/.well-known/jwks";

fn github_keys(fake: &FakeIssuer, settings: KeystoreSettings) -> Arc<IssuerKeys> {
    let client = KeyFetchClient::new(Reach::Local).expect("build the HTTP client");
    let issuer = Url::parse(&fake.base).expect("issuer URL");
    let source = Arc::new(HttpKeySource::new(client, issuer, None, settings));
    IssuerKeys::new("github", source, settings, Arc::new(NoopObserver))
}

fn scripted_keys(source: &Arc<ScriptedSource>, settings: KeystoreSettings) -> Arc<IssuerKeys> {
    let source: Arc<dyn KeySource> = Arc::clone(source) as Arc<dyn KeySource>;
    IssuerKeys::new("github", source, settings, Arc::new(NoopObserver))
}

fn is_unknown_kid(
    result: &Result<Arc<crate::adapters::issuer_keys::VerificationKey>, KeyError>,
) -> bool {
    matches!(result, Err(KeyError::UnknownKid { .. }))
}

#[tokio::test]
async fn rotation_drops_removed_kids_and_finds_new_kids_by_refetch() {
    let fake = FakeIssuer::github(GITHUB_JWKS_PREVIOUS).await;
    let keys = github_keys(&fake, settings());
    keys.refresh().await.expect("fetch previous set");
    keys.key(KID_REMOVED).await.expect("in the previous set");
    keys.key(KID_KEPT).await.expect("in both sets");
    assert_eq!(fake.hits(JWKS_PATH), 1);

    // The issuer rotates; a token signed with the new key arrives before our refresh.
    fake.set(JWKS_PATH, Reply::Json(GITHUB_JWKS.to_owned()));
    let added = keys
        .key(KID_ADDED)
        .await
        .expect("found by the unknown-kid refetch");
    assert_eq!(added.kid, KID_ADDED);
    assert_eq!(fake.hits(JWKS_PATH), 2);

    // The refetch replaced the set: the removed key is gone at once.
    let removed = keys.key(KID_REMOVED).await;
    assert!(is_unknown_kid(&removed), "{removed:?}");
    keys.refresh().await.expect("periodic refresh");
    let removed = keys.key(KID_REMOVED).await;
    assert!(is_unknown_kid(&removed), "{removed:?}");
    keys.key(KID_KEPT).await.expect("still in the set");
    assert_eq!(keys.status().key_count, 4);
}

#[tokio::test]
async fn refresh_replaces_the_set_and_drops_keys_gone_from_the_issuer() {
    let fake = FakeIssuer::github(GITHUB_JWKS_PREVIOUS).await;
    let keys = github_keys(&fake, settings());
    keys.refresh().await.expect("fetch previous set");
    fake.set(JWKS_PATH, Reply::Json(GITHUB_JWKS.to_owned()));

    keys.refresh().await.expect("fetch new set");

    let removed = keys.key(KID_REMOVED).await;
    assert_eq!(
        removed.expect_err("dropped").to_string(),
        format!("issuer github has no signing key with kid \"{KID_REMOVED}\"")
    );
    keys.key(KID_ADDED).await.expect("added");
}

#[tokio::test]
async fn concurrent_unknown_kid_lookups_share_one_fetch() {
    let fake = FakeIssuer::github(GITHUB_JWKS_PREVIOUS).await;
    let keys = github_keys(&fake, settings());
    keys.refresh().await.expect("fetch previous set");
    let gate = Arc::new(Semaphore::new(0));
    fake.set(
        JWKS_PATH,
        Reply::Gated(Arc::clone(&gate), GITHUB_JWKS.to_owned()),
    );

    let lookups: Vec<_> = (0..16)
        .map(|_| {
            let keys = Arc::clone(&keys);
            tokio::spawn(async move { keys.key(KID_ADDED).await })
        })
        .collect();
    wait_until("the refetch reaches the issuer", || {
        fake.hits(JWKS_PATH) == 2
    })
    .await;
    // Let the other lookups queue up behind the fetch in flight.
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.add_permits(1000);

    for lookup in lookups {
        let key = lookup.await.expect("lookup task").expect("new key");
        assert_eq!(key.kid, KID_ADDED);
    }
    assert_eq!(
        fake.hits(JWKS_PATH),
        2,
        "one refresh, then one shared refetch"
    );
}

#[tokio::test]
async fn unknown_kid_within_cooldown_answers_without_a_fetch() {
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let keys = github_keys(&fake, settings());
    keys.refresh().await.expect("fetch");

    let first = keys.key("forged-kid-1").await;
    assert!(is_unknown_kid(&first), "{first:?}");
    assert_eq!(fake.hits(JWKS_PATH), 2, "the first unknown kid refetches");

    let second = keys.key("forged-kid-2").await;
    assert!(is_unknown_kid(&second), "{second:?}");
    assert_eq!(fake.hits(JWKS_PATH), 2, "within the cooldown: no fetch");

    // A periodic refresh does not restart the cooldown, nor is it limited by it.
    keys.refresh().await.expect("refresh");
    let third = keys.key("forged-kid-3").await;
    assert!(is_unknown_kid(&third), "{third:?}");
    assert_eq!(fake.hits(JWKS_PATH), 3);
}

#[tokio::test]
async fn unknown_kid_refetches_again_once_the_cooldown_is_over() {
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let no_cooldown = KeystoreSettings {
        refetch_cooldown: Duration::ZERO,
        ..settings()
    };
    let keys = github_keys(&fake, no_cooldown);
    keys.refresh().await.expect("fetch");
    for expected_hits in 2..=4 {
        let result = keys.key("forged-kid").await;
        assert!(is_unknown_kid(&result), "{result:?}");
        assert_eq!(fake.hits(JWKS_PATH), expected_hits);
    }
}

#[tokio::test]
async fn failed_fetch_keeps_the_last_good_keys() {
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let observer = Arc::new(CountingObserver::default());
    let client = KeyFetchClient::new(Reach::Local).expect("build the HTTP client");
    let issuer = Url::parse(&fake.base).expect("issuer URL");
    let source = Arc::new(HttpKeySource::new(client, issuer, None, settings()));
    let keys = IssuerKeys::new(
        "github",
        source,
        settings(),
        Arc::clone(&observer) as Arc<dyn crate::adapters::issuer_keys::FetchObserver>,
    );
    keys.refresh().await.expect("fetch");

    fake.set(JWKS_PATH, Reply::Status(500));
    let err = keys.refresh().await.expect_err("issuer down");
    assert!(
        matches!(err, FetchError::Status { status: 500, .. }),
        "{err}"
    );

    keys.key(KID_KEPT)
        .await
        .expect("last good keys still serve");
    let status = keys.status();
    assert_eq!(status.key_count, 4);
    assert!(!status.failing_closed);
    let expected_error = format!("GET {} returned HTTP 500", fake.url(JWKS_PATH));
    assert_eq!(status.last_error.as_deref(), Some(expected_error.as_str()));
    assert_eq!(observer.ok.load(Ordering::SeqCst), 1);
    assert_eq!(observer.error.load(Ordering::SeqCst), 1);

    fake.set(JWKS_PATH, Reply::Json(GITHUB_JWKS.to_owned()));
    keys.refresh().await.expect("issuer back");
    assert_eq!(keys.status().last_error, None);
    assert_eq!(observer.ok.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_keys_fail_closed_even_for_known_kids() {
    let source = ScriptedSource::new(Some(GITHUB_JWKS));
    let short = KeystoreSettings {
        max_stale: Duration::from_millis(30),
        refetch_cooldown: Duration::ZERO,
        ..settings()
    };
    let keys = scripted_keys(&source, short);
    keys.refresh().await.expect("fetch");
    source.answer(None);

    tokio::time::sleep(Duration::from_millis(40)).await;

    let err = keys.key(KID_KEPT).await.expect_err("stale");
    assert!(matches!(err, KeyError::Stale { .. }), "{err}");
    assert!(err.to_string().contains("failing closed"), "{err}");
    assert_eq!(
        source.calls(),
        2,
        "a lookup on stale keys tries one refetch"
    );
    let status = keys.status();
    assert!(status.failing_closed);
    assert_eq!(status.key_count, 4);

    source.answer(Some(GITHUB_JWKS));
    keys.key(KID_KEPT)
        .await
        .expect("a good fetch ends the staleness");
    assert!(!keys.status().failing_closed);
}

#[tokio::test]
async fn zero_max_stale_never_serves_keys() {
    let source = ScriptedSource::new(Some(GITHUB_JWKS));
    let never_fresh = KeystoreSettings {
        max_stale: Duration::ZERO,
        ..settings()
    };
    let keys = scripted_keys(&source, never_fresh);
    keys.refresh().await.expect("fetch");
    let err = keys.key(KID_KEPT).await.expect_err("stale");
    assert!(matches!(err, KeyError::Stale { .. }), "{err}");
}

#[tokio::test]
async fn no_good_fetch_yet_is_unavailable_with_the_last_error() {
    let source = ScriptedSource::new(None);
    let keys = scripted_keys(&source, settings());
    keys.refresh().await.expect_err("issuer down");

    let err = keys.key(KID_KEPT).await.expect_err("no keys");
    assert_eq!(
        err.to_string(),
        "no signing keys loaded for issuer github: GET scripted://keys returned HTTP 503"
    );
    assert_eq!(source.calls(), 2, "the lookup tried one refetch");
    let status = keys.status();
    assert!(status.failing_closed);
    assert_eq!(status.last_good_fetch_age, None);
}

#[tokio::test]
async fn first_lookup_fetches_when_nothing_was_fetched_yet() {
    let source = ScriptedSource::new(Some(GITHUB_JWKS));
    let keys = scripted_keys(&source, settings());
    keys.key(KID_KEPT).await.expect("fetched on demand");
    assert_eq!(source.calls(), 1);
}

/// Usable: two RSA keys, one P-256 key, one Ed25519 key. Every other entry is skipped.
fn mixed_set() -> String {
    let rsa = serde_json::from_str::<serde_json::Value>(GITLAB_JWKS).expect("GitLab JWKS")["keys"]
        [0]
    .clone();
    let with = |changes: serde_json::Value| {
        let mut key = rsa.clone();
        for (name, value) in changes.as_object().expect("object") {
            if value.is_null() {
                key.as_object_mut().expect("object").remove(name);
            } else {
                key[name] = value.clone();
            }
        }
        key
    };
    let coordinate = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    serde_json::json!({ "keys": [
        with(serde_json::json!({"kid": "rsa-sig"})),
        with(serde_json::json!({"kid": "rsa-no-alg", "alg": null, "use": null})),
        {"kty": "EC", "crv": "P-256", "kid": "ec-p256", "x": coordinate, "y": coordinate, "alg": "ES256"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": coordinate},
        with(serde_json::json!({"kid": "rsa-enc", "use": "enc"})),
        with(serde_json::json!({"kid": "rsa-ops", "use": null, "key_ops": ["encrypt"]})),
        with(serde_json::json!({"kid": null})),
        with(serde_json::json!({"kid": ""})),
        with(serde_json::json!({"kid": "rsa-hs256", "alg": "HS256"})),
        with(serde_json::json!({"kid": "rsa-oaep", "alg": "RSA-OAEP"})),
        with(serde_json::json!({"kid": "rsa-as-es256", "alg": "ES256"})),
        with(serde_json::json!({"kid": "rsa-bad-n", "n": "***"})),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-521", "kid": "ec-p521", "x": coordinate, "y": coordinate},
        {"kty": "AKP", "kid": "post-quantum", "alg": "ML-DSA-44", "pub": coordinate},
        "not an object",
    ]})
    .to_string()
}

#[tokio::test]
async fn unusable_jwks_are_skipped_not_fatal() {
    let fake = FakeIssuer::github(&mixed_set()).await;
    let keys = github_keys(&fake, settings());
    keys.refresh().await.expect("the usable keys load");

    assert_eq!(keys.status().key_count, 4);
    let no_alg = keys.key("rsa-no-alg").await.expect("RSA without alg");
    assert_eq!(no_alg.algorithm, None);
    assert!(no_alg.accepts(jsonwebtoken::Algorithm::PS256));
    assert!(!no_alg.accepts(jsonwebtoken::Algorithm::HS256));
    let ec = keys.key("ec-p256").await.expect("P-256");
    assert_eq!(ec.key_type, KeyType::EcP256);
    let ed = keys.key("ed-1").await.expect("Ed25519");
    assert_eq!(ed.key_type, KeyType::Ed25519);
    for skipped in [
        "rsa-enc",
        "rsa-ops",
        "rsa-hs256",
        "rsa-oaep",
        "rsa-as-es256",
        "rsa-bad-n",
        "hmac",
        "ec-p521",
    ] {
        let result = keys.key(skipped).await;
        assert!(is_unknown_kid(&result), "{skipped}: {result:?}");
    }
}

#[tokio::test]
async fn unusable_set_never_replaces_good_keys() {
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let keys = github_keys(&fake, settings());
    keys.refresh().await.expect("fetch");
    let unusable = [
        r#"{"keys": []}"#.to_owned(),
        r#"{"keys": [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]}"#.to_owned(),
        serde_json::json!({"keys": [{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}]})
            .to_string(),
    ];
    for body in unusable {
        fake.set(JWKS_PATH, Reply::Json(body.clone()));
        let err = keys.refresh().await.expect_err("no usable key");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the key set has no usable signing key",
                fake.url(JWKS_PATH)
            ),
            "{body}"
        );
        keys.key(KID_KEPT).await.expect("good keys kept");
        assert_eq!(keys.status().key_count, 4);
    }
}

#[tokio::test]
async fn refresher_fetches_periodically_and_stops_when_the_keys_are_dropped() {
    let source = ScriptedSource::new(Some(GITHUB_JWKS));
    let fast = KeystoreSettings {
        refresh_interval: Duration::from_millis(10),
        ..settings()
    };
    let keys = scripted_keys(&source, fast);
    let refresher = keys.spawn_refresher();

    wait_until("three periodic fetches", || source.calls() >= 3).await;
    keys.key(KID_KEPT).await.expect("loaded by the refresher");
    drop(keys);

    tokio::time::timeout(Duration::from_secs(5), refresher)
        .await
        .expect("refresher ends after the keys are dropped")
        .expect("refresher task");
}

#[tokio::test]
async fn file_source_reads_the_file_on_every_fetch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, GITHUB_JWKS_PREVIOUS).expect("write keys");
    let source = Arc::new(FileKeySource::new(&path));
    assert_eq!(source.describe(), path.display().to_string());
    let keys = IssuerKeys::new("github", source, settings(), Arc::new(NoopObserver));
    keys.refresh().await.expect("read previous set");
    keys.key(KID_REMOVED).await.expect("previous key");

    std::fs::write(&path, GITHUB_JWKS).expect("replace keys");
    keys.refresh().await.expect("read new set");

    let removed = keys.key(KID_REMOVED).await;
    assert!(is_unknown_kid(&removed), "{removed:?}");
    keys.key(KID_ADDED).await.expect("new key");
}

#[tokio::test]
async fn file_source_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.json");
    let err = FileKeySource::new(&missing)
        .fetch()
        .await
        .expect_err("no file");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read key file {}: ", missing.display())),
        "{err}"
    );

    let big = dir.path().join("big.json");
    std::fs::write(&big, GITHUB_JWKS).expect("write keys");
    let err = FileKeySource::new(&big)
        .with_max_bytes(1000)
        .fetch()
        .await
        .expect_err("too large");
    assert_eq!(
        err.to_string(),
        format!("{}: body exceeds 1000 bytes", big.display())
    );
}

/// The log lines, without times and targets, written while `run` runs.
fn log_lines_of(
    run: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = Vec<String>> {
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(move || writer.clone())
        .finish();
    async move {
        let guard = tracing::subscriber::set_default(subscriber);
        run.await;
        drop(guard);
        let text = String::from_utf8(lines.0.lock().expect("log lock").clone()).expect("UTF-8");
        text.lines().map(|line| line.trim().to_owned()).collect()
    }
}

/// An issuer that never had keys has no last good keys to keep: the warning says so, and
/// what its tokens get meanwhile.
#[tokio::test]
async fn a_failed_fetch_without_keys_says_there_are_none_yet() {
    let source = ScriptedSource::new(None);
    let keys = scripted_keys(&source, settings());
    let before = Arc::clone(&keys);
    let lines = log_lines_of(async move {
        let _ = before.refresh().await;
    })
    .await;
    assert_eq!(
        lines,
        [
            "WARN fetching signing keys failed and this issuer has none yet: exchanges of its \
          tokens answer 503 temporarily_unavailable until a fetch succeeds (the next in 1h, or \
          when a token arrives, at most every 1h) issuer=github source=scripted://keys \
          trigger=Refresh error=GET scripted://keys returned HTTP 503"
        ]
    );
    source.answer(Some(GITHUB_JWKS));
    keys.refresh().await.expect("good keys");
    source.answer(None);
    let after = Arc::clone(&keys);
    let lines = log_lines_of(async move {
        let _ = after.refresh().await;
    })
    .await;
    assert_eq!(
        lines,
        [
            "WARN fetching signing keys failed; keeping the last good keys issuer=github \
          source=scripted://keys trigger=Refresh error=GET scripted://keys returned HTTP 503"
        ]
    );
}
