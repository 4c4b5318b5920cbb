//! Minting: turning a granted exchange into an access token for its target.
//!
//! Every target kind implements [`Minter`]; the exchange holds one per target as
//! `Arc<dyn Minter>` and never knows which kind it talks to: [`LocalMinter`] signs
//! tokens itself, [`RemoteMinter`] obtains them from an Auth0 tenant or OAuth2 server.

pub mod local;
pub mod remote;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::trust::verify::claims::VerifiedClaims;
pub use local::{LocalMinter, LocalSigner};
pub use remote::RemoteMinter;

/// What a policy granted, as a minter needs it.
#[derive(Debug)]
pub struct Grant<'a> {
    pub request_id: &'a str,
    /// The verified CI claims of the caller.
    pub claims: &'a VerifiedClaims,
    /// The CI token's `iss`.
    pub ci_issuer_url: &'a str,
    /// The CI platform of the token's issuer.
    pub issuer_kind: crate::trust::platform::IssuerKind,
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
    pub token: secrecy::SecretString,
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
    /// Offered for reuse once handed out (`reuse_tokens`); see [`remote::ReuseOffer`].
    pub reuse: Option<remote::ReuseOffer>,
}

/// Why minting failed. `Display` is for logs and the audit record, never for the caller.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no current {0} signing key")]
    NoKey(crate::adapters::signing::SigningAlgorithm),
    #[error("signing failed: {0}")]
    Signing(String),
    /// A remote target failed, refused, or answered with a token that must not be handed
    /// out; `public` is the operator-facing text the caller sees.
    #[error("{detail}")]
    Upstream {
        reason: &'static str,
        public: String,
        detail: String,
    },
    /// A remote target rate-limits us for longer than the exchange may wait.
    #[error("rate limited, retry after {retry_after}s: {detail}")]
    RateLimited { retry_after: u64, detail: String },
}

impl MintError {
    /// The audit and metrics reason (a closed list).
    pub fn reason(&self) -> &'static str {
        match self {
            MintError::NoKey(_) | MintError::Signing(_) => "mint_failed",
            MintError::Upstream { reason, .. } => reason,
            MintError::RateLimited { .. } => "upstream_rate_limited",
        }
    }
}

/// Mints access tokens for one target.
#[async_trait]
pub trait Minter: Send + Sync + 'static {
    /// Whether minting calls out to another service: the exchange then records the
    /// request as pending before minting.
    fn is_remote(&self) -> bool {
        false
    }

    async fn mint(&self, grant: &Grant<'_>, now: OffsetDateTime) -> Result<MintedToken, MintError>;
}
