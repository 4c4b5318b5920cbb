//! CI-token verification: issuer allow-list, signature, and the registered claims.
//!
//! Order of checks (each failure is `invalid_grant`): structure, `kid`, an algorithm that
//! can ever be allowed, a configured issuer (before any network call), the issuer's
//! algorithms, the key, the signature, then `iss`, `aud`, `exp`, `nbf`, `iat` and lifetime.
//! Headers that carry or point at keys (`jwk`, `jku`, `x5u`, `x5c`) are never used.

pub mod claims;
pub mod key;
pub mod unverified;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{IssuerConfig, format_duration};
use crate::trust::outcome::Reason;
use crate::trust::verify::claims::VerifiedClaims;
use key::{KeyLookup, LookupError};
use unverified::UnverifiedToken;

/// Why a subject token was refused. Every message is safe to show the caller: it
/// describes the caller's own token.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the subject token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the subject token has the claim {0:?} more than once")]
    DuplicateClaim(String),
    #[error("the subject token header has the member {0:?} more than once")]
    DuplicateHeader(String),
    #[error("the subject token header has no \"kid\"")]
    NoKid,
    #[error("the subject token algorithm {0:?} is never accepted")]
    ForbiddenAlgorithm(String),
    #[error("the subject token has no \"iss\" claim")]
    NoIssuer,
    #[error("the subject token issuer {0:?} is not trusted here")]
    UnknownIssuer(String),
    #[error("the subject token algorithm {alg:?} is not allowed for issuer {issuer:?}")]
    AlgorithmNotAllowed { alg: String, issuer: String },
    #[error("no key with kid {kid:?} is published by issuer {issuer:?}")]
    UnknownKey { kid: String, issuer: String },
    #[error("the key {kid:?} of issuer {issuer:?} is not for algorithm {alg:?}")]
    KeyAlgorithmMismatch {
        kid: String,
        issuer: String,
        alg: String,
    },
    #[error("the subject token signature is invalid")]
    BadSignature,
    #[error("the subject token audience {actual} does not include {expected:?}")]
    WrongAudience { expected: String, actual: String },
    #[error("the subject token names audiences other than {expected:?}: {actual}")]
    ExtraAudience { expected: String, actual: String },
    #[error("the subject token has no valid {0:?} claim")]
    MissingTime(&'static str),
    #[error("the subject token expired at {exp} (leeway {leeway})")]
    Expired { exp: i64, now: i64, leeway: String },
    #[error("the subject token is not valid before {nbf} (leeway {leeway})")]
    NotYetValid { nbf: i64, now: i64, leeway: String },
    #[error("the subject token was issued in the future (iat {iat}, leeway {leeway})")]
    IssuedInFuture { iat: i64, now: i64, leeway: String },
    #[error(
        "the subject token lives {lifetime} (exp - iat), longer than the {max} this issuer allows"
    )]
    LifetimeTooLong { lifetime: String, max: String },
    #[error("the subject token was already used")]
    AlreadyUsed,
    #[error("the subject token is being exchanged by another request; retry")]
    InUse,
    /// Not the token's fault: the issuer's keys cannot be had (fail closed).
    #[error("the signing keys of issuer {issuer:?} are unavailable: {detail}")]
    KeysUnavailable { issuer: String, detail: String },
}

