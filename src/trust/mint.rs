//! What the exchange asks of a target: a [`Minter`] turns a grant into an access token.
//!
//! Every target kind implements it (the adapters in `adapters::mint`); the exchange
//! holds one per target as `Arc<dyn Minter>` and never knows which kind it talks to.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::trust::outcome::Reason;
use crate::trust::platform::IssuerKind;
use crate::trust::verify::claims::VerifiedClaims;

/// What a policy granted, as a minter needs it.
#[derive(Debug)]
pub struct Grant<'a> {
    pub request_id: &'a str,
    /// The verified CI claims of the caller.
    pub claims: &'a VerifiedClaims,
    /// The CI token's `iss`.
    pub ci_issuer_url: &'a str,
    /// The CI platform of the token's issuer.
    pub issuer_kind: IssuerKind,
    /// The deciding policy's name.
    pub policy: &'a str,
    /// The granted scopes, in order.
    pub scopes: &'a [String],
    /// The policy's `ttl`, if it set one (local targets only).
    pub ttl: Option<Duration>,
}

/// A token a minter produced. `token` is handed out once and never stored or logged.
#[derive(Debug)]
pub struct MintedToken {
    pub token: SecretString,
    /// Hex SHA-256 of `token`, computed once: the audit record's `token_sha256`.
    pub sha256: String,
    pub jti: Option<String>,
    pub expires_at: OffsetDateTime,
    /// Seconds until expiry, as the RFC 8693 response's `expires_in`.
    pub expires_in: u64,
    /// The scope the token carries, space-separated.
    pub scope: String,
    /// The token is a JWT (so `requested_token_type=...:jwt` can be honoured).
    pub is_jwt: bool,
    /// Handed out before, to an identical request (`reuse_tokens`).
    pub reused: bool,
    /// What the minter wants done once the token has been handed out, and only then.
    pub after_hand_out: Option<AfterHandOut>,
}

/// Work a minter defers until its token has been handed out: the exchange runs it only
/// after the token's record is durable and the CI token used, so a withheld or
/// cancelled token is never, for example, cached for reuse.
pub struct AfterHandOut(Box<dyn FnOnce() + Send + Sync>);

impl AfterHandOut {
    pub fn new(work: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Box::new(work))
    }

    pub fn run(self) {
        (self.0)();
    }
}

impl fmt::Debug for AfterHandOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AfterHandOut")
    }
}

/// Why minting failed. `Display` is for logs and the audit record, never for the caller.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no current {0} signing key")]
    NoKey(&'static str),
    #[error("signing failed: {0}")]
    Signing(String),
    /// A remote target failed, refused, or answered with a token that must not be handed
    /// out; `public` is the operator-facing text the caller sees.
    #[error("{detail}")]
    Upstream {
        reason: Reason,
        public: String,
        detail: String,
    },
    /// A remote target rate-limits us for longer than the exchange may wait.
    #[error("rate limited, retry after {retry_after}s: {detail}")]
    RateLimited { retry_after: u64, detail: String },
}

impl MintError {
    /// The audit and metrics reason.
    pub fn reason(&self) -> Reason {
        match self {
            MintError::NoKey(_) | MintError::Signing(_) => Reason::MintFailed,
            MintError::Upstream { reason, .. } => *reason,
            MintError::RateLimited { .. } => Reason::UpstreamRateLimited,
        }
    }
}

/// Mints access tokens for one target.
#[async_trait]
pub trait Minter: Send + Sync + 'static {
    /// `Some(budget)` when minting calls out to another service, which may take up to
    /// `budget`: the exchange then reserves the CI token and records the request as
    /// pending before minting. `None` for targets that sign locally.
    fn calls_out(&self) -> Option<Duration> {
        None
    }

    /// A token that can be handed out without calling anyone (a tenant token kept for
    /// `reuse_tokens`), if there is one for this grant.
    fn reusable(&self, _grant: &Grant<'_>, _now: OffsetDateTime) -> Option<MintedToken> {
        None
    }

    async fn mint(&self, grant: &Grant<'_>, now: OffsetDateTime) -> Result<MintedToken, MintError>;
}
