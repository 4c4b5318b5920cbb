//! CI platforms: what tokenmint knows about each one, one file per platform.
//!
//! A platform's rules are data: which public issuer URLs are its own (kind inference),
//! which claims bind a policy to one customer of a shared issuer, which triggers run
//! untrusted code with the repository's identity, and which claims identify the job in a
//! local token's `ci` object and in the audit record. Adding a platform means one new
//! file here and one variant of [`IssuerKind`]; nothing else changes.

mod dev;
mod generic;
mod github;
mod gitlab;
mod terraform;

use serde::{Deserialize, Serialize};
use url::Url;

/// What platform an issuer is; decides binding claims and platform-specific rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    Github,
    Gitlab,
    Terraform,
    Generic,
    /// Dev mode's issuer; never read from a configuration.
    #[serde(skip_deserializing)]
    Dev,
}

/// Claim names, tried in order: the first one present gives the value.
pub type ClaimNames = &'static [&'static str];

/// One CI platform's rules.
#[derive(Debug)]
pub struct Platform {
    pub kind: IssuerKind,
    /// Whether `issuer` is one of the platform's public issuers, shared by every customer
    /// of the platform. Only these URLs have their kind inferred.
    pub is_public_issuer: fn(&Url) -> bool,
    /// The claims that identify one customer of a shared issuer. A policy for this kind
    /// of issuer must pin one of them to exact values unless it sets `unbound: true`.
    pub binding_claims: ClaimNames,
    /// `event_name` values whose runs may execute untrusted code with the repository's
    /// identity: a policy admits them only by naming them literally in `event_name`.
    pub dangerous_triggers: ClaimNames,
    /// The claims copied, when present, into the `ci` object of a local token.
    pub ci_claims: ClaimNames,
    /// Which claims fill the audit record's job fields.
    pub workload: WorkloadClaims,
    /// What the policy linter knows about the platform's tokens.
    pub lint: LintFacts,
}

/// What `policy check` knows about a platform's tokens, from its documentation and
/// recorded tokens (../shared/fixtures): which claims exist, what their values look like,
/// which names can be re-registered.
#[derive(Debug)]
pub struct LintFacts {
    /// Every claim the platform's tokens can carry; `None` when any claim may appear
    /// (a generic issuer).
    pub claims_sent: Option<ClaimNames>,
    /// Prefixes of claim families whose names vary (GitHub's `repo_property_*`).
    pub claim_prefixes: ClaimNames,
    /// Names a customer can rename and someone else re-register, each with the
    /// immutable ids that pin what the name named.
    pub renamable: &'static [(&'static str, ClaimNames)],
    /// Claims whose value starts with an owner: `(claim, text before the owner, the
    /// character ending the owner)`. A pattern over them must spell the owner literally.
    pub owner_prefixed: &'static [(&'static str, &'static str, char)],
    /// Claims pinned by an owner-level id: when one of these is exact, no pattern can
    /// reach another owner's repositories.
    pub owner_ids: ClaimNames,
    /// The shape every value of a claim has.
    pub shapes: &'static [(&'static str, ClaimShape)],
    /// Claims naming the branch or tag; a pattern there lets any pusher of a matching ref in.
    pub ref_claims: ClaimNames,
    /// Claims that restrict the ref or the environment; a write policy needs one.
    pub ref_or_environment: ClaimNames,
    /// Conditions that prove a protected ref or environment: a claim and the exact
    /// value that says so; `None` as the value means any exact value (a named
    /// environment, whose protection rules live on the platform).
    pub protection: &'static [(&'static str, Option<&'static str>)],
    /// The claim saying whether the runner is the platform's or self-hosted.
    pub runner_claim: Option<&'static str>,
}

