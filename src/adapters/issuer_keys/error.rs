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
    /// Connecting, TLS, or reading the response failed.
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
