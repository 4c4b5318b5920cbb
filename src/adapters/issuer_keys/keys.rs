//! Turning a fetched JWK set into verification keys, skipping every JWK we cannot or must not use.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::error::{FetchError, kid_for_messages};

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

/// The usable keys of `set`, by `kid`. JWKs that cannot verify signatures are skipped
/// with a debug log; a set left with no key is an error, so it never replaces good keys.
pub(crate) fn usable_keys(
    set: &JwkSet,
    from: &str,
) -> Result<HashMap<String, Arc<VerificationKey>>, FetchError> {
    let mut keys = HashMap::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        match verification_key(jwk) {
            Ok(key) => {
                if keys.contains_key(&key.kid) {
                    tracing::warn!(
                        from,
                        kid = %kid_for_messages(&key.kid),
                        "JWK set repeats a kid; keeping the first key"
                    );
                    continue;
                }
                keys.insert(key.kid.clone(), Arc::new(key));
            }
            Err(reason) => tracing::debug!(
                from,
                index,
                kid = jwk.common.key_id.as_deref().map(kid_for_messages),
                reason,
                "skipping a JWK that cannot verify signatures"
            ),
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKeys {
            from: from.to_owned(),
        });
    }
    Ok(keys)
}

/// `jwk` as a verification key, or why it is not one.
fn verification_key(jwk: &Jwk) -> Result<VerificationKey, &'static str> {
    let kid = match jwk.common.key_id.as_deref() {
        Some(kid) if !kid.is_empty() => kid.to_owned(),
        _ => return Err("no kid"),
    };
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("use is not \"sig\""),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops does not include \"verify\"");
    }
    let key_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyType::EcP256,
            EllipticCurve::P384 => KeyType::EcP384,
            _ => return Err("unsupported EC curve"),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            _ => return Err("unsupported OKP curve"),
        },
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) key"),
    };
    let algorithm = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => {
            let alg =
                signature_algorithm(alg).ok_or("alg is not a supported signature algorithm")?;
            if !key_type.supports(alg) {
                return Err("alg does not fit the key type");
            }
            Some(alg)
        }
    };
    let decoding_key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key material")?;
    Ok(VerificationKey {
        kid,
        decoding_key,
        algorithm,
        key_type,
    })
}

/// The asymmetric signature algorithm named by a JWK `alg`; `None` for HMAC, encryption
/// and unknown algorithms.
fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match alg {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
