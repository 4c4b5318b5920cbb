//! The claims views that policies are evaluated on: [`VerifiedClaims`], which only token
//! verification builds, and [`SimulatedClaims`], which `policy test` and `policy explain`
//! build from files, typed apart so that nothing can pass one for the other.

use serde_json::{Map, Value};

/// What policy evaluation reads of a token's claims.
///
/// Sealed: only [`VerifiedClaims`] and [`SimulatedClaims`] implement it. The exchange
/// takes `VerifiedClaims` by type, so simulated claims can reach the same selection
/// code in tests and tools but never an exchange.
pub trait ClaimsView: sealed::Sealed {
    /// The configured name of the issuer (a key of `[issuers]`).
    fn issuer_name(&self) -> &str;
    /// One claim's value, `None` when absent.
    fn get(&self, name: &str) -> Option<&Value>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::VerifiedClaims {}
    impl Sealed for super::SimulatedClaims {}
}

impl ClaimsView for VerifiedClaims {
    fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

/// Claims someone wrote down (a policy test case, or a token decoded *without*
/// verification for `policy explain`): evaluated like a token's, never trusted as one.
#[derive(Debug, Clone)]
pub struct SimulatedClaims {
    issuer_name: String,
    claims: Map<String, Value>,
}

impl SimulatedClaims {
    /// Claims of a pretend token from the issuer named `issuer_name`.
    pub fn new(issuer_name: &str, claims: Map<String, Value>) -> Self {
        Self {
            issuer_name: issuer_name.to_owned(),
            claims,
        }
    }

    /// All claims, in file order.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.claims
    }
}

impl ClaimsView for SimulatedClaims {
    fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

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
