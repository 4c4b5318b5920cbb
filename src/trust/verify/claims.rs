//! The claims view that policies are evaluated on: only token verification builds one.

use serde_json::{Map, Value};

/// Claims of a CI token whose signature, issuer, audience and lifetime were verified.
///
/// Invariant: outside tests, the only constructor is [`VerifiedClaims::from_verified`],
/// called by `verify` after every check passed, so a policy can never be evaluated
/// on claims an attacker merely wrote.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    issuer_name: String,
    claims: Map<String, Value>,
}

impl VerifiedClaims {
    /// Wraps claims that `verify` has checked. `pub(super)`: only `verify`, this module's
    /// parent, can call it, so the guarantee is the compiler's, not a convention.
    pub(super) fn from_verified(issuer_name: &str, claims: Map<String, Value>) -> Self {
        Self {
            issuer_name: issuer_name.to_owned(),
            claims,
        }
    }

    /// Claims for unit tests of the policy engine.
    #[cfg(test)]
    pub(crate) fn for_tests(issuer_name: &str, claims: Value) -> Self {
        match claims {
            Value::Object(map) => Self {
                issuer_name: issuer_name.to_owned(),
                claims: map,
            },
            other => panic!("test claims must be a JSON object, got {other}"),
        }
    }

    /// The configured name of the issuer that signed the token (a key of `[issuers]`).
    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    /// One claim's value, `None` when absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// A claim as a string, when it is a JSON string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// All claims, in token order.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.claims
    }
}
