//! `tokenmint exchange`: the client. Finds the CI job's OIDC token, exchanges it at
//! `{url}/token` (RFC 8693) and prints the result for a CI system to use; reads the
//! service's answers with the server's own types (`edges::http::wire`).
//!
//! Promises, shared with `clients/tokenmint-exchange.sh`:
//! - a token is never taken from the command line, and never printed on stderr (only its
//!   SHA-256, which the audit trail records too, and the request id);
//! - `http://` is refused unless the host is a loopback one, before any token is read;
//! - `--format env` prints `export NAME='<token>'` only for a NAME matching
//!   `[A-Za-z_][A-Za-z0-9_]*` and a token of `[A-Za-z0-9._~+/=-]` (so the quoting is
//!   sound); otherwise exit 2 with nothing on stdout;
//! - 429, 5xx and connection failures are retried with jittered backoff, waiting at least
//!   what `Retry-After` asks (a failed exchange does not use the CI token up); redirects
//!   are never followed (a 307 would resend the CI token elsewhere).
//!
//! Exit status: 0 printed; 1 the exchange (or the GitHub OIDC request) failed; 2 refused
//! before or instead of printing.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::{Host, Url};

use crate::adapters::bounded_body::{BodyError, read_limited};
use crate::edges::http::token::{
    GRANT_TYPE_TOKEN_EXCHANGE, MAX_SUBJECT_TOKEN_BYTES, TOKEN_TYPE_ID_TOKEN,
};
use crate::edges::http::wire::{ErrorResponse, TokenResponse};
use crate::trust::audit::token_sha256;

/// Prefix of every line this command writes on stderr.
const PROG: &str = "tokenmint exchange";
pub const USER_AGENT: &str = concat!("tokenmint-exchange/", env!("CARGO_PKG_VERSION"));
/// The most retries `--retries` may ask for.
pub const MAX_RETRIES: u32 = 10;
/// A longer `Retry-After` ends the retries rather than stall the job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`], then ±50 % jitter.
const BASE_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(16);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request, answer included (a remote target's exchange may take a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read, from the service or the runner.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The variables the CI token may come from, in the order they are tried.
pub const GITHUB_REQUEST_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const GITHUB_REQUEST_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
pub const TOKEN_VAR: &str = "TOKENMINT_ID_TOKEN";
pub const TERRAFORM_VAR: &str = "TFC_WORKLOAD_IDENTITY_TOKEN";

/// What to print on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The service's answer, as one line of JSON.
    Json,
    /// `export NAME='<token>'`, for `eval` (needs `--export NAME`).
    Env,
    /// The bare access token.
    Token,
}

/// The command's options, as parsed by `edges::cli`.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    pub audience: String,
    pub scope: Option<String>,
    pub policy: Option<String>,
    /// `-` reads stdin.
    pub token_file: Option<PathBuf>,
    /// The audience of a GitHub OIDC token; default the URL without a trailing slash.
    pub oidc_audience: Option<String>,
    /// `None`: `env` with `--export`, else `json`.
    pub format: Option<Format>,
    pub export: Option<String>,
    pub retries: u32,
}

/// Why the command stopped without printing a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Refused: bad usage, an insecure URL, a name or token outside the allowed characters,
    /// no CI token. Exit 2.
    #[error("{0}")]
    Refused(String),
    /// The exchange, or getting the CI token, failed. Exit 1.
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Refused(_) => ExitCode::from(2),
            Self::Failed(_) => ExitCode::from(1),
        }
    }
}

fn refused(text: impl Into<String>) -> ClientError {
    ClientError::Refused(text.into())
}

fn failed(text: impl Into<String>) -> ClientError {
    ClientError::Failed(text.into())
}

fn say(text: &str) {
    eprintln!("{PROG}: {text}");
}

/// Runs the command: stdout gets the result and nothing else; stderr one line per step.
pub fn main(options: Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            say(&format!("starting the async runtime: {err}"));
            return ExitCode::from(1);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    match runtime.block_on(run(&options, &env)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            say(&err.to_string());
            err.exit_code()
        }
    }
}

