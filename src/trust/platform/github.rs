//! GitHub Actions: `token.actions.githubusercontent.com` (and its enterprise-slug form),
//! GitHub Enterprise Server (`/_services/token`) and GHE.com (`token.actions.SUB.ghe.com`).

use url::Url;

use super::{ClaimShape, IssuerKind, LintFacts, Platform, WorkloadClaims};

pub(super) const PLATFORM: Platform = Platform {
    kind: IssuerKind::Github,
    is_public_issuer,
    // Immutable ids: names can be renamed and re-registered by someone else.
    binding_claims: &["repository_id", "repository_owner_id"],
    // They run with the base repository's token on code or input from outside it.
    dangerous_triggers: &["pull_request_target", "workflow_run", "issue_comment"],
    ci_claims: &[
        "repository",
        "repository_id",
        "repository_owner_id",
        "ref",
        "sha",
        "environment",
        "workflow_ref",
        "job_workflow_ref",
        "run_id",
        "run_attempt",
        "actor",
        "event_name",
    ],
    workload: WorkloadClaims {
        repository: &["repository"],
        git_ref: &["ref"],
        repository_id: &["repository_id"],
        environment: &["environment"],
        event_name: &["event_name"],
        run_id: &["run_id"],
        run_attempt: &["run_attempt"],
        sha: &["sha"],
        actor: &["actor"],
        workflow_ref: &["workflow_ref"],
        job_workflow_ref: &["job_workflow_ref"],
        project_id: &[],
        pipeline_id: &[],
        job_id: &[],
    },
    lint: LintFacts {
        claims_sent: Some(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "actor",
            "actor_id",
            "base_ref",
            "head_ref",
            "check_run_id",
            "enterprise",
            "enterprise_id",
            "environment",
            "environment_node_id",
            "event_name",
            "issuer_scope",
            "job_workflow_ref",
            "job_workflow_sha",
            "ref",
            "ref_protected",
            "ref_type",
            "repository",
            "repository_id",
            "repository_owner",
            "repository_owner_id",
            "repository_visibility",
            "run_attempt",
            "run_id",
            "run_number",
            "runner_environment",
            "sha",
            "workflow",
            "workflow_ref",
            "workflow_sha",
        ]),
        claim_prefixes: &["repo_property_"],
        renamable: &[
            ("repository", &["repository_id"]),
            (
                "repository_owner",
                &["repository_owner_id", "repository_id"],
            ),
        ],
        owner_prefixed: &[
            ("repository", "", '/'),
            ("repository_owner", "", '/'),
            ("sub", "repo:", '/'),
            ("workflow_ref", "", '/'),
            ("job_workflow_ref", "", '/'),
        ],
        owner_ids: &["repository_owner_id", "repository_id"],
        shapes: &[
            (
                "ref",
                ClaimShape::StartsWith(&["refs/heads/", "refs/tags/", "refs/pull/"]),
            ),
            ("ref_type", ClaimShape::OneOf(&["branch", "tag"])),
            ("ref_protected", ClaimShape::OneOf(&["true", "false"])),
            (
                "runner_environment",
                ClaimShape::OneOf(&["github-hosted", "self-hosted"]),
            ),
            (
                "repository_visibility",
                ClaimShape::OneOf(&["public", "private", "internal"]),
            ),
            ("repository_id", ClaimShape::Digits),
            ("repository_owner_id", ClaimShape::Digits),
            ("actor_id", ClaimShape::Digits),
            ("run_id", ClaimShape::Digits),
            ("run_number", ClaimShape::Digits),
            ("run_attempt", ClaimShape::Digits),
        ],
        ref_claims: &["ref"],
        ref_or_environment: &["ref", "environment"],
        protection: &[("environment", None), ("ref_protected", Some("true"))],
        runner_claim: Some("runner_environment"),
    },
};

/// `https://token.actions.githubusercontent.com` and `/<enterprise-slug>`,
/// `https://HOST/_services/token` (GHES), `https://token.actions.SUB.ghe.com` (and `/<slug>`).
fn is_public_issuer(issuer: &Url) -> bool {
    if issuer.scheme() != "https" || issuer.port().is_some() {
        return false;
    }
    let Some(host) = issuer.host_str() else {
        return false;
    };
    let path = issuer.path();
    let root_or_slug = path.is_empty() || path == "/" || is_enterprise_slug(path);
    if host == "token.actions.githubusercontent.com" && root_or_slug {
        return true;
    }
    let ghe_com = host
        .strip_prefix("token.actions.")
        .and_then(|rest| rest.strip_suffix(".ghe.com"))
        .is_some_and(|sub| !sub.is_empty() && !sub.contains('.'));
    if ghe_com && root_or_slug {
        return true;
    }
    path == "/_services/token"
}

fn is_enterprise_slug(path: &str) -> bool {
    let slug = path.strip_prefix('/').unwrap_or(path);
    !slug.is_empty()
        && slug.len() <= 100
        && slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
