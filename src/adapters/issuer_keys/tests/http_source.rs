//! `HttpKeySource` and `http_client` against fake GitHub, GitLab and Terraform issuers.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use url::Url;

use super::*;
use crate::adapters::issuer_keys::{
    FetchError, HttpKeySource, IssuerKeys, KeyFetchClient, KeySource, KeyType, KeystoreSettings,
    NoopObserver, Reach, USER_AGENT,
};

fn source(issuer: Url, jwks_uri: Option<Url>, settings: KeystoreSettings) -> Arc<HttpKeySource> {
    let client = KeyFetchClient::new(Reach::Local).expect("build the HTTP client");
    Arc::new(HttpKeySource::new(client, issuer, jwks_uri, settings))
}

fn issuer_url(text: &str) -> Url {
    Url::parse(text).expect("issuer URL")
}

fn keys_of(source: Arc<HttpKeySource>) -> Arc<IssuerKeys> {
    IssuerKeys::new("github", source, settings(), Arc::new(NoopObserver))
}

fn kids(set: &jsonwebtoken::jwk::JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .filter_map(|jwk| jwk.common.key_id.clone())
        .collect()
}

#[tokio::test]
async fn github_shape_discovers_jwks_uri_and_caches_it() {
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let source = source(issuer_url(&fake.base), None, settings());
    let keys = keys_of(Arc::clone(&source) as Arc<HttpKeySource>);

    keys.refresh().await.expect("first fetch");
    keys.refresh().await.expect("second fetch");

    assert_eq!(fake.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(fake.hits("/.well-known/jwks"), 2);
    assert_eq!(source.jwks_uri(), Some(fake.url("/.well-known/jwks")));
    let status = keys.status();
    assert_eq!(status.key_count, 4);
    assert_eq!(status.source, fake.url("/.well-known/jwks").to_string());
    assert!(!status.failing_closed);
    assert_eq!(status.last_error, None);
    for kid in [KID_KEPT, KID_KEPT_X5C, KID_ADDED] {
        let key = keys.key(kid).await.expect("GitHub key");
        assert_eq!(key.kid, kid);
        assert_eq!(key.key_type, KeyType::Rsa);
        assert_eq!(key.algorithm, Some(Algorithm::RS256));
        assert!(key.accepts(Algorithm::RS256));
        assert!(
            !key.accepts(Algorithm::PS256),
            "alg in the JWK pins the algorithm"
        );
        assert!(!key.accepts(Algorithm::ES256));
    }
}

#[tokio::test]
async fn outbound_requests_carry_the_tokenmint_user_agent() {
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let source = source(issuer_url(&fake.base), None, settings());
    source.fetch().await.expect("fetch");
    assert_eq!(USER_AGENT, concat!("tokenmint/", env!("CARGO_PKG_VERSION")));
    assert_eq!(fake.user_agents(), vec![USER_AGENT.to_owned(); 2]);
}

#[tokio::test]
async fn github_enterprise_slug_issuer_uses_the_root_jwks_uri() {
    let fake = FakeIssuer::start().await;
    fake.set(
        "/acme-corp/.well-known/openid-configuration",
        Reply::Json(rebase(GITHUB_SLUG_DISCOVERY, GITHUB_ORIGIN, &fake.base)),
    );
    fake.set("/.well-known/jwks", Reply::Json(GITHUB_JWKS.to_owned()));
    let issuer = issuer_url(&format!("{}/acme-corp", fake.base));

    let set = source(issuer, None, settings())
        .fetch()
        .await
        .expect("fetch");

    assert_eq!(kids(&set).len(), 4);
    assert_eq!(fake.hits("/acme-corp/.well-known/openid-configuration"), 1);
    assert_eq!(fake.hits("/.well-known/jwks"), 1);
    assert_eq!(
        fake.hits("/acme-corp/.well-known/jwks"),
        0,
        "never built from iss"
    );
}

#[tokio::test]
async fn gitlab_shape_serves_keys_at_oauth_discovery_keys() {
    let fake = FakeIssuer::start().await;
    fake.set(
        "/.well-known/openid-configuration",
        Reply::Json(rebase(GITLAB_DISCOVERY, GITLAB_ORIGIN, &fake.base)),
    );
    fake.set("/oauth/discovery/keys", Reply::Json(GITLAB_JWKS.to_owned()));

    let source = source(issuer_url(&fake.base), None, settings());
    let keys = keys_of(Arc::clone(&source));
    keys.refresh().await.expect("fetch");

    assert_eq!(source.jwks_uri(), Some(fake.url("/oauth/discovery/keys")));
    let key = keys
        .key("kewiQq9jiC84CvSsJYOB-N6A8WFLSV20Mb-y7IlWDSQ")
        .await
        .expect("GitLab key");
    assert_eq!(key.algorithm, Some(Algorithm::RS256));
    assert_eq!(keys.status().key_count, 2);
}

#[tokio::test]
async fn terraform_shape_serves_keys_at_well_known_jwks() {
    let fake = FakeIssuer::start().await;
    fake.set(
        "/.well-known/openid-configuration",
        Reply::Json(rebase(TERRAFORM_DISCOVERY, TERRAFORM_ORIGIN, &fake.base)),
    );
    fake.set("/.well-known/jwks", Reply::Json(GITLAB_JWKS.to_owned()));

    let set = source(issuer_url(&fake.base), None, settings())
        .fetch()
        .await
        .expect("fetch");
    assert_eq!(kids(&set).len(), 2);
}

#[tokio::test]
async fn explicit_jwks_uri_skips_discovery() {
    let fake = FakeIssuer::start().await;
    fake.set("/keys", Reply::Json(GITHUB_JWKS.to_owned()));
    let source = source(
        issuer_url(GITHUB_ORIGIN),
        Some(fake.url("/keys")),
        settings(),
    );

    let set = source.fetch().await.expect("fetch");

    assert_eq!(kids(&set).len(), 4);
    assert_eq!(fake.hits("/.well-known/openid-configuration"), 0);
    assert_eq!(source.describe(), fake.url("/keys").to_string());
}

#[tokio::test]
async fn jwks_404_runs_discovery_again_but_other_errors_do_not() {
    let fake = FakeIssuer::start().await;
    let discovery = |keys_path: &str| {
        Reply::Json(format!(
            r#"{{"issuer": "{base}", "jwks_uri": "{base}{keys_path}"}}"#,
            base = fake.base
        ))
    };
    fake.set("/.well-known/openid-configuration", discovery("/keys-v1"));
    fake.set("/keys-v1", Reply::Json(GITHUB_JWKS.to_owned()));
    let source = source(issuer_url(&fake.base), None, settings());
    source.fetch().await.expect("first fetch");

    fake.set("/keys-v1", Reply::Status(500));
    let err = source.fetch().await.expect_err("500 is an error");
    assert_eq!(
        err.to_string(),
        format!("GET {} returned HTTP 500", fake.url("/keys-v1"))
    );
    assert_eq!(fake.hits("/.well-known/openid-configuration"), 1);

    fake.set("/.well-known/openid-configuration", discovery("/keys-v2"));
    fake.set("/keys-v1", Reply::Status(404));
    fake.set("/keys-v2", Reply::Json(GITLAB_JWKS.to_owned()));
    let set = source.fetch().await.expect("fetch after rediscovery");

    assert_eq!(kids(&set).len(), 2);
    assert_eq!(fake.hits("/.well-known/openid-configuration"), 2);
    assert_eq!(source.jwks_uri(), Some(fake.url("/keys-v2")));
}

#[tokio::test]
async fn discovery_issuer_must_equal_the_configured_issuer_exactly() {
    let fake = FakeIssuer::start().await;
    let cases = [
        format!("{}/", fake.base),
        "https://token.actions.githubusercontent.com".to_owned(),
        fake.base.replace("127.0.0.1", "localhost"),
    ];
    for reported in cases {
        fake.set(
            "/.well-known/openid-configuration",
            Reply::Json(format!(
                r#"{{"issuer": "{reported}", "jwks_uri": "{}/.well-known/jwks"}}"#,
                fake.base
            )),
        );
        fake.set("/.well-known/jwks", Reply::Json(GITHUB_JWKS.to_owned()));
        let err = source(issuer_url(&fake.base), None, settings())
            .fetch()
            .await
            .expect_err("issuer mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "discovery issuer mismatch: expected {} got {reported}",
                fake.base
            )
        );
    }
    assert_eq!(fake.hits("/.well-known/jwks"), 0);
}

