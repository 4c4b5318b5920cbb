//! Where an issuer's JWK set comes from: HTTP (discovery or an explicit `jwks_uri`) or a
//! file, and the bounded outbound HTTP client both HTTP fetches use.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use url::{Host, Url};

use super::error::{FetchError, Unreachable};
use super::proxy::{OutboundProxy, domain_of};
use super::reach::{GuardedResolver, LookupFailed, Reach, ResolverRefusal};
use super::{DEFAULT_MAX_BODY_BYTES, KeystoreSettings};
use crate::adapters::bounded_body::{BodyError, read_limited};

/// `User-Agent` of every outbound request.
pub const USER_AGENT: &str = concat!("tokenmint/", env!("CARGO_PKG_VERSION"));

/// Most redirects one request may follow.
const MAX_REDIRECTS: usize = 3;

/// Where one issuer's JWK set comes from.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// Fetches the current set. JWKs that do not parse are left out (debug log); the
    /// caller decides which of the rest are usable.
    async fn fetch(&self) -> Result<JwkSet, FetchError>;
    /// For logs and errors: the URL or file path.
    fn describe(&self) -> String;
}

/// The outbound client of key fetches for issuers of one [`Reach`], which it enforces
/// on the addresses it connects to. Cheap to clone: clones share a connection pool.
#[derive(Clone, Debug)]
pub struct KeyFetchClient {
    http: reqwest::Client,
    reach: Reach,
    /// The proxy of remote reaches (a loopback issuer is never fetched through one).
    proxy: Arc<OutboundProxy>,
}

impl KeyFetchClient {
    /// A client with the proxy of the environment ([`OutboundProxy::from_env`]).
    pub fn new(reach: Reach) -> Result<Self, reqwest::Error> {
        Self::with_proxy(reach, OutboundProxy::from_env())
    }

