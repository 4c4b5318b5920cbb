//! The exchange: verify the CI token, choose a policy, mint, audit. No HTTP in here.
//!
//! Invariants kept here:
//! - a token is never returned unless its audit record has been written;
//! - a remote target is called only after the CI token's replay key is reserved and a
//!   `pending` audit record is written, so two requests with one CI token never both
//!   reach it, and every call to it is on record (a cancelled request completes its
//!   record as `cancelled`);
//! - with `replay = "reject"`, only an exchange that returns a token uses the CI token up;
//!   every refusal or failure after the reservation releases it;
//! - policy content reaches only callers bound for the target (see [`Denial`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

use crate::adapters::mint::remote::ReuseOffer;
use crate::adapters::mint::{Grant, LocalSigner, MintError, Minter};
use crate::adapters::store::{
    IfNotPending, ReplayKey, Reservation, ReservationId, Store, StoreError,
};
use crate::config::{IssuerKind, ReplayMode, TargetConfig};
use crate::trust::audit::{AuditRecord, Outcome};
use crate::trust::policy::{ConditionOutcome, PolicySet, Selection};
use crate::trust::verify::{VerifiedToken, Verifier, VerifyError, token_sha256};

pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How long a replay record outlives the CI token's `exp` beyond the issuer's leeway.
pub const REPLAY_MARGIN: Duration = Duration::from_secs(60);

/// A parsed, well-formed exchange request (rows 2–5 of the error table already passed).
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    pub request_id: String,
    /// The CI token; `Debug` redacts it.
    pub subject_token: SecretString,
    pub audience: String,
    /// Requested scopes, deduplicated in request order; `None` when absent.
    pub scope: Option<Vec<String>>,
    pub policy: Option<String>,
    pub requested_token_type: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A successful exchange.
#[derive(Debug)]
pub struct Issued {
    /// The minted token; `Debug` redacts it.
    pub access_token: SecretString,
    pub issued_token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    pub target: String,
    pub policy: String,
    /// For `reuse_tokens`: committed only once the token is handed out.
    pub(crate) reuse: Option<ReuseOffer>,
}

/// A refused or failed exchange; `http::error` turns it into a status and body.
#[derive(Debug)]
pub enum ExchangeError {
    /// Row 6: a defect of the subject token, or already used.
    InvalidGrant(String),
    /// Row 8: no such target (told only to known callers).
    InvalidTarget(String),
    /// A pinned policy that does not exist (told only to known callers).
    InvalidRequest(String),
    /// Row 9.
    AccessDenied(Denial),
    /// Row 10.
    InvalidScope(String),
    /// Row 11: a remote target failed, refused, or answered with a token that must not be
    /// handed out; operator-facing text, never the target's own words.
    UpstreamFailed(String),
    /// Row 12: something on our side; safe external text, never internals.
    Unavailable {
        description: String,
        retry_after: u64,
    },
}

/// An `access_denied` answer. `nearest` is set only for callers bound for the target.
#[derive(Debug)]
pub struct Denial {
    pub description: String,
    pub nearest: Option<(String, Vec<ConditionOutcome>)>,
}

/// The exact text of every denial that discloses nothing.
pub fn generic_denial(target: &str) -> String {
    format!("no trust policy for target {target:?} matches this workload")
}

/// A target as the exchange needs it.
pub struct Target {
    pub config: TargetConfig,
    pub minter: Arc<dyn Minter>,
}

/// Everything an exchange needs, shared by all requests.
pub struct Exchanger {
    pub public_url: String,
    pub verifier: Verifier,
    pub issuer_kinds: HashMap<String, (IssuerKind, ReplayMode, String)>,
    /// Swapped whole by the policy reloader.
    pub policies: Arc<ArcSwap<PolicySet>>,
    pub targets: BTreeMap<String, Target>,
    /// Audience URL → target name, for targets with `match_audience_url`.
    pub audience_index: HashMap<String, String>,
    pub store: Arc<dyn Store>,
    /// Local signing keys (published at the JWKS endpoint, reloaded after rotation).
    pub signer: Arc<LocalSigner>,
}

/// The request's audit record as it is built, and whether a `pending` version of it is
/// already in the store (then the final version completes it instead of appending).
struct Outcomes {
    record: AuditRecord,
    store: Arc<dyn Store>,
    pending_written: bool,
    /// The final version is written (or will never be: nothing pending).
    settled: bool,
}

