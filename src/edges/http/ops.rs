//! Health, readiness and metrics endpoints.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Status only: no detail leaves the public listener.
pub async fn readyz(State(app): State<AppState>) -> StatusCode {
    if is_ready(&app).await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn is_ready(app: &AppState) -> bool {
    app.policies_healthy.load(Ordering::Acquire)
        && !app.stopping.load(Ordering::Acquire)
        && app.exchanger.store.healthy().await
}

/// Readiness with details, for the admin listener.
pub async fn readyz_detail(State(app): State<AppState>) -> Response {
    let ready = is_ready(&app).await;
    let policies = app.exchanger.policies.load();
    let issuers: Vec<_> = app
        .issuer_keys
        .iter()
        .map(|(issuer, keys)| {
            let status = keys.status();
            json!({
                "name": status.issuer_name,
                "issuer": issuer,
                "keys": status.key_count,
                "last_good_fetch_age_seconds": status.last_good_fetch_age.map(|d| d.as_secs()),
                "last_error": status.last_error,
            })
        })
        .collect();
    let body = json!({
        "ready": ready,
        "policies": policies.len(),
        "policy_set_version": policies.version(),
        "issuers": issuers,
        "store_healthy": app.exchanger.store.healthy().await,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
