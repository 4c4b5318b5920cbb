//! How and why a request ended: the closed lists ([`Outcome`], [`Reason`]) shared by
//! the audit record, the decision log and the labels of the exchange metrics.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A token was handed out.
    Allow,
    /// The request was refused because of the caller's token or the policies.
    Deny,
    /// tokenmint or a dependency failed; the caller may retry.
    Error,
    /// A remote target is being called.
    Pending,
    /// `tokenmint doctor` requested a token from a remote target to check it; the token
    /// was never printed or handed out.
    Doctor,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::Pending => "pending",
            Outcome::Doctor => "doctor",
        }
    }
}

/// The closed list of reasons. Adding one is a change to the audit format: document it
/// in the README's audit section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A token was handed out.
    Allowed,
    /// A remote target is being called.
    Pending,
    /// The caller went away while a remote target was called.
    Cancelled,

    // The subject token itself (`invalid_grant`).
    MalformedToken,
    DuplicateClaim,
    NoKid,
    AlgorithmNotAllowed,
    UnknownIssuer,
    UnknownKey,
    BadSignature,
    WrongAudience,
    MissingClaim,
    Expired,
    NotYetValid,
    IssuedInFuture,
    LifetimeTooLong,
    TokenReplayed,
    TokenInUse,

    // The request against the policies.
    Denylisted,
    TargetDisabled,
    UnknownTarget,
    UnknownPolicy,
    NoPolicyMatched,
    ScopeExceeded,
    AmbiguousPolicy,

    // Our side or a dependency (the caller may retry).
    IssuerKeysUnavailable,
    StoreUnavailable,
    AuditUnavailable,
    MintFailed,
    UpstreamClientError,
    UpstreamError,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamRateLimited,
    UpstreamUnauthorized,
    UpstreamForbidden,
    UpstreamRedirect,
    UpstreamRejected,
    UpstreamMalformed,
    UpstreamScopeUnknown,
    UpstreamScopeWider,
    UpstreamScopeEmpty,
    UpstreamTtlExceeded,

    // `tokenmint doctor`'s probing requests.
    Doctor,
    DoctorFailed,
}

impl Reason {
    /// The reason as records, logs and metrics spell it.
    pub fn as_str(self) -> &'static str {
        use Reason as R;
        match self {
            R::Allowed => "allowed",
            R::Pending => "pending",
            R::Cancelled => "cancelled",
            R::MalformedToken => "malformed_token",
            R::DuplicateClaim => "duplicate_claim",
            R::NoKid => "no_kid",
            R::AlgorithmNotAllowed => "algorithm_not_allowed",
            R::UnknownIssuer => "unknown_issuer",
            R::UnknownKey => "unknown_key",
            R::BadSignature => "bad_signature",
            R::WrongAudience => "wrong_audience",
            R::MissingClaim => "missing_claim",
            R::Expired => "expired",
            R::NotYetValid => "not_yet_valid",
            R::IssuedInFuture => "issued_in_future",
            R::LifetimeTooLong => "lifetime_too_long",
            R::TokenReplayed => "token_replayed",
            R::TokenInUse => "token_in_use",
            R::Denylisted => "denylisted",
            R::TargetDisabled => "target_disabled",
            R::UnknownTarget => "unknown_target",
            R::UnknownPolicy => "unknown_policy",
            R::NoPolicyMatched => "no_policy_matched",
            R::ScopeExceeded => "scope_exceeded",
            R::AmbiguousPolicy => "ambiguous_policy",
            R::IssuerKeysUnavailable => "issuer_keys_unavailable",
            R::StoreUnavailable => "store_unavailable",
            R::AuditUnavailable => "audit_unavailable",
            R::MintFailed => "mint_failed",
            R::UpstreamClientError => "upstream_client_error",
            R::UpstreamError => "upstream_error",
            R::UpstreamUnreachable => "upstream_unreachable",
            R::UpstreamTimeout => "upstream_timeout",
            R::UpstreamRateLimited => "upstream_rate_limited",
            R::UpstreamUnauthorized => "upstream_unauthorized",
            R::UpstreamForbidden => "upstream_forbidden",
            R::UpstreamRedirect => "upstream_redirect",
            R::UpstreamRejected => "upstream_rejected",
            R::UpstreamMalformed => "upstream_malformed",
            R::UpstreamScopeUnknown => "upstream_scope_unknown",
            R::UpstreamScopeWider => "upstream_scope_wider",
            R::UpstreamScopeEmpty => "upstream_scope_empty",
            R::UpstreamTtlExceeded => "upstream_ttl_exceeded",
            R::Doctor => "doctor",
            R::DoctorFailed => "doctor_failed",
        }
    }

    /// The outcome a record with this reason has.
    pub fn outcome(self) -> Outcome {
        use Reason as R;
        match self {
            R::Allowed => Outcome::Allow,
            R::Pending => Outcome::Pending,
            R::Doctor | R::DoctorFailed => Outcome::Doctor,
            R::MalformedToken
            | R::DuplicateClaim
            | R::NoKid
            | R::AlgorithmNotAllowed
            | R::UnknownIssuer
            | R::UnknownKey
            | R::BadSignature
            | R::WrongAudience
            | R::MissingClaim
            | R::Expired
            | R::NotYetValid
            | R::IssuedInFuture
            | R::LifetimeTooLong
            | R::TokenReplayed
            | R::TokenInUse
            | R::Denylisted
            | R::TargetDisabled
            | R::UnknownTarget
            | R::UnknownPolicy
            | R::NoPolicyMatched
            | R::ScopeExceeded
            | R::AmbiguousPolicy => Outcome::Deny,
            R::Cancelled
            | R::IssuerKeysUnavailable
            | R::StoreUnavailable
            | R::AuditUnavailable
            | R::MintFailed
            | R::UpstreamClientError
            | R::UpstreamError
            | R::UpstreamUnreachable
            | R::UpstreamTimeout
            | R::UpstreamRateLimited
            | R::UpstreamUnauthorized
            | R::UpstreamForbidden
            | R::UpstreamRedirect
            | R::UpstreamRejected
            | R::UpstreamMalformed
            | R::UpstreamScopeUnknown
            | R::UpstreamScopeWider
            | R::UpstreamScopeEmpty
            | R::UpstreamTtlExceeded => Outcome::Error,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_it_is_spelled() {
        for reason in [
            Reason::Allowed,
            Reason::NoPolicyMatched,
            Reason::UpstreamTtlExceeded,
            Reason::DoctorFailed,
        ] {
            assert_eq!(
                serde_json::to_value(reason).expect("serialises"),
                serde_json::Value::String(reason.as_str().to_owned())
            );
        }
    }
}
