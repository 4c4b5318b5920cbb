//! Health, readiness and metrics endpoints.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

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

/// Ready means able to serve some exchange: not stopping, the store reachable, and at
/// least one issuer with keys that verification would use (not failing closed).
///
/// Policies are not a condition here: `serve` refuses to start without a policy set
/// that compiled, and after that a file that fails to reload keeps its last good
/// version, then loses only its own policies. One bad push to a shared policy
/// repository must not take every replica out of the load balancer at once. The
/// signing keys of local targets are likewise loaded before the listener opens.
async fn is_ready(app: &AppState) -> bool {
    !app.stopping.load(Ordering::Acquire)
        && issuer_keys_usable(app)
        && app.exchanger.store.healthy().await
}

fn issuer_keys_usable(app: &AppState) -> bool {
    app.issuer_keys
        .iter()
        .any(|(_, keys)| !keys.status().failing_closed)
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
                "usable": !status.failing_closed,
                "last_good_fetch_age_seconds": status.last_good_fetch_age.map(|d| d.as_secs()),
                "last_error": status.last_error,
            })
        })
        .collect();
    let policy_files: Vec<_> = app
        .reloader
        .iter()
        .flat_map(|reloader| reloader.file_details())
        .map(|file| {
            json!({
                "file": file.file,
                "state": file.state.as_str(),
                "line": file.line,
                "error": file.error,
                "failing_since": file.failing_since.and_then(|since| since.format(&Rfc3339).ok()),
            })
        })
        .collect();
    let switches = policies.switches();
    let (denied_values, _) = switches.counts();
    let body = json!({
        "ready": ready,
        "policies": policies.len(),
        "policy_set_version": policies.version(),
        "policy_files": policy_files,
        "switches": {
            "denied_values": denied_values,
            "disabled_targets": switches.disabled_targets().collect::<Vec<_>>(),
        },
        "would_allow": app.metrics.would_allow_counts(),
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