    /// rustls, no cookie store, no `Referer`, `User-Agent` [`USER_AGENT`], at most 3
    /// redirects, each to the same scheme, host and port as the original request; a
    /// resolver that refuses the addresses the reach forbids (except the proxy's own
    /// names); `proxy` for a remote reach, none for a loopback one. Timeouts are set per
    /// request from [`KeystoreSettings`].
    ///
    /// Fails only when the TLS backend cannot be initialised.
    pub fn with_proxy(reach: Reach, proxy: OutboundProxy) -> Result<Self, reqwest::Error> {
        let proxy = Arc::new(if reach == Reach::Local {
            OutboundProxy::default()
        } else {
            proxy
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
            .referer(false)
            .dns_resolver(GuardedResolver::with_proxy_hosts(reach, proxy.hosts()));
        builder = if proxy.is_set() {
            // Our own reading of the variables decides, so the checks of `check_host`
            // know exactly which requests the proxy resolves.
            let decides = Arc::clone(&proxy);
            builder.proxy(reqwest::Proxy::custom(move |url| {
                decides.for_url(url).map(|proxy| proxy.url().clone())
            }))
        } else {
            builder.no_proxy()
        };
        Ok(Self {
            http: builder.build()?,
            reach,
            proxy,
        })
    }
}

/// Why the redirect policy stopped a request; recovered from the `reqwest::Error` chain.
#[derive(Debug, thiserror::Error)]
enum RedirectRefusal {
    #[error("redirect to another host refused (to {0})")]
    OtherHost(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooMany,
}

fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    // `previous` holds every URL requested so far, the original request first.
    let Some(original) = attempt.previous().first() else {
        return attempt.error(RedirectRefusal::TooMany);
    };
    if attempt.url().origin() != original.origin() {
        let location = attempt.url().to_string();
        return attempt.error(RedirectRefusal::OtherHost(location));
    }
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error(RedirectRefusal::TooMany);
    }
    attempt.follow()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether we may fetch `url`: `https`, or `http` to a loopback host.
fn check_fetchable(url: &Url) -> Result<(), FetchError> {
    let loopback = is_loopback(url);
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(FetchError::InsecureUrl {
            url: url.to_string(),
        }),
    }
}

/// A configured `jwks_uri` of an issuer of `reach`, checked when the service starts: what
/// [`check_discovered_jwks_uri`] refuses for a remote issuer is refused here too, except
/// that a loopback issuer may name any URL (the operator chose it).
pub fn check_configured_jwks_uri(reach: Reach, jwks_uri: &Url) -> Result<(), FetchError> {
    match reach {
        Reach::Local => check_fetchable(jwks_uri),
        _ => check_discovered_jwks_uri(reach, jwks_uri),
    }
}

/// A `jwks_uri` read from an issuer's discovery document must be fetchable, and a remote
/// issuer must not send us into this host's own services (the admin listener, anything
/// else on loopback) or, without `allow_private_network`, into private networks. Names
/// are checked again on the address connected to ([`GuardedResolver`]).
fn check_discovered_jwks_uri(reach: Reach, jwks_uri: &Url) -> Result<(), FetchError> {
    check_fetchable(jwks_uri)?;
    let names_loopback =
        matches!(jwks_uri.host(), Some(Host::Domain(name)) if is_localhost_name(name));
    let on_loopback = is_loopback(jwks_uri) || names_loopback;
    if reach != Reach::Local && on_loopback {
        return Err(FetchError::ForbiddenAddress {
            url: jwks_uri.to_string(),
            message: "a remote issuer's key fetches may not reach this host".to_owned(),
        });
    }
    // A loopback issuer's fetches are not restricted, so its discovery document (which a
    // local mirror may relay from anywhere) must not send them elsewhere.
    if reach == Reach::Local && !on_loopback {
        return Err(FetchError::InvalidDiscovery {
            url: jwks_uri.to_string(),
            message: "a loopback issuer's discovery may point key fetches only at loopback; \
                      configure jwks_uri for it instead"
                .to_owned(),
        });
    }
    check_reach(reach, jwks_uri)
}

/// `localhost`, `localhost.` and every `*.localhost` name (RFC 6761).
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// IP literals in a URL never reach the resolver: check them here.
fn check_reach(reach: Reach, url: &Url) -> Result<(), FetchError> {
    reach
        .check_url(url)
        .map_err(|message| FetchError::ForbiddenAddress {
            url: url.to_string(),
            message,
        })
}

/// What the host name of `url` says, checked before any connection: names of this host
/// and of metadata services never, and through a proxy (which resolves names itself, so
/// the resolver's check of the address cannot run) no private network's names for a
/// public reach. A remote issuer's URL may not name the proxy itself either.
fn check_host(client: &KeyFetchClient, url: &Url) -> Result<(), FetchError> {
    let Some(name) = domain_of(url) else {
        return Ok(());
    };
    let forbidden = |message: String| FetchError::ForbiddenAddress {
        url: url.to_string(),
        message,
    };
    if client.reach != Reach::Local && client.proxy.hosts().contains(&name) {
        return Err(forbidden(format!(
            "{name} is the outbound proxy; a remote issuer's key fetches may not reach it"
        )));
    }
    let through_proxy = client.proxy.for_url(url).is_some();
    client
        .reach
        .check_name(&name, through_proxy)
        .map_err(forbidden)
}

/// GETs `url` with the bounds of `limits`: the whole exchange within `timeout`, the body
/// read chunk by chunk and abandoned as soon as it passes `max_body_bytes`.
async fn get_bounded(
    client: &KeyFetchClient,
    url: &Url,
    timeout: Duration,
    max_body_bytes: usize,
) -> Result<Bytes, FetchError> {
    check_fetchable(url)?;
    check_reach(client.reach, url)?;
    check_host(client, url)?;
    let exchange = async {
        let response = client
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| request_error(client, url, timeout, &err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        read_limited(response, max_body_bytes)
            .await
            .map_err(|err| match err {
                BodyError::TooLarge => FetchError::BodyTooLarge {
                    from: url.to_string(),
                    limit: max_body_bytes,
                },
                BodyError::Network(err) => request_error(client, url, timeout, &err),
                BodyError::Other(message) => FetchError::Request {
                    url: url.to_string(),
                    message,
                },
            })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_elapsed) => Err(FetchError::Timeout {
            url: url.to_string(),
            after: timeout,
        }),
    }
}

fn request_error(
    client: &KeyFetchClient,
    url: &Url,
    timeout: Duration,
    err: &reqwest::Error,
) -> FetchError {
    let url_text = url.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut io_kinds = Vec::new();
    let mut tunnel = false;
    while let Some(current) = cause {
        if let Some(refusal) = current.downcast_ref::<RedirectRefusal>() {
            return match refusal {
                RedirectRefusal::OtherHost(location) => FetchError::RedirectToOtherHost {
                    url: url_text,
                    location: location.clone(),
                },
                RedirectRefusal::TooMany => FetchError::TooManyRedirects {
                    url: url_text,
                    max: MAX_REDIRECTS,
                },
            };
        }
        if let Some(ResolverRefusal(message)) = current.downcast_ref::<ResolverRefusal>() {
            return FetchError::ForbiddenAddress {
                url: url_text,
                message: message.clone(),
            };
        }
        if let Some(lookup) = current.downcast_ref::<LookupFailed>() {
            let text = lookup.source.to_string();
            let detail = text
                .strip_prefix("failed to lookup address information: ")
                .unwrap_or(&text)
                .to_owned();
            let proxy = client
                .proxy
                .for_url(url)
                .filter(|proxy| proxy.host().as_deref() == Some(lookup.name.as_str()));
            return FetchError::Unreachable {
                url: url_text,
                why: match proxy {
                    Some(proxy) => Unreachable::ProxyDns {
                        proxy: proxy.redacted(),
                        var: proxy.var,
                        detail,
                    },
                    None => Unreachable::Dns {
                        name: lookup.name.clone(),
                        detail,
                    },
                },
            };
        }
        // An `io::Error` wrapping another skips it in `source()`: look inside.
        let mut io = current.downcast_ref::<std::io::Error>();
        while let Some(error) = io {
            io_kinds.push(error.kind());
            io = error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>());
        }
        // hyper-util's tunnel errors are not public types; their text is stable.
        tunnel |= current.to_string().starts_with("tunnel error");
        cause = current.source();
    }
    if err.is_timeout() {
        return FetchError::Timeout {
            url: url_text,
            after: timeout,
        };
    }
    if err.is_connect() {
        let host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => url_text.clone(),
        };
        let detail = innermost(err);
        let why = match client.proxy.for_url(url) {
            Some(proxy) if tunnel && io_kinds.is_empty() => Unreachable::ProxyRefused {
                proxy: proxy.redacted(),
                host,
            },
            Some(proxy) if tunnel => Unreachable::ProxyDown {
                proxy: proxy.redacted(),
                var: proxy.var,
                detail,
            },
            _ if io_kinds.contains(&std::io::ErrorKind::ConnectionRefused) => {
                Unreachable::Refused { host }
            }
            _ if url.scheme() == "https" && io_kinds.contains(&std::io::ErrorKind::InvalidData) => {
                Unreachable::Tls { host, detail }
            }
            _ => Unreachable::Connect { host, detail },
        };
        return FetchError::Unreachable { url: url_text, why };
    }
    FetchError::Request {
        url: url_text,
        message: error_chain(err),
    }
}