/// Everything but printing the result: returns what goes to stdout.
pub async fn run(
    options: &Options,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ClientError> {
    let plan = Plan::check(options)?;
    let on_github = env("GITHUB_ACTIONS").as_deref() == Some("true");
    let source = choose_source(options.token_file.as_deref(), env)?;
    say(&format!("reading the CI token from {}", source.describe()));
    let ci_token = match source {
        Source::File(path) => read_token_file(&path)?,
        Source::GitHub {
            request_url,
            request_token,
        } => {
            let audience = options
                .oidc_audience
                .clone()
                .unwrap_or_else(|| options.url.trim_end_matches('/').to_owned());
            github_token(&request_url, &request_token, &audience, plan.retries).await?
        }
        Source::Variable(name, value) => {
            if value.expose_secret().len() > MAX_SUBJECT_TOKEN_BYTES {
                return Err(refused(format!(
                    "${name} is longer than {MAX_SUBJECT_TOKEN_BYTES} bytes; it is not a CI token"
                )));
            }
            value
        }
    };
    if !valid_token(ci_token.expose_secret()) {
        return Err(refused(
            "the CI token has characters outside [A-Za-z0-9._~+/=-]; it is not a CI token (not shown)",
        ));
    }
    mask_on_github(on_github, ci_token.expose_secret());
    let answer = exchange(&plan, options, &ci_token).await?;
    if on_github {
        // A mask covers one line: a token with a line break (or anything outside the
        // token alphabet) could not be masked, so it is not printed.
        if !valid_token(answer.access_token.expose()) {
            return Err(refused(
                "the service's access token has characters outside [A-Za-z0-9._~+/=-], so the \
                 job log could not mask it; not printed",
            ));
        }
        mask_on_github(on_github, answer.access_token.expose());
    }
    let hash = token_sha256(answer.access_token.expose());
    say(&format!(
        "got a token for target {:?} from policy {:?}, scope {:?}, expiring in {}s",
        sanitize(&answer.target),
        sanitize(&answer.policy),
        sanitize(&answer.scope),
        answer.expires_in
    ));
    say(&format!("request_id: {}", sanitize(&answer.request_id)));
    say(&format!("token_sha256: {hash}"));
    render(&answer, plan.format, options.export.as_deref())
}

/// The options, checked before any token is read or any request is made.
struct Plan {
    endpoint: Url,
    format: Format,
    retries: u32,
}

impl Plan {
    fn check(options: &Options) -> Result<Plan, ClientError> {
        let format = match (options.format, &options.export) {
            (None, Some(_)) | (Some(Format::Env), Some(_)) => Format::Env,
            (Some(Format::Env), None) => {
                return Err(refused("--format env needs --export NAME"));
            }
            (Some(format), Some(_)) => {
                return Err(refused(format!(
                    "--export is for --format env, not --format {}",
                    format_name(format)
                )));
            }
            (Some(format), None) => format,
            (None, None) => Format::Json,
        };
        if let Some(name) = &options.export
            && !valid_name(name)
        {
            return Err(refused(format!(
                "--export {:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                sanitize(name)
            )));
        }
        if options.retries > MAX_RETRIES {
            return Err(refused(format!(
                "--retries must be a number from 0 to {MAX_RETRIES}"
            )));
        }
        if options.audience.is_empty() {
            return Err(refused("--audience must not be empty"));
        }
        let base = check_url(&options.url, "--url", false)?;
        let endpoint = Url::parse(&format!("{}/token", base.as_str().trim_end_matches('/')))
            .map_err(|err| refused(format!("--url: {err}")))?;
        Ok(Plan {
            endpoint,
            format,
            retries: options.retries,
        })
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Env => "env",
        Format::Token => "token",
    }
}

/// `https://`, or `http://` to a loopback host; no credentials; a query only if `query`.
fn check_url(text: &str, what: &str, query: bool) -> Result<Url, ClientError> {
    let url = Url::parse(text).map_err(|err| refused(format!("{what} is not a URL: {err}")))?;
    let host = url
        .host()
        .ok_or_else(|| refused(format!("{what} has no host")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused(format!(
            "{what} must not carry credentials: they would show in ps and in logs"
        )));
    }
    if !query && (url.query().is_some() || url.fragment().is_some()) {
        return Err(refused(format!(
            "{what} must not have a query or a fragment: give the service's base URL"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&host) => Ok(url),
        "http" => Err(refused(format!(
            "refusing http:// to {host}, which is not a loopback host: the CI token and the access token would cross the network in clear text; use https://"
        ))),
        _ => Err(refused(format!(
            "{what} must start with https:// (or http:// to a loopback host)"
        ))),
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name `export` accepts as it is.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Non-empty and `[A-Za-z0-9._~+/=-]` only: what JWTs and OAuth tokens are made of, and
/// nothing a shell treats specially inside single quotes.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b))
}

/// Service-supplied text for stderr: every control character becomes `?`, so that nothing
/// the service says can drive the terminal or forge CI log commands on a new line.
fn sanitize(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    // GitHub's runner acts on the legacy `##[command]` anywhere in a line of stdout or
    // stderr; a server's `##[stop-commands]` would turn every later `::add-mask::` into a
    // plain line that prints the token.
    while clean.contains("##[") {
        clean = clean.replace("##[", "# #[");
    }
    clean
}

/// In a GitHub Actions job, asks the runner to mask `token` in the log from now on. On
/// stderr: stdout is the command's result, and the runner reads commands on both.
fn mask_on_github(on_github: bool, token: &str) {
    if on_github {
        eprintln!("::add-mask::{token}");
    }
}

/// Where the CI token comes from.
#[derive(Debug)]
enum Source {
    /// `--token-file` (`-`: stdin).
    File(PathBuf),
    /// The GitHub Actions job: request a token from the runner.
    GitHub {
        request_url: String,
        request_token: SecretString,
    },
    /// `TOKENMINT_ID_TOKEN` or `TFC_WORKLOAD_IDENTITY_TOKEN`.
    Variable(&'static str, SecretString),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Self::File(path) if path.as_os_str() == "-" => {
                "standard input (--token-file -)".to_owned()
            }
            Self::File(path) => format!("--token-file {}", shown_path(path)),
            Self::GitHub { .. } => format!("the GitHub Actions runner (${GITHUB_REQUEST_URL})"),
            Self::Variable(name, _) => format!("${name}"),
        }
    }
}

/// The first source present, in the documented order; a variable that is set but empty
/// counts as absent.
fn choose_source(
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, ClientError> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(path) = token_file {
        return Ok(Source::File(path.to_owned()));
    }
    if let (Some(request_url), Some(request_token)) =
        (var(GITHUB_REQUEST_URL), var(GITHUB_REQUEST_TOKEN))
    {
        return Ok(Source::GitHub {
            request_url,
            request_token: SecretString::from(request_token),
        });
    }
    for name in [TOKEN_VAR, TERRAFORM_VAR] {
        if let Some(value) = var(name) {
            return Ok(Source::Variable(name, SecretString::from(value)));
        }
    }
    Err(refused(format!(
        "no CI token found; it is read, in this order, from: --token-file FILE (- for stdin); \
         the GitHub Actions runner (${GITHUB_REQUEST_URL} and ${GITHUB_REQUEST_TOKEN}: give the \
         job `permissions: id-token: write`; pull requests from forks get no token); \
         ${TOKEN_VAR} (e.g. GitLab's id_tokens:); ${TERRAFORM_VAR} (HCP Terraform). \
         A token is never taken from the command line"
    )))
}

/// A path for messages, unless it looks like a token given by mistake.
fn shown_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.len() >= 40 && !text.contains('/') && valid_token(&text) {
        "(a path that looks like a token, not shown: give the name of a file)".to_owned()
    } else {
        format!("{:?}", sanitize(&text))
    }
}

/// The file's content (or stdin's, for `-`) less one trailing newline: at most
/// [`MAX_SUBJECT_TOKEN_BYTES`], UTF-8, not empty.
pub fn read_token_file(path: &Path) -> Result<SecretString, ClientError> {
    let limit = (MAX_SUBJECT_TOKEN_BYTES + 2) as u64;
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(limit + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
    };
    let what = if path.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        format!("--token-file {}", shown_path(path))
    };
    read.map_err(|err| failed(format!("cannot read {what}: {err}")))?;
    if bytes.len() as u64 > limit {
        return Err(refused(format!(
            "{what} is longer than {MAX_SUBJECT_TOKEN_BYTES} bytes; it is not a CI token"
        )));
    }
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| refused(format!("{what} is not text; it is not a CI token")))?;
    if text.is_empty() {
        return Err(refused(format!("{what} is empty")));
    }
    Ok(SecretString::from(text))
}

