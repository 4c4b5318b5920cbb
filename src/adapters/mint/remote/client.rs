//! One client-credentials request to a remote token endpoint, with its time budget,
//! retries and rate-limit waits, and the parsing of the endpoint's answer.
//!
//! Fault handling: 5xx, 408 and network errors are retried at most twice with jittered
//! backoff; a 429 is retried after its `Retry-After` / `X-RateLimit-Reset` when that
//! fits the budget, else reported with the wait; everything else fails at once. No
//! attempt outlives the target's `timeout`, counted from the first attempt.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use std::sync::Arc;

use super::UpstreamObserver;
use super::credentials::{ClientCredentials, JWT_BEARER_ASSERTION};
use crate::adapters::bounded_body::{BodyError, read_limited};
use crate::config::{AudienceParam, RemoteTargetConfig, SecretMethod};
use crate::trust::audit::Reason;
use crate::trust::verify::unverified::upstream_token_claims;

/// At most this many HTTP attempts per exchange (the first and two retries).
pub const MAX_ATTEMPTS: u32 = 3;
/// The largest answer read from a token endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// First retry backoff; doubled per retry and jittered by ±50 %.
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Wait assumed after a 429 that says nothing about when to come back.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// The longest wait a 429 can ask of us (and that we pass on in `Retry-After`).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);
/// An attempt is started only with at least this much of the budget left.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);
/// Longest text from the endpoint copied into a log line or audit record.
const MAX_DETAIL: usize = 300;

/// Error codes a caller may see in a 502's description: RFC 6749 §5.2, RFC 8693 and
/// RFC 6750, and the ones Auth0 answers with.
const KNOWN_ERROR_CODES: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
    "too_many_requests",
];

/// A token the endpoint issued, as it stated it.
pub struct EndpointToken {
    pub access_token: SecretString,
    /// Seconds the token lives as the answer states it: `expires_in`, else the token's `exp`.
    pub expires_in: u64,
    /// The token's own lifetime, when it is a JWT with `exp`: `exp - iat`, or `exp - now`
    /// without `iat`.
    pub exp_in: Option<u64>,
    /// The granted scope as the answer states it: the `scope` field, else the token's
    /// claim; `None` when neither says. Returned to the caller unchanged.
    pub scope: Option<String>,
    /// The token's own `scope` (or `scp`) claim, when it is a JWT that carries one.
    pub claim_scope: Option<String>,
    /// The token's `jti` claim, when it is a JWT that has one.
    pub jti: Option<String>,
    /// The token is a compact JWS with a JSON payload.
    pub is_jwt: bool,
    /// HTTP attempts made.
    pub attempts: u32,
}

impl EndpointToken {
    /// The longest life any statement gives the token: `expires_in` or its own `exp`.
    pub fn longest_life(&self) -> u64 {
        self.exp_in
            .map_or(self.expires_in, |exp| exp.max(self.expires_in))
    }
}

/// Clock difference allowed when judging whether a target's token has already expired.
const TOKEN_CLOCK_LEEWAY_SECS: i64 = 60;
/// Lifetimes beyond this are nonsense (Auth0's own maximum is 30 days).
const MAX_STATED_LIFETIME: u64 = 10 * 365 * 24 * 3600;

/// Why no usable answer came. `public` is for the caller and names no secret and no
/// text of the endpoint's; `detail` goes to the log and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// 502: the endpoint failed, refused, or answered wrongly.
    Failed {
        reason: Reason,
        public: String,
        detail: String,
    },
    /// 503: the endpoint rate-limits us beyond the budget; retry after this many seconds.
    RateLimited { retry_after: u64, detail: String },
}

/// What one attempt came to.
enum Attempt {
    Token(EndpointToken),
    /// Worth another attempt after `wait` (the backoff when `None`); `error` if not.
    Retry {
        wait: Option<Duration>,
        error: EndpointError,
    },
    Fatal(EndpointError),
}