/// The text of the last error in `err`'s chain: the one that says what happened.
fn innermost(err: &dyn std::error::Error) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `err` and its sources, joined with ": ".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        let part = current.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

/// Parses a JWK set, leaving out (with a debug log) each JWK that does not parse, e.g.
/// one of a key type this library does not know.
fn parse_jwks(body: &[u8], from: &str) -> Result<JwkSet, FetchError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|err| FetchError::InvalidJwks {
        from: from.to_owned(),
        message: err.to_string(),
    })?;
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (index, value) in raw.keys.into_iter().enumerate() {
        match serde_json::from_value::<Jwk>(value) {
            Ok(jwk) => keys.push(jwk),
            Err(err) => {
                tracing::debug!(from, index, error = %err, "skipping a JWK that does not parse");
            }
        }
    }
    Ok(JwkSet { keys })
}

/// The issuer as it must appear, byte for byte, in `iss` and in the discovery document.
/// `Url` adds a `/` to an empty path; that one is not part of the issuer.
fn issuer_text(issuer: &Url) -> &str {
    let text = issuer.as_str();
    if issuer.path() == "/" && issuer.query().is_none() && issuer.fragment().is_none() {
        text.strip_suffix('/').unwrap_or(text)
    } else {
        text
    }
}

/// Keys served over HTTP: from an explicit `jwks_uri`, or from the `jwks_uri` of the
/// issuer's OpenID discovery document (`{issuer}/.well-known/openid-configuration`).
///
/// The discovered `jwks_uri` is kept and reused; discovery runs again only when a JWKS
/// GET to it answers 404. Never build the JWKS URL from the issuer: GitHub's
/// enterprise-slug issuer serves its keys at the root `jwks_uri` on another path.
pub struct HttpKeySource {
    client: KeyFetchClient,
    issuer: Url,
    configured_jwks_uri: Option<Url>,
    discovered_jwks_uri: ArcSwapOption<Url>,
    fetch_timeout: Duration,
    max_body_bytes: usize,
}