#[tokio::test]
async fn discovery_without_jwks_uri_is_invalid() {
    let fake = FakeIssuer::start().await;
    fake.set(
        "/.well-known/openid-configuration",
        Reply::Json(format!(r#"{{"issuer": "{}"}}"#, fake.base)),
    );
    let err = source(issuer_url(&fake.base), None, settings())
        .fetch()
        .await
        .expect_err("no jwks_uri");
    assert!(matches!(err, FetchError::InvalidDiscovery { .. }), "{err}");
}

#[tokio::test]
async fn http_jwks_uri_to_non_loopback_host_is_refused() {
    let fake = FakeIssuer::start().await;
    fake.set(
        "/.well-known/openid-configuration",
        Reply::Json(format!(
            r#"{{"issuer": "{}", "jwks_uri": "http://keys.example.com/jwks"}}"#,
            fake.base
        )),
    );
    let err = source(issuer_url(&fake.base), None, settings())
        .fetch()
        .await
        .expect_err("plain http to another host");
    assert_eq!(
        err.to_string(),
        "refusing to fetch http://keys.example.com/jwks: only https, or http to a loopback host, is allowed"
    );

    let configured = Url::parse("http://192.0.2.7/jwks").expect("URL");
    let err = source(issuer_url(GITHUB_ORIGIN), Some(configured), settings())
        .fetch()
        .await
        .expect_err("configured plain http to another host");
    assert!(matches!(err, FetchError::InsecureUrl { .. }), "{err}");
}

#[tokio::test]
async fn body_over_the_cap_is_refused() {
    let fake = FakeIssuer::start().await;
    let padding = " ".repeat(super::super::DEFAULT_MAX_BODY_BYTES);
    fake.set(
        "/keys",
        Reply::Json(format!("{}{padding}", GITHUB_JWKS.trim_end())),
    );
    let err = source(
        issuer_url(GITHUB_ORIGIN),
        Some(fake.url("/keys")),
        settings(),
    )
    .fetch()
    .await
    .expect_err("too large");
    assert_eq!(
        err.to_string(),
        format!("{}: body exceeds 262144 bytes", fake.url("/keys"))
    );
}

/// A server that streams a chunked body without end: the client must stop reading at the
/// cap, not buffer it all (or run into the timeout).
#[tokio::test]
async fn endless_chunked_body_is_abandoned_at_the_cap() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut request = Vec::new();
        let mut byte = [0_u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => request.push(byte[0]),
                _ => return,
            }
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
        // At most 64 MiB; ends as soon as the client hangs up.
        for _ in 0..4096 {
            if stream.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
    });
    let url = Url::parse(&format!("http://127.0.0.1:{port}/keys")).expect("URL");
    let limited = KeystoreSettings {
        max_body_bytes: 100_000,
        ..settings()
    };

    let err = source(issuer_url(GITHUB_ORIGIN), Some(url.clone()), limited)
        .fetch()
        .await
        .expect_err("too large");

    assert_eq!(err.to_string(), format!("{url}: body exceeds 100000 bytes"));
}

