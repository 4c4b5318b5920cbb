//! `POST /token`: request parsing in the contract's order (rows 2–5), then the exchange.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;

use super::AppState;
use super::error::{TokenError, no_store_headers};
use super::wire::{AccessToken, TokenResponse};
use crate::trust::exchange::{ExchangeRequest, Issued, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT};
use crate::trust::json::{ObjectDefect, parse_unique_object};

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Row 2: bodies larger than this are refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Row 5: subject tokens larger than this are refused.
pub const MAX_SUBJECT_TOKEN_BYTES: usize = 16 * 1024;

const FIELDS: &[&str] = &[
    "grant_type",
    "subject_token",
    "subject_token_type",
    "audience",
    "scope",
    "policy",
    "requested_token_type",
];
const UNSUPPORTED_FIELDS: &[&str] = &["actor_token", "actor_token_type", "resource"];

pub async fn token(State(app): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect::<String>());
    let peer = client_ip.clone();
    let parsed = parse(request, &request_id, client_ip, user_agent).await;
    let exchange_request = match parsed {
        Ok(req) => req,
        Err(err) => {
            // Never stored (garbage cannot fill the disk); counted, and logged by sample.
            if let Some(unlogged) = app
                .metrics
                .rejected(err.reason, started.elapsed().as_secs_f64())
            {
                tracing::info!(
                    request_id,
                    error = err.error,
                    reason = err.reason,
                    client_ip = peer.as_deref().unwrap_or(""),
                    unlogged_since_last = unlogged,
                    "request refused before verification (logged by sample; every one is counted in tokenmint_exchanges_total)"
                );
            }
            return err.into_response_with_id(&request_id);
        }
    };
    // The exchange records, logs and counts its own outcome.
    match app
        .exchanger
        .exchange(&exchange_request, OffsetDateTime::now_utc())
        .await
    {
        Ok(issued) => success(issued, &request_id),
        Err(refusal) => TokenError::from(refusal.answer).into_response_with_id(&request_id),
    }
}

fn success(issued: Issued, request_id: &str) -> Response {
    let body = TokenResponse {
        access_token: AccessToken::new(issued.access_token),
        issued_token_type: issued.issued_token_type.to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: issued.expires_in,
        scope: issued.scope,
        target: issued.target,
        policy: issued.policy,
        request_id: request_id.to_owned(),
    };
    (
        StatusCode::OK,
        no_store_headers(request_id),
        axum::Json(body),
    )
        .into_response()
}

enum MediaType {
    Form,
    Json,
}

async fn parse(
    request: Request,
    request_id: &str,
    client_ip: Option<String>,
    user_agent: Option<String>,
) -> Result<ExchangeRequest, TokenError> {
    let has_query = request.uri().query().is_some();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        TokenError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
            "body_too_large",
        )
    };
    // Row 2.
    if declared_length.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let body: Body = request.into_body();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|err| {
            let over_limit = err
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if over_limit {
                too_large()
            } else {
                TokenError::invalid_request("the request body could not be read")
            }
        })?;
    // Row 3.
    let media = content_type
        .as_deref()
        .and_then(|ct| ct.parse::<mime::Mime>().ok())
        .and_then(|m| match m.essence_str() {
            "application/x-www-form-urlencoded" => Some(MediaType::Form),
            "application/json" => Some(MediaType::Json),
            _ => None,
        })
        .ok_or_else(|| {
            TokenError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded or application/json",
                "unsupported_media_type",
            )
        })?;
    let ParsedBody { params, defect } = match media {
        MediaType::Form => parse_form(&bytes),
        MediaType::Json => parse_json(&bytes),
    };
    // Row 4.
    let grant_types: Vec<&str> = values(&params, "grant_type");
    if let [grant_type] = grant_types.as_slice()
        && !grant_type.is_empty()
        && *grant_type != GRANT_TYPE_TOKEN_EXCHANGE
    {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type must be {GRANT_TYPE_TOKEN_EXCHANGE}"),
            "unsupported_grant_type",
        ));
    }
    // Row 5.
    if let Some(defect) = defect {
        return Err(defect);
    }
    if has_query {
        return Err(TokenError::invalid_request(
            "query parameters are not accepted; send every field in the body",
        ));
    }
    for name in UNSUPPORTED_FIELDS {
        if !values(&params, name).is_empty() {
            return Err(TokenError::invalid_request(format!(
                "{name} is not supported"
            )));
        }
    }
    for name in FIELDS {
        if values(&params, name).len() > 1 {
            return Err(TokenError::invalid_request(format!("{name} is repeated")));
        }
    }
    let required = |name: &str| -> Result<String, TokenError> {
        match values(&params, name).first() {
            Some(value) if !value.is_empty() => Ok((*value).to_owned()),
            _ => Err(TokenError::invalid_request(format!("{name} is missing"))),
        }
    };
    let optional = |name: &str| -> Result<Option<String>, TokenError> {
        match values(&params, name).first() {
            None => Ok(None),
            Some(&"") => Err(TokenError::invalid_request(format!("{name} is empty"))),
            Some(value) => Ok(Some((*value).to_owned())),
        }
    };
    required("grant_type")?;
    let subject_token = required("subject_token")?;
    if subject_token.len() > MAX_SUBJECT_TOKEN_BYTES {
        return Err(TokenError::invalid_request(format!(
            "subject_token exceeds {MAX_SUBJECT_TOKEN_BYTES} bytes"
        )));
    }
    let subject_token_type = required("subject_token_type")?;
    if subject_token_type != TOKEN_TYPE_ID_TOKEN && subject_token_type != TOKEN_TYPE_JWT {
        return Err(TokenError::invalid_request(format!(
            "subject_token_type must be {TOKEN_TYPE_ID_TOKEN} or {TOKEN_TYPE_JWT}"
        )));
    }
    let audience = required("audience")?;
    let scope = optional("scope")?.map(|s| parse_scope(&s)).transpose()?;
    let policy = optional("policy")?;
    let requested_token_type = optional("requested_token_type")?;
    if let Some(kind) = &requested_token_type
        && kind != TOKEN_TYPE_ACCESS_TOKEN
        && kind != TOKEN_TYPE_JWT
    {
        return Err(TokenError::invalid_request(format!(
            "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_JWT}"
        )));
    }
    Ok(ExchangeRequest {
        request_id: request_id.to_owned(),
        subject_token: SecretString::from(subject_token),
        audience,
        scope,
        policy,
        requested_token_type,
        client_ip,
        user_agent,
    })
}