#[derive(serde::Deserialize)]
struct DiscoveryDocument {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

impl HttpKeySource {
    /// A source for `issuer`; with `jwks_uri` set, discovery is skipped.
    pub fn new(
        client: KeyFetchClient,
        issuer: Url,
        jwks_uri: Option<Url>,
        settings: KeystoreSettings,
    ) -> Self {
        Self {
            client,
            issuer,
            configured_jwks_uri: jwks_uri,
            discovered_jwks_uri: ArcSwapOption::empty(),
            fetch_timeout: settings.fetch_timeout,
            max_body_bytes: settings.max_body_bytes,
        }
    }

    /// The `jwks_uri` fetches use now: the configured one, else the one last discovered.
    pub fn jwks_uri(&self) -> Option<Url> {
        self.configured_jwks_uri.clone().or_else(|| {
            self.discovered_jwks_uri
                .load_full()
                .map(|uri| (*uri).clone())
        })
    }

    async fn get(&self, url: &Url) -> Result<Bytes, FetchError> {
        get_bounded(&self.client, url, self.fetch_timeout, self.max_body_bytes).await
    }

    /// Runs discovery, checks the document's issuer and `jwks_uri`, and remembers the latter.
    async fn discover(&self) -> Result<Arc<Url>, FetchError> {
        let expected = issuer_text(&self.issuer);
        let discovery_text = format!(
            "{}/.well-known/openid-configuration",
            expected.trim_end_matches('/')
        );
        let invalid = |url: &str, message: String| FetchError::InvalidDiscovery {
            url: url.to_owned(),
            message,
        };
        let discovery_url =
            Url::parse(&discovery_text).map_err(|err| invalid(&discovery_text, err.to_string()))?;
        let body = self.get(&discovery_url).await?;
        let document: DiscoveryDocument = serde_json::from_slice(&body)
            .map_err(|err| invalid(&discovery_text, err.to_string()))?;
        let got = document
            .issuer
            .ok_or_else(|| invalid(&discovery_text, "no \"issuer\"".to_owned()))?;
        if got != expected {
            return Err(FetchError::IssuerMismatch {
                expected: expected.to_owned(),
                got,
            });
        }
        let jwks_text = document
            .jwks_uri
            .ok_or_else(|| invalid(&discovery_text, "no \"jwks_uri\"".to_owned()))?;
        let jwks_uri = Url::parse(&jwks_text).map_err(|err| {
            invalid(
                &discovery_text,
                format!("\"jwks_uri\" {jwks_text:?} is not an absolute URL: {err}"),
            )
        })?;
        check_discovered_jwks_uri(self.client.reach, &jwks_uri)?;
        let jwks_uri = Arc::new(jwks_uri);
        tracing::debug!(issuer = expected, jwks_uri = %jwks_uri, "discovered jwks_uri");
        self.discovered_jwks_uri.store(Some(Arc::clone(&jwks_uri)));
        Ok(jwks_uri)
    }

    async fn get_jwks(&self, url: &Url) -> Result<JwkSet, FetchError> {
        let body = self.get(url).await?;
        parse_jwks(&body, url.as_str())
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        if let Some(uri) = &self.configured_jwks_uri {
            return self.get_jwks(uri).await;
        }
        let Some(known) = self.discovered_jwks_uri.load_full() else {
            let uri = self.discover().await?;
            return self.get_jwks(&uri).await;
        };
        match self.get_jwks(&known).await {
            Err(FetchError::Status { status: 404, .. }) => {
                tracing::info!(
                    issuer = issuer_text(&self.issuer),
                    jwks_uri = %known,
                    "jwks_uri answered 404; running discovery again"
                );
                self.discovered_jwks_uri.store(None);
                let uri = self.discover().await?;
                self.get_jwks(&uri).await
            }
            other => other,
        }
    }