/// A client for one URL: rustls with the system's roots, no redirects, bounded; proxies
/// from the environment (`HTTPS_PROXY`, `NO_PROXY`), except for a loopback host.
fn client_for(url: &Url) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if url.host().is_some_and(|host| is_loopback(&host)) {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|err| failed(format!("building the HTTP client: {err}")))
}

/// One answer: status, headers, body (at most [`MAX_ANSWER_BYTES`]).
struct Answer {
    status: reqwest::StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// What one attempt came to.
enum Attempt {
    Answered(Answer),
    /// A connection failure, timeout or broken body: retryable.
    Network(String),
}

async fn attempt(request: reqwest::RequestBuilder) -> Result<Attempt, ClientError> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) if err.is_builder() => {
            return Err(failed(format!(
                "building the request: {}",
                one_line(&err.without_url())
            )));
        }
        Err(err) => return Ok(Attempt::Network(one_line(&err.without_url()))),
    };
    let status = response.status();
    let headers = response.headers().clone();
    match read_limited(response, MAX_ANSWER_BYTES).await {
        Ok(body) => Ok(Attempt::Answered(Answer {
            status,
            headers,
            body,
        })),
        Err(BodyError::TooLarge) => Err(failed(format!(
            "the answer (HTTP {status}) is larger than {MAX_ANSWER_BYTES} bytes"
        ))),
        Err(BodyError::Network(err)) => Ok(Attempt::Network(one_line(&err.without_url()))),
        Err(BodyError::Other(text)) => Ok(Attempt::Network(text)),
    }
}