fn values<'a>(params: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .collect()
}

/// A body's fields, read leniently so that row 4 (`grant_type`) can answer before row 5,
/// with the first row-5 defect found.
struct ParsedBody {
    params: Vec<(String, String)>,
    defect: Option<TokenError>,
}

fn parse_form(bytes: &[u8]) -> ParsedBody {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Invalid UTF-8, raw or percent-encoded, is replaced by U+FFFD while parsing.
    let defect = if std::str::from_utf8(bytes).is_err() {
        Some(TokenError::invalid_request("the body is not valid UTF-8"))
    } else if params
        .iter()
        .any(|(k, v)| k.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
    {
        Some(TokenError::invalid_request(
            "a field is not valid UTF-8 after percent-decoding",
        ))
    } else {
        None
    };
    ParsedBody { params, defect }
}

fn parse_json(bytes: &[u8]) -> ParsedBody {
    let string_members =
        |object: serde_json::Map<String, Value>| -> (Vec<(String, String)>, Option<String>) {
            let mut params = Vec::with_capacity(object.len());
            let mut first_non_string = None;
            for (key, value) in object {
                match value {
                    Value::String(text) => params.push((key, text)),
                    _ => {
                        first_non_string.get_or_insert(key);
                    }
                }
            }
            (params, first_non_string)
        };
    match parse_unique_object(bytes) {
        Ok(object) => {
            let (params, non_string) = string_members(object);
            ParsedBody {
                params,
                defect: non_string
                    .map(|key| TokenError::invalid_request(format!("{key} must be a string"))),
            }
        }
        Err(ObjectDefect::Duplicate(name)) => {
            // serde_json keeps the last of repeated members: good enough to read grant_type,
            // unless grant_type itself is the repeated one.
            let mut lenient =
                serde_json::from_slice::<serde_json::Map<String, Value>>(bytes).unwrap_or_default();
            lenient.remove(&name);
            ParsedBody {
                params: string_members(lenient).0,
                defect: Some(TokenError::invalid_request(format!("{name} is repeated"))),
            }
        }
        Err(ObjectDefect::Invalid) => ParsedBody {
            params: Vec::new(),
            defect: Some(TokenError::invalid_request("the body is not a JSON object")),
        },
    }
}

/// RFC 6749 3.3: scope-tokens separated by single spaces; duplicates dropped, order kept.
///
/// Runs before the subject token is verified, so anyone can send it 64 KiB of scopes:
/// it must stay linear in their number (a set, not a scan of the scopes kept so far).
pub fn parse_scope(text: &str) -> Result<Vec<String>, TokenError> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut scopes: Vec<String> = Vec::new();
    for token in text.split(' ') {
        let valid = !token.is_empty()
            && token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !valid {
            return Err(TokenError::invalid_request(
                "scope must be scope tokens separated by single spaces",
            ));
        }
        if seen.insert(token) {
            scopes.push(token.to_owned());
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_scope_keeps_the_first_of_each_scope_in_order() {
        let scopes = parse_scope("b a b c a").expect("valid");
        assert_eq!(scopes, ["b", "a", "c"]);
        let many: Vec<String> = (0..15_000).map(|n| format!("s{n}")).collect();
        let text = format!("{} {}", many.join(" "), many.join(" "));
        assert_eq!(parse_scope(&text).expect("valid"), many);
        for bad in ["", "a  b", " a", "a\"b", "a\\b"] {
            assert!(parse_scope(bad).is_err(), "{bad:?}");
        }
    }
}
