//! The only place that decodes a JWT without verifying it: just enough to find the key.
//!
//! Nothing here is trusted. [`UnverifiedToken`] exposes the header's `alg` and `kid`,
//! the claimed `iss`, and the parts that `verify` needs to check the signature; the
//! payload is kept as parsed claims that only `verify` may turn into `VerifiedClaims`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::VerifyError;
use crate::trust::json::{ObjectDefect, parse_unique_object};

/// A compact JWS split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    signature: &'a str,
    alg: String,
    kid: Option<String>,
    issuer: Option<String>,
    claims: Map<String, Value>,
}

impl<'a> UnverifiedToken<'a> {
    /// Splits and decodes `raw`; any structural defect is a [`VerifyError`].
    pub fn parse(raw: &'a str) -> Result<Self, VerifyError> {
        let mut parts = raw.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed(
                "it is not a compact JWS (header.payload.signature)",
            ));
        };
        if header_b64.is_empty() || payload_b64.is_empty() || signature.is_empty() {
            return Err(VerifyError::Malformed(
                "it is not a compact JWS (header.payload.signature)",
            ));
        }
        let signing_input = &raw[..header_b64.len() + 1 + payload_b64.len()];
        let header = decode_object(header_b64).map_err(|defect| match defect {
            ObjectDefect::Duplicate(name) => VerifyError::DuplicateHeader(name),
            ObjectDefect::Invalid => {
                VerifyError::Malformed("its header is not base64url-encoded JSON")
            }
        })?;
        let claims = decode_object(payload_b64).map_err(|defect| match defect {
            ObjectDefect::Duplicate(name) => VerifyError::DuplicateClaim(name),
            ObjectDefect::Invalid => {
                VerifyError::Malformed("its payload is not base64url-encoded JSON")
            }
        })?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(VerifyError::Malformed("its header has no \"alg\"")),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
            Some(_) => {
                return Err(VerifyError::Malformed(
                    "its header \"kid\" is not a non-empty string",
                ));
            }
        };
        if header.contains_key("crit") {
            // RFC 7515 4.1.11: extensions we do not understand must be rejected.
            return Err(VerifyError::Malformed(
                "its header has \"crit\" extensions, which are not supported",
            ));
        }
        let issuer = claims.get("iss").and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            signing_input,
            signature,
            alg,
            kid,
            issuer,
            claims,
        })
    }

    /// The header's `alg`, as written.
    pub fn alg(&self) -> &str {
        &self.alg
    }

    /// The header's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The claimed issuer; used only to pick which configured issuer's keys to try.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// `header.payload`, the bytes the signature covers.
    pub fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    /// The base64url signature.
    pub fn signature(&self) -> &str {
        self.signature
    }

    /// Gives up the parsed claims; `verify` calls this only after the signature checked out.
    pub(super) fn into_claims(self) -> Map<String, Value> {
        self.claims
    }
}

/// A CI token's claims for `policy explain`, decoded **without verification**: the
/// caller wraps them in `SimulatedClaims`, which can never reach an exchange, and says on
/// its first line that nothing was verified. Every defect `verify` would report before
/// the signature check (not a JWS, bad header, duplicate claims) is reported here too.
pub fn claims_without_verification(token: &str) -> Result<Map<String, Value>, VerifyError> {
    UnverifiedToken::parse(token).map(|token| token.claims)
}

/// The claims of an access token a remote target issued to tokenmint, read to check
/// the scope and lifetime it carries; `None` when the token is not a compact JWS with
/// a JSON payload.
///
/// Nothing read here is trusted to grant anything: the token came from the target over
/// TLS and is only handed on, and these claims can only make tokenmint refuse to hand it
/// on (a wider scope, a longer life) or fill the audit record's `jti`.
pub fn upstream_token_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    decode_object(payload).ok()
}

#[expect(
    clippy::disallowed_methods,
    reason = "this module is the one place that looks inside a token before verification"
)]
fn decode_object(segment: &str) -> Result<Map<String, Value>, ObjectDefect> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| ObjectDefect::Invalid)?;
    parse_unique_object(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn exposes_only_what_finding_the_key_needs() {
        let raw = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            b64(r#"{"iss":"https://gitlab.com","sub":"x"}"#)
        );
        let token = UnverifiedToken::parse(&raw).expect("well-formed");
        assert_eq!(token.alg(), "RS256");
        assert_eq!(token.kid(), Some("k1"));
        assert_eq!(token.issuer(), Some("https://gitlab.com"));
        assert_eq!(token.signature(), "c2ln");
        assert!(raw.starts_with(token.signing_input()));
    }

    #[test]
    fn duplicate_claim_names_are_a_defect() {
        let raw = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"sub":"a","sub":"b"}"#)
        );
        let err = UnverifiedToken::parse(&raw).expect_err("duplicate");
        assert_eq!(
            err.to_string(),
            "the subject token has the claim \"sub\" more than once"
        );
    }

    #[test]
    fn structural_defects_are_rejected() {
        for raw in ["", "a.b", "a.b.c.d", "..", "!!!.e30.c2ln"] {
            assert!(UnverifiedToken::parse(raw).is_err(), "{raw:?}");
        }
        let not_object = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("[1]"));
        assert!(UnverifiedToken::parse(&not_object).is_err());
        let trailing = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("{} x"));
        assert!(UnverifiedToken::parse(&trailing).is_err());
    }
}