impl Outcomes {
    /// Writes the final record: completes the pending one, or appends.
    async fn write_final(&mut self) -> Result<(), StoreError> {
        let written = if self.pending_written {
            self.store
                .complete_audit(&self.record, IfNotPending::Append)
                .await
                .map(|_| ())
        } else {
            self.store.append_audit(&self.record).await
        };
        self.settled = true;
        written
    }
}

impl Drop for Outcomes {
    /// A request dropped while its remote call was pending (the caller went away):
    /// complete its record so that it does not stay `pending` for ever.
    fn drop(&mut self) {
        if !self.pending_written || self.settled {
            return;
        }
        let mut record = self.record.clone();
        record.withhold(
            "cancelled",
            "the request was cancelled while the target was called",
        );
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match store.complete_audit(&record, IfNotPending::Skip).await {
                    // Logged only when it is what the store holds (a final record that
                    // was committed just before the cancellation stays as it is).
                    Ok(true) => crate::trust::audit::log_decision(&record),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::error!(request_id = %record.request_id, error = %err, "the cancelled request's audit record could not be completed");
                    }
                }
            });
        }
    }
}

/// Longest attacker-controlled text copied into an audit record or log field.
const MAX_RECORDED_TEXT: usize = 512;

/// Cuts `text` to [`MAX_RECORDED_TEXT`] bytes (on a character boundary), marking the cut.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_RECORDED_TEXT {
        return text.to_owned();
    }
    let kept = crate::trust::audit::prefix_at_most(text, MAX_RECORDED_TEXT);
    format!("{kept}… ({} bytes)", text.len())
}

/// A reserved replay key. Until [`ReplayGuard::disarm`] (the token is on its way out),
/// dropping it (a cancelled request) releases the key in the background, so a request
/// that never returned a token never uses the CI token up.
struct ReplayGuard {
    store: Arc<dyn Store>,
    /// The reserved key and our hold on it; `None` once settled.
    key: Option<(ReplayKey, ReservationId)>,
}

impl ReplayGuard {
    /// Marks the key used; the guard stays armed until [`ReplayGuard::disarm`].
    async fn consume(&self) -> Result<(), StoreError> {
        match &self.key {
            Some((key, holder)) => self.store.consume(key, holder).await,
            None => Ok(()),
        }
    }

    /// The token is handed out: the key stays used.
    fn disarm(mut self) {
        self.key = None;
    }

    /// Releases the key; if that fails (or is cancelled), the drop tries once more.
    async fn release(mut self) {
        if let Some((key, holder)) = self.key.clone() {
            match self.store.release(&key, &holder).await {
                Ok(()) => self.key = None,
                Err(err) => {
                    tracing::error!(error = %err, "replay reservation could not be released; retrying in the background");
                }
            }
        }
    }
}

impl Drop for ReplayGuard {
    fn drop(&mut self) {
        if let Some((key, holder)) = self.key.take() {
            let store = self.store.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = store.release(&key, &holder).await;
                });
            }
        }
    }
}

impl Exchanger {
    /// Runs one exchange and writes its one audit record. `now` is injected for tests.
    pub async fn exchange(
        &self,
        request: &ExchangeRequest,
        now: OffsetDateTime,
    ) -> (Result<Issued, ExchangeError>, AuditRecord) {
        let mut out = Outcomes {
            record: AuditRecord::new(&request.request_id, now, Outcome::Deny, "unknown"),
            store: self.store.clone(),
            pending_written: false,
            settled: false,
        };
        out.record.audience = Some(bounded(&request.audience));
        out.record.requested_scope = request.scope.as_ref().map(|s| bounded(&s.join(" ")));
        out.record.client_ip = request.client_ip.clone();
        out.record.user_agent = request.user_agent.as_deref().map(bounded);
        let result = self.run(request, now, &mut out).await;
        if let Err(err) = &result {
            if let Some(detail) = &out.record.detail {
                out.record.detail = Some(bounded(detail));
            }
            // Refusals are recorded here; the success path wrote its record before the
            // token could leave.
            if let Err(store_err) = out.write_final().await {
                tracing::error!(request_id = %request.request_id, error = %store_err, "audit record could not be written");
                if !matches!(err, ExchangeError::Unavailable { .. }) {
                    out.settled = true;
                    return (Err(audit_unavailable()), out.record.clone());
                }
            }
        }
        out.settled = true;
        (result, out.record.clone())
    }

