//! Errors of the key store: why a key set could not be fetched, and why a key lookup failed.
//!
//! Messages are for logs and readiness details. They name URLs and file paths, which are
//! configuration, never token contents beyond a (truncated) `kid`. The HTTP layer maps a
//! [`KeyError`] to its own short external message.

use std::time::Duration;

/// Why one fetch of an issuer's key set failed. The last good keys stay in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is neither `https` nor `http` to a loopback host.
    #[error("refusing to fetch {url}: only https, or http to a loopback host, is allowed")]
    InsecureUrl { url: String },
    /// The URL's host is an address (or a name for one) the issuer's reach forbids.
    #[error("refusing to fetch {url}: {message}")]
    ForbiddenAddress { url: String, message: String },
    /// The whole request, body included, did not finish in time.
    #[error("GET {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    /// A redirect pointed to another scheme, host or port.
    #[error("GET {url}: redirect to another host refused (to {location})")]
    RedirectToOtherHost { url: String, location: String },
    /// The redirect chain was too long.
    #[error("GET {url}: more than {max} redirects")]
    TooManyRedirects { url: String, max: usize },
    /// DNS, the connection, TLS or the proxy on the way failed: nothing was fetched.
    #[error("GET {url} failed: {why}")]
    Unreachable { url: String, why: Unreachable },
    /// Sending the request or reading the response failed otherwise.
    #[error("GET {url} failed: {message}")]
    Request { url: String, message: String },
    /// The server answered with a status other than 2xx.
    #[error("GET {url} returned HTTP {status}")]
    Status { url: String, status: u16 },
    /// The response body (or key file) is larger than `max_body_bytes`.
    #[error("{from}: body exceeds {limit} bytes")]
    BodyTooLarge { from: String, limit: usize },
    /// The discovery document is not JSON, or lacks a usable `issuer` or `jwks_uri`.
    #[error("discovery document at {url} is invalid: {message}")]
    InvalidDiscovery { url: String, message: String },
    /// The discovery document names another issuer than the configured one.
    #[error("discovery issuer mismatch: expected {expected} got {got}")]
    IssuerMismatch { expected: String, got: String },
    /// The body is not a JSON object with a `keys` array.
    #[error("{from}: not a JSON Web Key Set: {message}")]
    InvalidJwks { from: String, message: String },
    /// The key file could not be read.
    #[error("cannot read key file {path}: {message}")]
    File { path: String, message: String },
    /// The set holds no key we can verify signatures with.
    #[error("{from}: the key set has no usable signing key")]
    NoUsableKeys { from: String },
    /// The fetch task ended without an answer (it panicked or the runtime shut down).
    #[error("key fetch for issuer {issuer} did not complete: {message}")]
    Aborted { issuer: String, message: String },
}

/// The advice for a host that cannot reach its issuer.
const USE_JWKS_FILE: &str =
    "if this host cannot reach the issuer, give it the issuer's keys with jwks_file";

/// Why an issuer (or the proxy on the way to it) could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unreachable {
    /// The issuer's name does not resolve.
    #[error("DNS lookup of {name} failed: {detail}; check the issuer URL, or, {USE_JWKS_FILE}")]
    Dns { name: String, detail: String },
    /// Nothing listens at the issuer's address.
    #[error("{host} refused the connection; {USE_JWKS_FILE}")]
    Refused { host: String },
    /// The connection failed otherwise (no route, network unreachable, reset).
    #[error("cannot connect to {host} ({detail}); {USE_JWKS_FILE}")]
    Connect { host: String, detail: String },
    /// The TLS handshake failed: a certificate this host does not trust, or not TLS.
    #[error(
        "the TLS handshake with {host} failed ({detail}); a proxy that intercepts TLS needs \
         its CA in this host's trust store"
    )]
    Tls { host: String, detail: String },
    /// The proxy's name does not resolve.
    #[error("DNS lookup of the proxy {proxy} failed: {detail}; check {var}")]
    ProxyDns {
        proxy: String,
        var: &'static str,
        detail: String,
    },
    /// The proxy could not be connected to.
    #[error("cannot connect to the proxy {proxy} ({detail}); check {var}")]
    ProxyDown {
        proxy: String,
        var: &'static str,
        detail: String,
    },
    /// The proxy answered CONNECT with something other than 200.
    #[error(
        "the proxy {proxy} did not open a tunnel to {host} (it refused, or cannot resolve or \
         reach it); {USE_JWKS_FILE}"
    )]
    ProxyRefused { proxy: String, host: String },
}