/// An error and its causes on one line (reqwest's own text names only the outermost).
fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Sends `build()` until it gets an answer that is not 429 or 5xx, or attempts run out;
/// `what` names the request in messages. A final 429/5xx is returned as an answer.
async fn with_retries(
    what: &str,
    retries: u32,
    build: impl Fn() -> reqwest::RequestBuilder,
    describe: impl Fn(&Answer) -> String,
) -> Result<Answer, ClientError> {
    let attempts = retries + 1;
    for number in 1..=attempts {
        let (problem, asked) = match attempt(build()).await? {
            Attempt::Answered(answer)
                if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || answer.status.is_server_error() =>
            {
                let problem = describe(&answer);
                let asked = retry_after(&answer.headers, std::time::SystemTime::now());
                if number == attempts {
                    return Ok(answer);
                }
                (problem, asked)
            }
            Attempt::Answered(answer) => return Ok(answer),
            Attempt::Network(text) => {
                let problem = format!("{what} could not be completed: {text}");
                if number == attempts {
                    return Err(failed(format!(
                        "{problem} (after {attempts} attempt{})",
                        if attempts == 1 { "" } else { "s" }
                    )));
                }
                (problem, None)
            }
        };
        let wait = match asked {
            Some(asked) if asked > MAX_RETRY_AFTER => {
                return Err(failed(format!(
                    "{problem}; the service asks to wait {}s (Retry-After), more than {}s: giving up",
                    asked.as_secs(),
                    MAX_RETRY_AFTER.as_secs()
                )));
            }
            // At least what was asked, plus up to 10 % so that jobs told the same do not
            // all come back at once.
            Some(asked) => asked + asked.mul_f64(rand::rng().random_range(0.0..0.1)),
            None => backoff(number),
        };
        say(&format!(
            "{problem}; retrying in {:.1}s (attempt {} of {attempts})",
            wait.as_secs_f64(),
            number + 1
        ));
        tokio::time::sleep(wait).await;
    }
    unreachable!("the last attempt returns")
}

/// Jittered exponential backoff before the retry after attempt `number`: 1 s, 2 s, 4 s,
/// ... at most 16 s, each ±50 %.
fn backoff(number: u32) -> Duration {
    let base = BASE_BACKOFF
        .saturating_mul(2u32.saturating_pow(number.saturating_sub(1)))
        .min(MAX_BACKOFF);
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// `Retry-After` as seconds or an HTTP date (a date in the past: no wait).
fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The answer's request id: the body's, else the `X-Request-Id` header's.
fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(sanitize)
}