impl Attempt {
    /// The metrics label of an attempt's outcome.
    fn label(&self) -> &'static str {
        let reason = match self {
            Attempt::Token(_) => return "ok",
            Attempt::Retry {
                error: EndpointError::RateLimited { .. },
                ..
            }
            | Attempt::Fatal(EndpointError::RateLimited { .. }) => return "rate_limited",
            Attempt::Retry {
                error: EndpointError::Failed { reason, .. },
                ..
            }
            | Attempt::Fatal(EndpointError::Failed { reason, .. }) => *reason,
        };
        match reason {
            Reason::UpstreamError => "server_error",
            Reason::UpstreamUnreachable => "network_error",
            Reason::UpstreamTimeout => "timeout",
            Reason::UpstreamMalformed => "malformed",
            _ => "refused",
        }
    }
}

/// Calls one target's token endpoint with the client-credentials grant.
pub struct TokenEndpointClient {
    target: String,
    audience: String,
    config: RemoteTargetConfig,
    credentials: ClientCredentials,
    /// `client_secret_basic`: the `Authorization` header, built once, marked sensitive.
    basic_authorization: Option<reqwest::header::HeaderValue>,
    http: reqwest::Client,
    observer: Arc<dyn UpstreamObserver>,
}

impl TokenEndpointClient {
    /// A client with its own connection pool; redirects are never followed.
    pub fn new(
        target: &str,
        audience: &str,
        config: RemoteTargetConfig,
        credentials: ClientCredentials,
        observer: Arc<dyn UpstreamObserver>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|err| format!("building the HTTP client: {err}"))?;
        let basic_authorization = match &credentials {
            ClientCredentials::Secret {
                secret,
                method: SecretMethod::Basic,
            } => Some(basic_authorization(&config.client_id, secret)?),
            _ => None,
        };
        Ok(Self {
            target: target.to_owned(),
            audience: audience.to_owned(),
            config,
            credentials,
            basic_authorization,
            http,
            observer,
        })
    }

    pub fn config(&self) -> &RemoteTargetConfig {
        &self.config
    }

    pub fn credentials(&self) -> &ClientCredentials {
        &self.credentials
    }

    /// Requests a token for `scope` (`None`: no `scope` parameter), retrying within the
    /// target's time budget.
    pub async fn request(
        &self,
        request_id: &str,
        scope: Option<&[String]>,
    ) -> Result<EndpointToken, EndpointError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let outcome = self.attempt(request_id, scope, deadline).await;
            self.observer.attempt(
                &self.target,
                outcome.label(),
                started.elapsed().as_secs_f64(),
            );
            let (wait, error) = match outcome {
                Attempt::Token(mut token) => {
                    token.attempts = attempt;
                    return Ok(token);
                }
                Attempt::Fatal(error) => return Err(error),
                Attempt::Retry { wait, error } => (wait, error),
            };
            let wait = wait.unwrap_or_else(|| backoff(attempt));
            let left = deadline.saturating_duration_since(Instant::now());
            let fits = wait + MIN_ATTEMPT_TIME <= left;
            if attempt >= MAX_ATTEMPTS || !fits {
                return Err(error);
            }
            tracing::warn!(
                target_name = %self.target,
                request_id,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = ?error,
                "token endpoint attempt failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The form of one attempt: a fresh assertion each time.
    fn form(&self, scope: Option<&[String]>) -> Result<Vec<(&'static str, SecretString)>, String> {
        let plain = |s: &str| SecretString::from(s.to_owned());
        let mut form = vec![("grant_type", plain("client_credentials"))];
        match &self.credentials {
            ClientCredentials::Assertion(signer) => {
                form.push(("client_id", plain(&self.config.client_id)));
                form.push(("client_assertion_type", plain(JWT_BEARER_ASSERTION)));
                form.push((
                    "client_assertion",
                    signer.assertion(OffsetDateTime::now_utc())?,
                ));
            }
            ClientCredentials::Secret {
                secret,
                method: SecretMethod::Post,
            } => {
                form.push(("client_id", plain(&self.config.client_id)));
                form.push(("client_secret", secret.clone()));
            }
            ClientCredentials::Secret {
                method: SecretMethod::Basic,
                ..
            } => {}
        }
        match self.config.audience_param {
            AudienceParam::Audience => form.push(("audience", plain(&self.audience))),
            AudienceParam::Resource => form.push(("resource", plain(&self.audience))),
            AudienceParam::None => {}
        }
        if let Some(scopes) = scope {
            form.push(("scope", plain(&scopes.join(" "))));
        }
        if let Some(organization) = &self.config.organization {
            form.push(("organization", plain(organization)));
        }
        Ok(form)
    }

    async fn attempt(
        &self,
        request_id: &str,
        scope: Option<&[String]>,
        deadline: Instant,
    ) -> Attempt {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < MIN_ATTEMPT_TIME {
            return Attempt::Fatal(self.timed_out());
        }
        let form = match self.form(scope) {
            Ok(form) => form,
            Err(detail) => {
                return Attempt::Fatal(EndpointError::Failed {
                    reason: Reason::UpstreamClientError,
                    public: format!(
                        "tokenmint could not authenticate to target {:?}",
                        self.target
                    ),
                    detail,
                });
            }
        };
        let body = {
            let mut serializer = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in &form {
                serializer.append_pair(name, value.expose_secret());
            }
            SecretString::from(serializer.finish())
        };
        // Whatever the endpoint (or anything in front of it) says goes to the log and the
        // audit record: it must not be able to put our credentials there by echoing them.
        let sent = SentSecrets::of(&form, &self.credentials, self.basic_authorization.as_ref());
        let outcome = self
            .send(request_id, body, remaining, deadline, &sent)
            .await;
        sent.scrub(outcome)
    }

    /// One HTTP attempt with `body`; upstream text in errors is already scrubbed of `sent`.
    async fn send(
        &self,
        request_id: &str,
        body: SecretString,
        remaining: Duration,
        deadline: Instant,
        sent: &SentSecrets,
    ) -> Attempt {
        let mut request = self
            .http
            .post(self.config.token_endpoint.clone())
            .timeout(remaining)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                format!(
                    "tokenmint/{} (request {request_id})",
                    env!("CARGO_PKG_VERSION")
                ),
            )
            .body(body.expose_secret().to_owned());
        if let Some(authorization) = &self.basic_authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return self.network_error(&err, deadline),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_limited(response, MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Attempt::Fatal(self.malformed(format!(
                    "HTTP {status}: answer larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            Err(BodyError::Network(err)) => return self.network_error(&err, deadline),
            Err(BodyError::Other(detail)) => {
                return Attempt::Fatal(self.malformed(format!("HTTP {status}: {detail}")));
            }
        };
        if status.is_success() {
            return match parse_token_answer(&body, OffsetDateTime::now_utc(), sent) {
                Ok(token) => Attempt::Token(token),
                Err(detail) => Attempt::Fatal(self.malformed(format!("HTTP {status}: {detail}"))),
            };
        }
        self.refusal(status, &headers, &body, sent)
    }

    fn timed_out(&self) -> EndpointError {
        EndpointError::Failed {
            reason: Reason::UpstreamTimeout,
            public: format!(
                "target {:?} did not answer within {}; retry later",
                self.target,
                crate::config::format_duration(self.config.timeout)
            ),
            detail: format!(
                "no answer from {} within the {} budget",
                self.config.token_endpoint,
                crate::config::format_duration(self.config.timeout)
            ),
        }
    }

    fn network_error(&self, err: &reqwest::Error, deadline: Instant) -> Attempt {
        // A request timeout is the rest of the budget: nothing is left to retry in. A
        // connect timeout comes earlier and is retried like any network error.
        if err.is_timeout() && Instant::now() + MIN_ATTEMPT_TIME >= deadline {
            return Attempt::Fatal(self.timed_out());
        }
        Attempt::Retry {
            wait: None,
            error: EndpointError::Failed {
                reason: Reason::UpstreamUnreachable,
                public: format!("target {:?} could not be reached; retry later", self.target),
                detail: format!("{}: {}", self.config.token_endpoint, error_chain(err)),
            },
        }
    }

    fn malformed(&self, detail: String) -> EndpointError {
        EndpointError::Failed {
            reason: Reason::UpstreamMalformed,
            public: format!(
                "target {:?} answered the token request in a form tokenmint cannot use; an operator must check the target's token endpoint",
                self.target
            ),
            detail,
        }
    }

    /// A non-2xx answer.
    fn refusal(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        sent: &SentSecrets,
    ) -> Attempt {
        let (code, description) = error_fields(body);
        // Scrubbed before it is cut, so that no part of a secret survives the cut.
        let description = description.map(|text| sent.redact(&text));
        // The caller sees the endpoint's error code only when it is a known one; any other
        // word the endpoint chose (which could be anything, ours included) stays in the log.
        let code_text = code
            .as_deref()
            .filter(|code| KNOWN_ERROR_CODES.contains(code))
            .map(|c| format!(", {c}"))
            .unwrap_or_default();
        let logged_code = code
            .as_deref()
            .map(|c| format!(", {}", sent.redact(c)))
            .unwrap_or_default();
        let detail = format!(
            "HTTP {}{}: {}",
            status.as_u16(),
            logged_code,
            description
                .as_deref()
                .map(bounded)
                .unwrap_or_else(|| "(no error_description)".to_owned())
        );
        let target = &self.target;
        let status_code = status.as_u16();
        if status_code == 429 {
            let wait = rate_limit_wait(headers, OffsetDateTime::now_utc())
                .unwrap_or(DEFAULT_RATE_LIMIT_WAIT)
                .min(MAX_RATE_LIMIT_WAIT);
            let retry_after = wait.as_secs().max(1);
            return Attempt::Retry {
                wait: Some(wait),
                error: EndpointError::RateLimited {
                    retry_after,
                    detail,
                },
            };
        }
        if status.is_server_error() || status_code == 408 {
            return Attempt::Retry {
                wait: None,
                error: EndpointError::Failed {
                    reason: Reason::UpstreamError,
                    public: format!(
                        "target {target:?} failed to issue a token (HTTP {status_code}); retry later"
                    ),
                    detail,
                },
            };
        }
        let (reason, public) = match (status_code, code.as_deref()) {
            (300..=399, _) => (
                Reason::UpstreamRedirect,
                format!(
                    "target {target:?} answered the token request with a redirect (HTTP {status_code}); an operator must configure its exact token endpoint"
                ),
            ),
            (401, _) | (_, Some("invalid_client")) => (
                Reason::UpstreamUnauthorized,
                format!(
                    "target {target:?} refused tokenmint's client authentication (HTTP {status_code}{code_text}); an operator must check the target's client_id and credentials"
                ),
            ),
            (403, Some("unauthorized_client")) => (
                Reason::UpstreamForbidden,
                format!(
                    "target {target:?} does not allow the client-credentials grant for tokenmint's client (HTTP 403, unauthorized_client); an operator must enable it"
                ),
            ),
            (403, _) => (
                Reason::UpstreamForbidden,
                format!(
                    "target {target:?} refused the token request (HTTP 403{code_text}); an operator must check that tokenmint's client has a grant for audience {:?}",
                    self.audience
                ),
            ),
            _ => (
                Reason::UpstreamRejected,
                format!(
                    "target {target:?} rejected the token request (HTTP {status_code}{code_text}); an operator must check the target's configuration"
                ),
            ),
        };
        Attempt::Fatal(EndpointError::Failed {
            reason,
            public,
            detail,
        })
    }
}

/// Jittered exponential backoff before retry `attempt` (1-based): 200 ms, 400 ms, ... ±50 %.
fn backoff(attempt: u32) -> Duration {
    let base = BASE_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// How long a 429 asks us to wait: `Retry-After` (seconds or an HTTP date), else
/// `X-RateLimit-Reset` (UNIX seconds, as Auth0 sends it).
pub fn rate_limit_wait(
    headers: &reqwest::header::HeaderMap,
    now: OffsetDateTime,
) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let until = |at: OffsetDateTime| Duration::try_from(at - now).unwrap_or(Duration::ZERO);
    if let Some(text) = header("retry-after") {
        if let Ok(seconds) = text.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        // RFC 9110 §10.2.3: an HTTP date (IMF-fixdate, or the obsolete RFC 850 and
        // asctime forms).
        if let Ok(at) = httpdate::parse_http_date(text) {
            return Some(until(OffsetDateTime::from(at)));
        }
    }
    let reset = header("x-ratelimit-reset")?.parse::<i64>().ok()?;
    Some(until(OffsetDateTime::from_unix_timestamp(reset).ok()?))
}

/// `{"error","error_description"}`, or Auth0's `{"code","description"}` shape; codes
/// are kept only when they look like OAuth2 error codes.
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let text = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| map.get(*n).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let code = text(&["error", "code"]).filter(|c| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    });
    (code, text(&["error_description", "description", "message"]))
}

