//! A fake Auth0 tenant: `POST /oauth/token` (client credentials by private_key_jwt or a client
//! secret) checked as Auth0 documents it, scripted faults, a record of every request (with the
//! connection it came on) and token.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use axum::serve::{IncomingStream, Listener};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use tokenmint::adapters::signing::{SigningAlgorithm, SigningKey, jwk_thumbprint};

use crate::helpers::{now, sign_with_header};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const MANAGEMENT_API: &str = "https://acme.eu.auth0.com/api/v2/";
/// The `kid` in the header of every token the fake issues.
pub const TENANT_KID: &str = "tenant-key-1";
const NO_HEADERS: [(&str, &str); 0] = [];
const FORM: &str = "application/x-www-form-urlencoded";
// Auth0's documented limits on a client assertion (iat/nbf may be 10 s ahead).
const MAX_ASSERTION_LEN: usize = 2048;
const MAX_CLAIM_CHARS: usize = 64;
const MAX_LIFETIME_SECS: i64 = 300;
const SKEW_SECS: i64 = 10;
/// `rsaEncryption` (1.2.840.113549.1.1.1), DER-encoded.
const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

fn data_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn read_pem(file: &str) -> pem::Pem {
    pem::parse(std::fs::read(data_file(&format!("keys/{file}"))).expect("key file")).expect("PEM")
}

/// The RSA public JWK `{kty, n, e}` of a key file in `tests/data/keys/` (PKCS#8 or PKCS#1, any
/// size: read from the DER, as aws-lc refuses keys under 2048 bits).
pub fn client_public_jwk(file: &str) -> Value {
    let pem = read_pem(file);
    let rsa_private_key = match pem.tag() {
        "RSA PRIVATE KEY" => pem.contents(),
        "PRIVATE KEY" => {
            // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING key }
            let (_version, rest) = der(der(pem.contents()).0);
            let (algorithm, rest) = der(rest);
            assert_eq!(der(algorithm).0, RSA_ENCRYPTION, "{file} is not an RSA key");
            der(rest).0
        }
        other => panic!("{file}: unexpected PEM label {other}"),
    };
    // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }
    let (_version, rest) = der(der(rsa_private_key).0);
    let (n, rest) = der(rest);
    let e = der(rest).0;
    let unsigned =
        |int: &[u8]| URL_SAFE_NO_PAD.encode(&int[int.iter().take_while(|b| **b == 0).count()..]);
    json!({"kty": "RSA", "n": unsigned(n), "e": unsigned(e)})
}

/// The contents of the DER element at the start of `input`, and the bytes after it.
fn der(input: &[u8]) -> (&[u8], &[u8]) {
    let (len, start) = match input[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            let len = input[2..2 + count]
                .iter()
                .fold(0, |len, b| len << 8 | usize::from(*b));
            (len, 2 + count)
        }
    };
    (&input[start..start + len], &input[start + len..])
}

/// The RFC 7638 thumbprint of a key file's public key: the `kid` Auth0 gives a credential.
pub fn client_key_thumbprint(file: &str) -> String {
    let jwk = client_public_jwk(file);
    let member = |name: &str| jwk[name].as_str().expect("JWK member").to_owned();
    jwk_thumbprint(&[("e", &member("e")), ("kty", "RSA"), ("n", &member("n"))])
}

/// How the client authenticates (its Token Endpoint Authentication Method).
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// The registered public JWK and its alg (RS256, RS384 or PS256).
    PrivateKeyJwt {
        jwk: Value,
        alg: &'static str,
    },
    SecretPost(String),
    SecretBasic(String),
}

/// What the tenant does with a `scope` parameter (undocumented for client credentials).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeHandling {
    /// Requested ∩ grant (in grant order, maybe empty); no `scope` parameter: the whole grant.
    Narrow,
    /// Always the whole grant.
    Ignore,
    /// The whole grant, with no `scope` in the answer and no `scope` claim.
    Omit,
    /// The whole grant as the `scope` claim, with no `scope` in the answer.
    ClaimOnly,
}

/// The tenant's one application and its client grant.
#[derive(Clone, Debug)]
pub struct TenantSetup {
    pub client_id: String,
    pub auth: ClientAuth,
    /// The API the client grant is for.
    pub audience: String,
    pub grant_scopes: Vec<String>,
    /// The lifetime of issued tokens.
    pub expires_in: u64,
    pub scope_handling: ScopeHandling,
    /// The form parameter naming the API: `"audience"` (Auth0), `"resource"`, or `"none"`
    /// (a generic OAuth2 server that knows the API from the client alone).
    pub audience_param: &'static str,
    /// The client assertion's required `aud`.
    pub assertion_audience: AssertionAudience,
}

