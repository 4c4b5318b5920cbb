//! Building the audit records of one exchange: every record of a request (its `pending`
//! record, its final record) is built here, and only here, from what the exchange learnt
//! ([`Facts`]) and how it ended ([`Ending`]).

use std::sync::Arc;

use time::OffsetDateTime;

use super::ExchangeRequest;
use super::refusal::Refusal;
use crate::trust::audit::{AuditRecord, Reason, bounded};
use crate::trust::mint::MintedToken;
use crate::trust::platform::IssuerKind;
use crate::trust::policy::Decision;
use crate::trust::verify::claims::VerifiedClaims;

/// What the exchange has learnt about one request so far.
pub(super) struct Facts<'a> {
    pub request: &'a ExchangeRequest,
    pub now: OffsetDateTime,
    /// The verified claims and their platform, once verification passed.
    pub workload: Option<(&'a VerifiedClaims, IssuerKind)>,
    /// What the policies said, once they were asked.
    pub evaluation: Option<Evaluation>,
}

/// What the policies said about a request.
#[derive(Debug)]
pub(super) struct Evaluation {
    pub policy_set_version: String,
    /// The target the audience resolved to, if any.
    pub target: Option<String>,
    /// The deciding policy's name and source SHA-256, when one granted.
    pub policy: Option<(String, String)>,
    /// The evaluated policies (just the winner's on a grant).
    pub decisions: Vec<Decision>,
    /// Audit-mode policies that would have allowed.
    pub would_allow: Vec<String>,
}

/// How a record ends.
pub(super) enum Ending<'a> {
    /// A remote target is about to be called.
    Pending,
    /// This token is handed out.
    Issued(&'a MintedToken),
    Refused(&'a Refusal),
}

impl Facts<'_> {
    /// The record of this request as it ends with `ending`.
    pub fn record(&self, ending: Ending<'_>) -> Arc<AuditRecord> {
        let request = self.request;
        let reason = match ending {
            Ending::Pending => Reason::Pending,
            Ending::Issued(_) => Reason::Allowed,
            Ending::Refused(refusal) => refusal.reason,
        };
        let mut record = AuditRecord::new(&request.request_id, self.now, reason);
        record.audience = Some(bounded(&request.audience));
        record.requested_scope = request.scope.as_ref().map(|s| bounded(&s.join(" ")));
        record.client_ip.clone_from(&request.client_ip);
        record.user_agent = request.user_agent.as_deref().map(bounded);
        if let Some((claims, kind)) = self.workload {
            record.set_workload(claims, kind);
        }
        if let Some(evaluation) = &self.evaluation {
            record.policy_set_version = Some(evaluation.policy_set_version.clone());
            record.target.clone_from(&evaluation.target);
            if let Some((name, sha256)) = &evaluation.policy {
                record.policy = Some(name.clone());
                record.policy_sha256 = Some(sha256.clone());
            }
            record.decisions.clone_from(&evaluation.decisions);
            // A condition's actual value is a claim of the caller's token: capped like
            // every other text copied from a request into a record.
            for condition in record.decisions.iter_mut().flat_map(|d| &mut d.conditions) {
                if let Some(actual) = &mut condition.actual {
                    *actual = bounded(actual);
                }
            }
            record.would_allow.clone_from(&evaluation.would_allow);
        }
        match ending {
            Ending::Pending => record.detail = Some("calling the target".to_owned()),
            Ending::Issued(minted) => {
                record.scope = Some(minted.scope.clone());
                record.token_sha256 = Some(minted.sha256.clone());
                record.token_jti.clone_from(&minted.jti);
                record.expires_at = Some(minted.expires_at);
                record.reused = minted.reused;
            }
            Ending::Refused(refusal) => record.detail = Some(bounded(&refusal.detail)),
        }
        Arc::new(record)
    }
}
