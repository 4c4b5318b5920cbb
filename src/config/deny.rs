//! `[deny]`: the configuration's deny list of binding-claim values, checked at load. The
//! policy module's `switches` applies it, with `deny.yaml`.

use std::collections::{BTreeMap, BTreeSet};

/// The claims a deny list may name: the binding claims of every platform, immutable ids.
pub const DENY_CLAIMS: &[&str] = &[
    "repository_id",
    "repository_owner_id",
    "project_id",
    "namespace_id",
    "terraform_workspace_id",
    "terraform_organization_id",
];

/// Checks a deny list as written (`[deny]`): known claims, non-empty values. Errors are
/// `(claim, message)`.
pub fn check_deny_list(
    raw: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, BTreeSet<String>>, (String, String)> {
    let mut checked = BTreeMap::new();
    for (claim, values) in raw {
        if !DENY_CLAIMS.contains(&claim.as_str()) {
            return Err((
                claim.clone(),
                format!(
                    "a deny list names binding-claim values; use one of {}",
                    DENY_CLAIMS.join(", ")
                ),
            ));
        }
        if let Some(index) = values.iter().position(|value| value.trim().is_empty()) {
            return Err((claim.clone(), format!("value {index} is empty")));
        }
        checked.insert(claim.clone(), values.iter().cloned().collect());
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::platform::IssuerKind;

    #[test]
    fn the_deny_claims_are_every_platforms_binding_claims() {
        let mut binding: Vec<&str> = [
            IssuerKind::Github,
            IssuerKind::Gitlab,
            IssuerKind::Terraform,
        ]
        .iter()
        .flat_map(|kind| kind.binding_claims().iter().copied())
        .collect();
        binding.sort_unstable();
        let mut deny = DENY_CLAIMS.to_vec();
        deny.sort_unstable();
        assert_eq!(deny, binding);
    }
}