/// What a client assertion's `aud` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionAudience {
    /// Auth0: `"{base_url}/"`, with the trailing slash.
    Issuer,
    /// RFC 7523 as Okta and Entra read it: the token endpoint URL.
    TokenEndpoint,
}

impl TenantSetup {
    fn new(client_id: &str, auth: ClientAuth) -> Self {
        let grant_scopes = ["read:clients", "update:clients", "read:resource_servers"];
        Self {
            client_id: client_id.to_owned(),
            auth,
            audience: MANAGEMENT_API.to_owned(),
            grant_scopes: grant_scopes.map(str::to_owned).to_vec(),
            expires_in: 600,
            scope_handling: ScopeHandling::Narrow,
            audience_param: "audience",
            assertion_audience: AssertionAudience::Issuer,
        }
    }

    /// A private_key_jwt client whose credential is the public key of `key_file`.
    pub fn private_key_jwt(client_id: &str, key_file: &str, alg: &'static str) -> Self {
        let jwk = client_public_jwk(key_file);
        Self::new(client_id, ClientAuth::PrivateKeyJwt { jwk, alg })
    }

    pub fn secret_post(client_id: &str, secret: &str) -> Self {
        Self::new(client_id, ClientAuth::SecretPost(secret.to_owned()))
    }

    pub fn secret_basic(client_id: &str, secret: &str) -> Self {
        Self::new(client_id, ClientAuth::SecretBasic(secret.to_owned()))
    }
}

/// A scripted answer, consumed one per `POST /oauth/token` in order, before normal handling.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Exactly this status, headers and body.
    Status {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// A case of `tests/data/auth0/token-endpoint-errors.json`, by its `case` name.
    Auth0Error(&'static str),
    /// 429 `too_many_requests`, `Retry-After: retry_after`, `X-RateLimit-Reset: now + reset_in`.
    RateLimited {
        retry_after: Option<u64>,
        reset_in: Option<i64>,
    },
    /// Sleeps, then handles the request normally.
    Hang(Duration),
    /// Closes the connection without an answer.
    Drop,
    /// 200 `text/html` `<html>oops</html>`.
    NonJson,
    /// 200 with this JSON body.
    Json(Value),
    /// 401 `invalid_client` whose `error_description` echoes the request: the raw form
    /// body, then the `Authorization` header (as a misbehaving proxy might).
    Echo,
}

/// One `POST /oauth/token` as the fake received it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The decoded form body, in order (empty if the body was not a form).
    pub form: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
    /// The `client_assertion`'s header and payload, decoded without verification.
    pub assertion_header: Option<Value>,
    pub assertion_claims: Option<Value>,
    pub assertion_len: Option<usize>,
    /// The id of the TCP connection it came on: the fake numbers connections 0, 1, 2, ... as
    /// it accepts them, so requests with one id shared a connection.
    pub connection: usize,
    /// Why the fake refused it; `None` if it issued a token or answered a fault.
    pub rejected: Option<String>,
}

impl TokenRequest {
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A token the fake issued.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    /// The token's `scope` claim (`None` under `ScopeHandling::Omit`).
    pub scope: Option<String>,
    pub expires_in: u64,
    pub claims: Value,
    /// What the tenant's `seccft` log event would say about it: the `User-Agent` it was
    /// requested with, the client it was issued to, when (with milliseconds, as Auth0 logs
    /// dates), and Auth0's own id for it (`details.access_token_jti`: 32 hex digits, never
    /// in the token itself, whose Auth0 profile has no `jti`).
    pub user_agent: Option<String>,
    pub client_id: String,
    pub issued_at: time::OffsetDateTime,
    pub access_token_jti: String,
}

/// A running fake tenant; clones share it.
#[derive(Clone)]
pub struct FakeTenant {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    tenant: Arc<Tenant>,
}

struct Tenant {
    base_url: String,
    setup: TenantSetup,
    verifier: Option<(DecodingKey, Algorithm)>,
    signing_key: SigningKey,
    state: Mutex<TenantState>,
}

struct TenantState {
    faults: VecDeque<Fault>,
    expires_in: u64,
    scope_handling: ScopeHandling,
    requests: Vec<TokenRequest>,
    issued: Vec<IssuedToken>,
    seen_jti: HashSet<String>,
}

