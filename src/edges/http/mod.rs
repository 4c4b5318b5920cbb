//! The HTTP surface: `router(state)` for the public listener and `admin_router(state)`.

mod dev;
pub mod error;
mod ops;
pub mod token;
mod wellknown;
pub mod wire;

pub use wellknown::Published;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{get, post};

use crate::adapters::issuer_keys::IssuerKeys;
use crate::edges::dev::DevIssuer;
use crate::edges::metrics::Metrics;
use crate::trust::exchange::Exchanger;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub exchanger: Arc<Exchanger>,
    /// Discovery and JWKS of tokenmint as an issuer.
    pub published: Arc<Published>,
    /// Every issuer's URL and key cache, in configuration order, for readiness details.
    pub issuer_keys: Vec<(String, Arc<IssuerKeys>)>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: readiness fails while in-flight requests finish.
    pub stopping: Arc<AtomicBool>,
    /// Dev mode's CI issuer; `None` outside dev mode.
    pub dev: Option<Arc<DevIssuer>>,
    /// The policy reloader, for the per-file detail of the admin readiness; `None` in dev mode.
    pub reloader: Option<Arc<crate::trust::policy::reload::PolicyReloader>>,
}

/// The public listener: the exchange, discovery, JWKS, health; in dev mode also the dev
/// CI issuer and `/metrics`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/token", post(token::token))
        .route(
            "/.well-known/openid-configuration",
            get(wellknown::openid_configuration),
        )
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    if state.dev.is_some() {
        router = router
            .route("/dev/ci-token", post(dev::ci_token))
            .route(
                "/dev/.well-known/openid-configuration",
                get(dev::openid_configuration),
            )
            .route("/dev/.well-known/jwks", get(dev::jwks))
            .route("/metrics", get(ops::metrics));
    }
    router.with_state(state)
}

/// The admin listener: `/metrics` and readiness details.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/readyz", get(ops::readyz_detail))
        .route("/healthz", get(ops::healthz))
        .with_state(state)
}
