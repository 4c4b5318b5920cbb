//! GitLab CI/CD on gitlab.com. Self-managed GitLab instances are configured with
//! `kind = "gitlab"` and get the same rules.

use url::Url;

use super::{IssuerKind, Platform, WorkloadClaims, is_https_root};

pub(super) const PLATFORM: Platform = Platform {
    kind: IssuerKind::Gitlab,
    is_public_issuer,
    binding_claims: &["project_id", "namespace_id"],
    dangerous_triggers: &[],
    ci_claims: &[
        "ref",
        "sha",
        "environment",
        "project_path",
        "project_id",
        "namespace_id",
        "pipeline_id",
        "job_id",
    ],
    workload: WorkloadClaims {
        repository: &["project_path"],
        // `ref` is the bare branch or tag name; `ref_path` says which of the two.
        git_ref: &["ref_path", "ref"],
        repository_id: &[],
        environment: &["environment"],
        event_name: &[],
        run_id: &[],
        run_attempt: &[],
        sha: &["sha"],
        actor: &["user_login"],
        workflow_ref: &[],
        job_workflow_ref: &[],
        project_id: &["project_id"],
        pipeline_id: &["pipeline_id"],
        job_id: &["job_id"],
    },
};

fn is_public_issuer(issuer: &Url) -> bool {
    is_https_root(issuer, "gitlab.com")
}
