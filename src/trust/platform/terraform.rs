//! HCP Terraform (`app.terraform.io`) workload identity tokens. Terraform Enterprise
//! instances are configured with `kind = "terraform"`.

use url::Url;

use super::{ClaimShape, IssuerKind, LintFacts, Platform, WorkloadClaims, is_https_root};

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
    lint: LintFacts {
        claims_sent: Some(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "terraform_organization_id",
            "terraform_organization_name",
            "terraform_project_id",
            "terraform_project_name",
            "terraform_workspace_id",
            "terraform_workspace_name",
            "terraform_full_workspace",
            "terraform_run_id",
            "terraform_run_phase",
        ]),
        claim_prefixes: &[],
        renamable: &[
            ("terraform_workspace_name", &["terraform_workspace_id"]),
            (
                "terraform_organization_name",
                &["terraform_organization_id", "terraform_workspace_id"],
            ),
            (
                "terraform_project_name",
                &["terraform_project_id", "terraform_workspace_id"],
            ),
        ],
        owner_prefixed: &[
            ("terraform_organization_name", "", ':'),
            ("terraform_full_workspace", "organization:", ':'),
            ("sub", "organization:", ':'),
        ],
        owner_ids: &["terraform_organization_id", "terraform_workspace_id"],
        shapes: &[
            ("terraform_run_phase", ClaimShape::OneOf(&["plan", "apply"])),
            (
                "terraform_organization_id",
                ClaimShape::StartsWith(&["org-"]),
            ),
            ("terraform_workspace_id", ClaimShape::StartsWith(&["ws-"])),
            ("terraform_project_id", ClaimShape::StartsWith(&["prj-"])),
            ("terraform_run_id", ClaimShape::StartsWith(&["run-"])),
        ],
        ref_claims: &[],
        ref_or_environment: &[],
        protection: &[],
        runner_claim: None,
    },
};

fn is_public_issuer(issuer: &Url) -> bool {
    is_https_root(issuer, "app.terraform.io")
}
