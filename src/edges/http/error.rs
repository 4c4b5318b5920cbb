//! Maps exchange outcomes to status codes and RFC 6749 error bodies; the one place that knows both.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::wire::{ErrorResponse, FailedCondition};
use crate::trust::exchange::{Denial, ExchangeError};

/// An error answer of `POST /token`.
#[derive(Debug)]
pub struct TokenError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub retry_after: Option<u64>,
    /// For bound callers: the nearest policy and its failing conditions.
    pub nearest: Option<Box<(String, Vec<FailedCondition>)>>,
    /// The metrics reason for errors answered before verification.
    pub reason: &'static str,
}

impl TokenError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
        reason: &'static str,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
            nearest: None,
            reason,
        }
    }

    /// Row 5: `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            description,
            "invalid_request",
        )
    }

    pub fn into_response_with_id(self, request_id: &str) -> Response {
        let (policy, failed_conditions) = match self.nearest {
            Some(nearest) => {
                let (policy, failed) = *nearest;
                (Some(policy), Some(failed))
            }
            None => (None, None),
        };
        let body = ErrorResponse {
            error: self.error.to_owned(),
            error_description: self.description,
            request_id: request_id.to_owned(),
            policy,
            failed_conditions,
        };
        let mut headers = no_store_headers(request_id);
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        (self.status, headers, axum::Json(body)).into_response()
    }
}

impl From<ExchangeError> for TokenError {
    fn from(err: ExchangeError) -> Self {
        // The error code is the refusal's own; this maps it to a status and a label.
        let code = err.error_code();
        match err {
            ExchangeError::InvalidGrant(text) => {
                Self::new(StatusCode::BAD_REQUEST, code, text, "invalid_grant")
            }
            ExchangeError::InvalidTarget(text) => {
                Self::new(StatusCode::BAD_REQUEST, code, text, "invalid_target")
            }
            ExchangeError::InvalidRequest(text) => Self::invalid_request(text),
            ExchangeError::AccessDenied(Denial {
                description,
                nearest,
            }) => {
                let mut error =
                    Self::new(StatusCode::FORBIDDEN, code, description, "access_denied");
                if let Some((policy, failures)) = nearest {
                    let failed = failures
                        .into_iter()
                        .map(|c| FailedCondition {
                            claim: c.claim.to_string(),
                            expected: c.expected.to_string(),
                            actual: c.actual,
                        })
                        .collect();
                    error.nearest = Some(Box::new((policy, failed)));
                }
                error
            }
            ExchangeError::InvalidScope(text) => {
                Self::new(StatusCode::BAD_REQUEST, code, text, "invalid_scope")
            }
            ExchangeError::UpstreamFailed(description) => Self::new(
                StatusCode::BAD_GATEWAY,
                code,
                description,
                "upstream_failed",
            ),
            ExchangeError::Unavailable {
                description,
                retry_after,
            } => {
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    description,
                    "unavailable",
                );
                error.retry_after = Some(retry_after);
                error
            }
        }
    }
}

/// `Cache-Control: no-store`, `Pragma: no-cache` and `X-Request-Id`, on every `/token` answer.
pub fn no_store_headers(request_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    headers
}
