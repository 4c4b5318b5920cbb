//! GitHub Actions: `token.actions.githubusercontent.com` (and its enterprise-slug form),
//! GitHub Enterprise Server (`/_services/token`) and GHE.com (`token.actions.SUB.ghe.com`).

use url::Url;

use super::{IssuerKind, Platform, WorkloadClaims};

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