impl VerifyError {
    /// The closed reason code used in metrics and audit records.
    pub fn reason(&self) -> Reason {
        use Reason as R;
        match self {
            VerifyError::Malformed(_) | VerifyError::DuplicateHeader(_) => R::MalformedToken,
            VerifyError::DuplicateClaim(_) => R::DuplicateClaim,
            VerifyError::NoKid => R::NoKid,
            VerifyError::ForbiddenAlgorithm(_) | VerifyError::AlgorithmNotAllowed { .. } => {
                R::AlgorithmNotAllowed
            }
            VerifyError::NoIssuer | VerifyError::UnknownIssuer(_) => R::UnknownIssuer,
            VerifyError::UnknownKey { .. } => R::UnknownKey,
            VerifyError::KeyAlgorithmMismatch { .. } | VerifyError::BadSignature => R::BadSignature,
            VerifyError::WrongAudience { .. } | VerifyError::ExtraAudience { .. } => {
                R::WrongAudience
            }
            VerifyError::MissingTime(_) => R::MissingClaim,
            VerifyError::Expired { .. } => R::Expired,
            VerifyError::NotYetValid { .. } => R::NotYetValid,
            VerifyError::IssuedInFuture { .. } => R::IssuedInFuture,
            VerifyError::LifetimeTooLong { .. } => R::LifetimeTooLong,
            VerifyError::AlreadyUsed => R::TokenReplayed,
            VerifyError::InUse => R::TokenInUse,
            VerifyError::KeysUnavailable { .. } => R::IssuerKeysUnavailable,
        }
    }
}

/// What a CI token is remembered by: (issuer name, `jti`) or (issuer name, SHA-256 of
/// the signing input).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub issuer: String,
    /// `jti:<value>` or `sha256:<hex>`.
    pub id: String,
}

/// A configured issuer with its key cache.
pub struct TrustedIssuer {
    pub config: IssuerConfig,
    pub keys: Arc<dyn KeyLookup>,
}

/// A token whose signature and registered claims checked out.
#[derive(Debug)]
pub struct VerifiedToken<'v> {
    pub claims: VerifiedClaims,
    /// The configured issuer that signed it.
    pub issuer: &'v IssuerConfig,
    /// What this token is remembered by, for replay protection.
    pub replay_key: ReplayKey,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// The issuer's leeway, which the replay record must outlive too.
    pub leeway: Duration,
}

/// Verifies CI tokens against the configured issuers.
pub struct Verifier {
    by_url: HashMap<String, Arc<TrustedIssuer>>,
}

impl Verifier {
    pub fn new(issuers: impl IntoIterator<Item = Arc<TrustedIssuer>>) -> Self {
        let by_url = issuers
            .into_iter()
            .map(|issuer| (issuer.config.issuer.clone(), issuer))
            .collect();
        Self { by_url }
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<TrustedIssuer>> {
        self.by_url.values()
    }

    /// Checks `raw` completely; `now` is seconds since the epoch.
    pub async fn verify(&self, raw: &str, now: i64) -> Result<VerifiedToken<'_>, VerifyError> {
        let unverified_token = UnverifiedToken::parse(raw)?;
        let kid = unverified_token.kid().ok_or(VerifyError::NoKid)?.to_owned();
        let alg = parse_algorithm(unverified_token.alg())?;
        let claimed_issuer = unverified_token.issuer().ok_or(VerifyError::NoIssuer)?;
        // Only configured issuers are ever contacted: look the issuer up before any fetch.
        let issuer = self
            .by_url
            .get(claimed_issuer)
            .ok_or_else(|| VerifyError::UnknownIssuer(claimed_issuer.to_owned()))?;
        let config = &issuer.config;
        if !config.algorithms.contains(&alg) {
            return Err(VerifyError::AlgorithmNotAllowed {
                alg: unverified_token.alg().to_owned(),
                issuer: config.name.clone(),
            });
        }
        let key = issuer.keys.key(&kid).await.map_err(|err| match err {
            LookupError::UnknownKid => VerifyError::UnknownKey {
                kid: kid.clone(),
                issuer: config.name.clone(),
            },
            LookupError::Unavailable(detail) => VerifyError::KeysUnavailable {
                issuer: config.name.clone(),
                detail,
            },
        })?;
        if !key.accepts(alg) {
            return Err(VerifyError::KeyAlgorithmMismatch {
                kid,
                issuer: config.name.clone(),
                alg: unverified_token.alg().to_owned(),
            });
        }
        let signature_ok = jsonwebtoken::crypto::verify(
            unverified_token.signature(),
            unverified_token.signing_input().as_bytes(),
            &key.decoding_key,
            alg,
        )
        .unwrap_or(false);
        if !signature_ok {
            return Err(VerifyError::BadSignature);
        }
        let signing_input = unverified_token.signing_input();
        let signed_claims = unverified_token.into_claims();
        let times = check_registered_claims(config, &signed_claims, now)?;
        let replay_id = match signed_claims.get("jti").and_then(Value::as_str) {
            Some(jti) if !jti.is_empty() => format!("jti:{jti}"),
            // Without a `jti`, the token is remembered by the hash of what its signature covers.
            _ => format!(
                "sha256:{}",
                crate::trust::hash::sha256_hex(signing_input.as_bytes())
            ),
        };
        Ok(VerifiedToken {
            claims: VerifiedClaims::from_verified(&config.name, signed_claims),
            issuer: config,
            replay_key: ReplayKey {
                issuer: config.name.clone(),
                id: replay_id,
            },
            expires_at: times.exp,
            leeway: config.leeway,
        })
    }
}

