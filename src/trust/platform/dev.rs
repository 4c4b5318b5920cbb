//! Dev mode's CI issuer (`serve --dev`): a generic issuer whose `repository` claim binds, so
//! a denial to a repository a dev policy names shows its failing conditions, as a GitHub
//! denial to a bound repository does. Only dev mode builds an issuer of this kind; the
//! configuration cannot name it, because a name that anyone can re-register must never
//! bind outside a playground.

use url::Url;

use super::{IssuerKind, Platform};

pub(super) const PLATFORM: Platform = Platform {
    kind: IssuerKind::Dev,
    is_public_issuer,
    binding_claims: &["repository"],
    dangerous_triggers: &[],
    ci_claims: super::generic::PLATFORM.ci_claims,
    workload: super::generic::PLATFORM.workload,
    lint: super::generic::PLATFORM.lint,
};

/// The dev issuer is never inferred: dev mode sets its kind.
fn is_public_issuer(_issuer: &Url) -> bool {
    false
}