impl FakeTenant {
    pub async fn start(setup: TenantSetup) -> FakeTenant {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake tenant");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let verifier = match &setup.auth {
            ClientAuth::PrivateKeyJwt { jwk, alg } => {
                let alg: Algorithm = alg.parse().expect("an alg name");
                let allowed = [Algorithm::RS256, Algorithm::RS384, Algorithm::PS256];
                assert!(allowed.contains(&alg), "Auth0 allows RS256, RS384 or PS256");
                let member = |name: &str| jwk[name].as_str().expect("RSA JWK member");
                let key = DecodingKey::from_rsa_components(member("n"), member("e"));
                Some((key.expect("RSA JWK"), alg))
            }
            ClientAuth::SecretPost(_) | ClientAuth::SecretBasic(_) => None,
        };
        let pem = std::fs::read_to_string(data_file("keys/auth0-tenant.pem")).expect("tenant key");
        let signing_key = SigningKey::from_pkcs8_pem(SigningAlgorithm::RS256, &pem);
        let state = TenantState {
            faults: VecDeque::new(),
            expires_in: setup.expires_in,
            scope_handling: setup.scope_handling,
            requests: Vec::new(),
            issued: Vec::new(),
            seen_jti: HashSet::new(),
        };
        let tenant = Arc::new(Tenant {
            base_url: base_url.clone(),
            setup,
            verifier,
            signing_key: signing_key.expect("tenant key parses"),
            state: Mutex::new(state),
        });
        let app = Router::new()
            .route("/oauth/token", post(token_endpoint))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .with_state(tenant.clone());
        let service = app.into_make_service_with_connect_info::<Connection>();
        tokio::spawn(async move {
            let listener = CuttableListener {
                listener,
                accepted: 0,
            };
            let _ = axum::serve(listener, service).await;
        });
        FakeTenant { base_url, tenant }
    }

    pub fn push_fault(&self, fault: Fault) {
        self.tenant.state().faults.push_back(fault);
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.tenant.state().expires_in = secs;
    }

    pub fn set_scope_handling(&self, handling: ScopeHandling) {
        self.tenant.state().scope_handling = handling;
    }

    /// Every `POST /oauth/token` received, in order (recorded on arrival).
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.tenant.state().requests.clone()
    }

    /// Every token issued, in order.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.tenant.state().issued.clone()
    }

    /// `{base_url}/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url)
    }
}

async fn token_endpoint(
    State(tenant): State<Arc<Tenant>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = record(connection.id, &headers, &body);
    let jti = request
        .assertion_claims
        .as_ref()
        .and_then(|c| c["jti"].as_str());
    let (index, fault, first_use) = {
        let mut state = tenant.state();
        // Every jti that arrives is spent, even if a fault answers: Auth0 may have seen it.
        let first_use = jti.is_none_or(|jti| state.seen_jti.insert(jti.to_owned()));
        state.requests.push(request.clone());
        (
            state.requests.len() - 1,
            state.faults.pop_front(),
            first_use,
        )
    };
    match fault {
        None => {}
        Some(Fault::Hang(duration)) => tokio::time::sleep(duration).await,
        Some(Fault::Drop) => {
            connection.cut.store(true, Ordering::SeqCst);
            return respond(500, [("Content-Type", "text/plain")], "never written");
        }
        Some(Fault::Echo) => {
            let description = format!(
                "rejected: {}; authorization: {}",
                String::from_utf8_lossy(&body),
                request.authorization.as_deref().unwrap_or("none")
            );
            return json_answer(
                401,
                &json!({"error": "invalid_client", "error_description": description}),
                NO_HEADERS,
            );
        }
        Some(fault) => return fault_answer(fault),
    }
    tenant
        .handle(&request, first_use)
        .unwrap_or_else(|rejection| {
            tenant.state().requests[index].rejected = Some(rejection.reason);
            json_answer(rejection.status, &rejection.body, NO_HEADERS)
        })
}

fn record(connection: usize, headers: &HeaderMap, body: &[u8]) -> TokenRequest {
    let header = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
    };
    let content_type: Option<String> = header(header::CONTENT_TYPE);
    let form: Vec<(String, String)> = match is_form(content_type.as_deref()) {
        true => url::form_urlencoded::parse(body).into_owned().collect(),
        false => Vec::new(),
    };
    let assertion = form
        .iter()
        .find(|(n, _)| n == "client_assertion")
        .map(|(_, v)| v.as_str());
    let mut segments = assertion.map(|a| a.split('.').map(unverified_segment));
    let mut segment = || segments.as_mut().and_then(|s| s.next()).flatten();
    TokenRequest {
        assertion_header: segment(),
        assertion_claims: segment(),
        assertion_len: assertion.map(str::len),
        user_agent: header(header::USER_AGENT),
        authorization: header(header::AUTHORIZATION),
        form,
        content_type,
        connection,
        rejected: None,
    }
}

fn is_form(content_type: Option<&str>) -> bool {
    let media_type = content_type.and_then(|value| value.split(';').next());
    media_type.is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(FORM))
}

