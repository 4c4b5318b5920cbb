//! `policy explain`: every candidate policy's verdict on some claims, condition by
//! condition, the choice the selection rules make, and what a caller would be told under
//! the disclosure rule. Built on [`SimulatedClaims`]: an explanation never verifies
//! anything and never grants anything. What the caller would be told comes from the
//! exchange's own [`Refusal`] constructors, so the two cannot drift apart.

use serde::Serialize;

use super::refusal::{ExchangeError, Refusal};
use crate::trust::policy::{ConditionOutcome, IssuerKind, Mode, PolicySet, Selection};
use crate::trust::verify::claims::{ClaimsView, SimulatedClaims};

/// One policy of the issuer and target, as the selection saw it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyVerdict {
    pub name: String,
    pub mode: Mode,
    pub enabled: bool,
    pub scopes: Vec<String>,
    /// Every condition matched.
    pub matches: bool,
    /// Its scopes include every requested scope (true without a request).
    pub covers_requested_scope: bool,
    /// This policy decides the exchange.
    pub chosen: bool,
    pub conditions: Vec<ConditionOutcome>,
}

/// The outcome the exchange would have.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedResult {
    /// `allow` or `deny`.
    pub outcome: &'static str,
    /// The `/token` error the caller would get: `access_denied`, `invalid_scope` or
    /// `invalid_request`.
    pub error: Option<&'static str>,
    pub policy: Option<String>,
    pub scopes: Vec<String>,
    /// How the selection rules reached it, in one sentence.
    pub how: String,
}

/// What the caller would be told.
#[derive(Debug, Clone, Serialize)]
pub struct Disclosure {
    /// The claims satisfy every binding condition of some policy for this target.
    pub bound: bool,
    /// The `error_description` the caller would get; `None` when the exchange succeeds.
    pub told: Option<String>,
    /// Whether the denial names the nearest policy and its failing conditions.
    pub names_nearest_policy: Option<String>,
}

/// Everything `policy explain` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub issuer: String,
    pub target: String,
    pub requested_scope: Option<String>,
    pub pinned_policy: Option<String>,
    pub policies: Vec<PolicyVerdict>,
    pub result: ExplainedResult,
    /// `mode: audit` policies that would have allowed (recorded as `would_allow`).
    pub would_allow: Vec<String>,
    pub disclosure: Disclosure,
}

/// What is asked: the claims' issuer kind, the target, and the request's fields.
#[derive(Debug, Clone, Copy)]
pub struct ExplainQuery<'a> {
    pub kind: IssuerKind,
    pub target: &'a str,
    /// The target's name or audience URL, as the caller would send it.
    pub audience: &'a str,
    pub requested_scopes: Option<&'a [String]>,
    pub pinned_policy: Option<&'a str>,
}