    fn describe(&self) -> String {
        match self.jwks_uri() {
            Some(uri) => uri.to_string(),
            None => format!("discovery of {}", issuer_text(&self.issuer)),
        }
    }
}

/// Keys read from a JWKS file (`jwks_file`), read again on every fetch so an operator can
/// replace the file without a restart.
pub struct FileKeySource {
    path: PathBuf,
    max_bytes: usize,
}

impl FileKeySource {
    /// A source reading `path`, at most [`DEFAULT_MAX_BODY_BYTES`] of it.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Caps the file size (`max_body_bytes` of the issuer's settings).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

#[async_trait]
impl KeySource for FileKeySource {
    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        let path = self.path.clone();
        let limit = self.max_bytes;
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let file = std::fs::File::open(&path)?;
            let mut body = Vec::new();
            file.take(limit as u64 + 1).read_to_end(&mut body)?;
            Ok(body)
        })
        .await;
        let file_error = |message: String| FetchError::File {
            path: self.describe(),
            message,
        };
        let body = match read {
            Ok(Ok(body)) => body,
            Ok(Err(err)) => return Err(file_error(err.to_string())),
            Err(join) => return Err(file_error(join.to_string())),
        };
        if body.len() > limit {
            return Err(FetchError::BodyTooLarge {
                from: self.describe(),
                limit,
            });
        }
        parse_jwks(&body, &self.describe())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    /// Security invariant: a remote issuer's discovery document cannot aim our key
    /// fetches at this host (SSRF into the admin listener or other local services), its
    /// link (cloud metadata) or private networks, however the address is written; names
    /// are checked again on the address they resolve to (`reach::GuardedResolver`).
    #[test]
    fn a_remote_issuer_cannot_point_key_fetches_at_loopback() {
        let parse = |text: &str| Url::parse(text).expect("test URL");
        for inside in [
            "http://127.0.0.1:9090/metrics",
            "http://localhost/jwks",
            "https://127.0.0.1/jwks",
            "https://[::1]/jwks",
            "https://0.0.0.0:9090/metrics",
            "https://[::ffff:127.0.0.1]:9090/metrics",
            "https://localhost.:9090/metrics",
            "https://keys.localhost/jwks",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/jwks",
            "https://[fd00::5]/jwks",
        ] {
            assert!(
                check_discovered_jwks_uri(Reach::Public, &parse(inside)).is_err(),
                "{inside}"
            );
        }
        assert!(
            check_discovered_jwks_uri(Reach::Public, &parse("http://keys.example/jwks")).is_err()
        );
        assert!(
            check_discovered_jwks_uri(
                Reach::Public,
                &parse("https://token.actions.githubusercontent.com/.well-known/jwks")
            )
            .is_ok()
        );
        // With allow_private_network, private ranges are reachable; this host never is.
        assert!(
            check_discovered_jwks_uri(Reach::PrivateNetwork, &parse("https://10.0.0.5/jwks"))
                .is_ok()
        );
        assert!(
            check_discovered_jwks_uri(
                Reach::PrivateNetwork,
                &parse("https://[::ffff:127.0.0.1]/jwks")
            )
            .is_err()
        );
        assert!(
            check_discovered_jwks_uri(Reach::Local, &parse("http://127.0.0.1:8080/jwks")).is_ok()
        );
        assert!(
            check_discovered_jwks_uri(Reach::Local, &parse("https://keys.example/jwks")).is_err(),
            "a loopback issuer's discovery cannot send its unrestricted fetches elsewhere"
        );
    }

    #[test]
    fn issuer_text_drops_only_the_slash_url_adds() {
        let parse = |text: &str| Url::parse(text).expect("test URL");
        assert_eq!(
            issuer_text(&parse("https://gitlab.com")),
            "https://gitlab.com"
        );
        assert_eq!(
            issuer_text(&parse("https://h.example/acme-corp")),
            "https://h.example/acme-corp"
        );
        assert_eq!(
            issuer_text(&parse("https://h.example/_services/token/")),
            "https://h.example/_services/token/"
        );
    }

    #[test]
    fn only_https_or_loopback_http_is_fetchable() {
        let ok = |text: &str| check_fetchable(&Url::parse(text).expect("test URL")).is_ok();
        assert!(ok(
            "https://token.actions.githubusercontent.com/.well-known/jwks"
        ));
        assert!(ok("http://127.0.0.1:8080/jwks"));
        assert!(ok("http://127.8.0.1/jwks"));
        assert!(ok("http://[::1]:9000/jwks"));
        assert!(ok("http://localhost/jwks"));
        assert!(!ok("http://gitlab.com/oauth/discovery/keys"));
        assert!(!ok("http://10.0.0.1/jwks"));
        assert!(!ok("ftp://127.0.0.1/jwks"));
        assert!(!ok("file:///etc/jwks.json"));
    }
}
