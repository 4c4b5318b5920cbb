//! The audit record: every request that reaches token verification has one, written
//! before the response (a remote target's request has two: `pending`, then its
//! completion). Records are append-only; [`latest_per_request`] gives each request once,
//! in its latest state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::trust::outcome::{Outcome, Reason};
use crate::trust::platform::{ClaimNames, IssuerKind};
use crate::trust::policy::Decision;
use crate::trust::verify::claims::VerifiedClaims;

/// One audit record. Never holds a token: only the SHA-256 of the one handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub request_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub outcome: Outcome,
    /// A closed list shared with metrics (`allowed`, `no_policy_matched`, `expired`, ...).
    pub reason: Reason,
    pub policy: Option<String>,
    pub policy_sha256: Option<String>,
    pub policy_set_version: Option<String>,
    pub target: Option<String>,
    /// The `audience` parameter as requested.
    pub audience: Option<String>,
    pub requested_scope: Option<String>,
    /// The scope granted.
    pub scope: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub repository: Option<String>,
    pub repository_id: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub environment: Option<String>,
    pub event_name: Option<String>,
    pub run_id: Option<String>,
    pub run_attempt: Option<String>,
    pub sha: Option<String>,
    pub actor: Option<String>,
    pub workflow_ref: Option<String>,
    pub job_workflow_ref: Option<String>,
    pub project_id: Option<String>,
    pub pipeline_id: Option<String>,
    pub job_id: Option<String>,
    /// SHA-256 (hex) of the access token handed out.
    pub token_sha256: Option<String>,
    pub token_jti: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The token was handed out before, to an identical request (`reuse_tokens`).
    pub reused: bool,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Policies in `mode: audit` that would have allowed this request.
    pub would_allow: Vec<String>,
    /// The evaluated policies, condition by condition.
    pub decisions: Vec<Decision>,
    /// The full reason, as logged (never shown to unbound callers).
    pub detail: Option<String>,
}

impl AuditRecord {
    /// A record of `request_id` ending with `reason` (which decides the outcome), with
    /// everything else empty.
    pub fn new(request_id: &str, time: OffsetDateTime, reason: Reason) -> Self {
        Self {
            request_id: request_id.to_owned(),
            time,
            outcome: reason.outcome(),
            reason,
            policy: None,
            policy_sha256: None,
            policy_set_version: None,
            target: None,
            audience: None,
            requested_scope: None,
            scope: None,
            issuer: None,
            subject: None,
            repository: None,
            repository_id: None,
            git_ref: None,
            environment: None,
            event_name: None,
            run_id: None,
            run_attempt: None,
            sha: None,
            actor: None,
            workflow_ref: None,
            job_workflow_ref: None,
            project_id: None,
            pipeline_id: None,
            job_id: None,
            token_sha256: None,
            token_jti: None,
            expires_at: None,
            reused: false,
            client_ip: None,
            user_agent: None,
            would_allow: Vec::new(),
            decisions: Vec::new(),
            detail: None,
        }
    }

    /// Copies the job's identifying claims, as the issuer's platform names them (GitLab's
    /// `project_path` fills `repository` and `ref_path` fills `ref`, for example).
    pub fn set_workload(&mut self, claims: &VerifiedClaims, kind: IssuerKind) {
        let first = |names: ClaimNames| {
            names
                .iter()
                .find_map(|name| claim_text(claims, name))
                .map(|text| bounded(&text))
        };
        let from = &kind.platform().workload;
        self.issuer = Some(claims.issuer_name().to_owned());
        self.subject = claim_text(claims, "sub").map(|text| bounded(&text));
        self.repository = first(from.repository);
        self.git_ref = first(from.git_ref);
        self.repository_id = first(from.repository_id);
        self.environment = first(from.environment);
        self.event_name = first(from.event_name);
        self.run_id = first(from.run_id);
        self.run_attempt = first(from.run_attempt);
        self.sha = first(from.sha);
        self.actor = first(from.actor);
        self.workflow_ref = first(from.workflow_ref);
        self.job_workflow_ref = first(from.job_workflow_ref);
        self.project_id = first(from.project_id);
        self.pipeline_id = first(from.pipeline_id);
        self.job_id = first(from.job_id);
    }
}

/// Longest text copied from a request or a token into an audit record or log field, so
/// that no request can make a record larger than a few KiB.
pub const MAX_RECORDED_TEXT: usize = 512;

/// Cuts `text` to [`MAX_RECORDED_TEXT`] bytes (on a character boundary), marking the cut.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_RECORDED_TEXT {
        return text.to_owned();
    }
    let kept = prefix_at_most(text, MAX_RECORDED_TEXT);
    format!("{kept}… ({} bytes)", text.len())
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix_at_most(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The decision log: one line per audit record (`seq` is its place in the trail, when it
/// was written), never a token (only its SHA-256). The exchange's target is logged as
/// `target_name`: in JSON lines, `target` is the log line's own origin.
pub fn log_decision(record: &AuditRecord, seq: Option<u64>) {
    let message = match record.outcome {
        Outcome::Pending => "exchange pending: calling the target",
        _ => "exchange decided",
    };
    tracing::info!(
        request_id = %record.request_id,
        outcome = record.outcome.as_str(),
        reason = record.reason.as_str(),
        issuer = record.issuer.as_deref().unwrap_or(""),
        subject = record.subject.as_deref().unwrap_or(""),
        repository = record.repository.as_deref().unwrap_or(""),
        target_name = record.target.as_deref().unwrap_or(""),
        policy = record.policy.as_deref().unwrap_or(""),
        scope = record.scope.as_deref().unwrap_or(""),
        token_sha256 = record.token_sha256.as_deref().unwrap_or(""),
        token_jti = record.token_jti.as_deref().unwrap_or(""),
        reused = record.reused,
        audit_seq = seq,
        detail = record.detail.as_deref().unwrap_or(""),
        "{message}"
    );
}

/// Each request once, in its latest state (its last record), ordered by that record's
/// place in `records`: what `audit list` shows.
pub fn latest_per_request(records: &[AuditRecord]) -> Vec<AuditRecord> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        last.insert(record.request_id.as_str(), index);
    }
    records
        .iter()
        .enumerate()
        .filter(|(index, record)| last.get(record.request_id.as_str()) == Some(index))
        .map(|(_, record)| record.clone())
        .collect()
}

/// A claim as text: strings as they are, integers and booleans as their JSON text.
pub fn claim_text(claims: &VerifiedClaims, name: &str) -> Option<String> {
    match claims.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Hashes an access token for audit records: hex SHA-256. Records and logs carry this,
/// never the token.
pub fn token_sha256(token: &str) -> String {
    crate::trust::hash::sha256_hex(token.as_bytes())
}
