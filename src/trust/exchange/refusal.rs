//! A refused or failed exchange as one value: the closed [`Reason`] (shared with the
//! audit record and metrics), what the caller is told ([`ExchangeError`], already shaped
//! like the contract's error rows), and the internal detail for the log and the record.
//!
//! Every refusal is built by one constructor here, so its three parts cannot drift
//! apart; `http::error` maps the external part to a status and body, and
//! [`super::record`] puts the reason and detail into the audit record.

use crate::trust::audit::Reason;
use crate::trust::mint::MintError;
use crate::trust::policy::ConditionOutcome;
use crate::trust::policy::switches::Denylisted;
use crate::trust::store::StoreError;
use crate::trust::verify::VerifyError;

/// A refused or failed exchange.
#[derive(Debug)]
pub struct Refusal {
    pub reason: Reason,
    /// What the caller is told.
    pub answer: ExchangeError,
    /// The full reason, for the log and the audit record; never shown to the caller.
    pub detail: String,
}

/// What the caller is told: one of the contract's error rows; `http::error` gives each
/// its status and body.
#[derive(Debug)]
pub enum ExchangeError {
    /// Row 6: a defect of the subject token, or already used.
    InvalidGrant(String),
    /// Row 8: no such target (told only to known callers).
    InvalidTarget(String),
    /// A pinned policy that does not exist (told only to bound callers).
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

impl ExchangeError {
    /// The `/token` error code the caller gets (`invalid_grant`, `access_denied`, ...).
    pub fn error_code(&self) -> &'static str {
        match self {
            ExchangeError::InvalidGrant(_) => "invalid_grant",
            ExchangeError::InvalidTarget(_) => "invalid_target",
            ExchangeError::InvalidRequest(_) => "invalid_request",
            ExchangeError::AccessDenied(_) => "access_denied",
            ExchangeError::InvalidScope(_) => "invalid_scope",
            ExchangeError::UpstreamFailed(_) | ExchangeError::Unavailable { .. } => {
                "temporarily_unavailable"
            }
        }
    }

    /// The `error_description` the caller gets.
    pub fn description(&self) -> &str {
        match self {
            ExchangeError::InvalidGrant(text)
            | ExchangeError::InvalidTarget(text)
            | ExchangeError::InvalidRequest(text)
            | ExchangeError::InvalidScope(text)
            | ExchangeError::UpstreamFailed(text) => text,
            ExchangeError::AccessDenied(denial) => &denial.description,
            ExchangeError::Unavailable { description, .. } => description,
        }
    }
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

impl Refusal {
    fn new(reason: Reason, answer: ExchangeError, detail: String) -> Self {
        Self {
            reason,
            answer,
            detail,
        }
    }

    /// The subject token failed verification; or its issuer's keys cannot be had.
    pub fn of_token(err: &VerifyError) -> Self {
        let answer = match err {
            VerifyError::KeysUnavailable { .. } => ExchangeError::Unavailable {
                description: "the CI issuer's signing keys are unavailable; retry later".to_owned(),
                retry_after: 30,
            },
            other => ExchangeError::InvalidGrant(other.to_string()),
        };
        Self::new(err.reason(), answer, err.to_string())
    }

    /// An earlier exchange handed out a token for this CI token.
    pub fn replayed() -> Self {
        Self::of_token(&VerifyError::AlreadyUsed)
    }

    /// Another request is exchanging this CI token right now.
    pub fn in_use() -> Self {
        Self::of_token(&VerifyError::InUse)
    }

    /// No target is named `audience` or has it as its audience URL. Only a caller that
    /// some policy of its issuer binds is told so.
    pub fn unknown_target(audience: &str, caller_known: bool) -> Self {
        let answer = if caller_known {
            ExchangeError::InvalidTarget(format!("no target {audience:?}"))
        } else {
            denied(generic_denial(audience), None)
        };
        Self::new(
            Reason::UnknownTarget,
            answer,
            format!("no target named or with audience {audience:?}"),
        )
    }

    /// The token carries a denied binding-claim value (`[deny]`, `deny.yaml`). The caller
    /// gets the generic denial, so a stolen token's holder does not learn it was noticed;
    /// the record and the log name the value.
    pub fn denylisted(audience: &str, hit: &Denylisted) -> Self {
        Self::new(
            Reason::Denylisted,
            denied(generic_denial(audience), None),
            format!("denylisted: {hit} is on the deny list"),
        )
    }

    /// The target is switched off (`enabled = false`). Only a caller that some policy of
    /// its issuer binds is told so; any other gets the answer an unknown target gets.
    pub fn target_disabled(audience: &str, target: &str, caller_known: bool) -> Self {
        let answer = if caller_known {
            ExchangeError::InvalidTarget(format!("target {target:?} is disabled"))
        } else {
            denied(generic_denial(audience), None)
        };
        Self::new(
            Reason::TargetDisabled,
            answer,
            format!("target {target:?} is disabled (enabled = false)"),
        )
    }

