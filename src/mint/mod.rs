//! Minting: turning a granted exchange into an access token for its target.
//!
//! Every target kind implements [`Minter`]; the exchange holds one per target as
//! `Arc<dyn Minter>` and never knows which kind it talks to. This release has
//! [`LocalMinter`] (tokenmint signs); remote targets (Auth0, OAuth2) implement the same trait.

pub mod local;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::claims::VerifiedClaims;
pub use local::{LocalMinter, LocalSigner};

/// What a policy granted, as a minter needs it.
#[derive(Debug)]
pub struct Grant<'a> {
    pub request_id: &'a str,
    /// The verified CI claims of the caller.
    pub claims: &'a VerifiedClaims,
    /// The CI token's `iss`.
    pub ci_issuer_url: &'a str,
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
}

/// Why minting failed. `Display` is for logs and the audit record, never for the caller.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no current {0} signing key")]
    NoKey(crate::keys::SigningAlgorithm),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Mints access tokens for one target.
#[async_trait]
pub trait Minter: Send + Sync + 'static {
    async fn mint(&self, grant: &Grant<'_>, now: OffsetDateTime) -> Result<MintedToken, MintError>;
}
