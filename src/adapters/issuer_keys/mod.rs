//! The JWKS key store: fetches, caches and refreshes each configured issuer's signing keys.
//!
//! # Shape
//!
//! - [`KeySource`] is where one issuer's key set comes from: [`HttpKeySource`] (OIDC
//!   discovery, or an explicit `jwks_uri`) or [`FileKeySource`] (`jwks_file`, for issuers
//!   this host cannot reach). Sources only fetch and parse; they keep no keys.
//! - [`IssuerKeys`] holds one issuer's current keys and decides when to fetch: a periodic
//!   refresh ([`IssuerKeys::spawn_refresher`]) and a bounded refetch when a token names a
//!   `kid` we do not know (key rotation at the issuer).
//! - [`http_client`] builds the one outbound HTTP client: rustls, no cookies, at most 3
//!   redirects and only to the same scheme, host and port.
//!
//! # Caches
//!
//! | cache | key | value | lifetime | purpose |
//! |---|---|---|---|---|
//! | `IssuerKeys` key snapshot (`ArcSwapOption`) | `kid` | `Arc<VerificationKey>` | replaced as a whole by each good fetch (every `jwks_refresh`, default 15 min, or after an unknown `kid`); keys gone from the issuer are dropped then. Served until `jwks_max_stale` (24 h) after the last good fetch, after which every lookup fails closed with [`KeyError::Stale`] | verify CI tokens without a network call |
//! | `IssuerKeys` refetch stamp | one per issuer | start time of the last lookup-triggered refetch | `jwks_refetch_cooldown` (60 s) | at most one unknown-`kid` refetch per cooldown, so forged `kid`s cannot make us hammer the issuer |
//! | `HttpKeySource` discovered `jwks_uri` | one per source | `Url` from the discovery document | until a JWKS GET to it answers 404, then discovery runs again | one discovery round trip, not one per fetch |
//! | `IssuerKeys` last error | one per issuer | error text | until the next good fetch | readiness details ([`IssuerKeys::status`]) |
//!
//! Nothing else is cached: the file source reads its file on every fetch, so an operator
//! can replace it. Fetches of one issuer are serialised by a `tokio::sync::Mutex`, so at
//! most one is in flight; callers that arrive while a fetch runs wait for it and then use
//! its result (single flight). `moka` is not used here: the key set is one value that must
//! be replaced atomically as a whole, which `ArcSwap` does without locks on the read path.
//!
//! # Security invariants
//!
//! - A set with no usable signing key never replaces good keys
//!   (`tests::issuer_keys::unusable_set_never_replaces_good_keys`).
//! - Keys older than `max_stale` are never served
//!   (`tests::issuer_keys::stale_keys_fail_closed_even_for_known_kids`).
//! - Only `https` URLs are fetched, or `http` to a loopback host
//!   (`tests::http_source::http_jwks_uri_to_non_loopback_host_is_refused`); redirects never
//!   leave the origin (`tests::http_source::cross_host_redirect_is_refused`).
//! - Symmetric (`oct`) keys, `use: enc` keys and keys whose `alg` is not a signature
//!   algorithm are skipped, so an issuer's JWKS can never enable HMAC verification.

mod cache;
mod error;
mod keys;
mod proxy;
mod reach;
mod source;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use cache::{FetchObserver, FetchOutcome, IssuerKeys, KeysStatus, NoopObserver};
pub use error::{FetchError, KeyError, Unreachable};
pub use keys::{KeyType, VerificationKey};
pub use proxy::{OutboundProxy, ProxyUrl};
pub use reach::{GuardedResolver, LookupFailed, Reach, ResolverRefusal};
pub use source::{
    FileKeySource, HttpKeySource, KeyFetchClient, KeySource, USER_AGENT, check_configured_jwks_uri,
};

/// Default for [`KeystoreSettings::fetch_timeout`].
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`KeystoreSettings::max_body_bytes`]: 256 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// Default for [`KeystoreSettings::refresh_interval`] (`jwks_refresh`).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Default for [`KeystoreSettings::max_stale`] (`jwks_max_stale`).
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
/// Default for [`KeystoreSettings::refetch_cooldown`] (`jwks_refetch_cooldown`).
pub const DEFAULT_REFETCH_COOLDOWN: Duration = Duration::from_secs(60);

/// Per-issuer limits and timings of the key store, from `[issuers.NAME]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeystoreSettings {
    /// Bound on one HTTP request, from sending it to the last byte of the body.
    pub fetch_timeout: Duration,
    /// Largest accepted response body (or key file); a larger one is a fetch error.
    pub max_body_bytes: usize,
    /// `jwks_refresh`: time between periodic refreshes.
    pub refresh_interval: Duration,
    /// `jwks_max_stale`: after this long without a good fetch, lookups fail closed.
    pub max_stale: Duration,
    /// `jwks_refetch_cooldown`: least time between the starts of two refetches
    /// triggered by an unknown `kid`.
    pub refetch_cooldown: Duration,
}

impl Default for KeystoreSettings {
    fn default() -> Self {
        Self {
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            max_stale: DEFAULT_MAX_STALE,
            refetch_cooldown: DEFAULT_REFETCH_COOLDOWN,
        }
    }
}