/// Explains the exchange `claims` would get, in the exchange's order: the incident
/// switches first, then the policies.
pub fn explain(
    policies: &PolicySet,
    claims: &SimulatedClaims,
    query: ExplainQuery<'_>,
) -> Explanation {
    let ExplainQuery {
        kind,
        target,
        audience,
        requested_scopes,
        pinned_policy,
    } = query;
    let requested = requested_scopes.filter(|scopes| !scopes.is_empty());
    let selection = policies.select(claims, target, requested, pinned_policy);
    let bound = policies.is_bound(claims, target);
    let would_allow = selection.audit_only().to_vec();
    let switched = if let Some(hit) = policies.switches().denylisted(kind, claims) {
        Some((
            deny(format!(
                "the deny list refuses {hit} before any policy is evaluated"
            )),
            Refusal::denylisted(audience, &hit),
        ))
    } else if policies.switches().target_disabled(target) {
        Some((
            deny(format!(
                "target {target:?} is switched off (enabled = false)"
            )),
            Refusal::target_disabled(audience, target, policies.is_known(claims)),
        ))
    } else {
        None
    };
    let (result, refusal) = match (switched, selection) {
        (Some((result, refusal)), _) => (result, Some(refusal)),
        (None, selection) => match selection {
            Selection::Granted { policy, scopes, .. } => {
                let how = match (pinned_policy, requested) {
                (Some(_), _) => "the policy was pinned; its conditions match and its scopes include the request".to_owned(),
                (None, Some(_)) => "of the matching policies whose scopes include every requested scope, the one with the fewest scopes wins (ties: byte order of name); the grant is the requested scope".to_owned(),
                (None, None) => "no scope was requested: the matching policy whose scopes are a subset of every other matching policy's wins, and the grant is its scopes".to_owned(),
            };
                let result = ExplainedResult {
                    outcome: "allow",
                    error: None,
                    policy: Some(policy.name().to_owned()),
                    scopes,
                    how,
                };
                (result, None)
            }
            Selection::Ambiguous { candidates, .. } => (
                deny(format!(
                    "several policies match ({}) and no one's scopes are a subset of every other's",
                    candidates.join(", ")
                )),
                Some(Refusal::ambiguous(&candidates)),
            ),
            Selection::ScopeExceeded { matching, .. } => (
                deny(format!(
                    "policies match ({}) but none includes every requested scope",
                    matching.join(", ")
                )),
                Some(Refusal::scope_exceeded(&matching, bound)),
            ),
            Selection::NoMatch { nearest, .. } => {
                let nearest = nearest.map(|nearest| {
                    let described = nearest.describe_failures();
                    let failures = nearest.failures().cloned().collect();
                    (nearest.policy, failures, described)
                });
                (
                deny("no enabled enforce policy for this issuer and target has every condition matching".to_owned()),
                Some(Refusal::no_match(audience, nearest, String::new())),
            )
            }
            Selection::UnknownPinnedPolicy => (
                deny(format!(
                    "the pinned policy {:?} is not a policy of issuer {:?} for target {:?}",
                    pinned_policy.unwrap_or_default(),
                    claims.issuer_name(),
                    target
                )),
                Some(Refusal::unknown_policy(
                    pinned_policy.unwrap_or_default(),
                    target,
                    audience,
                    bound,
                )),
            ),
        },
    };
    let mut result = result;
    let disclosure = match &refusal {
        None => Disclosure {
            bound,
            told: None,
            names_nearest_policy: None,
        },
        Some(refusal) => {
            result.error = Some(refusal.answer.error_code());
            Disclosure {
                bound,
                told: Some(refusal.answer.description().to_owned()),
                names_nearest_policy: match &refusal.answer {
                    ExchangeError::AccessDenied(denial) => {
                        denial.nearest.as_ref().map(|(policy, _)| policy.clone())
                    }
                    _ => None,
                },
            }
        }
    };
    let chosen = result.policy.clone();
    let verdicts = policies
        .evaluate_all(claims, target)
        .into_iter()
        .filter_map(|decision| {
            let policy = policies.get(&decision.policy)?;
            Some(PolicyVerdict {
                name: decision.policy.clone(),
                mode: policy.mode(),
                enabled: policy.enabled(),
                scopes: policy.scopes().to_vec(),
                matches: decision.allowed,
                covers_requested_scope: requested.is_none_or(|requested| {
                    requested
                        .iter()
                        .all(|scope| policy.scopes().contains(scope))
                }),
                chosen: chosen.as_deref() == Some(decision.policy.as_str()),
                conditions: decision.conditions,
            })
        })
        .collect();
    Explanation {
        issuer: claims.issuer_name().to_owned(),
        target: target.to_owned(),
        requested_scope: requested.map(|scopes| scopes.join(" ")),
        pinned_policy: pinned_policy.map(str::to_owned),
        policies: verdicts,
        result,
        would_allow,
        disclosure,
    }
}

fn deny(how: String) -> ExplainedResult {
    ExplainedResult {
        outcome: "deny",
        error: None,
        policy: None,
        scopes: Vec::new(),
        how,
    }
}
