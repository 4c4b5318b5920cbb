//! Discovery and JWKS of tokenmint as an issuer of local tokens.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use super::AppState;
use super::token::GRANT_TYPE_TOKEN_EXCHANGE;

pub async fn openid_configuration(State(app): State<AppState>) -> Response {
    let base = &app.exchanger.public_url;
    let body = json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/token"),
        "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}

pub async fn jwks(State(app): State<AppState>) -> Response {
    let body = app.exchanger.signer.jwks(OffsetDateTime::now_utc());
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}