#[expect(
    clippy::disallowed_methods,
    reason = "the fake records what a client put in its assertion, verified or not"
)]
fn unverified_segment(segment: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}

#[expect(
    clippy::disallowed_methods,
    reason = "Authorization: Basic carries base64 credentials, not a token"
)]
fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, encoded) = authorization.split_once(' ')?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    let form_decode = |text: &str| {
        url::form_urlencoded::parse(format!("x={text}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
    };
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| Some((form_decode(id)?, form_decode(secret)?)))
        .flatten()
}

/// A refusal: the answer, and the reason recorded in `TokenRequest::rejected`.
struct Rejection {
    status: u16,
    body: Value,
    reason: String,
}

fn reject(status: u16, error: &str, reason: String) -> Rejection {
    let body = json!({"error": error, "error_description": reason});
    Rejection {
        status,
        body,
        reason,
    }
}

/// A fixture case's status and body, with `replace.0` replaced by `replace.1` in its text.
fn fixture_rejection(case: &str, replace: (&str, &str), reason: String) -> Rejection {
    let (status, _, body) = auth0_error(case);
    let body = body.to_string().replace(replace.0, replace.1);
    Rejection {
        status,
        body: serde_json::from_str(&body).expect("still JSON"),
        reason,
    }
}

/// Returns `Err(format!(...))` from the enclosing function unless the condition holds.
macro_rules! ensure {
    ($ok:expr, $($reason:tt)+) => {
        if !$ok {
            return Err(format!($($reason)+));
        }
    };
}

/// (status, headers, body) of a case in `tests/data/auth0/token-endpoint-errors.json`.
pub fn auth0_error(case: &str) -> (u16, Vec<(String, String)>, Value) {
    let text = std::fs::read(data_file("auth0/token-endpoint-errors.json")).expect("fixture");
    let cases: Vec<Value> = serde_json::from_slice(&text).expect("JSON fixture");
    let found = cases.into_iter().find(|c| c["case"] == case);
    let found = found.unwrap_or_else(|| panic!("no Auth0 error case {case:?}"));
    let headers = found["headers"].as_object().expect("headers").iter();
    let headers = headers.map(|(n, v)| (n.clone(), v.as_str().expect("header").to_owned()));
    let status = found["status"].as_u64().and_then(|s| u16::try_from(s).ok());
    (
        status.expect("status"),
        headers.collect(),
        found["body"].clone(),
    )
}

