//! Remote targets (`auth0`, `oauth2`): tokens obtained from the target's token endpoint
//! with the client-credentials grant, narrowed to the policy's grant, checked, and
//! optionally reused.
//!
//! Security invariants kept here (each pinned by a test in `tests/api/remote.rs`):
//! - a token is handed on only when the scope it carries is known and within the grant
//!   (`wider_scope_is_never_handed_out`, `undeterminable_scope_is_never_handed_out`);
//! - with `enforce_max_ttl`, never a token living longer than `max_ttl`
//!   (`long_lived_tenant_token_is_refused`);
//! - a reused token is handed out only within the first half of its life.

mod client;
mod credentials;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

pub use client::{EndpointError, EndpointToken, MAX_ATTEMPTS, ScopeSource, TokenEndpointClient};
pub use credentials::{
    ASSERTION_LIFETIME_SECS, AssertionSigner, ClientCredentials, JWT_BEARER_ASSERTION,
    MAX_ASSERTION_BYTES,
};

use super::{Grant, MintError, MintedToken, Minter};
use crate::config::{RemoteProvider, TargetConfig};
use crate::metrics::UpstreamObserver;

/// A token kept for `reuse_tokens`.
struct CachedToken {
    token: SecretString,
    scope: String,
    jti: Option<String>,
    issued_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

/// Mints by calling a remote target's token endpoint.
pub struct RemoteMinter {
    target: String,
    provider: RemoteProvider,
    client: TokenEndpointClient,
    max_ttl: Duration,
    enforce_max_ttl: bool,
    /// (policy, granted scope) → token, when `reuse_tokens` is on.
    reuse: Option<moka::future::Cache<(String, String), Arc<CachedToken>>>,
}

impl RemoteMinter {
    /// Builds the minter of a remote target, reading its credentials. The error is one
    /// line naming the configuration key at fault.
    pub fn new(target: &TargetConfig, observer: Arc<dyn UpstreamObserver>) -> Result<Self, String> {
        let Some(remote) = target.remote() else {
            return Err(format!("targets.{} is not a remote target", target.name));
        };
        let credentials = ClientCredentials::load(&remote.client_id, &remote.client_auth)?;
        let client = TokenEndpointClient::new(
            &target.name,
            &target.audience,
            remote.clone(),
            credentials,
            observer,
        )
        .map_err(|err| format!("targets.{}: {err}", target.name))?;
        let reuse = remote.reuse_tokens.then(|| {
            moka::future::Cache::builder()
                .max_capacity(10_000)
                // Entries are only served within half the token's life; this bounds memory.
                .time_to_live(target.max_ttl.max(Duration::from_secs(1)))
                .build()
        });
        Ok(Self {
            target: target.name.clone(),
            provider: remote.provider.clone(),
            client,
            max_ttl: target.max_ttl,
            enforce_max_ttl: remote.enforce_max_ttl,
            reuse,
        })
    }

    pub fn client(&self) -> &TokenEndpointClient {
        &self.client
    }

    /// Checks a token the endpoint issued against the grant and the target's `max_ttl`.
    pub fn check(&self, token: &EndpointToken, granted: &[String]) -> Result<String, MintError> {
        let target = &self.target;
        let Some(scope) = token.scope.clone() else {
            return Err(MintError::Upstream {
                reason: "upstream_scope_unknown",
                public: format!(
                    "target {target:?} did not say which scopes the token carries, so tokenmint cannot \
                     check it against the policy; the token was not handed out"
                ),
                detail: "the answer has no scope field and the token no scope claim".to_owned(),
            });
        };
        let granted_set: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
        let extra: Vec<&str> = scope
            .split_ascii_whitespace()
            .filter(|s| !granted_set.contains(s))
            .collect();
        if !extra.is_empty() {
            let hint = match self.provider {
                RemoteProvider::Auth0 { .. } => {
                    "give this target its own M2M application whose client grant has exactly the policy's scopes"
                }
                RemoteProvider::OAuth2 => {
                    "give this target its own client allowed exactly the policy's scopes"
                }
            };
            return Err(MintError::Upstream {
                reason: "upstream_scope_wider",
                public: format!(
                    "target {target:?} issued a token with more scopes than the policy grants (it did not \
                     narrow to the requested scope); the token was not handed out; an operator must {hint}"
                ),
                detail: format!(
                    "granted {:?}, the token carries {:?} (extra: {})",
                    granted.join(" "),
                    scope,
                    extra.join(" ")
                ),
            });
        }
        let max = self.max_ttl.as_secs();
        if self.enforce_max_ttl && token.expires_in > max {
            let setting = match self.provider {
                RemoteProvider::Auth0 { .. } => {
                    "shorten the API's token lifetime in the tenant (APIs > the API > Settings > Maximum Access Token Lifetime)"
                }
                RemoteProvider::OAuth2 => "shorten the token lifetime at the authorization server",
            };
            return Err(MintError::Upstream {
                reason: "upstream_ttl_exceeded",
                public: format!(
                    "target {target:?} issued a token living {}s, longer than its max_ttl of {max}s; \
                     the token was not handed out; an operator must {setting} or raise max_ttl",
                    token.expires_in
                ),
                detail: format!("expires_in {} > max_ttl {max}s", token.expires_in),
            });
        }
        Ok(scope)
    }

    async fn reusable(&self, key: &(String, String), now: OffsetDateTime) -> Option<MintedToken> {
        let cache = self.reuse.as_ref()?;
        let cached = cache.get(key).await?;
        let half_life = (cached.expires_at - cached.issued_at) / 2;
        if now >= cached.issued_at + half_life {
            cache.invalidate(key).await;
            return None;
        }
        let expires_in = u64::try_from((cached.expires_at - now).whole_seconds()).unwrap_or(0);
        Some(MintedToken {
            token: cached.token.clone(),
            jti: cached.jti.clone(),
            expires_at: cached.expires_at,
            expires_in,
            scope: cached.scope.clone(),
            reused: true,
        })
    }
}

#[async_trait]
impl Minter for RemoteMinter {
    fn is_remote(&self) -> bool {
        true
    }

    async fn mint(&self, grant: &Grant<'_>, now: OffsetDateTime) -> Result<MintedToken, MintError> {
        let key = (grant.policy.to_owned(), grant.scopes.join(" "));
        if let Some(reused) = self.reusable(&key, now).await {
            return Ok(reused);
        }
        let token = self
            .client
            .request(grant.request_id, Some(grant.scopes))
            .await
            .map_err(MintError::from)?;
        let scope = self.check(&token, grant.scopes)?;
        let issued_at = OffsetDateTime::now_utc();
        let expires_at = issued_at + Duration::from_secs(token.expires_in.min(i64::MAX as u64 / 4));
        if let Some(cache) = &self.reuse {
            cache
                .insert(
                    key,
                    Arc::new(CachedToken {
                        token: token.access_token.clone(),
                        scope: scope.clone(),
                        jti: token.jti.clone(),
                        issued_at,
                        expires_at,
                    }),
                )
                .await;
        }
        Ok(MintedToken {
            token: token.access_token,
            jti: token.jti,
            expires_at,
            expires_in: token.expires_in,
            scope,
            reused: false,
        })
    }
}

impl From<EndpointError> for MintError {
    fn from(err: EndpointError) -> Self {
        match err {
            EndpointError::Failed {
                reason,
                public,
                detail,
            } => MintError::Upstream {
                reason,
                public,
                detail,
            },
            EndpointError::RateLimited {
                retry_after,
                detail,
            } => MintError::RateLimited {
                retry_after,
                detail,
            },
        }
    }
}
