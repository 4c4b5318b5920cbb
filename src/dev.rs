//! Dev mode's CI issuer: mints CI-shaped tokens for anyone on loopback, so an exchange can be tried with curl.
//!
//! It exists only in `serve --dev`, which binds loopback only, keeps everything in memory
//! and knows no target but `dev-api`: nothing it signs can reach a real system.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::http::AppState;
use crate::json::{ObjectDefect, parse_unique_object};
use crate::keys::{KeyError, SigningAlgorithm, SigningKey};
use crate::keystore::{FetchError, KeySource};

/// The name of dev mode's only issuer.
pub const DEV_ISSUER_NAME: &str = "dev";
/// The name of dev mode's only target.
pub const DEV_TARGET_NAME: &str = "dev-api";
/// Lifetime of a dev CI token unless the request sets `exp`.
pub const DEV_TOKEN_LIFETIME_SECS: i64 = 600;
/// The built-in dev policy.
pub const DEV_POLICY_YAML: &str = r#"name: dev-any-repository
description: Built-in dev mode policy - any dev token with a repository claim gets read and write on dev-api
issuer: dev
target: dev-api
scopes: [read, write]
claims:
  repository: { regex: '.+' }
"#;

/// The dev CI issuer and its signing key.
pub struct DevIssuer {
    /// `{public_url}/dev`
    pub issuer_url: String,
    /// The audience of dev CI tokens: `public_url`.
    pub audience: String,
    key: SigningKey,
}

impl DevIssuer {
    pub fn new(public_url: &str) -> Result<Self, KeyError> {
        Ok(Self {
            issuer_url: format!("{public_url}/dev"),
            audience: public_url.to_owned(),
            key: SigningKey::generate(SigningAlgorithm::ES256)?,
        })
    }

    /// The dev issuer's JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// The key source the verifier uses for the dev issuer: in memory, no HTTP.
    pub fn key_source(self: &Arc<Self>) -> Arc<dyn KeySource> {
        Arc::new(DevKeySource(Arc::clone(self)))
    }

    /// Signs a CI token: `claims` plus defaults; `iss` and `dev: true` always win.
    pub fn mint(
        &self,
        mut claims: Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<String, String> {
        let now = now.unix_timestamp();
        claims
            .entry("aud")
            .or_insert_with(|| Value::String(self.audience.clone()));
        if !claims.contains_key("sub") {
            let repository = claims
                .get("repository")
                .and_then(Value::as_str)
                .unwrap_or("dev/unknown");
            let git_ref = claims
                .get("ref")
                .and_then(Value::as_str)
                .unwrap_or("refs/heads/main");
            claims.insert(
                "sub".to_owned(),
                Value::String(format!("repo:{repository}:ref:{git_ref}")),
            );
        }
        claims.entry("iat").or_insert_with(|| json!(now));
        claims
            .entry("exp")
            .or_insert_with(|| json!(now + DEV_TOKEN_LIFETIME_SECS));
        claims
            .entry("jti")
            .or_insert_with(|| Value::String(uuid::Uuid::new_v4().to_string()));
        claims.insert("iss".to_owned(), Value::String(self.issuer_url.clone()));
        claims.insert("dev".to_owned(), Value::Bool(true));
        self.key
            .sign_jwt_typed(&Value::Object(claims), "JWT")
            .map_err(|err| err.to_string())
    }
}

struct DevKeySource(Arc<DevIssuer>);

#[async_trait]
impl KeySource for DevKeySource {
    async fn fetch(&self) -> Result<jsonwebtoken::jwk::JwkSet, FetchError> {
        serde_json::from_value(self.0.jwks()).map_err(|err| FetchError::InvalidJwks {
            from: self.describe(),
            message: err.to_string(),
        })
    }

    fn describe(&self) -> String {
        "the built-in dev issuer".to_owned()
    }
}

fn dev_error(status: StatusCode, description: &str) -> Response {
    (
        status,
        Json(json!({"error": "invalid_request", "error_description": description})),
    )
        .into_response()
}

/// `POST /dev/ci-token`: JSON claims in, `{"token": "..."}` out.
pub async fn ci_token(State(app): State<AppState>, body: Bytes) -> Response {
    let Some(dev) = &app.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if body.len() > crate::http::token::MAX_BODY_BYTES {
        return dev_error(StatusCode::PAYLOAD_TOO_LARGE, "the claims exceed 64 KiB");
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let claims = match parse_unique_object(body) {
        Ok(claims) => claims,
        Err(ObjectDefect::Duplicate(name)) => {
            return dev_error(
                StatusCode::BAD_REQUEST,
                &format!("the claim {name:?} is given more than once"),
            );
        }
        Err(ObjectDefect::Invalid) => {
            return dev_error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object of claims",
            );
        }
    };
    match dev.mint(claims, OffsetDateTime::now_utc()) {
        Ok(token) => (StatusCode::OK, Json(json!({ "token": token }))).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "dev CI token could not be signed");
            dev_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the dev token could not be signed",
            )
        }
    }
}

pub async fn openid_configuration(State(app): State<AppState>) -> Response {
    let Some(dev) = &app.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    Json(json!({
        "issuer": dev.issuer_url,
        "jwks_uri": format!("{}/.well-known/jwks", dev.issuer_url),
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    }))
    .into_response()
}

pub async fn jwks(State(app): State<AppState>) -> Response {
    match &app.dev {
        Some(dev) => Json(dev.jwks()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