    /// The pinned policy is not one of the target's. Safer than the contract's "known":
    /// only callers that some policy of this very target binds may learn which policy
    /// names it lacks.
    pub fn unknown_policy(pinned: &str, target: &str, audience: &str, caller_bound: bool) -> Self {
        let text = format!("no policy {pinned:?} for target {target:?}");
        let answer = if caller_bound {
            ExchangeError::InvalidRequest(text.clone())
        } else {
            denied(generic_denial(audience), None)
        };
        Self::new(Reason::UnknownPolicy, answer, text)
    }

    /// No policy matches. `nearest` is the policy disclosed to a caller bound for the
    /// target (with its failing conditions); `detail` says everything to the operator.
    pub fn no_match(
        audience: &str,
        nearest: Option<(String, Vec<ConditionOutcome>, String)>,
        detail: String,
    ) -> Self {
        let answer = match nearest {
            Some((policy, failures, described)) => denied(
                format!(
                    "{}; nearest policy {policy:?}: {described}",
                    generic_denial(audience)
                ),
                Some((policy, failures)),
            ),
            None => denied(generic_denial(audience), None),
        };
        Self::new(Reason::NoPolicyMatched, answer, detail)
    }

    /// The requested scope exceeds every matching policy; the policies are named only to
    /// a bound caller (an `unbound: true` policy can match anyone).
    pub fn scope_exceeded(matching: &[String], caller_bound: bool) -> Self {
        let named = format!(
            "the requested scope exceeds every matching policy ({})",
            quoted_list(matching)
        );
        let told = if caller_bound {
            named.clone()
        } else {
            "the requested scope exceeds every matching policy".to_owned()
        };
        Self::new(
            Reason::ScopeExceeded,
            ExchangeError::InvalidScope(told),
            named,
        )
    }

    /// Several policies match with scopes of which none is a subset of the others.
    pub fn ambiguous(candidates: &[String]) -> Self {
        Self::new(
            Reason::AmbiguousPolicy,
            ExchangeError::InvalidScope(
                "several policies match with different scopes; request a scope or pin a policy"
                    .to_owned(),
            ),
            format!("candidates: {}", quoted_list(candidates)),
        )
    }

    /// Minting failed; the detail is the minter's (operator-facing, never a secret).
    pub fn of_mint(target: &str, err: MintError) -> Self {
        let reason = err.reason();
        let detail = err.to_string();
        let answer = match err {
            MintError::Upstream { public, .. } => ExchangeError::UpstreamFailed(public),
            MintError::RateLimited { retry_after, .. } => ExchangeError::Unavailable {
                description: format!(
                    "target {target:?} is rate-limiting tokenmint; retry after {retry_after}s"
                ),
                retry_after,
            },
            MintError::NoKey(_) | MintError::Signing(_) => ExchangeError::Unavailable {
                description: "the token could not be minted; retry later".to_owned(),
                retry_after: 5,
            },
        };
        Self::new(reason, answer, detail)
    }

    /// The step that hands a token out (CI token used + its record) failed.
    pub fn store_unavailable(err: &StoreError) -> Self {
        Self::new(
            Reason::StoreUnavailable,
            ExchangeError::Unavailable {
                description: "the replay store cannot record this request; retry later".to_owned(),
                retry_after: 5,
            },
            err.to_string(),
        )
    }

    /// A record of this request could not be written, so nothing is handed out.
    pub fn audit_unavailable(err: &StoreError) -> Self {
        Self::new(
            Reason::AuditUnavailable,
            ExchangeError::Unavailable {
                description: "the audit trail cannot record this request; retry later".to_owned(),
                retry_after: 5,
            },
            err.to_string(),
        )
    }

    /// The remote call outlived this request's reservation of the CI token, which another
    /// request may now hold.
    pub fn reservation_lost() -> Self {
        Self::new(
            Reason::StoreUnavailable,
            ExchangeError::Unavailable {
                description: "the request took too long to complete; retry later".to_owned(),
                retry_after: 5,
            },
            "the reservation of the CI token lapsed while the target was called".to_owned(),
        )
    }

    /// The caller went away while the target was called.
    pub fn cancelled() -> Self {
        Self::new(
            Reason::Cancelled,
            ExchangeError::Unavailable {
                description: "the request was cancelled".to_owned(),
                retry_after: 1,
            },
            "the request was cancelled while the target was called".to_owned(),
        )
    }

    /// This refusal withholds a token that was minted: its SHA-256 leads the detail (so
    /// cutting the detail never loses it), because a remote target's token exists even
    /// when withheld and Auth0 cannot revoke it.
    #[must_use]
    pub fn withholding(mut self, sha256: &str) -> Self {
        self.detail = format!("withheld token sha256 {sha256}; {}", self.detail);
        self
    }
}

fn denied(description: String, nearest: Option<(String, Vec<ConditionOutcome>)>) -> ExchangeError {
    ExchangeError::AccessDenied(Denial {
        description,
        nearest,
    })
}

pub(super) fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