/// Parses a 200 answer: `access_token`, `token_type` Bearer, a positive lifetime, and
/// the scope as stated.
fn parse_token_answer(
    body: &[u8],
    now: OffsetDateTime,
    sent: &SentSecrets,
) -> Result<EndpointToken, String> {
    // Values of the answer quoted in an error are scrubbed, then cut.
    let quoted = |text: &str| bounded(&sent.redact(text));
    let map: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("the answer is JSON but not an object".to_owned()),
        Err(_) => return Err("the answer is not JSON".to_owned()),
    };
    let access_token = match map.get("access_token") {
        Some(Value::String(token))
            if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            SecretString::from(token.clone())
        }
        Some(Value::String(_)) => {
            return Err("access_token is empty or not printable ASCII".to_owned());
        }
        Some(_) => return Err("access_token is not a string".to_owned()),
        None => return Err("the answer has no access_token".to_owned()),
    };
    match map.get("token_type") {
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(kind)) => {
            return Err(format!("token_type is {:?}, not Bearer", quoted(kind)));
        }
        Some(_) => return Err("token_type is not a string".to_owned()),
        None => return Err("the answer has no token_type".to_owned()),
    }
    let claims = upstream_token_claims(access_token.expose_secret());
    let claim = |name: &str| claims.as_ref().and_then(|c| c.get(name));
    // The token's own lifetime: `exp - iat` when it says when it was issued (no clock
    // skew involved), else `exp - now`.
    let exp_in = match claim("exp") {
        None => None,
        Some(exp) => {
            let exp = exp
                .as_i64()
                .ok_or("the token's exp is not a whole number")?;
            let now = now.unix_timestamp();
            if exp
                .checked_add(TOKEN_CLOCK_LEEWAY_SECS)
                .is_none_or(|late| late <= now)
            {
                return Err("the token's exp is in the past".to_owned());
            }
            let issued = claim("iat").and_then(Value::as_i64).unwrap_or(now);
            match exp.checked_sub(issued).map(u64::try_from) {
                Some(Ok(secs)) if secs > 0 && secs <= MAX_STATED_LIFETIME => Some(secs),
                _ => {
                    return Err(format!(
                        "the token's exp {exp} gives no sane lifetime (issued at {issued})"
                    ));
                }
            }
        }
    };
    let expires_in = match map.get("expires_in") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("expires_in {n} is not a positive whole number of seconds"))?,
        Some(Value::String(s)) => s.parse::<u64>().map_err(|_| {
            format!(
                "expires_in {:?} is not a whole number of seconds",
                quoted(s)
            )
        })?,
        Some(_) => return Err("expires_in is not a number".to_owned()),
        None => exp_in.ok_or(
            "the answer has no expires_in and the token no exp: its lifetime cannot be checked",
        )?,
    };
    if expires_in == 0 {
        return Err("the token is already expired (expires_in 0)".to_owned());
    }
    if expires_in > MAX_STATED_LIFETIME {
        return Err(format!(
            "expires_in {expires_in} is beyond any sane lifetime"
        ));
    }
    let claim_scope = match claim("scope").or_else(|| claim("scp")) {
        None => None,
        Some(Value::String(scope)) => Some(scope.clone()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Some(_) => {
            return Err(
                "the token's scope claim is neither a string nor a list of strings".to_owned(),
            );
        }
    };
    // What the answer says is quoted in refusals' details: scrubbed like every other
    // word of the endpoint's (a scope carrying our secret is outside the grant anyway).
    let claim_scope = claim_scope.map(|scope| sent.redact(&scope));
    let scope = match map.get("scope") {
        Some(Value::String(scope)) => Some(sent.redact(scope)),
        Some(_) => return Err("scope is not a string".to_owned()),
        None => claim_scope.clone(),
    };
    let jti = claim("jti").and_then(Value::as_str).map(quoted);
    Ok(EndpointToken {
        access_token,
        expires_in,
        exp_in,
        scope,
        claim_scope,
        jti,
        is_jwt: claims.is_some(),
        attempts: 1,
    })
}

