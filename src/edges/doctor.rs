//! `tokenmint doctor`: checks every issuer, policy file and target the configuration
//! names, as the running service would use them, and reports what an operator must fix.
//!
//! For each remote target it makes one client-credentials request without narrowing
//! (and, when the grant has several scopes, one narrowed request to learn whether the
//! target narrows). Each request is an audit record with outcome `doctor`; the tokens
//! themselves are never printed, logged or kept.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use crate::adapters::issuer_keys::{
    FileKeySource, HttpKeySource, KeyFetchClient, KeySource, Reach,
};
use crate::adapters::mint::RemoteMinter;
use crate::adapters::mint::remote::NoObserver;
use crate::adapters::mint::remote::{ClientCredentials, EndpointError, EndpointToken};
use crate::adapters::signing::{DatabaseRing, KeyError, KeyRing, KeyRole};
use crate::adapters::store::{Location, connect_postgres};
use crate::config::{
    ClientAuthConfig, Config, IssuerConfig, RemoteProvider, TargetConfig, TargetKindConfig,
};
use crate::edges::service::{self, KeyHome, keystore_settings};
use crate::edges::telemetry::counted;
use crate::trust::audit::{AuditRecord, Reason, log_decision, token_sha256};
use crate::trust::policy::PolicySet;
use crate::trust::policy::lint::TAKEOVER_SCOPES;
use crate::trust::store::{Finish, Settle, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// What `doctor` found: one section per issuer, the policies, and one per target.
#[derive(Debug, Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<(Level, String)>)>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.sections
            .iter()
            .flat_map(|(_, lines)| lines)
            .filter(|(l, _)| *l == level)
            .count()
    }

    pub fn failed(&self) -> bool {
        self.count(Level::Fail) > 0
    }

    /// The report as printed: a heading per section, one line per finding, a summary.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (heading, lines) in &self.sections {
            let _ = writeln!(text, "{heading}");
            for (level, line) in lines {
                let tag = match level {
                    Level::Ok => "ok  ",
                    Level::Warn => "WARN",
                    Level::Fail => "FAIL",
                };
                let _ = writeln!(text, "  {tag}  {line}");
            }
        }
        let _ = writeln!(
            text,
            "{}, {}",
            counted(self.count(Level::Fail), "failure", "failures"),
            counted(self.count(Level::Warn), "warning", "warnings")
        );
        text
    }
}

/// Runs every check. `mint = false` (`--no-mint`) skips the requests to remote targets.
pub async fn run(config: &Config, mint: bool, store: Arc<dyn Store>) -> Report {
    let mut report = Report::default();
    for issuer in config.issuers.values() {
        report.sections.push(check_issuer(issuer).await);
    }
    let policies = check_policies(config, &mut report);
    for target in config.targets.values() {
        let section = match &target.kind {
            TargetKindConfig::Local { algorithm, .. } => (
                format!("target {} (local, {algorithm})", target.name),
                vec![(
                    Level::Ok,
                    "tokenmint signs its tokens; nothing to reach".to_owned(),
                )],
            ),
            TargetKindConfig::Remote(_) => {
                let requests = AtomicUsize::new(0);
                let (heading, mut lines) =
                    check_remote(target, mint, policies.as_ref(), store.as_ref(), &requests).await;
                let made = requests.load(Ordering::Relaxed);
                if made > 0 {
                    lines.push((
                        Level::Ok,
                        format!(
                            "{} recorded with outcome \"doctor\" (in the audit trail and the decision log); no token was printed or kept",
                            counted(made, "token request", "token requests")
                        ),
                    ));
                }
                (heading, lines)
            }
        };
        report.sections.push(section);
    }
    if let Some(section) = check_signing_keys(config).await {
        report.sections.push(section);
    }
    report
}