#[tokio::test]
async fn slow_server_times_out() {
    let fake = FakeIssuer::start().await;
    fake.set(
        "/keys",
        Reply::Slow(Duration::from_secs(30), GITHUB_JWKS.to_owned()),
    );
    let quick = KeystoreSettings {
        fetch_timeout: Duration::from_millis(100),
        ..settings()
    };
    let err = source(issuer_url(GITHUB_ORIGIN), Some(fake.url("/keys")), quick)
        .fetch()
        .await
        .expect_err("timeout");
    assert_eq!(
        err.to_string(),
        format!("GET {} timed out after 100ms", fake.url("/keys"))
    );
}

#[tokio::test]
async fn cross_host_redirect_is_refused() {
    let fake = FakeIssuer::start().await;
    let elsewhere = format!("http://localhost:{}/.well-known/jwks", fake.port);
    fake.set("/keys", Reply::Redirect(elsewhere.clone()));
    fake.set("/.well-known/jwks", Reply::Json(GITHUB_JWKS.to_owned()));

    let err = source(
        issuer_url(GITHUB_ORIGIN),
        Some(fake.url("/keys")),
        settings(),
    )
    .fetch()
    .await
    .expect_err("127.0.0.1 and localhost are different hosts");

    assert_eq!(
        err.to_string(),
        format!(
            "GET {}: redirect to another host refused (to {elsewhere})",
            fake.url("/keys")
        )
    );
    assert_eq!(fake.hits("/.well-known/jwks"), 0);
}

