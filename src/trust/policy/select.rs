//! Choosing the policy for an exchange ("Choosing the policy" in the contract), and the
//! disclosure questions: is a caller *bound* for a target (a policy names it), is it
//! *known* (bound for some target of its issuer).

use std::collections::HashSet;
use std::sync::Arc;

use super::compile::{CompiledPolicy, Mode};
use super::decision::Decision;
use super::index::PolicySet;
use crate::trust::verify::claims::ClaimsView;

/// The outcome of choosing a policy for one exchange.
#[derive(Debug, Clone)]
pub enum Selection {
    /// A policy grants the exchange.
    Granted {
        /// The winning policy.
        policy: Arc<CompiledPolicy>,
        /// The granted scopes: the requested ones (deduplicated, in request order), or
        /// without a request the winner's scopes in policy order.
        scopes: Vec<String>,
        /// The winner's decision.
        decision: Decision,
        /// Audit-mode policies that would have allowed (recorded as `would_allow`).
        audit_only: Vec<String>,
    },
    /// No scope was requested and no matching policy's scopes are a subset of every
    /// other's: `invalid_scope` "several policies match with different scopes; request
    /// a scope or pin a policy".
    Ambiguous {
        /// The matching policies, in byte order of name.
        candidates: Vec<String>,
        /// Audit-mode policies that would have allowed.
        audit_only: Vec<String>,
        /// Every decision taken, for the audit record.
        decisions: Vec<Decision>,
    },
    /// Enforce policies match the claims but none includes every requested scope:
    /// `invalid_scope`.
    ScopeExceeded {
        /// The policies whose claims match, in byte order of name.
        matching: Vec<String>,
        /// Audit-mode policies that would have allowed.
        audit_only: Vec<String>,
        /// Every decision taken, for the audit record.
        decisions: Vec<Decision>,
    },
    /// No enabled enforce policy matches the claims: `access_denied`.
    NoMatch {
        /// The policy to describe to a caller bound for this target: among enabled
        /// enforce policies whose binding conditions the caller satisfies, the one with
        /// the fewest failing conditions, then byte order of name. `None` when no such
        /// policy binds the caller (the denial must then disclose nothing).
        nearest: Option<Decision>,
        /// Audit-mode policies that would have allowed.
        audit_only: Vec<String>,
        /// Every decision taken, for the audit record.
        decisions: Vec<Decision>,
    },
    /// The pinned name is not a policy for this issuer and target. Whether to say so
    /// (`invalid_request`) depends on [`PolicySet::is_known`].
    UnknownPinnedPolicy,
}

impl Selection {
    /// Audit-mode policies that would have allowed this exchange.
    pub fn audit_only(&self) -> &[String] {
        match self {
            Selection::Granted { audit_only, .. }
            | Selection::Ambiguous { audit_only, .. }
            | Selection::ScopeExceeded { audit_only, .. }
            | Selection::NoMatch { audit_only, .. } => audit_only,
            Selection::UnknownPinnedPolicy => &[],
        }
    }
}

/// How many policies [`PolicySet::nearest_for_operator`] evaluates at most.
pub const OPERATOR_NEAREST_LIMIT: usize = 32;

/// See [`PolicySet::nearest_for_operator`].
#[derive(Debug)]
pub struct NearestForOperator {
    pub decision: Option<Decision>,
    /// How many policies were evaluated.
    pub looked_at: usize,
    /// How many enabled enforce policies the issuer and target have.
    pub of: usize,
}

/// Linear in the number of scopes: a request may carry thousands.
fn dedup_in_order(scopes: &[String]) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(scopes.len());
    scopes
        .iter()
        .filter(|scope| seen.insert(scope.as_str()))
        .cloned()
        .collect()
}

/// Orders by fewest scopes, then byte order of name.
fn narrowest_first(a: &CompiledPolicy, b: &CompiledPolicy) -> std::cmp::Ordering {
    a.scopes()
        .len()
        .cmp(&b.scopes().len())
        .then_with(|| a.name().cmp(b.name()))
}

fn sorted_names<'a>(policies: impl Iterator<Item = &'a Arc<CompiledPolicy>>) -> Vec<String> {
    let mut names: Vec<String> = policies.map(|policy| policy.name().to_owned()).collect();
    names.sort_unstable();
    names
}