/// The credentials one attempt sent, in every form an endpoint could echo them: the
/// client secret and the assertion as they are and form-urlencoded, and the
/// `Authorization` header and its base64. [`SentSecrets::redact`] replaces each with `[REDACTED]`.
pub(super) struct SentSecrets(Vec<String>);

/// Form fields whose values are credentials.
const SECRET_FIELDS: &[&str] = &["client_secret", "client_assertion"];

impl SentSecrets {
    fn of(
        form: &[(&'static str, SecretString)],
        credentials: &ClientCredentials,
        authorization: Option<&reqwest::header::HeaderValue>,
    ) -> Self {
        let mut secrets = Vec::new();
        for (name, value) in form {
            if SECRET_FIELDS.contains(name) {
                let value = value.expose_secret();
                secrets.push(value.to_owned());
                secrets.push(form_encode(value));
            }
        }
        if let ClientCredentials::Secret { secret, .. } = credentials {
            let secret = secret.expose_secret();
            secrets.push(secret.to_owned());
            secrets.push(form_encode(secret));
        }
        if let Some(header) = authorization.and_then(|h| h.to_str().ok()) {
            secrets.push(header.to_owned());
            if let Some(encoded) = header.strip_prefix("Basic ") {
                secrets.push(encoded.to_owned());
            }
        }
        secrets.retain(|secret| !secret.is_empty());
        // Longest first, so a secret is replaced whole before any of its substrings.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Self(secrets)
    }

    pub(super) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[REDACTED]");
            }
        }
        text
    }

    /// The attempt with every detail text scrubbed (a last pass over what the
    /// individual paths already scrubbed).
    fn scrub(&self, attempt: Attempt) -> Attempt {
        let scrub_error = |error: EndpointError| match error {
            EndpointError::Failed {
                reason,
                public,
                detail,
            } => EndpointError::Failed {
                reason,
                public: self.redact(&public),
                detail: self.redact(&detail),
            },
            EndpointError::RateLimited {
                retry_after,
                detail,
            } => EndpointError::RateLimited {
                retry_after,
                detail: self.redact(&detail),
            },
        };
        match attempt {
            Attempt::Token(token) => Attempt::Token(token),
            Attempt::Retry { wait, error } => Attempt::Retry {
                wait,
                error: scrub_error(error),
            },
            Attempt::Fatal(error) => Attempt::Fatal(scrub_error(error)),
        }
    }
}

