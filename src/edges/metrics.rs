//! Prometheus metrics: exchanges by outcome and reason, exchange latency, JWKS fetches,
//! and calls to remote targets' token endpoints.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::adapters::issuer_keys::{FetchObserver, FetchOutcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    target: String,
    outcome: String,
}

/// Sees every HTTP attempt at a remote target's token endpoint.
pub trait UpstreamObserver: Send + Sync + 'static {
    /// `outcome`: `ok`, `rate_limited`, `server_error`, `refused`, `malformed`,
    /// `network_error` or `timeout`.
    fn attempt(&self, target: &str, outcome: &'static str, seconds: f64);
}

/// Observes nothing (for `doctor`).
pub struct NoObserver;

impl UpstreamObserver for NoObserver {
    fn attempt(&self, _target: &str, _outcome: &'static str, _seconds: f64) {}
}

/// The service's metrics; one instance per running service (no global registry).
pub struct Metrics {
    registry: Mutex<Registry>,
    exchanges: Family<ExchangeLabels, Counter>,
    latency: Histogram,
    jwks_fetches: Family<FetchLabels, Counter>,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_latency: Family<UpstreamLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenmint");
        let exchanges = Family::<ExchangeLabels, Counter>::default();
        registry.register(
            "exchanges",
            "Token exchange requests by outcome and reason",
            exchanges.clone(),
        );
        let latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "exchange_duration_seconds",
            "Time to answer POST /token",
            latency.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches from CI issuers by outcome",
            jwks_fetches.clone(),
        );
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "HTTP attempts at remote targets' token endpoints by target and outcome",
            upstream.clone(),
        );
        let upstream_latency = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register(
            "upstream_request_duration_seconds",
            "Duration of HTTP attempts at remote targets' token endpoints",
            upstream_latency.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            exchanges,
            latency,
            jwks_fetches,
            upstream,
            upstream_latency,
        }
    }

    /// Counts one answered exchange.
    pub fn exchange(&self, outcome: &str, reason: &str, seconds: f64) {
        self.exchanges
            .get_or_create(&ExchangeLabels {
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &registry);
        }
        out
    }
}

impl FetchObserver for Metrics {
    fn fetched(&self, issuer_name: &str, outcome: FetchOutcome) {
        let outcome = match outcome {
            FetchOutcome::Ok => "ok",
            _ => "error",
        };
        self.jwks_fetches
            .get_or_create(&FetchLabels {
                issuer: issuer_name.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

impl UpstreamObserver for Metrics {
    fn attempt(&self, target: &str, outcome: &'static str, seconds: f64) {
        let labels = UpstreamLabels {
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.upstream.get_or_create(&labels).inc();
        self.upstream_latency
            .get_or_create(&labels)
            .observe(seconds);
    }
}
