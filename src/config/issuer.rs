//! Issuer kinds, their inference from well-known issuer URLs, and the replay setting.

use serde::Deserialize;
use url::Url;

/// What platform an issuer is; decides binding claims and platform-specific rules.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    Github,
    Gitlab,
    Terraform,
    Generic,
}

impl IssuerKind {
    /// The claims that identify one customer of a shared issuer. A policy for this kind
    /// of issuer must pin one of them to exact values unless it sets `unbound: true`.
    pub fn binding_claims(self) -> &'static [&'static str] {
        match self {
            IssuerKind::Github => &["repository_id", "repository_owner_id"],
            IssuerKind::Gitlab => &["project_id", "namespace_id"],
            IssuerKind::Terraform => &["terraform_workspace_id", "terraform_organization_id"],
            IssuerKind::Generic => &[],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Github => "github",
            IssuerKind::Gitlab => "gitlab",
            IssuerKind::Terraform => "terraform",
            IssuerKind::Generic => "generic",
        }
    }
}

/// Whether a CI token buys one access token or any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayMode {
    Reject,
    Allow,
}

/// The kind of the public platforms' issuers; `None` when the URL is not one of them.
///
/// GitHub: `https://token.actions.githubusercontent.com` and its enterprise-slug form
/// (`/<slug>`), GHES `https://HOST/_services/token`, GHE.com `https://token.actions.SUB.ghe.com`
/// (optionally `/<slug>`); GitLab: `https://gitlab.com`; HCP Terraform: `https://app.terraform.io`.
pub fn infer_issuer_kind(issuer: &Url) -> Option<IssuerKind> {
    if issuer.scheme() != "https" || issuer.port().is_some() {
        return None;
    }
    let host = issuer.host_str()?;
    let path = issuer.path();
    let single_slug = |path: &str| {
        let slug = path.strip_prefix('/').unwrap_or(path);
        !slug.is_empty()
            && slug.len() <= 100
            && slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let root_or_slug = path.is_empty() || path == "/" || single_slug(path);
    if host == "token.actions.githubusercontent.com" && root_or_slug {
        return Some(IssuerKind::Github);
    }
    if let Some(sub) = host
        .strip_prefix("token.actions.")
        .and_then(|rest| rest.strip_suffix(".ghe.com"))
        && !sub.is_empty()
        && !sub.contains('.')
        && root_or_slug
    {
        return Some(IssuerKind::Github);
    }
    if path == "/_services/token" {
        return Some(IssuerKind::Github);
    }
    let root = path.is_empty() || path == "/";
    if host == "gitlab.com" && root {
        return Some(IssuerKind::Gitlab);
    }
    if host == "app.terraform.io" && root {
        return Some(IssuerKind::Terraform);
    }
    None
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
    }
}
