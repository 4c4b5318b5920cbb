//! The exchange: verify the CI token, choose a policy, mint, audit. No HTTP in here.
//!
//! Invariants kept here:
//! - a token is never returned unless its audit record has been written;
//! - with `replay = "reject"`, only an exchange that returns a token uses the CI token up;
//!   every refusal or failure after the reservation releases it;
//! - policy content reaches only callers bound for the target (see [`Denial`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::audit::{AuditRecord, Outcome};
use crate::config::{IssuerKind, ReplayMode, TargetConfig, TargetKindConfig};
use crate::mint::LocalSigner;
use crate::mint::local::LocalGrant;
use crate::policy::{ConditionOutcome, PolicySet, Selection};
use crate::store::{Reservation, Store};
use crate::verify::{VerifiedToken, Verifier, VerifyError, token_sha256};

pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How long a replay record outlives the CI token's `exp` beyond the issuer's leeway.
pub const REPLAY_MARGIN: Duration = Duration::from_secs(60);

/// A parsed, well-formed exchange request (rows 2–5 of the error table already passed).
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    pub request_id: String,
    pub subject_token: String,
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
    pub access_token: String,
    pub issued_token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    pub target: String,
    pub policy: String,
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
    pub signer: LocalSigner,
}

struct Outcomes {
    record: AuditRecord,
}

impl Exchanger {
    /// Runs one exchange and writes its audit record. `now` is injected for tests.
    pub async fn exchange(
        &self,
        request: &ExchangeRequest,
        now: OffsetDateTime,
    ) -> (Result<Issued, ExchangeError>, Option<AuditRecord>) {
        let mut out = Outcomes {
            record: AuditRecord::new(&request.request_id, now, Outcome::Deny, "unknown"),
        };
        out.record.audience = Some(request.audience.clone());
        out.record.requested_scope = request.scope.as_ref().map(|s| s.join(" "));
        out.record.client_ip = request.client_ip.clone();
        out.record.user_agent = request.user_agent.clone();
        let result = self.run(request, now, &mut out).await;
        let result = match result {
            Ok(issued) => Ok(issued),
            Err(err) => {
                // Refusals are recorded here; the success path wrote its own record.
                if let Err(store_err) = self.store.append_audit(&out.record).await {
                    tracing::error!(request_id = %request.request_id, error = %store_err, "audit record could not be written");
                    Err(ExchangeError::Unavailable {
                        description: "the audit trail cannot record this request; retry later"
                            .to_owned(),
                        retry_after: 5,
                    })
                } else {
                    Err(err)
                }
            }
        };
        (result, Some(out.record))
    }

    async fn run(
        &self,
        request: &ExchangeRequest,
        now: OffsetDateTime,
        out: &mut Outcomes,
    ) -> Result<Issued, ExchangeError> {
        let verified = match self
            .verifier
            .verify(&request.subject_token, now.unix_timestamp())
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

        let reserved = if replay_mode == ReplayMode::Reject {
            self.reserve(&verified, out).await?;
            Some(verified.replay_key.clone())
        } else {
            None
        };
        let result = self
            .decide_and_mint(request, &verified, &ci_issuer_url, now, out)
            .await;
        if let Some(key) = reserved {
            let settle = if result.is_ok() {
                self.store.consume(&key).await
            } else {
                self.store.release(&key).await
            };
            if let Err(err) = settle {
                tracing::error!(request_id = %request.request_id, error = %err, "replay record could not be settled");
                if result.is_ok() {
                    // Fail closed: a token whose CI token is not marked used is not handed out.
                    let mut failure = out.record.clone();
                    failure.outcome = Outcome::Error;
                    failure.reason = "store_unavailable".to_owned();
                    failure.detail = Some(
                        "the CI token could not be marked used; the minted token was withheld"
                            .to_owned(),
                    );
                    let _ = self.store.append_audit(&failure).await;
                    return Err(ExchangeError::Unavailable {
                        description: "the replay store cannot record this request; retry later"
                            .to_owned(),
                        retry_after: 5,
                    });
                }
            }
        }
        result
    }

