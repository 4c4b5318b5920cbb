//! [`PolicySet`]: the loaded policies, unique by name, with an index so that a request
//! only looks at the policies that could concern its workload.
//!
//! Policies are grouped by (issuer, target). Within a group, a policy with a binding
//! condition is indexed under the exact values of one of its binding conditions
//! (claim name + value); a policy can only match, or bind a caller, when the token
//! carries one of those values, so looking up the token's binding-claim values finds
//! every policy that matters. Policies without a binding condition (`unbound: true`,
//! generic issuers) go in the group's short "unindexed" list and are always looked at.

use std::collections::HashMap;
use std::sync::Arc;

use crate::trust::hash::sha256_of_parts;

use super::PolicyError;
use super::compile::CompiledPolicy;
use super::matcher::{claim_texts, quote};
use super::switches::Switches;
use crate::trust::verify::claims::ClaimsView;

/// The policies of one (issuer, target) pair.
#[derive(Debug, Default)]
struct Group {
    /// Claim name -> exact value -> policy indices (in policy order).
    by_binding: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Policies with no binding condition.
    unindexed: Vec<usize>,
    /// Every policy of the group, in policy order (for `evaluate_all`).
    all: Vec<usize>,
}

/// A validated set of compiled policies with unique names.
#[derive(Debug)]
pub struct PolicySet {
    policies: Vec<Arc<CompiledPolicy>>,
    by_name: HashMap<String, usize>,
    /// Issuer name -> target name -> group.
    groups: HashMap<String, HashMap<String, Group>>,
    version: String,
    /// The incident switches in force with these policies.
    switches: Switches,
}

impl PolicySet {
    /// Builds a set; duplicate names are errors naming both files.
    pub fn new(policies: Vec<CompiledPolicy>) -> Result<PolicySet, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::with_capacity(policies.len());
        let mut kept: Vec<Arc<CompiledPolicy>> = Vec::with_capacity(policies.len());
        for policy in policies {
            if let Some(&first) = by_name.get(policy.name()) {
                let first = &kept[first];
                errors.push(PolicyError {
                    file: policy.source_file().to_owned(),
                    line: policy.source_line(),
                    column: policy.source_column(),
                    field: "name".to_owned(),
                    message: format!(
                        "duplicate policy name {}: also defined in {}:{}",
                        quote(policy.name()),
                        first.source_file(),
                        first.source_line()
                    ),
                });
                continue;
            }
            by_name.insert(policy.name().to_owned(), kept.len());
            kept.push(Arc::new(policy));
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut groups: HashMap<String, HashMap<String, Group>> = HashMap::new();
        for (index, policy) in kept.iter().enumerate() {
            let group = groups
                .entry(policy.issuer().to_owned())
                .or_default()
                .entry(policy.target().to_owned())
                .or_default();
            group.all.push(index);
            // Every binding condition must hold for the policy to match or to bind, so
            // indexing under any one of them is enough. Take the one with the fewest
            // values, then the most specific claim (repository before owner).
            let binding_claims = policy.issuer_kind().binding_claims();
            let key = policy
                .conditions()
                .iter()
                .filter(|condition| condition.is_binding())
                .filter_map(|condition| {
                    let values = condition.matcher().exact_values()?;
                    let rank = binding_claims
                        .iter()
                        .position(|claim| *claim == condition.claim())
                        .unwrap_or(usize::MAX);
                    Some((values.len(), rank, condition.claim(), values))
                })
                .min_by_key(|(count, rank, _, _)| (*count, *rank));
            match key {
                Some((_, _, claim, mut values)) => {
                    values.sort_unstable();
                    values.dedup();
                    let by_value = group.by_binding.entry(claim.to_owned()).or_default();
                    for value in values {
                        by_value.entry(value.to_owned()).or_default().push(index);
                    }
                }
                None => group.unindexed.push(index),
            }
        }

        let version = version_of(&kept);
        Ok(PolicySet {
            policies: kept,
            by_name,
            groups,
            version,
            switches: Switches::default(),
        })
    }

    /// A set with no policy: every exchange is denied.
    pub fn empty() -> PolicySet {
        PolicySet {
            policies: Vec::new(),
            by_name: HashMap::new(),
            groups: HashMap::new(),
            version: version_of(&[]),
            switches: Switches::default(),
        }
    }

