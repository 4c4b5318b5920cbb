//! HCP Terraform (`app.terraform.io`) workload identity tokens. Terraform Enterprise
//! instances are configured with `kind = "terraform"`.

use url::Url;

use super::{IssuerKind, Platform, WorkloadClaims, is_https_root};

pub(super) const PLATFORM: Platform = Platform {
    kind: IssuerKind::Terraform,
    is_public_issuer,
    binding_claims: &["terraform_workspace_id", "terraform_organization_id"],
    dangerous_triggers: &[],
    ci_claims: &[
        "terraform_organization_id",
        "terraform_workspace_id",
        "terraform_full_workspace",
        "terraform_run_id",
        "terraform_run_phase",
    ],
    workload: WorkloadClaims {
        repository: &["terraform_full_workspace"],
        git_ref: &[],
        repository_id: &[],
        environment: &[],
        event_name: &[],
        run_id: &["terraform_run_id"],
        run_attempt: &[],
        sha: &[],
        actor: &[],
        workflow_ref: &[],
        job_workflow_ref: &[],
        project_id: &[],
        pipeline_id: &[],
        job_id: &[],
    },
};

fn is_public_issuer(issuer: &Url) -> bool {
    is_https_root(issuer, "app.terraform.io")
}
