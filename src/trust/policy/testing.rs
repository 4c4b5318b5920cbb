//! Test helpers for the policy engine: a service context, realistic CI claims (from
//! `fixtures/claims/`), and one-line ways to compile policy text.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    CompiledPolicy, IssuerKind, PolicyContext, PolicyError, TargetInfo, TargetKind, load_source,
};
use crate::trust::verify::claims::VerifiedClaims;

/// Issuers `github`, `gitlab`, `terraform`, `internal` (generic); targets `tenant-prod`
/// (remote, 1h) and `internal-api` (local, 15m).
pub(crate) fn context() -> PolicyContext {
    PolicyContext {
        issuers: BTreeMap::from([
            ("github".to_owned(), IssuerKind::Github),
            ("gitlab".to_owned(), IssuerKind::Gitlab),
            ("terraform".to_owned(), IssuerKind::Terraform),
            ("internal".to_owned(), IssuerKind::Generic),
        ]),
        targets: BTreeMap::from([
            (
                "tenant-prod".to_owned(),
                TargetInfo {
                    kind: TargetKind::Remote,
                    max_ttl: Duration::from_secs(3600),
                },
            ),
            (
                "internal-api".to_owned(),
                TargetInfo {
                    kind: TargetKind::Local,
                    max_ttl: Duration::from_secs(900),
                },
            ),
        ]),
    }
}

/// Compiles a one-policy file that must be valid.
pub(crate) fn compile_one(label: &str, text: &str) -> CompiledPolicy {
    let mut policies = load_source(label, text, &context()).unwrap_or_else(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("{label} should compile:\n{}", errors.join("\n"))
    });
    assert_eq!(policies.len(), 1, "{label} holds one policy");
    policies.remove(0)
}

/// Compiles a file that must fail, returning its errors.
pub(crate) fn compile_err(label: &str, text: &str) -> Vec<PolicyError> {
    match load_source(label, text, &context()) {
        Ok(policies) => panic!("{label} should not compile, got {policies:?}"),
        Err(errors) => errors,
    }
}

/// `claims` with some claims replaced or added (a JSON null sets the claim to null).
pub(crate) fn with_claims(claims: VerifiedClaims, overrides: Value) -> VerifiedClaims {
    let mut map = claims.as_map().clone();
    if let Value::Object(overrides) = overrides {
        map.extend(overrides);
    }
    VerifiedClaims::for_tests(claims.issuer_name(), Value::Object(map))
}

/// `claims` without the named claims.
pub(crate) fn without_claims(claims: VerifiedClaims, names: &[&str]) -> VerifiedClaims {
    let mut map = claims.as_map().clone();
    for name in names {
        map.shift_remove(*name);
    }
    VerifiedClaims::for_tests(claims.issuer_name(), Value::Object(map))
}

/// A push to main of `acme/identity-config` (fixtures/claims/github-push-main.json).
pub(crate) fn github_push_main() -> VerifiedClaims {
    VerifiedClaims::for_tests(
        "github",
        json!({
            "actor": "alice-acme",
            "actor_id": "58231904",
            "aud": "https://sts.example.com",
            "base_ref": "",
            "check_run_id": "81917115320",
            "event_name": "push",
            "exp": 1789465567,
            "head_ref": "",
            "iat": 1789465267,
            "iss": "https://token.actions.githubusercontent.com",
            "job_workflow_ref": "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_sha": "363a0c94e511346808fe5f3d96a84939e49450a3",
            "jti": "28cc6bb8-19b7-4505-a2f8-e232a58e8124",
            "nbf": 1789464667,
            "ref": "refs/heads/main",
            "ref_protected": "true",
            "ref_type": "branch",
            "repository": "acme/identity-config",
            "repository_id": "89012345",
            "repository_owner": "acme",
            "repository_owner_id": "1234567",
            "repository_visibility": "private",
            "run_attempt": "1",
            "run_id": "29223225591",
            "run_number": "162",
            "runner_environment": "github-hosted",
            "sha": "363a0c94e511346808fe5f3d96a84939e49450a3",
            "sub": "repo:acme/identity-config:ref:refs/heads/main",
            "workflow": "Deploy tenant",
            "workflow_ref": "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main",
            "workflow_sha": "363a0c94e511346808fe5f3d96a84939e49450a3"
        }),
    )
}

/// A pipeline on main of `acme/identity-config` (fixtures/claims/gitlab-branch-main.json).
pub(crate) fn gitlab_branch_main() -> VerifiedClaims {
    VerifiedClaims::for_tests(
        "gitlab",
        json!({
            "project_id": "78213456",
            "project_path": "acme/identity-config",
            "namespace_id": "112358",
            "namespace_path": "acme",
            "user_id": "24170131",
            "user_login": "alice-acme",
            "user_access_level": "maintainer",
            "pipeline_id": "2337096620",
            "pipeline_source": "push",
            "ref": "main",
            "ref_type": "branch",
            "ref_path": "refs/heads/main",
            "ref_protected": "true",
            "runner_id": 12270852,
            "runner_environment": "gitlab-hosted",
            "ci_config_ref_uri": "gitlab.com/acme/identity-config//.gitlab-ci.yml@refs/heads/main",
            "iss": "https://gitlab.com",
            "sub": "project_path:acme/identity-config:ref_type:branch:ref:main",
            "aud": "https://sts.example.com"
        }),
    )
}

/// A plan run in workspace `identity-config-prod` (fixtures/claims/terraform-plan.json).
pub(crate) fn terraform_plan() -> VerifiedClaims {
    VerifiedClaims::for_tests(
        "terraform",
        json!({
            "iss": "https://app.terraform.io",
            "aud": "https://sts.example.com",
            "sub": "organization:acme:project:Identity:workspace:identity-config-prod:run_phase:plan",
            "terraform_organization_id": "org-FAccTd22bh5n7vpZ",
            "terraform_organization_name": "acme",
            "terraform_project_id": "prj-eWYkmiDKThDhyyeM",
            "terraform_workspace_id": "ws-neKNifJ1AS9WcLP7",
            "terraform_workspace_name": "identity-config-prod",
            "terraform_run_phase": "plan"
        }),
    )
}