    async fn run(
        &self,
        request: &ExchangeRequest,
        now: OffsetDateTime,
        out: &mut Outcomes,
    ) -> Result<Issued, ExchangeError> {
        let verified = match self
            .verifier
            .verify(request.subject_token.expose_secret(), now.unix_timestamp())
            .await
        {
            Ok(verified) => verified,
            Err(err) => {
                out.record.reason = err.reason().to_owned();
                out.record.detail = Some(err.to_string());
                return Err(match err {
                    VerifyError::KeysUnavailable { .. } => {
                        out.record.outcome = Outcome::Error;
                        ExchangeError::Unavailable {
                            description:
                                "the CI issuer's signing keys are unavailable; retry later"
                                    .to_owned(),
                            retry_after: 30,
                        }
                    }
                    other => ExchangeError::InvalidGrant(other.to_string()),
                });
            }
        };
        let (kind, replay_mode, ci_issuer_url) = self
            .issuer_kinds
            .get(&verified.issuer)
            .cloned()
            .unwrap_or((IssuerKind::Generic, ReplayMode::Reject, String::new()));
        out.record.set_workload(&verified.claims, kind);

        let guard = match replay_mode {
            ReplayMode::Reject => Some(self.reserve(&verified, out).await?),
            ReplayMode::Allow => None,
        };
        let mut issued = match self
            .decide_and_mint(request, &verified, &ci_issuer_url, now, out)
            .await
        {
            Ok(issued) => issued,
            Err(err) => {
                if let Some(guard) = guard {
                    guard.release().await;
                }
                return Err(err);
            }
        };
        // The CI token is marked used before the record that says a token left.
        let consumed = match &guard {
            Some(guard) => guard.consume().await,
            None => Ok(()),
        };
        if let Err(err) = consumed {
            tracing::error!(request_id = %request.request_id, error = %err, "the CI token could not be marked used; token withheld");
            if let Some(guard) = guard {
                guard.release().await;
            }
            out.record.withhold("store_unavailable", &err.to_string());
            return Err(ExchangeError::Unavailable {
                description: "the replay store cannot record this request; retry later".to_owned(),
                retry_after: 5,
            });
        }
        // The audit record is written before the token can leave. On failure the guard's
        // drop undoes the consumption: no token left, so the CI token is not used up.
        if let Err(err) = out.write_final().await {
            tracing::error!(request_id = %request.request_id, error = %err, "audit record could not be written; token withheld");
            if let Some(guard) = guard {
                guard.release().await;
            }
            out.record.withhold("audit_unavailable", &err.to_string());
            return Err(audit_unavailable());
        }
        if let Some(guard) = guard {
            guard.disarm();
        }
        if let Some(offer) = issued.reuse.take() {
            offer.commit();
        }
        Ok(issued)
    }

    /// Reserves the CI token's replay key; refuses a used or in-use token.
    async fn reserve(
        &self,
        verified: &VerifiedToken,
        out: &mut Outcomes,
    ) -> Result<ReplayGuard, ExchangeError> {
        let keep_until = replay_keep_until(verified.expires_at, verified.leeway);
        match self.store.reserve(&verified.replay_key, keep_until).await {
            Ok(Reservation::Reserved(holder)) => Ok(ReplayGuard {
                store: self.store.clone(),
                key: Some((verified.replay_key.clone(), holder)),
            }),
            Ok(Reservation::AlreadyUsed) => {
                out.record.reason = "token_replayed".to_owned();
                out.record.detail = Some(VerifyError::AlreadyUsed.to_string());
                Err(ExchangeError::InvalidGrant(
                    VerifyError::AlreadyUsed.to_string(),
                ))
            }
            Ok(Reservation::InUse) => {
                out.record.reason = "token_in_use".to_owned();
                out.record.detail = Some(VerifyError::InUse.to_string());
                Err(ExchangeError::InvalidGrant(VerifyError::InUse.to_string()))
            }
            Err(err) => {
                out.record.outcome = Outcome::Error;
                out.record.reason = "store_unavailable".to_owned();
                out.record.detail = Some(err.to_string());
                Err(ExchangeError::Unavailable {
                    description: "the replay store is unavailable; retry later".to_owned(),
                    retry_after: 5,
                })
            }
        }
    }

