//! A CI issuer's public key as verification uses it, and the [`KeyLookup`] port through
//! which verification finds it (the issuer-keys adapter implements it).

use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey};

/// The family of a verification key; decides which `alg` values it can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// `kty: RSA`: RS256/384/512, PS256/384/512.
    Rsa,
    /// `kty: EC`, `crv: P-256`: ES256.
    EcP256,
    /// `kty: EC`, `crv: P-384`: ES384.
    EcP384,
    /// `kty: OKP`, `crv: Ed25519`: EdDSA.
    Ed25519,
}

impl KeyType {
    /// Whether a signature made with `alg` can be checked with a key of this type.
    pub fn supports(self, alg: Algorithm) -> bool {
        use Algorithm as A;
        match self {
            Self::Rsa => matches!(
                alg,
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
            ),
            Self::EcP256 => alg == A::ES256,
            Self::EcP384 => alg == A::ES384,
            Self::Ed25519 => alg == A::EdDSA,
        }
    }
}

/// One issuer signing key, ready for `jsonwebtoken::decode`.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    /// The JWK's `kid`.
    pub kid: String,
    /// The public key.
    pub decoding_key: DecodingKey,
    /// The JWK's `alg`, when it names one. Always a signature algorithm that fits `key_type`.
    pub algorithm: Option<Algorithm>,
    /// The key's family.
    pub key_type: KeyType,
}

impl VerificationKey {
    /// Whether a token whose header says `alg` may be checked with this key: the key's
    /// type must support `alg`, and a key that names its `alg` accepts only that one.
    /// The caller still checks `alg` against the issuer's configured `algorithms`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.key_type.supports(alg) && self.algorithm.is_none_or(|own| own == alg)
    }
}

/// Why a key lookup has no key to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The issuer's current key set has no key with this `kid`: the token's fault.
    #[error("no key with this kid")]
    UnknownKid,
    /// The issuer's keys cannot be had (never fetched, or stale): fail closed.
    #[error("{0}")]
    Unavailable(String),
}

/// One issuer's verification keys by `kid`.
#[async_trait]
pub trait KeyLookup: Send + Sync + 'static {
    async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, LookupError>;
}