impl PolicySet {
    /// Chooses the policy for an exchange by this token for `target`.
    ///
    /// Candidates are the enabled `mode: enforce` policies for the token's issuer and
    /// `target` whose claims all match and whose scopes include every requested scope;
    /// a pinned policy is the only policy considered. Audit-mode policies never grant;
    /// those that would allow (claims match, requested scopes included) are named in
    /// `audit_only`. An empty `requested_scopes` is treated as no request.
    pub fn select(
        &self,
        claims: &impl ClaimsView,
        target: &str,
        requested_scopes: Option<&[String]>,
        pinned_policy: Option<&str>,
    ) -> Selection {
        let pool: Vec<&Arc<CompiledPolicy>> = match pinned_policy {
            Some(name) => match self.get(name) {
                Some(policy)
                    if policy.issuer() == claims.issuer_name() && policy.target() == target =>
                {
                    vec![policy]
                }
                _ => return Selection::UnknownPinnedPolicy,
            },
            None => self.relevant(claims, target),
        };
        let requested = requested_scopes
            .filter(|scopes| !scopes.is_empty())
            .map(dedup_in_order);
        let covers = |policy: &CompiledPolicy| {
            requested.as_ref().is_none_or(|requested| {
                requested
                    .iter()
                    .all(|scope| policy.scopes().contains(scope))
            })
        };

        let mut decisions = Vec::with_capacity(pool.len());
        let mut matching: Vec<(&Arc<CompiledPolicy>, usize)> = Vec::new();
        let mut audit_only = Vec::new();
        for policy in pool {
            let decision = policy.evaluate(claims);
            if decision.allowed && policy.enabled() {
                match policy.mode() {
                    Mode::Enforce => matching.push((policy, decisions.len())),
                    Mode::Audit if covers(policy) => audit_only.push(policy.name().to_owned()),
                    Mode::Audit => {}
                }
            }
            decisions.push(decision);
        }

        if matching.is_empty() {
            let nearest = self.nearest(&decisions);
            return Selection::NoMatch {
                nearest,
                audit_only,
                decisions,
            };
        }

        let candidates: Vec<(&Arc<CompiledPolicy>, usize)> = matching
            .iter()
            .copied()
            .filter(|(policy, _)| covers(policy))
            .collect();

        let (winner, scopes) = match requested {
            Some(requested) => {
                let winner = candidates
                    .iter()
                    .min_by(|(a, _), (b, _)| narrowest_first(a, b));
                match winner {
                    Some(&winner) => (winner, requested),
                    None => {
                        return Selection::ScopeExceeded {
                            matching: sorted_names(matching.iter().map(|(policy, _)| *policy)),
                            audit_only,
                            decisions,
                        };
                    }
                }
            }
            None => {
                let is_subset_of_all = |policy: &CompiledPolicy| {
                    candidates.iter().all(|(other, _)| {
                        policy
                            .scopes()
                            .iter()
                            .all(|scope| other.scopes().contains(scope))
                    })
                };
                // Several winners have equal scope sets; byte order of name decides.
                let winner = candidates
                    .iter()
                    .filter(|(policy, _)| is_subset_of_all(policy))
                    .min_by(|(a, _), (b, _)| narrowest_first(a, b));
                match winner {
                    Some(&(policy, index)) => ((policy, index), policy.scopes().to_vec()),
                    None => {
                        return Selection::Ambiguous {
                            candidates: sorted_names(candidates.iter().map(|(policy, _)| *policy)),
                            audit_only,
                            decisions,
                        };
                    }
                }
            }
        };
        let (policy, index) = winner;
        Selection::Granted {
            policy: Arc::clone(policy),
            scopes,
            decision: decisions.swap_remove(index),
            audit_only,
        }
    }

    /// The decision to disclose to a bound caller: among enabled enforce policies that
    /// bind the caller, fewest failing conditions, then byte order of name.
    fn nearest(&self, decisions: &[Decision]) -> Option<Decision> {
        decisions
            .iter()
            .filter(|decision| {
                self.get(&decision.policy)
                    .is_some_and(|policy| policy.enabled() && policy.mode() == Mode::Enforce)
                    && decision.binds_caller()
            })
            .min_by(|a, b| {
                a.failures()
                    .count()
                    .cmp(&b.failures().count())
                    .then_with(|| a.policy.cmp(&b.policy))
            })
            .cloned()
    }