/// Why [`super::IssuerKeys::key`] has no key to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The issuer's current key set has no key with this `kid` (after at most one refetch).
    #[error("issuer {issuer} has no signing key with kid {kid:?}")]
    UnknownKid { issuer: String, kid: String },
    /// No good key set was fetched within `max_stale`: fail closed.
    #[error(
        "signing keys of issuer {issuer} are stale: last good fetch {age:?} ago, \
         limit {max_stale:?}; failing closed"
    )]
    Stale {
        issuer: String,
        age: Duration,
        max_stale: Duration,
    },
    /// No good key set was ever fetched.
    #[error("no signing keys loaded for issuer {issuer}: {}", last_error.as_deref().unwrap_or("no fetch has completed yet"))]
    Unavailable {
        issuer: String,
        last_error: Option<String>,
    },
}

/// Longest `kid` echoed in errors and logs; a `kid` comes from an unverified token.
pub(crate) const MAX_KID_IN_MESSAGES: usize = 64;

/// `kid`, cut to [`MAX_KID_IN_MESSAGES`] characters for error messages.
pub(crate) fn kid_for_messages(kid: &str) -> String {
    match kid.char_indices().nth(MAX_KID_IN_MESSAGES) {
        Some((cut, _)) => format!("{}…", &kid[..cut]),
        None => kid.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way of not reaching an issuer says what failed and what to do.
    #[test]
    fn unreachable_issuers_say_what_failed_and_what_to_do() {
        let url = "https://ci.acme.example/.well-known/openid-configuration".to_owned();
        let text = |why: Unreachable| {
            FetchError::Unreachable {
                url: url.clone(),
                why,
            }
            .to_string()
        };
        let host = || "ci.acme.example:443".to_owned();
        for (why, expected) in [
            (
                Unreachable::Dns {
                    name: "ci.acme.example".to_owned(),
                    detail: "Name or service not known".to_owned(),
                },
                "DNS lookup of ci.acme.example failed: Name or service not known; check the \
                 issuer URL, or, if this host cannot reach the issuer, give it the issuer's keys \
                 with jwks_file",
            ),
            (
                Unreachable::Refused { host: host() },
                "ci.acme.example:443 refused the connection; if this host cannot reach the \
                 issuer, give it the issuer's keys with jwks_file",
            ),
            (
                Unreachable::Connect {
                    host: host(),
                    detail: "Network is unreachable (os error 101)".to_owned(),
                },
                "cannot connect to ci.acme.example:443 (Network is unreachable (os error 101)); \
                 if this host cannot reach the issuer, give it the issuer's keys with jwks_file",
            ),
            (
                Unreachable::Tls {
                    host: host(),
                    detail: "invalid peer certificate: UnknownIssuer".to_owned(),
                },
                "the TLS handshake with ci.acme.example:443 failed (invalid peer certificate: \
                 UnknownIssuer); a proxy that intercepts TLS needs its CA in this host's trust \
                 store",
            ),
            (
                Unreachable::ProxyDns {
                    proxy: "http://proxy.corp:3128".to_owned(),
                    var: "HTTPS_PROXY",
                    detail: "Name or service not known".to_owned(),
                },
                "DNS lookup of the proxy http://proxy.corp:3128 failed: Name or service not \
                 known; check HTTPS_PROXY",
            ),
            (
                Unreachable::ProxyDown {
                    proxy: "http://***@proxy.corp:3128".to_owned(),
                    var: "ALL_PROXY",
                    detail: "Connection refused (os error 111)".to_owned(),
                },
                "cannot connect to the proxy http://***@proxy.corp:3128 (Connection refused (os \
                 error 111)); check ALL_PROXY",
            ),
            (
                Unreachable::ProxyRefused {
                    proxy: "http://proxy.corp:3128".to_owned(),
                    host: host(),
                },
                "the proxy http://proxy.corp:3128 did not open a tunnel to ci.acme.example:443 \
                 (it refused, or cannot resolve or reach it); if this host cannot reach the \
                 issuer, give it the issuer's keys with jwks_file",
            ),
        ] {
            assert_eq!(text(why), format!("GET {url} failed: {expected}"));
        }
    }
}
