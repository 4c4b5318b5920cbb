//! The bodies of `POST /token` answers as serde types, written by the server (`token.rs`,
//! `error.rs`) and read by the client (`edges::exchange_client`), so that the two cannot
//! drift apart. Members are serialised in declaration order, which is the order on the
//! wire: do not reorder fields (`tests::the_bodies_keep_their_bytes`).

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An access token handed out; `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken(SecretString);

impl AccessToken {
    pub fn new(token: SecretString) -> Self {
        Self(token)
    }

    /// The token itself, for the one place that prints or sends it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

impl Serialize for AccessToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for AccessToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|token| Self(SecretString::from(token)))
    }
}

/// `200` of `POST /token`: RFC 8693 section 2.2.1, plus the target, the policy that decided
/// and the request id (the audit record's key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: AccessToken,
    pub issued_token_type: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: u64,
    /// The granted scopes, space-separated.
    pub scope: String,
    pub target: String,
    pub policy: String,
    pub request_id: String,
}

/// Every error answer of `POST /token` (RFC 6749 section 5.2, plus the request id). A
/// denial to a caller bound for the target also names the nearest policy and its failing
/// conditions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    pub error_description: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_conditions: Option<Vec<FailedCondition>>,
}

/// One condition of the nearest policy that the caller's token does not satisfy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCondition {
    pub claim: String,
    /// The matcher as people read it (`"refs/heads/main"`, `glob "acme/*"`, ...).
    pub expected: String,
    /// The claim as compact JSON; `null` when the token does not carry it.
    pub actual: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bodies the server wrote with `json!` before these types existed, byte for byte.
    #[test]
    fn the_bodies_keep_their_bytes() {
        let success = TokenResponse {
            access_token: AccessToken::new(SecretString::from("eyJ.a.b")),
            issued_token_type: "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: 600,
            scope: "read write".to_owned(),
            target: "dev-api".to_owned(),
            policy: "p".to_owned(),
            request_id: "r-1".to_owned(),
        };
        let before = json!({
            "access_token": "eyJ.a.b",
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 600,
            "scope": "read write",
            "target": "dev-api",
            "policy": "p",
            "request_id": "r-1",
        });
        let text = serde_json::to_string(&success).expect("serialise");
        assert_eq!(text, before.to_string());
        let back: TokenResponse = serde_json::from_str(&text).expect("parse");
        assert_eq!(serde_json::to_string(&back).expect("serialise"), text);

        let plain = ErrorResponse {
            error: "invalid_grant".to_owned(),
            error_description: "token expired".to_owned(),
            request_id: "r-2".to_owned(),
            policy: None,
            failed_conditions: None,
        };
        let before = json!({"error": "invalid_grant", "error_description": "token expired", "request_id": "r-2"});
        assert_eq!(
            serde_json::to_string(&plain).expect("serialise"),
            before.to_string()
        );

        let bound = ErrorResponse {
            policy: Some("deploy".to_owned()),
            failed_conditions: Some(vec![
                FailedCondition {
                    claim: "ref".to_owned(),
                    expected: "\"refs/heads/main\"".to_owned(),
                    actual: Some("\"refs/heads/x\"".to_owned()),
                },
                FailedCondition {
                    claim: "environment".to_owned(),
                    expected: "\"production\"".to_owned(),
                    actual: None,
                },
            ]),
            ..plain.clone()
        };
        let mut before = before;
        let extra = json!({"policy": "deploy", "failed_conditions": [
            {"claim": "ref", "expected": "\"refs/heads/main\"", "actual": "\"refs/heads/x\""},
            {"claim": "environment", "expected": "\"production\"", "actual": null},
        ]});
        if let (Some(object), serde_json::Value::Object(extra)) = (before.as_object_mut(), extra) {
            object.extend(extra);
        }
        let text = serde_json::to_string(&bound).expect("serialise");
        assert_eq!(text, before.to_string());
        assert_eq!(
            serde_json::from_str::<ErrorResponse>(&text).expect("parse"),
            bound
        );
    }

    #[test]
    fn debug_never_shows_the_access_token() {
        let token = AccessToken::new(SecretString::from("eyJhbGciOi.secret.sig"));
        let text = format!("{token:?}");
        assert!(!text.contains("secret"), "{text}");
        let response: TokenResponse = serde_json::from_value(json!({
            "access_token": "eyJhbGciOi.secret.sig", "issued_token_type": "t",
            "token_type": "Bearer", "expires_in": 1, "scope": "", "target": "t",
            "policy": "p", "request_id": "r",
        }))
        .expect("parse");
        assert!(!format!("{response:?}").contains("secret"));
    }
}