/// The local targets' signing keys where `serve` will look for them: `data_dir/keys`, or
/// (with `storage.database_url`) the ring in the database, opened with the
/// key-encryption key. Nothing is written: keys that do not exist yet are a warning,
/// because `serve` creates them at its first start.
async fn check_signing_keys(config: &Config) -> Option<(String, Vec<(Level, String)>)> {
    let algorithms = service::ring_algorithms(&config.targets);
    if algorithms.is_empty() {
        return None;
    }
    let fail = |heading: String, err: String| Some((heading, vec![(Level::Fail, err)]));
    let (heading, loaded) = match service::key_home(config) {
        Err(err) => return fail("signing keys".to_owned(), format!("{err:#}")),
        Ok(KeyHome::Memory) => return None,
        Ok(KeyHome::Files(dir)) => (
            format!("signing keys ({})", dir.display()),
            if dir.exists() {
                KeyRing::load(&dir)
            } else {
                Err(KeyError::StoredMissing)
            },
        ),
        Ok(KeyHome::Database { url, kek }) => {
            let heading = format!(
                "signing keys (in {}, sealed with key-encryption key {})",
                Location::Postgres(url.clone()).describe(),
                kek.id()
            );
            match connect_postgres(&url, 1).await {
                Ok(pool) => (heading, DatabaseRing::new(pool, kek).load().await),
                Err(err) => return fail(heading, format!("{err:#}")),
            }
        }
    };
    let ring = match loaded {
        Ok(ring) => ring,
        Err(KeyError::StoredMissing) => {
            return Some((
                heading,
                vec![(
                    Level::Warn,
                    "no signing keys yet: `tokenmint serve` generates them at its first start"
                        .to_owned(),
                )],
            ));
        }
        Err(err) => return fail(heading, err.to_string()),
    };
    let mut lines = vec![(Level::Ok, format!("generation {}", ring.generation()))];
    for alg in algorithms {
        let kid = |role| ring.key(alg, role).map(|key| key.kid().to_owned());
        lines.push(match (kid(KeyRole::Current), kid(KeyRole::Next)) {
            (Some(current), Some(next)) => (
                Level::Ok,
                format!("{alg}: current key {current}, next key {next}"),
            ),
            (Some(current), None) => (
                Level::Warn,
                format!("{alg}: current key {current}, no next key: run `tokenmint keys rotate`"),
            ),
            _ => (
                Level::Warn,
                format!("{alg}: no key yet: `tokenmint serve` generates it at start"),
            ),
        });
    }
    lines.extend(
        ring.warnings()
            .iter()
            .map(|warning| (Level::Warn, warning.clone())),
    );
    Some((heading, lines))
}

async fn check_issuer(issuer: &IssuerConfig) -> (String, Vec<(Level, String)>) {
    let heading = format!("issuer {} ({})", issuer.name, issuer.issuer);
    let source: Arc<dyn KeySource> = match &issuer.jwks_file {
        Some(path) => Arc::new(FileKeySource::new(path.clone())),
        None => {
            match KeyFetchClient::new(Reach::of(&issuer.issuer_url, issuer.allow_private_network)) {
                Ok(client) => Arc::new(HttpKeySource::new(
                    client,
                    issuer.issuer_url.clone(),
                    issuer.jwks_uri.clone(),
                    keystore_settings(issuer),
                )),
                Err(err) => return (heading, vec![(Level::Fail, format!("HTTP client: {err}"))]),
            }
        }
    };
    let line = match source.fetch().await {
        Ok(set) if set.keys.is_empty() => (
            Level::Fail,
            format!("{} publishes no usable keys", source.describe()),
        ),
        Ok(set) => (
            Level::Ok,
            format!(
                "{} from {}",
                counted(set.keys.len(), "key", "keys"),
                source.describe()
            ),
        ),
        Err(err) => (Level::Fail, format!("keys: {err}")),
    };
    (heading, vec![line])
}

fn check_policies(config: &Config, report: &mut Report) -> Option<PolicySet> {
    let heading = format!("policies ({})", config.policies.dir.display());
    match service::load_policies(config, &config.policies.dir) {
        Ok(set) => {
            report.sections.push((
                heading,
                vec![(
                    Level::Ok,
                    format!(
                        "{} {}",
                        counted(set.len(), "policy", "policies"),
                        if set.len() == 1 { "loads" } else { "load" }
                    ),
                )],
            ));
            Some(set)
        }
        Err(errors) => {
            report.sections.push((
                heading,
                errors.into_iter().map(|e| (Level::Fail, e)).collect(),
            ));
            None
        }
    }
}