fn parse_algorithm(name: &str) -> Result<jsonwebtoken::Algorithm, VerifyError> {
    crate::config::parse_ci_algorithm(name)
        .map_err(|_| VerifyError::ForbiddenAlgorithm(name.to_owned()))
}

struct Times {
    exp: i64,
}

fn check_registered_claims(
    config: &IssuerConfig,
    claims: &serde_json::Map<String, Value>,
    now: i64,
) -> Result<Times, VerifyError> {
    // iss was used to choose the issuer; it equals config.issuer exactly by construction.
    check_audience(config, claims.get("aud"))?;
    // The leeway is formatted for an error only when a check fails.
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
    let exp = numeric_date(claims, "exp")?.ok_or(VerifyError::MissingTime("exp"))?;
    let iat = numeric_date(claims, "iat")?.ok_or(VerifyError::MissingTime("iat"))?;
    if now > exp.saturating_add(leeway) {
        return Err(VerifyError::Expired {
            exp,
            now,
            leeway: format_duration(config.leeway),
        });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(VerifyError::NotYetValid {
            nbf,
            now,
            leeway: format_duration(config.leeway),
        });
    }
    if iat > now.saturating_add(leeway) {
        return Err(VerifyError::IssuedInFuture {
            iat,
            now,
            leeway: format_duration(config.leeway),
        });
    }
    let lifetime = exp.saturating_sub(iat);
    let max = i64::try_from(config.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
    if lifetime > max || lifetime < 0 {
        return Err(VerifyError::LifetimeTooLong {
            lifetime: format!("{lifetime}s"),
            max: format_duration(config.max_token_lifetime),
        });
    }
    Ok(Times { exp })
}

fn check_audience(config: &IssuerConfig, aud: Option<&Value>) -> Result<(), VerifyError> {
    let expected = &config.audience;
    let audiences: Vec<&str> = match aud {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let shown = || {
        aud.map(Value::to_string)
            .unwrap_or_else(|| "(none)".to_owned())
    };
    let well_formed = match aud {
        Some(Value::Array(many)) => many.iter().all(Value::is_string),
        _ => true,
    };
    if !well_formed || !audiences.iter().any(|a| a == expected) {
        return Err(VerifyError::WrongAudience {
            expected: expected.clone(),
            actual: shown(),
        });
    }
    if config.strict_audience && audiences.iter().any(|a| a != expected) {
        return Err(VerifyError::ExtraAudience {
            expected: expected.clone(),
            actual: shown(),
        });
    }
    Ok(())
}

/// A NumericDate claim: absent is `None`; present but not a finite number is an error.
fn numeric_date(
    claims: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => {
            if let Some(int) = number.as_i64() {
                Ok(Some(int))
            } else {
                number
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| Some(f.floor() as i64))
                    .ok_or(VerifyError::MissingTime(name))
            }
        }
        Some(_) => Err(VerifyError::MissingTime(name)),
    }
}