/// What every value of a claim looks like.
#[derive(Debug)]
pub enum ClaimShape {
    /// One of these strings.
    OneOf(ClaimNames),
    /// Decimal digits (numeric ids, sent as strings or numbers).
    Digits,
    /// Starts with one of these.
    StartsWith(ClaimNames),
    /// Never starts with this (GitLab's bare `ref`).
    NotStartsWith(&'static str),
}

/// Where each job field of the audit record comes from.
#[derive(Debug)]
pub struct WorkloadClaims {
    pub repository: ClaimNames,
    pub git_ref: ClaimNames,
    pub repository_id: ClaimNames,
    pub environment: ClaimNames,
    pub event_name: ClaimNames,
    pub run_id: ClaimNames,
    pub run_attempt: ClaimNames,
    pub sha: ClaimNames,
    pub actor: ClaimNames,
    pub workflow_ref: ClaimNames,
    pub job_workflow_ref: ClaimNames,
    pub project_id: ClaimNames,
    pub pipeline_id: ClaimNames,
    pub job_id: ClaimNames,
}

/// Every platform, in the order kind inference tries them.
const PLATFORMS: &[&Platform] = &[
    &github::PLATFORM,
    &gitlab::PLATFORM,
    &terraform::PLATFORM,
    &generic::PLATFORM,
];

impl IssuerKind {
    /// This kind's rules.
    pub fn platform(self) -> &'static Platform {
        match self {
            IssuerKind::Github => &github::PLATFORM,
            IssuerKind::Gitlab => &gitlab::PLATFORM,
            IssuerKind::Terraform => &terraform::PLATFORM,
            IssuerKind::Generic => &generic::PLATFORM,
            IssuerKind::Dev => &dev::PLATFORM,
        }
    }

    /// See [`Platform::binding_claims`].
    pub fn binding_claims(self) -> ClaimNames {
        self.platform().binding_claims
    }

    /// The name configuration and policies use.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Github => "github",
            IssuerKind::Gitlab => "gitlab",
            IssuerKind::Terraform => "terraform",
            IssuerKind::Generic => "generic",
            IssuerKind::Dev => "dev",
        }
    }
}

/// The kind of a public platform's issuer; `None` when the URL is not one of them.
pub fn infer_issuer_kind(issuer: &Url) -> Option<IssuerKind> {
    PLATFORMS
        .iter()
        .find(|platform| (platform.is_public_issuer)(issuer))
        .map(|platform| platform.kind)
}

/// Whether `url` is `https://HOST` (no port) with an empty path or `/`.
fn is_https_root(url: &Url, host: &str) -> bool {
    url.scheme() == "https"
        && url.port().is_none()
        && url.host_str() == Some(host)
        && (url.path().is_empty() || url.path() == "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(url: &str) -> Option<IssuerKind> {
        infer_issuer_kind(&Url::parse(url).expect("test URL"))
    }

    #[test]
    fn infers_the_public_platforms() {
        assert_eq!(
            kind("https://token.actions.githubusercontent.com"),
            Some(IssuerKind::Github)
        );
        assert_eq!(
            kind("https://token.actions.githubusercontent.com/acme-corp"),
            Some(IssuerKind::Github)
        );
        assert_eq!(
            kind("https://ghes.acme.example/_services/token"),
            Some(IssuerKind::Github)
        );
        assert_eq!(
            kind("https://token.actions.acme.ghe.com"),
            Some(IssuerKind::Github)
        );
        assert_eq!(
            kind("https://token.actions.acme.ghe.com/acme"),
            Some(IssuerKind::Github)
        );
        assert_eq!(kind("https://gitlab.com"), Some(IssuerKind::Gitlab));
        assert_eq!(
            kind("https://app.terraform.io"),
            Some(IssuerKind::Terraform)
        );
    }

    #[test]
    fn does_not_guess_look_alikes_or_self_hosted() {
        assert_eq!(
            kind("https://token.actions.githubusercontent.com.evil.example"),
            None
        );
        assert_eq!(
            kind("https://token.actions.githubusercontent.com/a/b"),
            None
        );
        assert_eq!(kind("https://gitlab.acme.example"), None);
        assert_eq!(kind("http://gitlab.com"), None);
        assert_eq!(kind("https://gitlab.com/group"), None);
        assert_eq!(kind("https://token.actions.a.b.ghe.com"), None);
        assert_eq!(kind("http://127.0.0.1:8080/dev"), None);
    }

    #[test]
    fn only_shared_platforms_have_binding_claims_and_only_github_dangerous_triggers() {
        for platform in PLATFORMS {
            let shared = platform.kind != IssuerKind::Generic;
            assert_eq!(
                !platform.binding_claims.is_empty(),
                shared,
                "{:?}",
                platform.kind
            );
            assert_eq!(
                !platform.dangerous_triggers.is_empty(),
                platform.kind == IssuerKind::Github,
                "{:?}",
                platform.kind
            );
            assert_eq!(platform.kind.platform().kind, platform.kind);
        }
    }
}
