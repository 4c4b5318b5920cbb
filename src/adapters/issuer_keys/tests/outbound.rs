//! Why an issuer cannot be reached, said precisely (DNS, refused, TLS, the proxy), and the
//! address rules of a remote issuer's key fetches kept in force through a proxy.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::Url;

use super::*;
use crate::adapters::issuer_keys::{
    FetchError, HttpKeySource, KeyFetchClient, KeySource, OutboundProxy, Reach, Unreachable,
};

/// An HTTP proxy on 127.0.0.1 that records each request's first line and refuses every
/// tunnel with 403, as a proxy's ACL does.
struct FakeProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&buffer[..read]);
                let first = text.lines().next().unwrap_or("").to_owned();
                log.lock().expect("log").push(first);
                let _ = stream
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        Self { port, seen, server }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("log").clone()
    }
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("test URL")
}

async fn fetch(client: &KeyFetchClient, issuer: &str) -> FetchError {
    HttpKeySource::new(client.clone(), url(issuer), None, settings())
        .fetch()
        .await
        .expect_err("the fetch fails")
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_dns_failure_with_what_to_do() {
    let client =
        KeyFetchClient::with_proxy(Reach::Public, OutboundProxy::default()).expect("client");
    let err = fetch(&client, "https://ci.nonexistent.invalid").await;
    let text = err.to_string();
    assert!(
        matches!(&err, FetchError::Unreachable { why: Unreachable::Dns { name, .. }, .. } if name == "ci.nonexistent.invalid"),
        "{text}"
    );
    assert!(
        text.starts_with(
            "GET https://ci.nonexistent.invalid/.well-known/openid-configuration failed: DNS \
             lookup of ci.nonexistent.invalid failed: "
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "; check the issuer URL, or, if this host cannot reach the issuer, give it the \
             issuer's keys with jwks_file"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn refused_connections_and_failed_tls_are_told_apart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let client =
        KeyFetchClient::with_proxy(Reach::Local, OutboundProxy::default()).expect("client");
    let issuer = format!("http://127.0.0.1:{port}");
    assert_eq!(
        fetch(&client, &issuer).await.to_string(),
        format!(
            "GET {issuer}/.well-known/openid-configuration failed: 127.0.0.1:{port} refused the \
             connection; if this host cannot reach the issuer, give it the issuer's keys with \
             jwks_file"
        )
    );
    // https to a server that speaks plain HTTP.
    let fake = FakeIssuer::start().await;
    let issuer = format!("https://127.0.0.1:{}", fake.port);
    let err = fetch(&client, &issuer).await;
    assert!(
        matches!(
            &err,
            FetchError::Unreachable {
                why: Unreachable::Tls { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "GET {issuer}/.well-known/openid-configuration failed: the TLS handshake with \
             127.0.0.1:{} failed (",
            fake.port
        )),
        "{err}"
    );
}

/// Through a proxy the names are resolved by the proxy: the request reaches it as
/// `CONNECT name:443`, and a refusal there is said as the proxy's.
#[tokio::test]
async fn a_remote_issuer_is_fetched_through_the_proxy_which_resolves_its_name() {
    let proxy = FakeProxy::start().await;
    // The proxy's own name resolves to loopback; the resolver lets it through.
    let outbound = OutboundProxy::https_only(&format!("http://localhost:{}", proxy.port), "");
    let client = KeyFetchClient::with_proxy(Reach::Public, outbound).expect("client");
    let err = fetch(&client, "https://issuer.example").await;
    assert_eq!(
        err.to_string(),
        format!(
            "GET https://issuer.example/.well-known/openid-configuration failed: the proxy \
             http://localhost:{} did not open a tunnel to issuer.example:443 (it refused, or \
             cannot resolve or reach it); if this host cannot reach the issuer, give it the \
             issuer's keys with jwks_file",
            proxy.port
        )
    );
    assert_eq!(proxy.seen(), ["CONNECT issuer.example:443 HTTP/1.1"]);
}

/// Security invariant: through a proxy, a remote issuer's key fetches still never aim at
/// this host, its link, cloud metadata or (without allow_private_network) private
/// networks, wherever the name or literal says so; nothing reaches the proxy.
#[tokio::test]
async fn through_a_proxy_forbidden_literals_and_names_are_still_refused() {
    let proxy = FakeProxy::start().await;
    let outbound = OutboundProxy::https_only(&format!("http://127.0.0.1:{}", proxy.port), "");
    let public = KeyFetchClient::with_proxy(Reach::Public, outbound.clone()).expect("client");
    let private = KeyFetchClient::with_proxy(Reach::PrivateNetwork, outbound).expect("client");
    for (client, issuer, refusal) in [
        (
            &public,
            "https://169.254.169.254",
            "refusing to connect to 169.254.169.254 (cloud metadata address) for a remote \
             issuer's keys",
        ),
        (
            &private,
            "https://[::1]",
            "refusing to connect to ::1 (loopback address) for a remote issuer's keys",
        ),
        (
            &public,
            "https://10.0.0.5",
            "refusing to connect to 10.0.0.5 (private address) for a remote issuer's keys (for \
             an issuer inside your private network, set allow_private_network = true on it)",
        ),
        (
            &private,
            "https://metadata.google.internal",
            "refusing to connect to metadata.google.internal (a cloud metadata name) for a \
             remote issuer's keys",
        ),
        (
            &private,
            "https://keys.localhost",
            "refusing to connect to keys.localhost (a name of this host) for a remote issuer's \
             keys",
        ),
        (
            &public,
            "https://gitlab.internal",
            "refusing to connect to gitlab.internal (a private network's name, which the proxy \
             would resolve) for a remote issuer's keys (for an issuer inside your private \
             network, set allow_private_network = true on it)",
        ),
    ] {
        let err = fetch(client, issuer).await;
        assert_eq!(
            err.to_string(),
            format!("refusing to fetch {issuer}/.well-known/openid-configuration: {refusal}"),
        );
    }
    assert_eq!(
        proxy.seen(),
        Vec::<String>::new(),
        "nothing reached the proxy"
    );
    // With allow_private_network, a private name goes to the proxy.
    let _ = fetch(&private, "https://gitlab.internal").await;
    assert_eq!(proxy.seen(), ["CONNECT gitlab.internal:443 HTTP/1.1"]);
}

#[tokio::test]
async fn a_remote_issuer_may_not_name_the_proxy_and_a_loopback_issuer_is_never_proxied() {
    let proxy = FakeProxy::start().await;
    let outbound = OutboundProxy::https_only(&format!("http://localhost:{}", proxy.port), "");
    let public = KeyFetchClient::with_proxy(Reach::Public, outbound.clone()).expect("client");
    let issuer = format!("https://localhost:{}", proxy.port);
    assert_eq!(
        fetch(&public, &issuer).await.to_string(),
        format!(
            "refusing to fetch {issuer}/.well-known/openid-configuration: localhost is the \
             outbound proxy; a remote issuer's key fetches may not reach it"
        )
    );
    let fake = FakeIssuer::github(GITHUB_JWKS).await;
    let local = KeyFetchClient::with_proxy(Reach::Local, outbound).expect("client");
    HttpKeySource::new(local, url(&fake.base), None, settings())
        .fetch()
        .await
        .expect("a loopback issuer is fetched directly");
    assert_eq!(proxy.seen(), Vec::<String>::new());
}

/// `NO_PROXY` hosts are fetched directly, and judged by the resolver as without a proxy.
#[tokio::test]
async fn no_proxy_hosts_are_fetched_directly() {
    let proxy = FakeProxy::start().await;
    let outbound = OutboundProxy::https_only(
        &format!("http://127.0.0.1:{}", proxy.port),
        "nonexistent.invalid",
    );
    let public = KeyFetchClient::with_proxy(Reach::Public, outbound).expect("client");
    let err = fetch(&public, "https://ci.nonexistent.invalid").await;
    assert!(
        matches!(
            err,
            FetchError::Unreachable {
                why: Unreachable::Dns { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(proxy.seen(), Vec::<String>::new());
}