    async fn decide_and_mint(
        &self,
        request: &ExchangeRequest,
        verified: &VerifiedToken,
        ci_issuer_url: &str,
        now: OffsetDateTime,
        out: &mut Outcomes,
    ) -> Result<Issued, ExchangeError> {
        let policies = self.policies.load_full();
        out.record.policy_set_version = Some(policies.version().to_owned());
        let claims = &verified.claims;

        let Some(target) = self.resolve_target(&request.audience) else {
            out.record.reason = "unknown_target".to_owned();
            out.record.detail = Some(format!(
                "no target named or with audience {:?}",
                request.audience
            ));
            return Err(if policies.is_known(claims) {
                ExchangeError::InvalidTarget(format!("no target {:?}", request.audience))
            } else {
                ExchangeError::AccessDenied(Denial {
                    description: generic_denial(&request.audience),
                    nearest: None,
                })
            });
        };
        let target_name = target.config.name.as_str();
        out.record.target = Some(target_name.to_owned());

        let selection = policies.select(
            claims,
            target_name,
            request.scope.as_deref(),
            request.policy.as_deref(),
        );
        let denied = |description: String| {
            ExchangeError::AccessDenied(Denial {
                description,
                nearest: None,
            })
        };
        let (policy, scopes, decision) = match selection {
            Selection::Granted {
                policy,
                scopes,
                decision,
                audit_only,
            } => {
                out.record.would_allow = audit_only;
                (policy, scopes, decision)
            }
            Selection::NoMatch {
                nearest,
                audit_only,
                decisions,
            } => {
                out.record.reason = "no_policy_matched".to_owned();
                out.record.would_allow = audit_only;
                out.record.decisions = decisions;
                // `nearest` is set only when a policy binds the caller for this target.
                out.record.detail = Some(match &nearest {
                    Some(d) => format!("nearest policy {:?}: {}", d.policy, d.describe_failures()),
                    None => "no policy for this issuer and target matches".to_owned(),
                });
                return Err(ExchangeError::AccessDenied(match nearest {
                    Some(decision) => Denial {
                        description: format!(
                            "{}; nearest policy {:?}: {}",
                            generic_denial(&request.audience),
                            decision.policy,
                            decision.describe_failures()
                        ),
                        nearest: Some((
                            decision.policy.clone(),
                            decision.failures().cloned().collect(),
                        )),
                    },
                    None => Denial {
                        description: generic_denial(&request.audience),
                        nearest: None,
                    },
                }));
            }
            Selection::ScopeExceeded {
                matching,
                audit_only,
                decisions,
            } => {
                out.record.reason = "scope_exceeded".to_owned();
                out.record.would_allow = audit_only;
                out.record.decisions = decisions;
                let named = format!(
                    "the requested scope exceeds every matching policy ({})",
                    quoted_list(&matching)
                );
                out.record.detail = Some(named.clone());
                // Policy names only for callers the policies bind (an `unbound: true`
                // policy can match anyone).
                return Err(ExchangeError::InvalidScope(
                    if policies.is_bound(claims, target_name) {
                        named
                    } else {
                        "the requested scope exceeds every matching policy".to_owned()
                    },
                ));
            }
            Selection::Ambiguous {
                candidates,
                audit_only,
                decisions,
            } => {
                out.record.would_allow = audit_only;
                out.record.decisions = decisions;
                out.record.reason = "ambiguous_policy".to_owned();
                out.record.detail = Some(format!("candidates: {}", quoted_list(&candidates)));
                return Err(ExchangeError::InvalidScope(
                    "several policies match with different scopes; request a scope or pin a policy"
                        .to_owned(),
                ));
            }
            Selection::UnknownPinnedPolicy => {
                let pinned = request.policy.clone().unwrap_or_default();
                out.record.reason = "unknown_policy".to_owned();
                out.record.detail =
                    Some(format!("no policy {pinned:?} for target {target_name:?}"));
                // Safer than the contract's "known": only callers that some policy of this
                // very target binds may learn which policy names it lacks.
                return Err(if policies.is_bound(claims, target_name) {
                    ExchangeError::InvalidRequest(format!(
                        "no policy {pinned:?} for target {target_name:?}"
                    ))
                } else {
                    denied(generic_denial(&request.audience))
                });
            }
        };
        out.record.policy = Some(policy.name().to_owned());
        out.record.policy_sha256 = Some(policy.source_sha256().to_owned());
        out.record.decisions = vec![decision];

        if target.minter.is_remote() {
            self.write_pending(request, out).await?;
        }
        let minted = target
            .minter
            .mint(
                &Grant {
                    request_id: &request.request_id,
                    claims,
                    ci_issuer_url,
                    issuer_kind: policy.issuer_kind(),
                    policy: policy.name(),
                    scopes: &scopes,
                    ttl: policy.ttl(),
                },
                now,
            )
            .await
            .map_err(|err| {
                out.record.outcome = Outcome::Error;
                out.record.reason = err.reason().to_owned();
                out.record.detail = Some(err.to_string());
                match err {
                    MintError::Upstream { public, .. } => ExchangeError::UpstreamFailed(public),
                    MintError::RateLimited { retry_after, .. } => ExchangeError::Unavailable {
                        description: format!(
                            "target {target_name:?} is rate-limiting tokenmint; retry after {retry_after}s"
                        ),
                        retry_after,
                    },
                    MintError::NoKey(_) | MintError::Signing(_) => ExchangeError::Unavailable {
                        description: "the token could not be minted; retry later".to_owned(),
                        retry_after: 5,
                    },
                }
            })?;

        out.record.outcome = Outcome::Allow;
        out.record.reason = "allowed".to_owned();
        out.record.detail = None;
        out.record.scope = Some(minted.scope.clone());
        out.record.token_sha256 = Some(token_sha256(minted.token.expose_secret()));
        out.record.token_jti = minted.jti.clone();
        out.record.expires_at = Some(minted.expires_at);
        out.record.reused = minted.reused;
        // `...:jwt` is honoured only when the token is one (a remote target's may be opaque).
        let issued_token_type = match request.requested_token_type.as_deref() {
            Some(TOKEN_TYPE_JWT) if minted.is_jwt => TOKEN_TYPE_JWT,
            _ => TOKEN_TYPE_ACCESS_TOKEN,
        };
        Ok(Issued {
            access_token: minted.token,
            issued_token_type,
            expires_in: minted.expires_in,
            scope: minted.scope,
            target: target_name.to_owned(),
            policy: policy.name().to_owned(),
            reuse: minted.reuse,
        })
    }