    /// Reserves the CI token's replay key; refuses a used or in-use token.
    async fn reserve(
        &self,
        verified: &VerifiedToken,
        out: &mut Outcomes,
    ) -> Result<(), ExchangeError> {
        let keep_until = replay_keep_until(verified.expires_at, verified.leeway);
        match self.store.reserve(&verified.replay_key, keep_until).await {
            Ok(Reservation::Reserved) => Ok(()),
            Ok(Reservation::AlreadyUsed) | Ok(Reservation::InUse) => {
                out.record.reason = "token_replayed".to_owned();
                out.record.detail = Some(VerifyError::AlreadyUsed.to_string());
                Err(ExchangeError::InvalidGrant(
                    VerifyError::AlreadyUsed.to_string(),
                ))
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
        let bound = policies.is_bound(claims, target_name);

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
                let nearest = nearest.filter(|_| bound);
                out.record.detail = Some(match &nearest {
                    Some(d) => format!("nearest policy {:?}: {}", d.policy, d.describe_failures()),
                    None => "no policy for this issuer and target matches".to_owned(),
                });
                return Err(ExchangeError::AccessDenied(match nearest {
                    Some(decision) => Denial {
                        description: format!(
                            "{}; nearest policy {:?}: {}",
                            generic_denial(target_name),
                            decision.policy,
                            decision.describe_failures()
                        ),
                        nearest: Some((
                            decision.policy.clone(),
                            decision.failures().cloned().collect(),
                        )),
                    },
                    None => Denial {
                        description: generic_denial(target_name),
                        nearest: None,
                    },
                }));
            }
            Selection::ScopeExceeded { matching, .. } => {
                out.record.reason = "scope_exceeded".to_owned();
                let text = format!(
                    "the requested scope exceeds every matching policy ({})",
                    quoted_list(&matching)
                );
                out.record.detail = Some(text.clone());
                return Err(ExchangeError::InvalidScope(text));
            }
            Selection::Ambiguous { candidates, .. } => {
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
                return Err(if policies.is_known(claims) {
                    ExchangeError::InvalidRequest(format!(
                        "no policy {pinned:?} for target {target_name:?}"
                    ))
                } else {
                    denied(generic_denial(target_name))
                });
            }
        };
        out.record.policy = Some(policy.name().to_owned());
        out.record.policy_sha256 = Some(policy.source_sha256().to_owned());
        out.record.decisions = vec![decision];
        let scope = scopes.join(" ");
        out.record.scope = Some(scope.clone());

        let TargetKindConfig::Local { algorithm, .. } = &target.config.kind;
        let ttl = policy
            .ttl()
            .unwrap_or(target.config.max_ttl)
            .min(target.config.max_ttl);
        let minted = self
            .signer
            .mint(
                &LocalGrant {
                    issuer_url: &self.public_url,
                    ci_issuer_url,
                    claims,
                    target: target_name,
                    audience: &target.config.audience,
                    policy: policy.name(),
                    scope: &scope,
                    algorithm: *algorithm,
                    ttl,
                },
                now,
            )
            .map_err(|err| {
                out.record.outcome = Outcome::Error;
                out.record.reason = "mint_failed".to_owned();
                out.record.detail = Some(err.to_string());
                ExchangeError::Unavailable {
                    description: "the token could not be signed; retry later".to_owned(),
                    retry_after: 5,
                }
            })?;

        out.record.outcome = Outcome::Allow;
        out.record.reason = "allowed".to_owned();
        out.record.detail = None;
        out.record.token_sha256 = Some(token_sha256(&minted.token));
        out.record.token_jti = Some(minted.jti.clone());
        out.record.expires_at = Some(minted.expires_at);
        // The audit record is written before the token can leave.
        if let Err(err) = self.store.append_audit(&out.record).await {
            tracing::error!(request_id = %request.request_id, error = %err, "audit record could not be written; token withheld");
            out.record.outcome = Outcome::Error;
            out.record.reason = "audit_unavailable".to_owned();
            out.record.token_sha256 = None;
            out.record.token_jti = None;
            out.record.expires_at = None;
            return Err(ExchangeError::Unavailable {
                description: "the audit trail cannot record this request; retry later".to_owned(),
                retry_after: 5,
            });
        }
        let issued_token_type = match request.requested_token_type.as_deref() {
            Some(TOKEN_TYPE_JWT) => TOKEN_TYPE_JWT,
            _ => TOKEN_TYPE_ACCESS_TOKEN,
        };
        Ok(Issued {
            access_token: minted.token,
            issued_token_type,
            expires_in: ttl.as_secs(),
            scope,
            target: target_name.to_owned(),
            policy: policy.name().to_owned(),
        })
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