    /// The same policies with these incident switches in force. A set with switches has
    /// its own version (the policies' version and the switches hashed together), so an
    /// audit record says which deny list decided it.
    pub fn with_switches(mut self, switches: Switches) -> PolicySet {
        let policies_version = version_of(&self.policies);
        self.version = if switches == Switches::default() {
            policies_version
        } else {
            let canonical = switches.canonical();
            hex::encode(sha256_of_parts([
                policies_version.as_bytes(),
                b"\0switches\0",
                canonical.as_bytes(),
            ]))
        };
        self.switches = switches;
        self
    }

    /// The incident switches in force.
    pub fn switches(&self) -> &Switches {
        &self.switches
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set holds no policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<CompiledPolicy>> {
        self.by_name.get(name).map(|&index| &self.policies[index])
    }

    /// Every policy, in load order (files by name, then order within the file).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.policies.iter()
    }

    /// Hex SHA-256 over every policy's (name, source SHA-256), sorted by name: the
    /// audit record's `policy_set_version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The policies for (issuer, target) that could match or bind this token: those
    /// indexed under a binding-claim value the token carries, plus the unindexed ones,
    /// in policy order. Cost depends on these, not on the size of the set.
    pub(super) fn relevant(
        &self,
        claims: &impl ClaimsView,
        target: &str,
    ) -> Vec<&Arc<CompiledPolicy>> {
        let Some(group) = self.group(claims.issuer_name(), target) else {
            return Vec::new();
        };
        // The policies indexed under a value the token carries: usually a handful.
        let mut hits: Vec<usize> = Vec::new();
        for (claim, by_value) in &group.by_binding {
            let Some(value) = claims.get(claim) else {
                continue;
            };
            for text in claim_texts(value) {
                if let Some(found) = by_value.get(text.as_ref()) {
                    hits.extend_from_slice(found);
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        // Merge with the unindexed ones (already in policy order), without copying them.
        let mut relevant = Vec::with_capacity(hits.len() + group.unindexed.len());
        let (mut hits, mut unindexed) = (
            hits.into_iter().peekable(),
            group.unindexed.iter().peekable(),
        );
        loop {
            let next = match (hits.peek(), unindexed.peek()) {
                (Some(&hit), Some(&&other)) if hit < other => hits.next(),
                (_, Some(_)) => unindexed.next().copied(),
                (Some(_), None) => hits.next(),
                (None, None) => break,
            };
            if let Some(index) = next {
                relevant.push(&self.policies[index]);
            }
        }
        relevant
    }

    /// Policies for (issuer, target) that could make this token bound: the enabled,
    /// indexed ones under a value it carries (unindexed policies have no binding
    /// condition; a disabled policy names nobody any more).
    pub(super) fn binding_candidates(
        &self,
        claims: &impl ClaimsView,
        target: &str,
    ) -> Vec<&Arc<CompiledPolicy>> {
        self.relevant(claims, target)
            .into_iter()
            .filter(|policy| policy.enabled() && policy.has_binding_condition())
            .collect()
    }

    /// Every policy for (issuer, target), in policy order.
    pub(super) fn all_for(&self, issuer: &str, target: &str) -> Vec<&Arc<CompiledPolicy>> {
        self.group(issuer, target)
            .map(|group| {
                group
                    .all
                    .iter()
                    .map(|&index| &self.policies[index])
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The targets that have at least one policy for this issuer.
    pub(super) fn targets_of(&self, issuer: &str) -> impl Iterator<Item = &str> {
        self.groups
            .get(issuer)
            .into_iter()
            .flat_map(|targets| targets.keys().map(String::as_str))
    }

    fn group(&self, issuer: &str, target: &str) -> Option<&Group> {
        self.groups.get(issuer)?.get(target)
    }
}

fn version_of(policies: &[Arc<CompiledPolicy>]) -> String {
    let mut entries: Vec<(&str, &str)> = policies
        .iter()
        .map(|policy| (policy.name(), policy.source_sha256()))
        .collect();
    entries.sort_unstable();
    // Names cannot contain NUL or newline, so this encoding is unambiguous.
    hex::encode(sha256_of_parts(entries.into_iter().flat_map(
        |(name, sha256)| [name.as_bytes(), b"\0", sha256.as_bytes(), b"\n"],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::compile::counter;
    use crate::trust::policy::testing::{compile_one, github_push_main, with_claims};
    use serde_json::json;

    fn repo_policy(name: &str, repository_id: &str) -> CompiledPolicy {
        compile_one(
            &format!("policies/{name}.yaml"),
            &format!(
                "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  repository_id: '{repository_id}'\n  ref: refs/heads/main\n"
            ),
        )
    }

    #[test]
    fn duplicate_names_across_files_name_both_files() {
        let first = repo_policy("deploy", "1");
        let second = compile_one(
            "policies/other.yaml",
            "name: deploy\nissuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims: {repository_id: '2'}\n",
        );
        let errors = PolicySet::new(vec![first, second]).expect_err("duplicate");
        assert_eq!(
            errors[0].to_string(),
            "policies/other.yaml:1: name: duplicate policy name \"deploy\": also defined in policies/deploy.yaml:1"
        );
    }

    #[test]
    fn version_depends_on_names_and_content_not_order() {
        let a = || repo_policy("a", "1");
        let b = || repo_policy("b", "2");
        let one = PolicySet::new(vec![a(), b()]).expect("valid");
        let two = PolicySet::new(vec![b(), a()]).expect("valid");
        assert_eq!(one.version(), two.version());
        assert_eq!(one.version().len(), 64);
        let changed = PolicySet::new(vec![a(), repo_policy("b", "3")]).expect("valid");
        assert_ne!(one.version(), changed.version());
        assert_ne!(one.version(), PolicySet::empty().version());
        assert!(PolicySet::empty().is_empty());
        assert_eq!(one.len(), 2);
        assert_eq!(one.get("b").map(|policy| policy.name()), Some("b"));
        assert!(one.get("c").is_none());
        let names: Vec<&str> = one.iter().map(|policy| policy.name()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// Invariant: the work for one request does not grow with unrelated policies. With
    /// 10 000 policies for distinct repositories, a request evaluates only the policy
    /// naming its repository and the unindexed (unbound) ones.
    #[test]
    fn a_request_looks_only_at_policies_for_its_binding_values() {
        let mut policies: Vec<CompiledPolicy> = (0..10_000)
            .map(|n| repo_policy(&format!("repo-{n}"), &format!("{}", 100_000 + n)))
            .collect();
        policies.push(repo_policy("ours", "89012345"));
        policies.push(compile_one(
            "policies/owner.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  repository_owner_id: ['1234567', '7654321']\n",
        ));
        policies.push(compile_one(
            "policies/open.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nunbound: true\nclaims:\n  repository: acme/identity-config\n",
        ));
        let set = PolicySet::new(policies).expect("valid");
        let claims = github_push_main();

        let relevant: Vec<&str> = set
            .relevant(&claims, "tenant-prod")
            .iter()
            .map(|policy| policy.name())
            .collect();
        assert_eq!(relevant, ["ours", "owner", "open"]);

        counter::take();
        let selection = set.select(
            &claims,
            "tenant-prod",
            Some(&["read:clients".to_owned()]),
            None,
        );
        assert!(matches!(
            selection,
            crate::trust::policy::Selection::Granted { .. }
        ));
        assert_eq!(
            counter::take(),
            3,
            "select evaluates only the relevant policies"
        );
        assert!(set.is_bound(&claims, "tenant-prod"));
        assert!(
            counter::take() <= 2,
            "is_bound evaluates only indexed candidates"
        );
        assert!(set.is_known(&claims));
        assert!(counter::take() <= 2);

        let stranger = with_claims(
            github_push_main(),
            json!({"repository_id": "5", "repository_owner_id": "6"}),
        );
        assert!(!set.is_bound(&stranger, "tenant-prod"));
        assert_eq!(
            counter::take(),
            0,
            "nothing is indexed under the stranger's ids"
        );
        let _ = set.select(&stranger, "tenant-prod", None, None);
        assert_eq!(counter::take(), 1, "only the unbound policy is looked at");
    }

    #[test]
    fn integer_claims_find_policies_indexed_by_their_decimal_text() {
        let set = PolicySet::new(vec![repo_policy("ours", "89012345")]).expect("valid");
        let numeric = with_claims(github_push_main(), json!({"repository_id": 89012345}));
        assert_eq!(set.relevant(&numeric, "tenant-prod").len(), 1);
        let other_target = set.relevant(&numeric, "internal-api");
        assert!(other_target.is_empty());
    }
}
