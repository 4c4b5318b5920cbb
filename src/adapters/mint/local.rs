//! Tokens tokenmint signs itself (`kind = "local"` targets): RFC 9068 JWT access tokens.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::trust::verify::claims::VerifiedClaims;
use async_trait::async_trait;
use secrecy::SecretString;

use crate::adapters::signing::{
    DatabaseRing, KeyError, KeyRing, SigningAlgorithm, SigningKey, StoredChange,
};
use crate::trust::audit::token_sha256;
use crate::trust::mint::{Grant, MintError, MintedToken, Minter};
use crate::trust::platform::ClaimNames;

/// One local token to sign.
struct LocalGrant<'a> {
    issuer_url: &'a str,
    ci_issuer_url: &'a str,
    ci_claims: ClaimNames,
    claims: &'a VerifiedClaims,
    target: &'a str,
    audience: &'a str,
    policy: &'a str,
    scope: &'a str,
    algorithm: SigningAlgorithm,
    ttl: Duration,
}

/// Signs local tokens with the key ring's current keys, or a target's fixed key.
pub struct LocalSigner {
    ring: ArcSwap<KeyRing>,
    /// Targets configured with `signing_key_file`: their key never rotates.
    fixed: BTreeMap<String, Arc<SigningKey>>,
    /// The serialised JWKS, until the ring is replaced or a previous key retires.
    published: ArcSwapOption<PublishedJwks>,
}

/// A serialised JWKS document and what it was made from.
struct PublishedJwks {
    ring: Arc<KeyRing>,
    /// When a previous key retires and the document changes; `None`: not before the
    /// ring is replaced.
    valid_until: Option<OffsetDateTime>,
    body: Bytes,
}

impl LocalSigner {
    pub fn new(ring: KeyRing, fixed: BTreeMap<String, Arc<SigningKey>>) -> Self {
        Self {
            ring: ArcSwap::from_pointee(ring),
            fixed,
            published: ArcSwapOption::empty(),
        }
    }

    /// [`LocalSigner::jwks`] as JSON bytes, serialised once per key-ring change rather
    /// than per request.
    pub fn jwks_json(&self, now: OffsetDateTime) -> Bytes {
        let ring = self.ring.load_full();
        if let Some(published) = self.published.load_full()
            && Arc::ptr_eq(&published.ring, &ring)
            && published.valid_until.is_none_or(|until| now < until)
        {
            return published.body.clone();
        }
        let body = Bytes::from(self.jwks(now).to_string());
        self.published.store(Some(Arc::new(PublishedJwks {
            valid_until: ring.next_jwks_change(now),
            ring,
            body: body.clone(),
        })));
        body
    }

    /// Swaps in a key ring reloaded after `keys rotate`.
    pub fn replace_ring(&self, ring: KeyRing) {
        self.ring.store(Arc::new(ring));
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

    /// Signs one RFC 9068 access token; returns it with its `jti` and `exp`.
    fn sign(
        &self,
        grant: &LocalGrant<'_>,
        now: OffsetDateTime,
    ) -> Result<(String, String, i64), MintError> {
        let ring = self.ring.load();
        let key = match self.fixed.get(grant.target) {
            Some(key) => key,
            None => ring
                .current(grant.algorithm)
                .ok_or(MintError::NoKey(grant.algorithm.as_str()))?,
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
        for name in grant.ci_claims {
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
        Ok((token, jti, exp))
    }

    /// The generation of the ring it signs with.
    pub fn generation(&self) -> u64 {
        self.ring.load().generation()
    }

    /// Reloads the ring from `dir` when another process (`keys rotate`) changed it.
    pub fn reload_if_changed(&self, dir: &Path) -> Result<bool, KeyError> {
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

    /// Reloads the ring from the database when another process (`keys rotate`, a replica
    /// that added an algorithm) saved a new generation. On an error the ring in use stays.
    pub async fn reload_from_database(&self, stored: &DatabaseRing) -> Result<KeyReload, KeyError> {
        match stored.check(self.generation()).await? {
            StoredChange::Unchanged => Ok(KeyReload::Unchanged),
            StoredChange::Resealed { key_id } => Ok(KeyReload::Resealed { key_id }),
            StoredChange::Changed(ring) => {
                for warning in ring.warnings() {
                    tracing::warn!("{warning}");
                }
                let generation = ring.generation();
                self.replace_ring(ring);
                Ok(KeyReload::Reloaded { generation })
            }
        }
    }
}

/// What [`LocalSigner::reload_from_database`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReload {
    /// The stored ring is the one it signs with.
    Unchanged,
    /// Another process saved a new generation; it signs with that now.
    Reloaded { generation: u64 },
    /// The stored keys were resealed with the key-encryption key whose id this is; it
    /// keeps signing with the keys it has, and cannot read newer rotations.
    Resealed { key_id: String },
}

/// The minter of one local target: signs with the shared [`LocalSigner`].
pub struct LocalMinter {
    signer: Arc<LocalSigner>,
    /// `server.public_url`: the `iss` of local tokens.
    issuer_url: String,
    target: String,
    audience: String,
    algorithm: SigningAlgorithm,
    max_ttl: Duration,
}

impl LocalMinter {
    pub fn new(
        signer: Arc<LocalSigner>,
        issuer_url: &str,
        target: &str,
        audience: &str,
        algorithm: SigningAlgorithm,
        max_ttl: Duration,
    ) -> Self {
        Self {
            signer,
            issuer_url: issuer_url.to_owned(),
            target: target.to_owned(),
            audience: audience.to_owned(),
            algorithm,
            max_ttl,
        }
    }
}

#[async_trait]
impl Minter for LocalMinter {
    /// The token lives the policy's `ttl`, at most the target's `max_ttl` (the default).
    async fn mint(&self, grant: &Grant<'_>, now: OffsetDateTime) -> Result<MintedToken, MintError> {
        let ttl = grant.ttl.unwrap_or(self.max_ttl).min(self.max_ttl);
        let scope = grant.scopes.join(" ");
        let (token, jti, exp) = self.signer.sign(
            &LocalGrant {
                issuer_url: &self.issuer_url,
                ci_issuer_url: grant.ci_issuer_url,
                ci_claims: grant.issuer_kind.platform().ci_claims,
                claims: grant.claims,
                target: &self.target,
                audience: &self.audience,
                policy: grant.policy,
                scope: &scope,
                algorithm: self.algorithm,
                ttl,
            },
            now,
        )?;
        Ok(MintedToken {
            sha256: token_sha256(&token),
            token: SecretString::from(token),
            jti: Some(jti),
            expires_at: OffsetDateTime::from_unix_timestamp(exp).unwrap_or(now),
            expires_in: ttl.as_secs(),
            scope,
            is_jwt: true,
            reused: false,
            after_hand_out: None,
        })
    }
}
