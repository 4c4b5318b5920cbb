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
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

pub use client::{EndpointError, EndpointToken, MAX_ATTEMPTS, TokenEndpointClient};
pub use credentials::{
    ASSERTION_LIFETIME_SECS, AssertionSigner, ClientCredentials, JWT_BEARER_ASSERTION,
    MAX_ASSERTION_BYTES,
};

use crate::config::{RemoteProvider, TargetConfig};
use crate::trust::audit::{Reason, token_sha256};
use crate::trust::mint::{AfterHandOut, Grant, MintError, MintedToken, Minter};

/// Sees every HTTP attempt at a remote target's token endpoint (metrics implement it).
pub trait UpstreamObserver: Send + Sync + 'static {
    /// `outcome`: `ok`, `rate_limited`, `server_error`, `refused`, `malformed`,
    /// `network_error` or `timeout`.
    fn attempt(&self, target: &str, outcome: &'static str, seconds: f64);
}

/// Observes nothing (for `doctor`).
pub struct NoObserver;

impl UpstreamObserver for NoObserver {
    fn attempt(&self, _target: &str, _outcome: &'static str, _seconds: f64) {}
}

/// A token kept for `reuse_tokens`.
struct CachedToken {
    token: SecretString,
    sha256: String,
    scope: String,
    jti: Option<String>,
    is_jwt: bool,
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
    reuse: Option<moka::sync::Cache<(String, String), Arc<CachedToken>>>,
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
            moka::sync::Cache::builder()
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

    /// Checks a token the endpoint issued against the grant and the target's `max_ttl`;
    /// returns the scope to hand on (as the answer stated it).
    /// `sha256` is the token's hash, which a refusal's detail leads with.
    pub fn check(
        &self,
        token: &EndpointToken,
        sha256: &str,
        granted: &[String],
    ) -> Result<String, MintError> {
        let target = &self.target;
        // A withheld token cannot be revoked at Auth0; its hash lets the tenant's logs be
        // matched to this record. First in the detail, so cutting it never loses it.
        let withheld = format!("withheld token sha256 {sha256}");
        let Some(scope) = token.scope.clone() else {
            return Err(MintError::Upstream {
                reason: Reason::UpstreamScopeUnknown,
                public: format!(
                    "target {target:?} did not say which scopes the token carries, so tokenmint cannot \
                     check it against the policy; the token was not handed out"
                ),
                detail: format!(
                    "{withheld}; the answer has no scope field and the token no scope claim"
                ),
            });
        };
        let granted_set: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
        // Both statements must be within the grant: a server may echo the requested scope
        // in the answer while the token itself carries more.
        let stated = [Some(&scope), token.claim_scope.as_ref()];
        let extra: BTreeSet<&str> = stated
            .into_iter()
            .flatten()
            .flat_map(|s| s.split_ascii_whitespace())
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
            let claim = match &token.claim_scope {
                Some(claim) if claim != &scope => format!(" (its scope claim: {claim:?})"),
                _ => String::new(),
            };
            return Err(MintError::Upstream {
                reason: Reason::UpstreamScopeWider,
                public: format!(
                    "target {target:?} issued a token with more scopes than the policy grants (it did not \
                     narrow to the requested scope); the token was not handed out; an operator must {hint}"
                ),
                detail: format!(
                    "{withheld}; granted {:?}, the token carries {:?}{claim} (extra: {})",
                    granted.join(" "),
                    scope,
                    extra.into_iter().collect::<Vec<_>>().join(" ")
                ),
            });
        }
        if scope.split_ascii_whitespace().next().is_none() {
            return Err(MintError::Upstream {
                reason: Reason::UpstreamScopeEmpty,
                public: format!(
                    "target {target:?} issued a token with none of the granted scopes; the token was not \
                     handed out; an operator must add the policy's scopes to tokenmint's client grant"
                ),
                detail: format!(
                    "{withheld}; granted {:?}, the token carries none",
                    granted.join(" ")
                ),
            });
        }
        let max = self.max_ttl.as_secs();
        let life = token.longest_life();
        if self.enforce_max_ttl && life > max {
            let setting = match self.provider {
                RemoteProvider::Auth0 { .. } => {
                    "shorten the API's token lifetime in the tenant (APIs > the API > Settings > Maximum Access Token Lifetime)"
                }
                RemoteProvider::OAuth2 => "shorten the token lifetime at the authorization server",
            };
            return Err(MintError::Upstream {
                reason: Reason::UpstreamTtlExceeded,
                public: format!(
                    "target {target:?} issued a token living {life}s, longer than its max_ttl of {max}s; \
                     the token was not handed out; an operator must {setting} or raise max_ttl"
                ),
                detail: format!(
                    "{withheld}; expires_in {}, own lifetime {}, max_ttl {max}s",
                    token.expires_in,
                    token
                        .exp_in
                        .map_or_else(|| "(no exp)".to_owned(), |e| format!("{e}s"))
                ),
            });
        }
        Ok(scope)
    }

    fn cached(&self, key: &(String, String), now: OffsetDateTime) -> Option<MintedToken> {
        let cache = self.reuse.as_ref()?;
        let cached = cache.get(key)?;
        let half_life = (cached.expires_at - cached.issued_at) / 2;
        if now >= cached.issued_at + half_life {
            cache.invalidate(key);
            return None;
        }
        let expires_in = u64::try_from((cached.expires_at - now).whole_seconds()).unwrap_or(0);
        Some(MintedToken {
            token: cached.token.clone(),
            sha256: cached.sha256.clone(),
            jti: cached.jti.clone(),
            expires_at: cached.expires_at,
            expires_in,
            scope: cached.scope.clone(),
            is_jwt: cached.is_jwt,
            reused: true,
            after_hand_out: None,
        })
    }
}

#[async_trait]
impl Minter for RemoteMinter {
    fn calls_out(&self) -> Option<Duration> {
        Some(self.client.config().timeout)
    }

    fn reusable(&self, grant: &Grant<'_>, now: OffsetDateTime) -> Option<MintedToken> {
        self.cached(&(grant.policy.to_owned(), grant.scopes.join(" ")), now)
    }

    async fn mint(
        &self,
        grant: &Grant<'_>,
        _now: OffsetDateTime,
    ) -> Result<MintedToken, MintError> {
        let token = self
            .client
            .request(grant.request_id, Some(grant.scopes))
            .await
            .map_err(MintError::from)?;
        let sha256 = token_sha256(token.access_token.expose_secret());
        let scope = self.check(&token, &sha256, grant.scopes)?;
        let issued_at = OffsetDateTime::now_utc();
        // `check` bounds the lifetime to ten years, so this cannot overflow.
        let expires_at = issued_at + Duration::from_secs(token.expires_in);
        // Offered for reuse only once it has been handed out.
        let after_hand_out = self.reuse.as_ref().map(|cache| {
            let cache = cache.clone();
            let key = (grant.policy.to_owned(), grant.scopes.join(" "));
            let cached = Arc::new(CachedToken {
                token: token.access_token.clone(),
                sha256: sha256.clone(),
                scope: scope.clone(),
                jti: token.jti.clone(),
                is_jwt: token.is_jwt,
                issued_at,
                expires_at,
            });
            AfterHandOut::new(move || cache.insert(key, cached))
        });
        Ok(MintedToken {
            token: token.access_token,
            sha256,
            jti: token.jti,
            expires_at,
            expires_in: token.expires_in,
            scope,
            is_jwt: token.is_jwt,
            reused: false,
            after_hand_out,
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