impl Tenant {
    fn state(&self) -> MutexGuard<'_, TenantState> {
        self.state.lock().expect("fake tenant state")
    }

    fn handle(&self, request: &TokenRequest, first_use: bool) -> Result<Response, Rejection> {
        let invalid = |reason: String| Err(reject(400, "invalid_request", reason));
        if !is_form(request.content_type.as_deref()) {
            return invalid(format!(
                "content-type {:?} is not a form",
                request.content_type
            ));
        }
        let mut names = HashSet::new();
        if let Some((name, _)) = request.form.iter().find(|(name, _)| !names.insert(name)) {
            return invalid(format!("parameter {name} appears twice"));
        }
        match request.field("grant_type") {
            Some("client_credentials") => {}
            Some(other) => {
                let (case, reason) = ("grant_type_not_allowed", format!("grant_type {other}"));
                return Err(fixture_rejection(
                    case,
                    ("client_credentials", other),
                    reason,
                ));
            }
            None => return invalid("missing grant_type".to_owned()),
        }
        self.authenticate(request, first_use)?;
        let audience = match self.setup.audience_param {
            "none" => {
                if request.field("audience").is_some() || request.field("resource").is_some() {
                    return invalid(
                        "this server takes no audience or resource parameter".to_owned(),
                    );
                }
                self.setup.audience.as_str()
            }
            param => request.field(param).unwrap_or_default(),
        };
        if audience != self.setup.audience {
            let reason = format!("no client grant for audience {audience:?}");
            let case = "client_not_authorized_for_api";
            return Err(fixture_rejection(case, (MANAGEMENT_API, audience), reason));
        }
        Ok(self.issue(request, audience))
    }

    fn authenticate(&self, request: &TokenRequest, first_use: bool) -> Result<(), Rejection> {
        let unauthorized = |reason| fixture_rejection("wrong_client_secret", ("", ""), reason);
        match &self.setup.auth {
            ClientAuth::PrivateKeyJwt { .. } => self
                .check_assertion(request, first_use)
                .map_err(|reason| reject(401, "invalid_client", reason)),
            ClientAuth::SecretPost(secret) => self
                .check_secret(request, secret, false)
                .map_err(unauthorized),
            ClientAuth::SecretBasic(secret) => self
                .check_secret(request, secret, true)
                .map_err(unauthorized),
        }
    }

    /// client_secret_post (`basic` false) or client_secret_basic (compared verbatim).
    fn check_secret(
        &self,
        request: &TokenRequest,
        secret: &str,
        basic: bool,
    ) -> Result<(), String> {
        let client_id = self.setup.client_id.as_str();
        let (form_id, form_secret) = (request.field("client_id"), request.field("client_secret"));
        ensure!(
            request.field("client_assertion").is_none(),
            "a client_assertion too"
        );
        if basic {
            ensure!(form_secret.is_none(), "a client_secret field with Basic");
            let credentials = request.authorization.as_deref().and_then(basic_credentials);
            let expected = (client_id.to_owned(), secret.to_owned());
            ensure!(
                credentials == Some(expected),
                "no or wrong Authorization: Basic"
            );
            let same_id = form_id.is_none_or(|id| id == client_id);
            ensure!(same_id, "client_id {form_id:?} is not the Basic user");
        } else {
            ensure!(
                request.authorization.is_none(),
                "an Authorization header too"
            );
            ensure!(
                form_id == Some(client_id),
                "client_id {form_id:?} is not {client_id}"
            );
            ensure!(form_secret == Some(secret), "wrong client_secret");
        }
        Ok(())
    }

    /// Auth0's documented rules for private_key_jwt; the error is the rejection reason.
    fn check_assertion(&self, request: &TokenRequest, first_use: bool) -> Result<(), String> {
        let (key, alg) = self
            .verifier
            .as_ref()
            .expect("a private_key_jwt tenant's key");
        let secret = request
            .field("client_secret")
            .or(request.authorization.as_deref());
        ensure!(secret.is_none(), "a client secret too");
        let assertion_type = request.field("client_assertion_type");
        ensure!(
            assertion_type == Some(JWT_BEARER),
            "client_assertion_type {assertion_type:?}"
        );
        let jwt = request
            .field("client_assertion")
            .ok_or("no client_assertion")?;
        ensure!(
            jwt.len() <= MAX_ASSERTION_LEN,
            "client_assertion of {} bytes",
            jwt.len()
        );
        let header_alg = request
            .assertion_header
            .as_ref()
            .and_then(|h| h["alg"].as_str());
        let expected = format!("{alg:?}");
        let same_alg = header_alg == Some(expected.as_str());
        ensure!(
            same_alg,
            "alg {header_alg:?} is not the credential's {expected}"
        );
        let mut validation = Validation::new(*alg);
        (validation.validate_exp, validation.validate_aud) = (false, false);
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(jwt, key, &validation)
            .map_err(|err| format!("client_assertion does not verify: {err}"))?
            .claims;
        for name in ["iss", "sub", "jti"] {
            let value = claims[name].as_str().unwrap_or_default();
            let fits = !value.is_empty() && value.chars().count() <= MAX_CLAIM_CHARS;
            ensure!(
                fits,
                "{name} is missing or over {MAX_CLAIM_CHARS} characters"
            );
        }
        let client_id = self.setup.client_id.as_str();
        let (iss, sub, aud) = (&claims["iss"], &claims["sub"], &claims["aud"]);
        ensure!(
            iss == client_id && sub == client_id,
            "iss {iss} or sub {sub} is not {client_id}"
        );
        let audience = match self.setup.assertion_audience {
            AssertionAudience::Issuer => format!("{}/", self.base_url),
            AssertionAudience::TokenEndpoint => format!("{}/oauth/token", self.base_url),
        };
        ensure!(*aud == audience, "aud {aud} is not exactly \"{audience}\"");
        let now = now();
        let time = |name: &str, default: Option<i64>| match claims.get(name) {
            None => default.ok_or(format!("{name} is missing")),
            Some(value) => value.as_i64().ok_or(format!("{name} is not an integer")),
        };
        let exp = time("exp", None)?;
        let (iat, nbf) = (time("iat", Some(now))?, time("nbf", Some(now))?);
        ensure!(exp > now, "client_assertion expired at {exp}, now {now}");
        ensure!(
            iat.max(nbf) <= now + SKEW_SECS,
            "iat {iat} or nbf {nbf} ahead of now {now}"
        );
        let lifetime = exp - iat;
        ensure!(
            lifetime <= MAX_LIFETIME_SECS,
            "exp - iat = {lifetime} s is over 300 s"
        );
        ensure!(first_use, "jti {} was already used", claims["jti"]);
        let form_id = request.field("client_id");
        let same_id = form_id.is_none_or(|id| id == client_id);
        ensure!(same_id, "client_id {form_id:?} is not the assertion's iss");
        Ok(())
    }

    fn issue(&self, request: &TokenRequest, audience: &str) -> Response {
        let mut state = self.state();
        let (expires_in, handling) = (state.expires_in, state.scope_handling);
        let grant = self.setup.grant_scopes.iter().map(String::as_str);
        let scope = match (handling, request.field("scope")) {
            (ScopeHandling::Narrow, Some(asked)) => {
                let asked: HashSet<&str> = asked.split(' ').collect();
                grant
                    .filter(|s| asked.contains(s))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            _ => grant.collect::<Vec<_>>().join(" "),
        };
        let (iat, client_id) = (now(), &self.setup.client_id);
        let exp = iat + i64::try_from(expires_in).expect("expires_in fits an i64");
        let mut claims = json!({"iss": format!("{}/", self.base_url),
            "sub": format!("{client_id}@clients"), "aud": audience, "iat": iat, "exp": exp});
        let claim_scope = (handling != ScopeHandling::Omit).then(|| scope.clone());
        if let Some(scope) = &claim_scope {
            claims["scope"] = json!(scope);
        }
        (claims["gty"], claims["azp"]) = (json!("client-credentials"), json!(client_id));
        if let Some(organization) = request.field("organization") {
            claims["org_id"] = json!(organization);
        }
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": TENANT_KID});
        let access_token = sign_with_header(&self.signing_key, &header, &claims);
        let mut body = json!({"access_token": access_token, "expires_in": expires_in,
            "token_type": "Bearer"});
        if matches!(handling, ScopeHandling::Narrow | ScopeHandling::Ignore) {
            body["scope"] = json!(scope);
        }
        state.issued.push(IssuedToken {
            access_token,
            scope: claim_scope,
            expires_in,
            claims,
            user_agent: request.user_agent.clone(),
            client_id: client_id.clone(),
            issued_at: time::OffsetDateTime::now_utc(),
            access_token_jti: uuid::Uuid::new_v4().simple().to_string(),
        });
        json_answer(
            200,
            &body,
            [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
        )
    }
}

fn fault_answer(fault: Fault) -> Response {
    match fault {
        Fault::Status {
            status,
            body,
            headers,
        } => respond(status, headers, body),
        Fault::Auth0Error(case) => {
            let (status, headers, body) = auth0_error(case);
            respond(status, headers, body.to_string())
        }
        Fault::RateLimited {
            retry_after,
            reset_in,
        } => {
            let mut headers = vec![("X-RateLimit-Limit", "10".to_owned())];
            headers.push(("X-RateLimit-Remaining", "0".to_owned()));
            if let Some(reset_in) = reset_in {
                headers.push(("X-RateLimit-Reset", (now() + reset_in).to_string()));
            }
            if let Some(retry_after) = retry_after {
                headers.push(("Retry-After", retry_after.to_string()));
            }
            json_answer(429, &auth0_error("rate_limited").2, headers)
        }
        Fault::NonJson => respond(200, [("Content-Type", "text/html")], "<html>oops</html>"),
        Fault::Json(body) => json_answer(200, &body, NO_HEADERS),
        Fault::Hang(_) | Fault::Drop | Fault::Echo => unreachable!("handled before answering"),
    }
}

fn json_answer<N, V>(
    status: u16,
    body: &Value,
    headers: impl IntoIterator<Item = (N, V)>,
) -> Response
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    let headers = headers
        .into_iter()
        .map(|(n, v)| (n.as_ref().to_owned(), v.as_ref().to_owned()));
    let content_type = ("Content-Type".to_owned(), "application/json".to_owned());
    respond(
        status,
        std::iter::once(content_type).chain(headers),
        body.to_string(),
    )
}