#[tokio::test]
async fn same_host_redirects_are_followed_at_most_three_times() {
    let fake = FakeIssuer::start().await;
    fake.set("/.well-known/jwks", Reply::Json(GITHUB_JWKS.to_owned()));
    for hop in ["/a1", "/a2", "/a3", "/b1", "/b2", "/b3", "/b4"] {
        let next = match hop {
            "/a3" | "/b4" => "/.well-known/jwks".to_owned(),
            _ => format!("{}{}", &hop[..2], hop[2..].parse::<u8>().expect("hop") + 1),
        };
        fake.set(hop, Reply::Redirect(fake.url(&next).to_string()));
    }

    let set = source(issuer_url(GITHUB_ORIGIN), Some(fake.url("/a1")), settings())
        .fetch()
        .await
        .expect("three redirects are fine");
    assert_eq!(kids(&set).len(), 4);

    let err = source(issuer_url(GITHUB_ORIGIN), Some(fake.url("/b1")), settings())
        .fetch()
        .await
        .expect_err("four redirects are too many");
    assert_eq!(
        err.to_string(),
        format!("GET {}: more than 3 redirects", fake.url("/b1"))
    );
    assert_eq!(fake.hits("/.well-known/jwks"), 1);
}

#[tokio::test]
async fn non_json_body_is_an_error() {
    let fake = FakeIssuer::start().await;
    fake.set("/keys", Reply::Json("<html>maintenance</html>".to_owned()));
    let err = source(
        issuer_url(GITHUB_ORIGIN),
        Some(fake.url("/keys")),
        settings(),
    )
    .fetch()
    .await
    .expect_err("not JSON");
    assert!(matches!(err, FetchError::InvalidJwks { .. }), "{err}");
}

#[tokio::test]
async fn unreachable_issuer_is_a_refused_connection() {
    // A port that was free a moment ago and that nothing listens on now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/keys")).expect("URL");
    let err = source(issuer_url(GITHUB_ORIGIN), Some(url.clone()), settings())
        .fetch()
        .await
        .expect_err("connection refused");
    assert_eq!(
        err.to_string(),
        format!(
            "GET {url} failed: 127.0.0.1:{port} refused the connection; if this host cannot \
             reach the issuer, give it the issuer's keys with jwks_file"
        )
    );
}

/// Security invariant: a remote issuer's key fetches are checked on the address they
/// would connect to, not on the URL's text: a name that resolves to loopback, and IP
/// literals that are loopback in disguise, never open a connection.
#[tokio::test]
async fn a_remote_issuer_never_connects_to_this_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let client = KeyFetchClient::new(Reach::Public).expect("build the HTTP client");
    for (jwks_uri, expected) in [
        (
            // Refused by its name before any lookup; a name that only resolves to
            // loopback is refused by the resolver (`reach::tests`).
            format!("https://localhost:{port}/jwks"),
            "refusing to connect to localhost (a name of this host)",
        ),
        (
            format!("https://127.0.0.1:{port}/jwks"),
            "refusing to connect to 127.0.0.1 (loopback address)",
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{port}/jwks"),
            "refusing to connect to ::ffff:127.0.0.1 (loopback address)",
        ),
        (
            format!("https://0.0.0.0:{port}/jwks"),
            "refusing to connect to 0.0.0.0 (unspecified address)",
        ),
    ] {
        let source = HttpKeySource::new(
            client.clone(),
            issuer_url("https://issuer.example"),
            Some(Url::parse(&jwks_uri).expect("URL")),
            settings(),
        );
        let err = source.fetch().await.expect_err(&jwks_uri).to_string();
        assert!(err.contains(expected), "{jwks_uri}: {err}");
        assert!(
            listener.accept().is_err(),
            "{jwks_uri}: a connection reached this host"
        );
    }
}