    /// Records the request as `pending` before a remote target is called.
    async fn write_pending(
        &self,
        request: &ExchangeRequest,
        out: &mut Outcomes,
    ) -> Result<(), ExchangeError> {
        let mut pending = out.record.clone();
        pending.outcome = Outcome::Pending;
        pending.reason = "pending".to_owned();
        pending.detail = Some("calling the target".to_owned());
        // Set before the write: a request cancelled during it still completes whatever
        // the store committed (and appends nothing if it committed nothing).
        out.pending_written = true;
        if let Err(err) = self.store.append_audit(&pending).await {
            tracing::error!(request_id = %request.request_id, error = %err, "pending audit record could not be written; the target is not called");
            out.record.outcome = Outcome::Error;
            out.record.reason = "audit_unavailable".to_owned();
            out.record.detail = Some(err.to_string());
            return Err(audit_unavailable());
        }
        tracing::info!(
            request_id = %request.request_id,
            outcome = "pending",
            target = pending.target.as_deref().unwrap_or(""),
            policy = pending.policy.as_deref().unwrap_or(""),
            "exchange pending: calling the target"
        );
        Ok(())
    }

    fn resolve_target(&self, audience: &str) -> Option<&Target> {
        self.targets.get(audience).or_else(|| {
            self.audience_index
                .get(audience)
                .and_then(|name| self.targets.get(name))
        })
    }
}

/// When a replay record may be forgotten: the CI token's `exp` + leeway + [`REPLAY_MARGIN`].
pub fn replay_keep_until(exp: i64, leeway: Duration) -> OffsetDateTime {
    let keep = exp
        .saturating_add(i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX / 4))
        .saturating_add(i64::try_from(REPLAY_MARGIN.as_secs()).unwrap_or(60));
    OffsetDateTime::from_unix_timestamp(keep)
        .unwrap_or(OffsetDateTime::now_utc() + time::Duration::days(1))
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn audit_unavailable() -> ExchangeError {
    ExchangeError::Unavailable {
        description: "the audit trail cannot record this request; retry later".to_owned(),
        retry_after: 5,
    }
}
