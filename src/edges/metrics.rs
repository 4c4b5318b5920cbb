//! Prometheus metrics: exchanges by outcome and reason, exchange latency, JWKS fetches,
//! calls to remote targets' token endpoints, and the store's commits. Label values of closed lists are
//! `&'static str`; names from the configuration are shared `Arc<str>`s, so counting
//! allocates nothing on the request path once a series exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::adapters::issuer_keys::{FetchObserver, FetchOutcome};
use crate::adapters::mint::remote::UpstreamObserver;
use crate::adapters::store::CommitObserver;
use crate::trust::audit::{Outcome, Reason};
use crate::trust::exchange::ExchangeObserver;
use crate::trust::policy::reload::{PolicyFileState, PolicyFilesObserver};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyFileLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    target: Arc<str>,
    outcome: &'static str,
}

/// The service's metrics; one instance per running service (no global registry).
pub struct Metrics {
    registry: Mutex<Registry>,
    exchanges: Family<ExchangeLabels, Counter>,
    latency: Histogram,
    jwks_fetches: Family<FetchLabels, Counter>,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_latency: Family<UpstreamLabels, Histogram>,
    records_per_commit: Histogram,
    commit_latency: Histogram,
    policy_files: Family<PolicyFileLabels, Gauge>,
    would_allow: Family<PolicyLabels, Counter>,
    /// The same counts, readable for the admin readiness detail.
    would_allow_counts: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Issuer and target names as shared label values, made once per name.
    names: RwLock<HashMap<String, Arc<str>>>,
    /// Per reason of a request refused before verification: when one was last logged,
    /// and how many since were not.
    rejection_log: Mutex<HashMap<&'static str, (Option<std::time::Instant>, u64)>>,
}

/// At most one log line per reason of refusal before verification this often.
pub const REJECTION_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
        let records_per_commit =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]);
        registry.register(
            "store_records_per_commit",
            "Audit records per transaction of the SQLite writer (group commit)",
            records_per_commit.clone(),
        );
        let commit_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "store_commit_duration_seconds",
            "Duration of the SQLite writer's transactions, fsync included",
            commit_latency.clone(),
        );
        let policy_files = Family::<PolicyFileLabels, Gauge>::default();
        registry.register(
            "policy_files",
            "Policy files by state after the last reload: ok, stale (last good version served), dropped, never_loaded",
            policy_files.clone(),
        );
        let would_allow = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_would_allow",
            "Exchanges an audit-mode policy would have allowed, by policy",
            would_allow.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            would_allow,
            would_allow_counts: Mutex::new(std::collections::BTreeMap::new()),
            records_per_commit,
            commit_latency,
            policy_files,
            exchanges,
            latency,
            jwks_fetches,
            upstream,
            upstream_latency,
            names: RwLock::new(HashMap::new()),
            rejection_log: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request refused before verification (rows 2–5): outcome `rejected`.
    /// Such requests are never stored; they are logged by sample: returns `Some(n)` when
    /// this one should be logged, `n` being how many of its reason went unlogged since the
    /// last logged one (at most one line per reason every [`REJECTION_LOG_EVERY`]).
    pub fn rejected(&self, reason: &'static str, seconds: f64) -> Option<u64> {
        self.count_exchange("rejected", reason, seconds);
        let now = std::time::Instant::now();
        let mut log = self.rejection_log.lock().ok()?;
        let (last, unlogged) = log.entry(reason).or_insert((None, 0));
        match last {
            Some(at) if now.duration_since(*at) < REJECTION_LOG_EVERY => {
                *unlogged += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(unlogged))
            }
        }
    }

    fn count_exchange(&self, outcome: &'static str, reason: &'static str, seconds: f64) {
        self.exchanges
            .get_or_create(&ExchangeLabels { outcome, reason })
            .inc();
        self.latency.observe(seconds);
    }

    /// `name` as a shared label value.
    fn name(&self, name: &str) -> Arc<str> {
        if let Some(shared) = self
            .names
            .read()
            .ok()
            .and_then(|names| names.get(name).cloned())
        {
            return shared;
        }
        let shared: Arc<str> = Arc::from(name);
        if let Ok(mut names) = self.names.write() {
            names
                .entry(name.to_owned())
                .or_insert_with(|| shared.clone());
        }
        shared
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

impl CommitObserver for Metrics {
    fn committed(&self, records: usize, took: std::time::Duration) {
        self.records_per_commit.observe(records as f64);
        self.commit_latency.observe(took.as_secs_f64());
    }
}

impl PolicyFilesObserver for Metrics {
    fn policy_files(&self, counts: &[(PolicyFileState, usize); 4]) {
        for (state, count) in counts {
            self.policy_files
                .get_or_create(&PolicyFileLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }
}

impl ExchangeObserver for Metrics {
    fn concluded(&self, outcome: Outcome, reason: Reason, seconds: f64) {
        self.count_exchange(outcome.as_str(), reason.as_str(), seconds);
    }

    fn would_allow(&self, policy: &str) {
        self.would_allow
            .get_or_create(&PolicyLabels {
                policy: self.name(policy),
            })
            .inc();
        if let Ok(mut counts) = self.would_allow_counts.lock() {
            *counts.entry(policy.to_owned()).or_default() += 1;
        }
    }
}

impl Metrics {
    /// How many exchanges each audit-mode policy would have allowed since start.
    pub fn would_allow_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.would_allow_counts
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
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
                issuer: self.name(issuer_name),
                outcome,
            })
            .inc();
    }
}

impl UpstreamObserver for Metrics {
    fn attempt(&self, target: &str, outcome: &'static str, seconds: f64) {
        let labels = UpstreamLabels {
            target: self.name(target),
            outcome,
        };
        self.upstream.get_or_create(&labels).inc();
        self.upstream_latency
            .get_or_create(&labels)
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_before_verification_are_logged_by_sample() {
        let metrics = Metrics::new();
        assert_eq!(metrics.rejected("unsupported_grant_type", 0.0), Some(0));
        assert_eq!(metrics.rejected("unsupported_grant_type", 0.0), None);
        assert_eq!(metrics.rejected("unsupported_grant_type", 0.0), None);
        // Another reason has its own sample.
        assert_eq!(metrics.rejected("invalid_request", 0.0), Some(0));
        let text = metrics.render();
        assert!(
            text.contains(
                "tokenmint_exchanges_total{outcome=\"rejected\",reason=\"unsupported_grant_type\"} 3"
            ),
            "every refusal is counted: {text}"
        );
    }
}
