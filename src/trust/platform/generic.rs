//! Any other OIDC issuer (a self-hosted platform, dev mode's issuer). Nothing is known
//! about its claims, so every name the other platforms use is read when present, and no
//! claim is binding: such an issuer serves one organisation, not every customer of a
//! platform.

use url::Url;

use super::{IssuerKind, LintFacts, Platform, WorkloadClaims};

pub(super) const PLATFORM: Platform = Platform {
    kind: IssuerKind::Generic,
    is_public_issuer,
    binding_claims: &[],
    dangerous_triggers: &[],
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
        "project_path",
        "project_id",
        "namespace_id",
        "pipeline_id",
        "job_id",
    ],
    workload: WorkloadClaims {
        repository: &["repository"],
        git_ref: &["ref"],
        repository_id: &["repository_id"],
        environment: &["environment"],
        event_name: &["event_name"],
        run_id: &["run_id", "terraform_run_id"],
        run_attempt: &["run_attempt"],
        sha: &["sha"],
        actor: &["actor", "user_login"],
        workflow_ref: &["workflow_ref"],
        job_workflow_ref: &["job_workflow_ref"],
        project_id: &["project_id"],
        pipeline_id: &["pipeline_id"],
        job_id: &["job_id"],
    },
    // A generic issuer's claims are whatever its operator configured: the linter
    // assumes nothing about them.
    lint: LintFacts {
        claims_sent: None,
        claim_prefixes: &[],
        renamable: &[],
        owner_prefixed: &[],
        owner_ids: &[],
        shapes: &[],
        ref_claims: &[],
        ref_or_environment: &[],
        protection: &[],
        runner_claim: None,
    },
};

/// A generic issuer is never inferred: its kind must be configured.
fn is_public_issuer(_issuer: &Url) -> bool {
    false
}
