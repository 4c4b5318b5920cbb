//! What evaluating one policy on one token says: each condition with its expected and
//! actual value, whether it passed, and whether it binds the caller. The same value
//! feeds the HTTP error, `policy explain`, the audit record and the tests.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::matcher::quote;

/// The outcome of evaluating one policy on one token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The policy's name.
    pub policy: String,
    /// True when every condition passed.
    pub allowed: bool,
    /// Every condition, in policy order (a dangerous-trigger rejection on a policy with
    /// no `event_name` condition comes last).
    pub conditions: Vec<ConditionOutcome>,
}

/// One condition of a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionOutcome {
    /// The claim's name.
    pub claim: Arc<str>,
    /// The matcher as people read it: `"refs/heads/main"`, `one of ["push", "workflow_dispatch"]`,
    /// `glob "acme/*"`, `regex "v[0-9]+"`, `not "x"`. Rendered once, when the policy is
    /// compiled.
    pub expected: Arc<str>,
    /// The claim as compact JSON (`"refs/heads/x"`, `["a","b"]`, `12`, `true`); `None` when absent.
    pub actual: Option<String>,
    /// Whether the condition holds.
    pub passed: bool,
    /// Whether this is a binding-claim condition (an exact pin of a binding claim).
    pub binding: bool,
}

impl ConditionOutcome {
    /// `✔ ` or `✘ ` and [`describe`](Self::describe): one line of `policy test` and
    /// `policy explain`.
    pub fn marked(&self) -> String {
        let mark = if self.passed { "✔" } else { "✘" };
        format!("{mark} {}", self.describe())
    }

    /// `claim "ref" is "refs/heads/dev", expected "refs/heads/main"`, or
    /// `claim "environment" is absent, expected "production"`.
    pub fn describe(&self) -> String {
        let actual = self.actual.as_deref().unwrap_or("absent");
        format!(
            "claim {} is {actual}, expected {}",
            quote(&self.claim),
            self.expected
        )
    }
}

impl Decision {
    /// The conditions that failed, in policy order.
    pub fn failures(&self) -> impl Iterator<Item = &ConditionOutcome> {
        self.conditions.iter().filter(|outcome| !outcome.passed)
    }

    /// Every failing condition described, joined by `"; "`; empty when none failed.
    pub fn describe_failures(&self) -> String {
        self.failures()
            .map(ConditionOutcome::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// True when the policy has at least one binding condition and all of them passed:
    /// the policy names this workload, so its content may be disclosed to it.
    pub fn binds_caller(&self) -> bool {
        let mut binding = self
            .conditions
            .iter()
            .filter(|outcome| outcome.binding)
            .peekable();
        binding.peek().is_some() && binding.all(|outcome| outcome.passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        claim: &str,
        expected: &str,
        actual: Option<&str>,
        passed: bool,
    ) -> ConditionOutcome {
        ConditionOutcome {
            claim: claim.into(),
            expected: expected.into(),
            actual: actual.map(str::to_owned),
            passed,
            binding: false,
        }
    }

    #[test]
    fn describe_failures_lists_failing_conditions_in_policy_order() {
        let decision = Decision {
            policy: "deploy-tenant-prod".to_owned(),
            allowed: false,
            conditions: vec![
                outcome("repository_id", "\"89012345\"", Some("\"89012345\""), true),
                outcome(
                    "ref",
                    "\"refs/heads/main\"",
                    Some("\"refs/heads/dev\""),
                    false,
                ),
                outcome("environment", "\"production\"", None, false),
                outcome(
                    "event_name",
                    "one of [\"push\", \"workflow_dispatch\"]",
                    Some("\"push\""),
                    true,
                ),
            ],
        };
        assert_eq!(
            decision.describe_failures(),
            "claim \"ref\" is \"refs/heads/dev\", expected \"refs/heads/main\"; \
             claim \"environment\" is absent, expected \"production\""
        );
        assert_eq!(decision.failures().count(), 2);
    }

    #[test]
    fn binds_caller_needs_a_binding_condition_and_all_of_them_passing() {
        let mut binding = outcome("repository_id", "\"1\"", Some("\"1\""), true);
        binding.binding = true;
        let mut failing_binding = outcome("repository_owner_id", "\"2\"", Some("\"3\""), false);
        failing_binding.binding = true;
        let other = outcome("ref", "\"x\"", None, false);
        let decision = |conditions: Vec<ConditionOutcome>| Decision {
            policy: "p".to_owned(),
            allowed: false,
            conditions,
        };
        assert!(decision(vec![binding.clone(), other.clone()]).binds_caller());
        assert!(!decision(vec![binding, failing_binding]).binds_caller());
        assert!(!decision(vec![other]).binds_caller());
    }

    #[test]
    fn decisions_serialise_for_the_audit_record() {
        let decision = Decision {
            policy: "p".to_owned(),
            allowed: false,
            conditions: vec![outcome("environment", "\"production\"", None, false)],
        };
        assert_eq!(
            serde_json::to_string(&decision).expect("serialises"),
            r#"{"policy":"p","allowed":false,"conditions":[{"claim":"environment","expected":"\"production\"","actual":null,"passed":false,"binding":false}]}"#
        );
    }
}