async fn check_remote(
    target: &TargetConfig,
    mint: bool,
    policies: Option<&PolicySet>,
    store: &dyn Store,
    requests: &AtomicUsize,
) -> (String, Vec<(Level, String)>) {
    let Some(remote) = target.remote() else {
        return (String::new(), Vec::new());
    };
    let heading = format!(
        "target {} ({}, {})",
        target.name,
        remote.provider.kind(),
        remote.token_endpoint
    );
    let mut lines = Vec::new();
    let minter = match RemoteMinter::new(target, Arc::new(NoObserver)) {
        Ok(minter) => minter,
        Err(err) => {
            lines.push((Level::Fail, format!("credentials: {err}")));
            return (heading, lines);
        }
    };
    let credentials = match minter.client().credentials() {
        assertion @ ClientCredentials::Assertion(_) => format!(
            "{} (register this public key with the client)",
            assertion.describe()
        ),
        other => other.describe(),
    };
    lines.push((
        Level::Ok,
        format!(
            "credentials: client {} with {credentials}",
            remote.client_id
        ),
    ));
    if matches!(remote.client_auth, ClientAuthConfig::ClientSecret { .. }) {
        lines.push((
            Level::Warn,
            "a client secret is a long-lived shared secret; private_key_jwt keeps the private key on this host only".to_owned(),
        ));
    }
    if !mint {
        lines.push((
            Level::Ok,
            "--no-mint: the token endpoint was not called".to_owned(),
        ));
        return (heading, lines);
    }

    let full = match request(&minter, target, None, store, requests).await {
        Ok(token) => token,
        Err(err) => {
            lines.push((Level::Fail, err));
            return (heading, lines);
        }
    };
    lines.push((
        Level::Ok,
        format!(
            "reachable and authenticated ({})",
            counted(
                usize::try_from(full.attempts).unwrap_or(usize::MAX),
                "attempt",
                "attempts"
            )
        ),
    ));
    let Some(grant) = stated_scopes(&full) else {
        lines.push((
            Level::Fail,
            "the answer states no scope (no scope field, no scope claim): every exchange would fail closed".to_owned(),
        ));
        return (heading, lines);
    };
    lines.push((Level::Ok, format!("the grant allows: {}", or_none(&grant))));

    let max = target.max_ttl.as_secs();
    // The exchange judges the longest life any statement gives the token.
    let life = full.longest_life();
    if life > max {
        let (level, consequence) = if remote.enforce_max_ttl {
            (Level::Fail, "every exchange fails with 502")
        } else {
            (
                Level::Warn,
                "enforce_max_ttl = false, so such tokens are handed out",
            )
        };
        let setting = match remote.provider {
            RemoteProvider::Auth0 { .. } => "the API's Maximum Access Token Lifetime",
            RemoteProvider::OAuth2 => "the server's token lifetime",
        };
        lines.push((
            level,
            format!(
                "tokens live {}s, longer than max_ttl {max}s: {consequence}; shorten {setting}",
                life
            ),
        ));
    } else {
        lines.push((Level::Ok, format!("tokens live {life}s (max_ttl {max}s)")));
    }

    if matches!(remote.provider, RemoteProvider::Auth0 { .. }) {
        for scope in grant
            .iter()
            .filter(|s| TAKEOVER_SCOPES.contains(&s.as_str()))
        {
            lines.push((
                Level::Warn,
                format!(
                    "the grant includes {scope}: a job holding such a token can take over or widen tokenmint's own client; remove it from the client grant"
                ),
            ));
        }
    }

    // Narrowing: ask for the first scope alone.
    let narrows = if grant.len() < 2 {
        lines.push((
            Level::Ok,
            "narrowing not tested: the grant has fewer than two scopes".to_owned(),
        ));
        None
    } else {
        let asked = vec![grant[0].clone()];
        match request(&minter, target, Some(&asked), store, requests).await {
            Ok(narrowed) => match stated_scopes(&narrowed) {
                None => {
                    lines.push((
                        Level::Fail,
                        "the narrowed answer states no scope: every exchange would fail closed"
                            .to_owned(),
                    ));
                    None
                }
                Some(got) if got.is_empty() => {
                    lines.push((
                        Level::Fail,
                        format!(
                            "asked for {:?}, the target granted no scope at all",
                            asked[0]
                        ),
                    ));
                    None
                }
                Some(got) => {
                    let narrows = got.iter().all(|s| *s == asked[0]);
                    let verdict = if narrows {
                        "narrows by scope"
                    } else {
                        "does not narrow by scope"
                    };
                    lines.push((
                        Level::Ok,
                        format!(
                            "{verdict}: asked for {:?}, got {:?}",
                            asked[0],
                            got.join(" ")
                        ),
                    ));
                    Some(narrows)
                }
            },
            Err(err) => {
                lines.push((Level::Fail, format!("narrowed request: {err}")));
                None
            }
        }
    };

    if let Some(policies) = policies {
        let grant_set: BTreeSet<&str> = grant.iter().map(String::as_str).collect();
        for policy in policies.iter().filter(|p| p.target() == target.name) {
            let scopes: BTreeSet<&str> = policy.scopes().iter().map(String::as_str).collect();
            let beyond: Vec<&str> = scopes.difference(&grant_set).copied().collect();
            if !beyond.is_empty() {
                lines.push((
                    Level::Warn,
                    format!(
                        "policy {:?} lists scopes the grant lacks ({}): requests for them fail at the target",
                        policy.name(),
                        beyond.join(" ")
                    ),
                ));
            }
            if narrows == Some(false) && scopes != grant_set {
                lines.push((
                    Level::Fail,
                    format!(
                        "policy {:?} grants {:?} but the target ignores narrowing and issues {:?}: its exchanges fail closed; give it a client whose grant equals the policy's scopes",
                        policy.name(),
                        policy.scopes().join(" "),
                        grant.join(" ")
                    ),
                ));
            }
        }
    }
    (heading, lines)
}

