//! Dev mode's CI issuer over HTTP: `POST /dev/ci-token` and the issuer's discovery and JWKS.
//! Mounted only in `serve --dev`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use super::AppState;
use crate::trust::json::{ObjectDefect, parse_unique_object};

fn dev_error(status: StatusCode, description: &str) -> Response {
    (
        status,
        Json(json!({"error": "invalid_request", "error_description": description})),
    )
        .into_response()
}

/// `POST /dev/ci-token`: JSON claims in, `{"token": "..."}` out.
pub async fn ci_token(State(app): State<AppState>, request: Request) -> Response {
    let Some(dev) = &app.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Reading stops as soon as the body passes the cap.
    let body = match axum::body::to_bytes(request.into_body(), super::token::MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(err) => {
            return if err.into_inner().is::<http_body_util::LengthLimitError>() {
                dev_error(StatusCode::PAYLOAD_TOO_LARGE, "the claims exceed 64 KiB")
            } else {
                dev_error(StatusCode::BAD_REQUEST, "the body could not be read")
            };
        }
    };
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