/// A failed answer of the service, for stderr: its error, description and request id,
/// and for a bound caller the nearest policy's failing conditions.
fn describe_refusal(answer: &Answer) -> String {
    let status = answer.status.as_u16();
    match serde_json::from_slice::<ErrorResponse>(&answer.body) {
        Ok(error) => {
            let mut text = format!(
                "HTTP {status} {}: {} (request_id: {})",
                sanitize(&error.error),
                sanitize(&error.error_description),
                sanitize(&error.request_id)
            );
            if let Some(policy) = &error.policy {
                let _ = write!(text, "\n{PROG}: nearest policy: {:?}", sanitize(policy));
            }
            for condition in error.failed_conditions.iter().flatten() {
                let _ = write!(
                    text,
                    "\n{PROG}:   {}: expected {}, actual {}",
                    sanitize(&condition.claim),
                    sanitize(&condition.expected),
                    condition
                        .actual
                        .as_deref()
                        .map_or_else(|| "(absent)".to_owned(), sanitize)
                );
            }
            text
        }
        // Never the body itself: something in front of the service might echo the request.
        Err(_) => {
            let content_type = answer
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| "none".to_owned(), sanitize);
            let mut text = format!(
                "HTTP {status}, and the body is not a tokenmint error (content-type: {content_type}; not shown)"
            );
            if let Some(id) = header_request_id(&answer.headers) {
                let _ = write!(text, " (request_id: {id})");
            }
            text
        }
    }
}