fn respond<N, V>(
    status: u16,
    headers: impl IntoIterator<Item = (N, V)>,
    body: impl Into<Body>,
) -> Response
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name.as_ref(), value.as_ref());
    }
    builder.body(body.into()).expect("a valid fake answer")
}

/// The fake's listener: plain TCP, numbering connections in the order it accepts them, but a
/// handler can cut its connection (`Fault::Drop`); the stream then fails every write, so hyper
/// drops it without writing the answer.
struct CuttableListener {
    listener: TcpListener,
    /// Connections accepted so far: the next one's id.
    accepted: usize,
}

struct CuttableStream {
    stream: TcpStream,
    id: usize,
    cut: Arc<AtomicBool>,
}

/// A handler's handle on its connection: its id, and a flag to set to cut it.
#[derive(Clone)]
struct Connection {
    id: usize,
    cut: Arc<AtomicBool>,
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.listener).await;
        let id = self.accepted;
        self.accepted += 1;
        let cut = Arc::default();
        (CuttableStream { stream, id, cut }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(&self.listener)
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        let io = stream.io();
        Connection {
            id: io.id,
            cut: io.cut.clone(),
        }
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut.load(Ordering::SeqCst) {
            let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "Fault::Drop");
            return Poll::Ready(Err(cut));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A client assertion signed with a key file of 2048+ bits as `header.alg` (RS256, RS384, PS256).
pub fn sign_assertion(file: &str, header: &Value, claims: &Value) -> String {
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PSS_SHA256, RsaEncoding};
    let pem = read_pem(file);
    let pair = match pem.tag() {
        "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(pem.contents()),
        _ => aws_lc_rs::rsa::KeyPair::from_pkcs8(pem.contents()),
    };
    let pair = pair.expect("an RSA key of 2048 bits or more");
    let encoding: &'static dyn RsaEncoding = match header["alg"].as_str() {
        Some("RS384") => &RSA_PKCS1_SHA384,
        Some("PS256") => &RSA_PSS_SHA256,
        _ => &RSA_PKCS1_SHA256,
    };
    let encode = |json: &Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let signing_input = format!("{}.{}", encode(header), encode(claims));
    let mut signature = vec![0; pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signed = pair.sign(encoding, &rng, signing_input.as_bytes(), &mut signature);
    signed.expect("signing");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A valid assertion for `tenant`, as tokenmint should build it.
fn good_assertion(tenant: &FakeTenant, file: &str, alg: &str) -> (Value, Value) {
    let (now, id) = (now(), tenant.tenant.setup.client_id.as_str());
    let header = json!({"alg": alg, "typ": "JWT", "kid": client_key_thumbprint(file)});
    let claims = json!({"iss": id, "sub": id, "aud": format!("{}/", tenant.base_url),
        "iat": now, "nbf": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string()});
    (header, claims)
}

async fn post_form(
    tenant: &FakeTenant,
    fields: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> reqwest::Result<reqwest::Response> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let request = reqwest::Client::new()
        .post(tenant.token_url())
        .header("content-type", FORM);
    let request = request.timeout(Duration::from_secs(5)).body(body);
    match basic {
        Some((user, password)) => request.basic_auth(user, Some(password)).send().await,
        None => request.send().await,
    }
}

async fn post_assertion(tenant: &FakeTenant, assertion: &str) -> (u16, Value) {
    let fields = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
        ("audience", MANAGEMENT_API),
    ];
    let answer = post_form(tenant, &fields, None).await.expect("an answer");
    (answer.status().as_u16(), answer.json().await.expect("JSON"))
}