    /// For the operator's log of a denial that disclosed nothing to the caller: the
    /// nearest of the enabled enforce policies for the token's issuer and `target` (fewest
    /// failing conditions, then byte order of name), among at most
    /// [`OPERATOR_NEAREST_LIMIT`] of them, so that a stranger's request costs a bounded
    /// amount of work however many policies there are.
    pub fn nearest_for_operator(
        &self,
        claims: &impl ClaimsView,
        target: &str,
    ) -> NearestForOperator {
        let all = self.all_for(claims.issuer_name(), target);
        let candidates = || {
            all.iter()
                .filter(|policy| policy.enabled() && policy.mode() == Mode::Enforce)
        };
        let of = candidates().count();
        let decision = candidates()
            .take(OPERATOR_NEAREST_LIMIT)
            .map(|policy| policy.evaluate(claims))
            .min_by(|a, b| {
                a.failures()
                    .count()
                    .cmp(&b.failures().count())
                    .then_with(|| a.policy.cmp(&b.policy))
            });
        NearestForOperator {
            decision,
            looked_at: of.min(OPERATOR_NEAREST_LIMIT),
            of,
        }
    }

    /// Whether the token satisfies every binding condition of at least one policy (with
    /// at least one binding condition) for its issuer and `target`. A policy without a
    /// binding condition (`unbound: true`) never makes a caller bound: it names no one.
    pub fn is_bound(&self, claims: &impl ClaimsView, target: &str) -> bool {
        self.binding_candidates(claims, target)
            .into_iter()
            .any(|policy| policy.binds(claims))
    }

    /// Whether the token is bound for some target of its issuer.
    pub fn is_known(&self, claims: &impl ClaimsView) -> bool {
        self.targets_of(claims.issuer_name())
            .any(|target| self.is_bound(claims, target))
    }

    /// Evaluates every policy for the token's issuer and `target`, in policy order, for
    /// `policy explain`. This looks at every policy of the pair; the request path uses
    /// the decisions in [`Selection`] instead, which come from the index.
    pub fn evaluate_all(&self, claims: &impl ClaimsView, target: &str) -> Vec<Decision> {
        self.all_for(claims.issuer_name(), target)
            .into_iter()
            .map(|policy| policy.evaluate(claims))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::testing::{
        compile_one, github_push_main, with_claims, without_claims,
    };
    use serde_json::json;

    /// A policy for acme/identity-config on `tenant-prod`.
    fn policy(name: &str, extra: &str, scopes: &str, claims: &str) -> CompiledPolicy {
        compile_one(
            &format!("policies/{name}.yaml"),
            &format!(
                "issuer: github\ntarget: tenant-prod\nscopes: {scopes}\n{extra}claims:\n  repository_id: '89012345'\n{claims}"
            ),
        )
    }

    fn set(policies: Vec<CompiledPolicy>) -> PolicySet {
        PolicySet::new(policies).expect("valid set")
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|scope| (*scope).to_owned()).collect()
    }