/// `POST {url}/token`, retried; the success body, or the refusal as an error.
async fn exchange(
    plan: &Plan,
    options: &Options,
    ci_token: &SecretString,
) -> Result<TokenResponse, ClientError> {
    let client = client_for(&plan.endpoint)?;
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
        .append_pair("subject_token_type", TOKEN_TYPE_ID_TOKEN)
        .append_pair("audience", &options.audience);
    if let Some(scope) = &options.scope {
        form.append_pair("scope", scope);
    }
    if let Some(policy) = &options.policy {
        form.append_pair("policy", policy);
    }
    form.append_pair("subject_token", ci_token.expose_secret());
    let body = SecretString::from(form.finish());
    let build = || {
        client
            .post(plan.endpoint.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(body.expose_secret().to_owned())
    };
    let answer = with_retries(
        &format!("POST {}", plan.endpoint),
        plan.retries,
        build,
        describe_refusal,
    )
    .await?;
    if answer.status.is_redirection() {
        return Err(failed(format!(
            "POST {} answered with a redirect (HTTP {}); give the service's base URL as --url",
            plan.endpoint,
            answer.status.as_u16()
        )));
    }
    if answer.status != reqwest::StatusCode::OK {
        return Err(failed(describe_refusal(&answer)));
    }
    serde_json::from_slice::<TokenResponse>(&answer.body).map_err(|err| {
        let id = header_request_id(&answer.headers)
            .map(|id| format!(" (request_id: {id})"))
            .unwrap_or_default();
        // serde's message can quote the value (a token in the wrong member): only its kind
        // and position are shown.
        failed(format!(
            "HTTP 200, but the body is not a tokenmint token response: {} error at line {} \
             column {}{id}",
            match err.classify() {
                serde_json::error::Category::Io => "an I/O",
                serde_json::error::Category::Syntax => "a JSON syntax",
                serde_json::error::Category::Data => "a member type or name",
                serde_json::error::Category::Eof => "an unexpected end",
            },
            err.line(),
            err.column()
        ))
    })
}

/// `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with the runner's bearer token, as
/// `actions/core`'s `getIDToken` does.
async fn github_token(
    request_url: &str,
    request_token: &SecretString,
    audience: &str,
    retries: u32,
) -> Result<SecretString, ClientError> {
    let separator = if request_url.contains('?') { '&' } else { '?' };
    let encoded = percent_encode(audience);
    let text = format!("{request_url}{separator}audience={encoded}");
    let url = check_url(&text, &format!("${GITHUB_REQUEST_URL}"), true)?;
    let client = client_for(&url)?;
    let mut authorization =
        HeaderValue::from_str(&format!("Bearer {}", request_token.expose_secret())).map_err(
            |_| {
                refused(format!(
                    "${GITHUB_REQUEST_TOKEN} is not a valid header value"
                ))
            },
        )?;
    authorization.set_sensitive(true);
    let build = || {
        client
            .get(url.clone())
            .header(header::AUTHORIZATION, authorization.clone())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
    };
    // The URL's query carries no secret, but it is long: name the host only.
    let what = format!(
        "the GitHub OIDC token request to {}",
        url.host_str().unwrap_or("?")
    );
    let status_of = |answer: &Answer| format!("{what} failed with HTTP {}", answer.status.as_u16());
    let answer = with_retries(&what, retries, build, &status_of).await?;
    if !answer.status.is_success() {
        let hint = match answer.status.as_u16() {
            401 | 403 => {
                "; the job needs `permissions: id-token: write` (pull requests from forks get no token)"
            }
            _ => "",
        };
        return Err(failed(format!("{}{hint}", status_of(&answer))));
    }
    #[derive(Deserialize)]
    struct IdToken {
        value: String,
    }
    let token: IdToken = serde_json::from_slice(&answer.body).map_err(|_| {
        failed(format!(
            "{what}: the answer is not a JSON object with a string \"value\""
        ))
    })?;
    Ok(SecretString::from(token.value))
}

/// Every byte but RFC 3986's unreserved ones as `%XX` (as `encodeURIComponent` does for
/// what an audience holds; a space is `%20`, never `+`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// What goes to stdout for `format`.
fn render(
    answer: &TokenResponse,
    format: Format,
    export: Option<&str>,
) -> Result<String, ClientError> {
    let token = answer.access_token.expose();
    let check_token = || {
        if valid_token(token) {
            Ok(())
        } else {
            Err(refused(
                "the service returned an access token with characters outside [A-Za-z0-9._~+/=-]; not printing it",
            ))
        }
    };
    match format {
        Format::Json => {
            let mut line = serde_json::to_string(answer)
                .map_err(|err| failed(format!("serialising the answer: {err}")))?;
            line.push('\n');
            Ok(line)
        }
        Format::Token => {
            check_token()?;
            Ok(format!("{token}\n"))
        }
        Format::Env => {
            check_token()?;
            let name = export.ok_or_else(|| refused("--format env needs --export NAME"))?;
            if !valid_name(name) {
                return Err(refused("--export is not a variable name"));
            }
            Ok(format!("export {name}='{token}'\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn options(url: &str) -> Options {
        Options {
            url: url.to_owned(),
            audience: "dev-api".to_owned(),
            scope: None,
            policy: None,
            token_file: None,
            oidc_audience: None,
            format: None,
            export: None,
            retries: 3,
        }
    }

    fn refusal(result: Result<Plan, ClientError>) -> String {
        match result {
            Err(ClientError::Refused(text)) => text,
            Err(other) => panic!("not a refusal: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn names_and_tokens_are_checked_like_the_sh_client() {
        for good in ["A", "_", "AUTH0_API_TOKEN", "a1_b2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A;rm", "É", "A\n"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_token("eyJhbGciOi.J9-_~+/=.x"));
        for bad in ["", "a b", "a'b", "a\nb", "a$b", "a\"b", "a`b", "é"] {
            assert!(!valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn plain_http_is_for_loopback_hosts_only() {
        for good in [
            "https://sts.example.com",
            "https://sts.example.com/base/",
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://[::1]:9",
            "http://localhost:8080/",
        ] {
            assert!(Plan::check(&options(good)).is_ok(), "{good}");
        }
        let text = refusal(Plan::check(&options("http://sts.example.com")));
        assert!(
            text.starts_with("refusing http:// to sts.example.com"),
            "{text}"
        );
        for bad in [
            "ftp://x",
            "sts.example.com",
            "https://u:p@sts.example.com",
            "https://sts.example.com/?a=b",
            "http://10.0.0.1",
            "http://localhost.example.com",
        ] {
            refusal(Plan::check(&options(bad)));
        }
        let plan = Plan::check(&options("https://sts.example.com/base//")).expect("ok");
        assert_eq!(plan.endpoint.as_str(), "https://sts.example.com/base/token");
    }

    #[test]
    fn the_format_follows_export() {
        let mut o = options("https://sts.example.com");
        assert_eq!(Plan::check(&o).expect("ok").format, Format::Json);
        o.export = Some("TOKEN".to_owned());
        assert_eq!(Plan::check(&o).expect("ok").format, Format::Env);
        o.format = Some(Format::Token);
        assert!(refusal(Plan::check(&o)).contains("--export is for --format env"));
        o.format = Some(Format::Env);
        o.export = None;
        assert_eq!(refusal(Plan::check(&o)), "--format env needs --export NAME");
        o.export = Some("1BAD".to_owned());
        assert!(refusal(Plan::check(&o)).contains("is not a variable name"));
        o.export = Some("GOOD".to_owned());
        o.retries = 11;
        assert!(refusal(Plan::check(&o)).contains("--retries"));
    }

    #[test]
    fn sources_are_tried_in_order_and_empty_variables_are_absent() {
        let all: HashMap<&str, &str> = [
            (GITHUB_REQUEST_URL, "https://runner/token?api-version=2.0"),
            (GITHUB_REQUEST_TOKEN, "runner-secret"),
            (TOKEN_VAR, "from.tokenmint.var"),
            (TERRAFORM_VAR, "from.tfc.var"),
        ]
        .into_iter()
        .collect();
        let env_of = |vars: HashMap<&'static str, &'static str>| {
            move |name: &str| vars.get(name).map(|v| (*v).to_owned())
        };
        let pick = |file: Option<&Path>, vars: HashMap<&'static str, &'static str>| {
            choose_source(file, &env_of(vars))
        };
        assert!(matches!(
            pick(Some(Path::new("-")), all.clone()),
            Ok(Source::File(path)) if path == Path::new("-")
        ));
        assert!(matches!(pick(None, all.clone()), Ok(Source::GitHub { .. })));
        let mut vars = all.clone();
        vars.insert(GITHUB_REQUEST_TOKEN, "");
        assert!(matches!(
            pick(None, vars.clone()),
            Ok(Source::Variable(TOKEN_VAR, _))
        ));
        vars.insert(TOKEN_VAR, "");
        assert!(matches!(
            pick(None, vars.clone()),
            Ok(Source::Variable(TERRAFORM_VAR, _))
        ));
        vars.remove(TERRAFORM_VAR);
        let Err(ClientError::Refused(text)) = pick(None, vars) else {
            panic!("no source is a refusal");
        };
        for source in ["--token-file", GITHUB_REQUEST_URL, TOKEN_VAR, TERRAFORM_VAR] {
            assert!(text.contains(source), "{text}");
        }
    }

    #[test]
    fn a_path_that_looks_like_a_token_is_not_shown() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUifQ.c2lnbmF0dXJl";
        assert!(!shown_path(Path::new(jwt)).contains("eyJ"));
        assert_eq!(shown_path(Path::new("/run/ci/token")), "\"/run/ci/token\"");
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&later).expect("header"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&earlier).expect("header"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for number in 1..=8 {
            let base = (BASE_BACKOFF * 2u32.pow(number - 1)).min(MAX_BACKOFF);
            let wait = backoff(number);
            assert!(
                wait >= base / 2 && wait <= base * 3 / 2,
                "{number}: {wait:?}"
            );
        }
    }

    #[test]
    fn a_bound_denial_shows_the_nearest_policy_and_its_failing_conditions() {
        let body = serde_json::json!({
            "error": "access_denied",
            "error_description": "policy \"deploy\" does not match",
            "request_id": "r-1",
            "policy": "deploy",
            "failed_conditions": [
                {"claim": "ref", "expected": "\"refs/heads/main\"", "actual": "\"refs/heads/x\""},
                {"claim": "environment", "expected": "\"production\"", "actual": null},
            ],
        });
        let answer = Answer {
            status: reqwest::StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: body.to_string().into(),
        };
        assert_eq!(
            describe_refusal(&answer),
            "HTTP 403 access_denied: policy \"deploy\" does not match (request_id: r-1)\n\
             tokenmint exchange: nearest policy: \"deploy\"\n\
             tokenmint exchange:   ref: expected \"refs/heads/main\", actual \"refs/heads/x\"\n\
             tokenmint exchange:   environment: expected \"production\", actual (absent)"
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("r-2"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let answer = Answer {
            status: reqwest::StatusCode::BAD_GATEWAY,
            headers,
            body: "<html>subject_token=eyJ...</html>".into(),
        };
        assert_eq!(
            describe_refusal(&answer),
            "HTTP 502, and the body is not a tokenmint error (content-type: text/html; not shown) (request_id: r-2)"
        );
    }

    #[test]
    fn audiences_are_percent_encoded() {
        assert_eq!(
            percent_encode("https://sts.example.com/a b&c~"),
            "https%3A%2F%2Fsts.example.com%2Fa%20b%26c~"
        );
    }

    #[test]
    fn service_text_cannot_start_a_line_on_stderr() {
        assert_eq!(sanitize("a\nb\x1b[31m"), "a?b?[31m");
    }
}