/// One doctor request, recorded with outcome `doctor`; the token is dropped unseen.
async fn request(
    minter: &RemoteMinter,
    target: &TargetConfig,
    scope: Option<&[String]>,
    store: &dyn Store,
    requests: &AtomicUsize,
) -> Result<EndpointToken, String> {
    requests.fetch_add(1, Ordering::Relaxed);
    let now = OffsetDateTime::now_utc();
    let request_id = format!("doctor-{}", uuid::Uuid::new_v4().simple());
    let result = minter.client().request(&request_id, scope).await;
    let reason = match &result {
        Ok(_) => Reason::Doctor,
        Err(_) => Reason::DoctorFailed,
    };
    let mut record = AuditRecord::new(&request_id, now, reason);
    record.target = Some(target.name.clone());
    record.audience = Some(target.audience.clone());
    record.requested_scope = scope.map(|s| s.join(" "));
    match &result {
        Ok(token) => {
            record.scope = token.scope.clone();
            record.token_sha256 = Some(token_sha256(token.access_token.expose_secret()));
            record.token_jti = token.jti.clone();
            record.expires_at = i64::try_from(token.expires_in)
                .ok()
                .and_then(|secs| now.checked_add(time::Duration::seconds(secs)));
            record.detail = Some("doctor check; the token was not handed out".to_owned());
        }
        Err(EndpointError::Failed { detail, .. } | EndpointError::RateLimited { detail, .. }) => {
            record.detail = Some(detail.clone());
        }
    }
    let record = std::sync::Arc::new(record);
    let written = store
        .finish(
            Finish {
                record: record.clone(),
                settle: Settle::Nothing,
            },
            now,
        )
        .await;
    match written {
        Ok(finished) => log_decision(&record, finished.seq().map(|seq| seq.0)),
        Err(err) => {
            log_decision(&record, None);
            tracing::error!(error = %err, "the doctor's audit record could not be written");
        }
    }
    result.map_err(|err| match err {
        EndpointError::Failed { public, detail, .. } => format!("{public} ({detail})"),
        EndpointError::RateLimited {
            retry_after,
            detail,
        } => format!("rate limited for {retry_after}s ({detail})"),
    })
}

/// Every scope the answer or the token itself states (both count, as in the exchange),
/// in order without repeats; `None` when neither states one.
fn stated_scopes(token: &EndpointToken) -> Option<Vec<String>> {
    if token.scope.is_none() && token.claim_scope.is_none() {
        return None;
    }
    let mut scopes: Vec<String> = Vec::new();
    for scope in [&token.scope, &token.claim_scope]
        .into_iter()
        .flatten()
        .flat_map(|s| s.split_ascii_whitespace())
    {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Some(scopes)
}

fn or_none(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "(no scopes)".to_owned()
    } else {
        scopes.join(" ")
    }
}
