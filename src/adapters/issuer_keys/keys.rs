//! Turning a fetched JWK set into verification keys, skipping every JWK we cannot or must not use.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

pub use crate::trust::verify::key::{KeyType, VerificationKey};

use super::error::{FetchError, kid_for_messages};

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