    fn granted(selection: &Selection) -> (&str, &[String]) {
        match selection {
            Selection::Granted { policy, scopes, .. } => (policy.name(), scopes),
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    #[test]
    fn without_a_request_the_subset_of_every_other_candidate_wins() {
        let set = set(vec![
            policy(
                "wide",
                "",
                "[read:clients, update:clients, read:resource_servers]",
                "",
            ),
            policy("narrow", "", "[read:resource_servers, read:clients]", ""),
        ]);
        let selection = set.select(&github_push_main(), "tenant-prod", None, None);
        assert_eq!(
            granted(&selection),
            (
                "narrow",
                &scopes(&["read:resource_servers", "read:clients"])[..]
            ),
            "the grant is the winner's scopes in policy order"
        );
        let Selection::Granted { decision, .. } = &selection else {
            panic!("granted");
        };
        assert_eq!(decision.policy, "narrow");
        assert!(decision.allowed);
    }

    #[test]
    fn without_a_request_different_scope_sets_are_ambiguous() {
        let set = set(vec![
            policy("reader", "", "[read:clients]", ""),
            policy("writer", "", "[update:clients]", ""),
            policy("both", "", "[read:clients, update:clients]", ""),
        ]);
        let selection = set.select(&github_push_main(), "tenant-prod", None, None);
        match selection {
            Selection::Ambiguous {
                candidates,
                decisions,
                ..
            } => {
                assert_eq!(candidates, ["both", "reader", "writer"]);
                assert_eq!(decisions.len(), 3);
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        // A requested scope resolves it; so does pinning.
        let read = scopes(&["read:clients"]);
        let selection = set.select(&github_push_main(), "tenant-prod", Some(&read), None);
        assert_eq!(granted(&selection).0, "reader");
        let selection = set.select(&github_push_main(), "tenant-prod", None, Some("both"));
        assert_eq!(
            granted(&selection),
            ("both", &scopes(&["read:clients", "update:clients"])[..])
        );
    }

    #[test]
    fn equal_scope_sets_are_not_ambiguous_and_byte_order_of_name_decides() {
        let set = set(vec![
            policy("deploy.1", "", "[a, b]", ""),
            policy("deploy-2", "", "[b, a]", ""),
        ]);
        let selection = set.select(&github_push_main(), "tenant-prod", None, None);
        assert_eq!(granted(&selection), ("deploy-2", &scopes(&["b", "a"])[..]));
    }

    #[test]
    fn with_a_request_the_fewest_scopes_win_and_the_grant_is_the_request() {
        let set = set(vec![
            policy(
                "wide",
                "",
                "[read:clients, update:clients, delete:clients]",
                "",
            ),
            policy("medium", "", "[update:clients, read:clients]", ""),
            policy("other", "", "[read:grants]", ""),
        ]);
        let requested = scopes(&["update:clients", "read:clients", "update:clients"]);
        let selection = set.select(&github_push_main(), "tenant-prod", Some(&requested), None);
        assert_eq!(
            granted(&selection),
            ("medium", &scopes(&["update:clients", "read:clients"])[..]),
            "deduplicated, in request order"
        );
        // Ties on scope count: byte order of name ('-' sorts before '.').
        let tie = self::set(vec![
            policy("deploy.a", "", "[read:clients, x]", ""),
            policy("deploy-b", "", "[read:clients, y]", ""),
        ]);
        let read = scopes(&["read:clients"]);
        let selection = tie.select(&github_push_main(), "tenant-prod", Some(&read), None);
        assert_eq!(granted(&selection), ("deploy-b", &read[..]));
        // An empty request is no request.
        let selection = set.select(&github_push_main(), "tenant-prod", Some(&[]), None);
        assert!(
            matches!(selection, Selection::Ambiguous { .. }),
            "{selection:?}"
        );
    }

    #[test]
    fn a_request_beyond_every_matching_policy_is_scope_exceeded() {
        let set = set(vec![
            policy("reader", "", "[read:clients]", ""),
            policy("writer", "", "[update:clients]", ""),
            policy(
                "other-branch",
                "",
                "[create:client_grants]",
                "  ref: refs/heads/dev\n",
            ),
        ]);
        let requested = scopes(&["read:clients", "update:clients"]);
        match set.select(&github_push_main(), "tenant-prod", Some(&requested), None) {
            Selection::ScopeExceeded { matching, .. } => assert_eq!(matching, ["reader", "writer"]),
            other => panic!("expected scope exceeded, got {other:?}"),
        }
        let grants = scopes(&["create:client_grants"]);
        assert!(matches!(
            set.select(&github_push_main(), "tenant-prod", Some(&grants), None),
            Selection::ScopeExceeded { .. }
        ));
    }

    #[test]
    fn a_pinned_policy_is_the_only_candidate() {
        let set = set(vec![
            policy("narrow", "", "[read:clients]", ""),
            policy("wide", "", "[read:clients, update:clients]", ""),
            policy("off", "enabled: false\n", "[read:clients]", ""),
            policy("shadow", "mode: audit\n", "[read:clients]", ""),
            compile_one(
                "policies/gl.yaml",
                "issuer: gitlab\ntarget: tenant-prod\nscopes: [read:clients]\nclaims: {project_id: '78213456'}\n",
            ),
            compile_one(
                "policies/api.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims: {repository_id: '89012345'}\n",
            ),
        ]);
        let claims = github_push_main();
        let read = scopes(&["read:clients"]);
        let selection = set.select(&claims, "tenant-prod", Some(&read), Some("wide"));
        assert_eq!(granted(&selection), ("wide", &read[..]));
        for unknown in ["nope", "gl", "api"] {
            assert!(
                matches!(
                    set.select(&claims, "tenant-prod", None, Some(unknown)),
                    Selection::UnknownPinnedPolicy
                ),
                "{unknown}"
            );
        }
        match set.select(&claims, "tenant-prod", None, Some("off")) {
            Selection::NoMatch {
                nearest,
                audit_only,
                ..
            } => {
                assert_eq!(nearest, None, "a disabled policy is never the nearest");
                assert!(audit_only.is_empty());
            }
            other => panic!("a disabled pinned policy never grants, got {other:?}"),
        }
        match set.select(&claims, "tenant-prod", None, Some("shadow")) {
            Selection::NoMatch { audit_only, .. } => assert_eq!(audit_only, ["shadow"]),
            other => panic!("an audit pinned policy never grants, got {other:?}"),
        }
    }

    #[test]
    fn audit_mode_policies_are_reported_and_never_grant() {
        let set = set(vec![
            policy("enforced", "", "[read:clients]", ""),
            policy(
                "shadow",
                "mode: audit\n",
                "[read:clients, update:clients]",
                "",
            ),
            policy(
                "shadow-off",
                "mode: audit\nenabled: false\n",
                "[read:clients]",
                "",
            ),
            policy(
                "shadow-miss",
                "mode: audit\n",
                "[read:clients]",
                "  ref: refs/heads/dev\n",
            ),
        ]);
        let claims = github_push_main();
        let selection = set.select(&claims, "tenant-prod", None, None);
        assert_eq!(granted(&selection).0, "enforced");
        assert_eq!(selection.audit_only(), ["shadow"]);

        let update = scopes(&["update:clients"]);
        match set.select(&claims, "tenant-prod", Some(&update), None) {
            Selection::ScopeExceeded {
                matching,
                audit_only,
                ..
            } => {
                assert_eq!(matching, ["enforced"]);
                assert_eq!(audit_only, ["shadow"]);
            }
            other => panic!("an audit policy never grants, got {other:?}"),
        }
        let only_shadow = self::set(vec![policy(
            "shadow",
            "mode: audit\n",
            "[read:clients]",
            "",
        )]);
        match only_shadow.select(&claims, "tenant-prod", None, None) {
            Selection::NoMatch {
                audit_only,
                nearest,
                ..
            } => {
                assert_eq!(audit_only, ["shadow"]);
                assert_eq!(nearest, None);
            }
            other => panic!("expected no match, got {other:?}"),
        }
    }

    #[test]
    fn disabled_policies_never_grant() {
        let set = set(vec![policy(
            "off",
            "enabled: false\n",
            "[read:clients]",
            "",
        )]);
        assert!(matches!(
            set.select(&github_push_main(), "tenant-prod", None, None),
            Selection::NoMatch { .. }
        ));
    }

    #[test]
    fn no_match_names_the_nearest_binding_policy() {
        let set = set(vec![
            policy(
                "prod",
                "",
                "[a]",
                "  ref: refs/heads/main\n  environment: production\n  event_name: workflow_dispatch\n",
            ),
            policy(
                "main-b",
                "",
                "[a]",
                "  ref: refs/heads/release\n  environment: production\n",
            ),
            policy(
                "main-a",
                "",
                "[a]",
                "  environment: staging\n  workflow: Release\n",
            ),
            compile_one(
                "policies/open.yaml",
                "issuer: github\ntarget: tenant-prod\nscopes: [a]\nunbound: true\nclaims: {sub: nobody}\n",
            ),
            compile_one(
                "policies/elsewhere.yaml",
                "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_owner_id: '1234567'\n  repository_id: '1'\n",
            ),
        ]);
        let claims = github_push_main();
        match set.select(&claims, "tenant-prod", None, None) {
            Selection::NoMatch {
                nearest: Some(nearest),
                decisions,
                ..
            } => {
                // prod fails 2, main-a and main-b fail 2 each: byte order of name.
                assert_eq!(nearest.policy, "main-a");
                assert_eq!(
                    nearest.describe_failures(),
                    "claim \"environment\" is absent, expected \"staging\"; \
                     claim \"workflow\" is \"Deploy tenant\", expected \"Release\""
                );
                let names: Vec<&str> = decisions.iter().map(|d| d.policy.as_str()).collect();
                assert_eq!(
                    names,
                    ["prod", "main-b", "main-a", "open"],
                    "elsewhere is not indexed for this repository"
                );
            }
            other => panic!("expected no match with a nearest policy, got {other:?}"),
        }
        let with_env = with_claims(github_push_main(), json!({"environment": "production"}));
        match set.select(&with_env, "tenant-prod", None, None) {
            Selection::NoMatch {
                nearest: Some(nearest),
                ..
            } => {
                assert_eq!(nearest.policy, "main-b", "one failure beats two");
                assert_eq!(
                    nearest.describe_failures(),
                    "claim \"ref\" is \"refs/heads/main\", expected \"refs/heads/release\""
                );
            }
            other => panic!("expected no match, got {other:?}"),
        }
    }

    #[test]
    fn no_match_discloses_nothing_to_an_unbound_caller() {
        let set = set(vec![
            policy("prod", "", "[a]", "  environment: production\n"),
            compile_one(
                "policies/open.yaml",
                "issuer: github\ntarget: tenant-prod\nscopes: [a]\nunbound: true\nclaims: {sub: nobody}\n",
            ),
        ]);
        let stranger = with_claims(github_push_main(), json!({"repository_id": "4242"}));
        match set.select(&stranger, "tenant-prod", None, None) {
            Selection::NoMatch {
                nearest, decisions, ..
            } => {
                assert_eq!(nearest, None);
                assert_eq!(decisions.len(), 1, "only the unbound policy was looked at");
            }
            other => panic!("expected no match, got {other:?}"),
        }
        let no_ids = without_claims(github_push_main(), &["repository_id"]);
        assert!(matches!(
            set.select(&no_ids, "tenant-prod", None, None),
            Selection::NoMatch { nearest: None, .. }
        ));
    }

    #[test]
    fn dangerous_triggers_are_denied_with_a_clear_reason() {
        let set = set(vec![policy("main", "", "[a]", "  ref: refs/heads/main\n")]);
        let claims = with_claims(
            github_push_main(),
            json!({"event_name": "pull_request_target", "actor": "outside-contributor"}),
        );
        match set.select(&claims, "tenant-prod", None, None) {
            Selection::NoMatch {
                nearest: Some(nearest),
                ..
            } => assert_eq!(
                nearest.describe_failures(),
                "claim \"event_name\" is \"pull_request_target\", expected the policy to name \
                 \"pull_request_target\" explicitly in event_name (a dangerous trigger: patterns \
                 and not never admit it)"
            ),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn bound_and_known_follow_binding_conditions_only() {
        let set = set(vec![
            policy("prod", "", "[a]", "  environment: production\n"),
            compile_one(
                "policies/open.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [a]\nunbound: true\nclaims: {repository: acme/identity-config}\n",
            ),
            compile_one(
                "policies/gl.yaml",
                "issuer: gitlab\ntarget: internal-api\nscopes: [a]\nclaims: {project_id: '89012345'}\n",
            ),
        ]);
        let claims = github_push_main();
        assert!(
            set.is_bound(&claims, "tenant-prod"),
            "binding conditions hold, others need not"
        );
        assert!(
            !set.is_bound(&claims, "internal-api"),
            "an unbound policy binds no one"
        );
        assert!(!set.is_bound(&claims, "no-such-target"));
        assert!(set.is_known(&claims));
        let stranger = with_claims(github_push_main(), json!({"repository_id": "1"}));
        assert!(!set.is_known(&stranger));
        let same_id_other_issuer = crate::trust::verify::claims::VerifiedClaims::for_tests(
            "gitlab",
            json!({"repository_id": "89012345", "project_id": "1"}),
        );
        assert!(!set.is_known(&same_id_other_issuer));
        let partial = set_with_two_binding_conditions();
        let owner_only = with_claims(github_push_main(), json!({"repository_id": "2"}));
        assert!(
            !partial.is_bound(&owner_only, "tenant-prod"),
            "every binding condition must hold"
        );
    }

    fn set_with_two_binding_conditions() -> PolicySet {
        set(vec![compile_one(
            "policies/both.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_owner_id: '1234567'\n  repository_id: '89012345'\n",
        )])
    }

    #[test]
    fn evaluate_all_covers_every_policy_of_the_pair() {
        let set = set(vec![
            policy("ours", "", "[a]", ""),
            compile_one(
                "policies/theirs.yaml",
                "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims: {repository_id: '5'}\n",
            ),
            compile_one(
                "policies/api.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [a]\nclaims: {repository_id: '89012345'}\n",
            ),
        ]);
        let decisions = set.evaluate_all(&github_push_main(), "tenant-prod");
        let summary: Vec<(&str, bool)> = decisions
            .iter()
            .map(|decision| (decision.policy.as_str(), decision.allowed))
            .collect();
        assert_eq!(summary, [("ours", true), ("theirs", false)]);
        assert!(set.evaluate_all(&github_push_main(), "nowhere").is_empty());
    }
}