#[tokio::test]
async fn fake_auth0_issues_a_token_for_a_good_assertion() {
    let file = "auth0-client.pem";
    let tenant = FakeTenant::start(TenantSetup::private_key_jwt("m2m", file, "RS256")).await;
    let (header, claims) = good_assertion(&tenant, file, "RS256");
    let assertion = sign_assertion(file, &header, &claims);
    let (status, body) = post_assertion(&tenant, &assertion).await;

    assert_eq!(status, 200, "{body}");
    let issued = tenant.issued().pop().expect("a token");
    assert_eq!(issued.expires_in, 600);
    let scope = "read:clients update:clients read:resource_servers";
    let expected = json!({"access_token": issued.access_token, "expires_in": 600,
        "token_type": "Bearer", "scope": scope});
    assert_eq!(body, expected);
    let iat = issued.claims["iat"].as_i64().expect("iat");
    let expected = json!({"iss": format!("{}/", tenant.base_url), "sub": "m2m@clients",
        "aud": MANAGEMENT_API, "iat": iat, "exp": iat + 600, "scope": scope,
        "gty": "client-credentials", "azp": "m2m"});
    assert_eq!(issued.claims, expected);
    let request = tenant.requests().pop().expect("a request");
    assert_eq!(request.rejected, None);
    assert_eq!(request.assertion_header, Some(header));
    assert_eq!(request.assertion_len, Some(assertion.len()));
}

#[tokio::test]
async fn fake_auth0_refuses_a_reused_jti_and_checks_a_pkcs1_ps256_key() {
    let file = "auth0-client-pkcs1.pem";
    let tenant = FakeTenant::start(TenantSetup::private_key_jwt("m2m", file, "PS256")).await;
    let (header, claims) = good_assertion(&tenant, file, "PS256");
    let assertion = sign_assertion(file, &header, &claims);
    assert_eq!(post_assertion(&tenant, &assertion).await.0, 200);
    let (status, body) = post_assertion(&tenant, &assertion).await;

    assert_eq!((status, &body["error"]), (401, &json!("invalid_client")));
    let rejected = tenant.requests()[1].rejected.clone().expect("rejected");
    assert!(rejected.contains("already used"), "{rejected}");
    assert_eq!(tenant.issued().len(), 1);
}

