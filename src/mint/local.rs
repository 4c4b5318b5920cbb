//! Tokens tokenmint signs itself (`kind = "local"` targets): RFC 9068 JWT access tokens.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::claims::VerifiedClaims;
use crate::keys::{KeyRing, SigningAlgorithm, SigningKey};

/// The CI claims copied into the `ci` object of a local token, when present.
pub const CI_CLAIMS: &[&str] = &[
    "repository",
    "repository_id",
    "repository_owner_id",
    "ref",
    "sha",
    "environment",
    "workflow_ref",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "actor",
    "event_name",
    "project_path",
    "project_id",
    "namespace_id",
    "pipeline_id",
    "job_id",
];

/// What a minted local token is.
#[derive(Debug)]
pub struct MintedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: OffsetDateTime,
}

/// One local token to mint.
pub struct LocalGrant<'a> {
    pub issuer_url: &'a str,
    pub ci_issuer_url: &'a str,
    pub claims: &'a VerifiedClaims,
    pub target: &'a str,
    pub audience: &'a str,
    pub policy: &'a str,
    pub scope: &'a str,
    pub algorithm: SigningAlgorithm,
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no current {0} signing key")]
    NoKey(SigningAlgorithm),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Signs local tokens with the key ring's current keys, or a target's fixed key.
pub struct LocalSigner {
    ring: ArcSwap<KeyRing>,
    /// Targets configured with `signing_key_file`: their key never rotates.
    fixed: BTreeMap<String, Arc<SigningKey>>,
}

impl LocalSigner {
    pub fn new(ring: KeyRing, fixed: BTreeMap<String, Arc<SigningKey>>) -> Self {
        Self {
            ring: ArcSwap::from_pointee(ring),
            fixed,
        }
    }

    /// Swaps in a key ring reloaded after `keys rotate`.
    pub fn replace_ring(&self, ring: KeyRing) {
        self.ring.store(Arc::new(ring));
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// The published JWKS: the ring's keys plus every fixed key.
    pub fn jwks(&self, now: OffsetDateTime) -> Value {
        let mut document = self.ring.load().jwks(now);
        if let Some(Value::Array(keys)) = document.get_mut("keys") {
            for key in self.fixed.values() {
                let jwk = key.public_jwk().clone();
                if !keys.contains(&jwk) {
                    keys.push(jwk);
                }
            }
        }
        document
    }

    /// Signs one RFC 9068 access token.
    pub fn mint(
        &self,
        grant: &LocalGrant<'_>,
        now: OffsetDateTime,
    ) -> Result<MintedToken, MintError> {
        let ring = self.ring.load();
        let key = match self.fixed.get(grant.target) {
            Some(key) => key,
            None => ring
                .current(grant.algorithm)
                .ok_or(MintError::NoKey(grant.algorithm))?,
        };
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let iat = now.unix_timestamp();
        let ttl = i64::try_from(grant.ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = iat.saturating_add(ttl);
        let ci_sub = grant.claims.get_str("sub").unwrap_or_default();
        let mut ci = Map::new();
        ci.insert(
            "issuer".to_owned(),
            Value::String(grant.ci_issuer_url.to_owned()),
        );
        for name in CI_CLAIMS {
            if let Some(value) = grant.claims.get(name)
                && !value.is_null()
            {
                ci.insert((*name).to_owned(), value.clone());
            }
        }
        let claims = json!({
            "iss": grant.issuer_url,
            "sub": format!("{}:{}", grant.claims.issuer_name(), ci_sub),
            "aud": grant.audience,
            "client_id": grant.policy,
            "scope": grant.scope,
            "jti": jti,
            "iat": iat,
            "exp": exp,
            "ci": Value::Object(ci),
        });
        let token = key
            .sign_jwt(&claims)
            .map_err(|err| MintError::Signing(err.to_string()))?;
        Ok(MintedToken {
            token,
            jti,
            expires_at: OffsetDateTime::from_unix_timestamp(exp).unwrap_or(now),
        })
    }

    /// Reloads the ring from `dir` when another process (`keys rotate`) changed it.
    pub fn reload_if_changed(&self, dir: &Path) -> Result<bool, crate::keys::KeyError> {
        let current = self.ring.load().generation();
        if KeyRing::stored_generation(dir)? == current {
            return Ok(false);
        }
        let loaded = KeyRing::load(dir)?;
        for warning in loaded.warnings() {
            tracing::warn!("{warning}");
        }
        self.replace_ring(loaded);
        Ok(true)
    }
}