/// `Basic base64(client_id:secret)`, both parts form-urlencoded first (RFC 6749 §2.3.1).
fn basic_authorization(
    client_id: &str,
    secret: &SecretString,
) -> Result<reqwest::header::HeaderValue, String> {
    let user = form_encode(client_id);
    let password = form_encode(secret.expose_secret());
    let encoded = STANDARD.encode(format!("{user}:{password}"));
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            "the client credentials do not form a valid Authorization header".to_owned()
        })?;
    value.set_sensitive(true);
    Ok(value)
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn bounded(text: &str) -> String {
    if text.len() <= MAX_DETAIL {
        return text.to_owned();
    }
    format!("{}…", crate::trust::audit::prefix_at_most(text, MAX_DETAIL))
}

/// An error and its sources on one line (reqwest's own text stops at "error sending request").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_wait_prefers_retry_after_then_reset() {
        let now = OffsetDateTime::from_unix_timestamp(1_789_465_000).expect("time");
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(rate_limit_wait(&headers, now), None);
        headers.insert("x-ratelimit-reset", "1789465007".parse().expect("value"));
        assert_eq!(rate_limit_wait(&headers, now), Some(Duration::from_secs(7)));
        headers.insert("retry-after", "3".parse().expect("value"));
        assert_eq!(rate_limit_wait(&headers, now), Some(Duration::from_secs(3)));
        // 1789465000 is Tue, 15 Sep 2026 09:36:40 GMT.
        headers.insert(
            "retry-after",
            "Tue, 15 Sep 2026 09:37:00 GMT".parse().expect("value"),
        );
        assert_eq!(
            rate_limit_wait(&headers, now),
            Some(Duration::from_secs(20))
        );
        // The obsolete forms RFC 9110 still requires recipients to read.
        for obsolete in [
            "Tuesday, 15-Sep-26 09:37:00 GMT",
            "Tue Sep 15 09:37:00 2026",
        ] {
            headers.insert("retry-after", obsolete.parse().expect("value"));
            assert_eq!(
                rate_limit_wait(&headers, now),
                Some(Duration::from_secs(20)),
                "{obsolete}"
            );
        }
    }

    #[test]
    fn a_reset_in_the_past_means_no_wait() {
        let now = OffsetDateTime::from_unix_timestamp(1_789_465_000).expect("time");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-ratelimit-reset", "1640000000".parse().expect("value"));
        assert_eq!(rate_limit_wait(&headers, now), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        for _ in 0..50 {
            let first = backoff(1);
            let second = backoff(2);
            assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(300));
            assert!(second >= Duration::from_millis(200) && second < Duration::from_millis(600));
        }
    }

    #[test]
    fn answers_are_parsed_strictly() {
        let now = OffsetDateTime::now_utc();
        let nothing = SentSecrets(Vec::new());
        let ok = parse_token_answer(
            br#"{"access_token":"abc.def.ghi","token_type":"bearer","expires_in":"600","scope":"a b"}"#,
            now,
            &nothing,
        )
        .expect("valid");
        assert_eq!(ok.expires_in, 600);
        assert_eq!(ok.scope.as_deref(), Some("a b"));
        assert_eq!(ok.claim_scope, None);
        assert!(!ok.is_jwt);
        for (body, expected) in [
            (&b"<html>"[..], "the answer is not JSON"),
            (br#"[1]"#, "the answer is JSON but not an object"),
            (
                br#"{"token_type":"Bearer","expires_in":1}"#,
                "the answer has no access_token",
            ),
            (
                br#"{"access_token":"a b","token_type":"Bearer","expires_in":1}"#,
                "access_token is empty or not printable ASCII",
            ),
            (
                br#"{"access_token":"ab","expires_in":1}"#,
                "the answer has no token_type",
            ),
            (
                br#"{"access_token":"ab","token_type":"DPoP","expires_in":1}"#,
                "token_type is \"DPoP\", not Bearer",
            ),
            (
                br#"{"access_token":"ab","token_type":"Bearer","expires_in":-5}"#,
                "expires_in -5 is not a positive whole number of seconds",
            ),
            (
                br#"{"access_token":"ab","token_type":"Bearer"}"#,
                "the answer has no expires_in and the token no exp: its lifetime cannot be checked",
            ),
            (
                br#"{"access_token":"ab","token_type":"Bearer","expires_in":0}"#,
                "the token is already expired (expires_in 0)",
            ),
            (
                br#"{"access_token":"ab","token_type":"Bearer","expires_in":5,"scope":["a"]}"#,
                "scope is not a string",
            ),
            (
                br#"{"access_token":"ab","token_type":"Bearer","expires_in":1000000000000}"#,
                "expires_in 1000000000000 is beyond any sane lifetime",
            ),
        ] {
            match parse_token_answer(body, now, &nothing) {
                Ok(_) => panic!("{} parsed", String::from_utf8_lossy(body)),
                Err(err) => assert_eq!(err, expected),
            }
        }
    }

    #[test]
    fn error_codes_are_kept_only_when_code_shaped() {
        assert_eq!(
            error_fields(br#"{"error":"access_denied","error_description":"Unauthorized"}"#),
            (
                Some("access_denied".to_owned()),
                Some("Unauthorized".to_owned())
            )
        );
        assert_eq!(
            error_fields(br#"{"error":"<script>","error_description":"x"}"#),
            (None, Some("x".to_owned()))
        );
        assert_eq!(error_fields(b"oops"), (None, None));
    }
}