#[tokio::test]
async fn fake_auth0_refuses_an_aud_without_the_trailing_slash_and_a_wrong_alg() {
    let file = "auth0-client.pem";
    let tenant = FakeTenant::start(TenantSetup::private_key_jwt("m2m", file, "RS256")).await;
    let (header, mut claims) = good_assertion(&tenant, file, "RS256");
    claims["aud"] = json!(tenant.base_url);
    assert_eq!(
        post_assertion(&tenant, &sign_assertion(file, &header, &claims))
            .await
            .0,
        401
    );
    let (header, claims) = good_assertion(&tenant, file, "RS384");
    assert_eq!(
        post_assertion(&tenant, &sign_assertion(file, &header, &claims))
            .await
            .0,
        401
    );

    let rejected: Vec<String> = tenant
        .requests()
        .into_iter()
        .filter_map(|r| r.rejected)
        .collect();
    assert!(rejected[0].starts_with("aud"), "{rejected:?}");
    assert!(rejected[1].contains("RS384"), "{rejected:?}");
    assert!(tenant.issued().is_empty());
}

#[tokio::test]
async fn fake_auth0_accepts_a_good_secret_basic_and_narrows_scope() {
    let tenant = FakeTenant::start(TenantSetup::secret_basic("m2m", "s3cret")).await;
    let fields = [
        ("grant_type", "client_credentials"),
        ("audience", MANAGEMENT_API),
    ];
    let fields = [fields.as_slice(), &[("scope", "read:clients delete:users")]].concat();
    let good = post_form(&tenant, &fields, Some(("m2m", "s3cret")))
        .await
        .expect("answer");
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.json::<Value>().await.expect("JSON")["scope"],
        "read:clients"
    );
    assert_eq!(tenant.issued()[0].scope.as_deref(), Some("read:clients"));

    let wrong = post_form(&tenant, &fields, Some(("m2m", "guess")))
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.expect("JSON"),
        auth0_error("wrong_client_secret").2
    );
    assert!(tenant.requests()[1].rejected.is_some());
}

#[tokio::test]
async fn fake_auth0_answers_faults_in_order_then_normally() {
    let tenant = FakeTenant::start(TenantSetup::secret_post("m2m", "s3cret")).await;
    tenant.push_fault(Fault::Status {
        status: 503,
        body: "down".into(),
        headers: vec![],
    });
    tenant.push_fault(Fault::Auth0Error("m2m_client_quota_exceeded"));
    tenant.push_fault(Fault::RateLimited {
        retry_after: Some(3),
        reset_in: Some(30),
    });
    tenant.push_fault(Fault::Drop);
    tenant.push_fault(Fault::NonJson);
    tenant.push_fault(Fault::Json(json!({"token_type": "Bearer"})));
    tenant.push_fault(Fault::Hang(Duration::from_millis(50)));
    let fields = [("grant_type", "client_credentials"), ("client_id", "m2m")];
    let fields = [
        fields.as_slice(),
        &[("client_secret", "s3cret"), ("audience", MANAGEMENT_API)],
    ];
    let mut answers = Vec::new();
    for _ in 0..8 {
        let Ok(answer) = post_form(&tenant, &fields.concat(), None).await else {
            answers.push((0, None, "network error".to_owned()));
            continue;
        };
        let retry_after = answer.headers().get("retry-after");
        let retry_after = retry_after.map(|v| v.to_str().expect("ASCII").to_owned());
        let status = answer.status().as_u16();
        answers.push((status, retry_after, answer.text().await.expect("body")));
    }

    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [503, 429, 429, 0, 200, 200, 200, 200]);
    let retry_after = [answers[1].1.as_deref(), answers[2].1.as_deref()];
    assert_eq!(retry_after, [Some("1260"), Some("3")]);
    assert!(answers[1].2.contains("Client quota exceeded"));
    assert_eq!(
        [&answers[0].2, &answers[4].2],
        ["down", "<html>oops</html>"]
    );
    assert_eq!(answers[5].2, r#"{"token_type":"Bearer"}"#);
    assert_eq!(
        tenant.issued().len(),
        2,
        "the hung request and the last one get tokens"
    );
    let requests = tenant.requests();
    assert_eq!(requests.len(), 8);
    let connections: Vec<usize> = requests.iter().map(|r| r.connection).collect();
    assert_eq!(
        connections,
        [0, 1, 2, 3, 4, 5, 6, 7],
        "every post_form has its own client, so its own connection"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.rejected.is_none() && r.field("client_id") == Some("m2m"))
    );
}
