//! The decision step: resolve the target, ask the policies, and say what they said
//! ([`Evaluation`], for the record) and what follows ([`Decided`], or a [`Refusal`]).

use std::sync::Arc;

use super::record::Evaluation;
use super::refusal::Refusal;
use super::{ExchangeRequest, Exchanger, Target};
use crate::trust::audit::claim_text;
use crate::trust::policy::{CompiledPolicy, PolicySet, Selection};
use crate::trust::verify::VerifiedToken;
use crate::trust::verify::claims::VerifiedClaims;

/// A policy granted the exchange.
pub(super) struct Decided<'e> {
    pub target: &'e Target,
    pub policy: Arc<CompiledPolicy>,
    /// The granted scopes, in order.
    pub scopes: Vec<String>,
}

impl Exchanger {
    pub(super) fn decide(
        &self,
        request: &ExchangeRequest,
        verified: &VerifiedToken<'_>,
    ) -> (Evaluation, Result<Decided<'_>, Refusal>) {
        let policies = self.policies.load_full();
        let claims = &verified.claims;
        let mut evaluation = Evaluation {
            policy_set_version: policies.version().to_owned(),
            target: None,
            policy: None,
            decisions: Vec::new(),
            would_allow: Vec::new(),
        };
        let audience = request.audience.as_str();
        // Incident switch: a denied binding-claim value is refused before any policy is
        // evaluated, whatever the target.
        if let Some(hit) = policies.switches().denylisted(verified.issuer.kind, claims) {
            return (evaluation, Err(Refusal::denylisted(audience, &hit)));
        }
        let Some(target) = self.resolve_target(audience) else {
            let refusal = Refusal::unknown_target(audience, policies.is_known(claims));
            return (evaluation, Err(refusal));
        };
        let target_name = target.config.name.as_str();
        evaluation.target = Some(target_name.to_owned());
        // Incident switch: a target switched off answers like an unknown one to callers
        // the policies do not know.
        if policies.switches().target_disabled(target_name) {
            let refusal =
                Refusal::target_disabled(audience, target_name, policies.is_known(claims));
            return (evaluation, Err(refusal));
        }
        let selection = policies.select(
            claims,
            target_name,
            request.scope.as_deref(),
            request.policy.as_deref(),
        );
        evaluation.would_allow = selection.audit_only().to_vec();
        for policy in &evaluation.would_allow {
            self.observer.would_allow(policy);
        }
        let refusal = match selection {
            Selection::Granted {
                policy,
                scopes,
                decision,
                ..
            } => {
                evaluation.policy =
                    Some((policy.name().to_owned(), policy.source_sha256().to_owned()));
                evaluation.decisions = vec![decision];
                return (
                    evaluation,
                    Ok(Decided {
                        target,
                        policy,
                        scopes,
                    }),
                );
            }
            Selection::NoMatch {
                nearest, decisions, ..
            } => {
                evaluation.decisions = decisions;
                match nearest {
                    // `nearest` is set only when a policy binds the caller for this target.
                    Some(nearest) => {
                        let described = nearest.describe_failures();
                        let detail = format!("nearest policy {:?}: {described}", nearest.policy);
                        let failures = nearest.failures().cloned().collect();
                        Refusal::no_match(
                            audience,
                            Some((nearest.policy, failures, described)),
                            detail,
                        )
                    }
                    None => Refusal::no_match(
                        audience,
                        None,
                        undisclosed_denial(&policies, claims, verified, target_name),
                    ),
                }
            }
            Selection::ScopeExceeded {
                matching,
                decisions,
                ..
            } => {
                evaluation.decisions = decisions;
                Refusal::scope_exceeded(&matching, policies.is_bound(claims, target_name))
            }
            Selection::Ambiguous {
                candidates,
                decisions,
                ..
            } => {
                evaluation.decisions = decisions;
                Refusal::ambiguous(&candidates)
            }
            Selection::UnknownPinnedPolicy => Refusal::unknown_policy(
                request.policy.as_deref().unwrap_or_default(),
                target_name,
                audience,
                policies.is_bound(claims, target_name),
            ),
        };
        (evaluation, Err(refusal))
    }
}

/// What the operator needs to know of a denial the caller was told nothing about: the
/// binding-claim values the token carries (what the index looked policies up by) and
/// the nearest policy with its failing conditions.
fn undisclosed_denial(
    policies: &PolicySet,
    claims: &VerifiedClaims,
    verified: &VerifiedToken<'_>,
    target: &str,
) -> String {
    let mut detail = "no policy for this issuer and target matches".to_owned();
    let binding = verified.issuer.kind.binding_claims();
    if !binding.is_empty() {
        let values: Vec<String> = binding
            .iter()
            .map(|name| match claim_text(claims, name) {
                Some(value) => format!("{name} {value:?}"),
                None => format!("{name} absent"),
            })
            .collect();
        detail.push_str("; the token's binding claims: ");
        detail.push_str(&values.join(", "));
    }
    let nearest = policies.nearest_for_operator(claims, target);
    match &nearest.decision {
        Some(decision) => {
            detail.push_str(&format!(
                "; nearest policy {:?} (not disclosed to the caller): {}",
                decision.policy,
                decision.describe_failures()
            ));
            if nearest.looked_at < nearest.of {
                detail.push_str(&format!(
                    " (nearest of the first {} of {} policies)",
                    nearest.looked_at, nearest.of
                ));
            }
        }
        None => detail.push_str("; no enabled policy for this issuer and target"),
    }
    detail
}
