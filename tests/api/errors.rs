//! The error table of `POST /token`, row by row, with exact bodies.

use axum::body::Body;
use axum::http::Request;

use crate::exchange::github_app;
use crate::helpers::*;

fn form(body: &str) -> Request<Body> {
    Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn row_2_bodies_over_64_kib_are_413() {
    let (_fake, app) = github_app().await;
    let answer = app.request(form(&"a".repeat(64 * 1024 + 1))).await;
    assert_error(
        &answer,
        413,
        "invalid_request",
        "the request body exceeds 65536 bytes",
    );
}

#[tokio::test]
async fn row_3_other_media_types_are_415() {
    let (_fake, app) = github_app().await;
    for content_type in [
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = Request::post("/token");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let answer = app
            .request(request.body(Body::from("grant_type=x")).expect("request"))
            .await;
        assert_error(
            &answer,
            415,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded or application/json",
        );
    }
}

#[tokio::test]
async fn row_4_other_grant_types_are_unsupported() {
    let (_fake, app) = github_app().await;
    let answer = app
        .request(form("grant_type=client_credentials&scope=a"))
        .await;
    assert_error(
        &answer,
        400,
        "unsupported_grant_type",
        "grant_type must be urn:ietf:params:oauth:grant-type:token-exchange",
    );
}

#[tokio::test]
async fn row_5_missing_repeated_and_malformed_fields() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    let base = |extra: &str| {
        format!(
            "grant_type={}&subject_token={token}&subject_token_type={}&audience=internal-api{extra}",
            urlencode(TOKEN_EXCHANGE),
            urlencode(ID_TOKEN)
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            format!("grant_type={}", urlencode(TOKEN_EXCHANGE)),
            "subject_token is missing",
        ),
        (base("&audience=other"), "audience is repeated"),
        (
            base("&scope=a%20%20b"),
            "scope must be scope tokens separated by single spaces",
        ),
        (
            base("&scope=a%22b"),
            "scope must be scope tokens separated by single spaces",
        ),
        (base("&actor_token=x"), "actor_token is not supported"),
        (
            base("&resource=https%3A%2F%2Fx"),
            "resource is not supported",
        ),
        (
            base("&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Asaml2"),
            "requested_token_type must be urn:ietf:params:oauth:token-type:access_token or urn:ietf:params:oauth:token-type:jwt",
        ),
        (base("&policy="), "policy is empty"),
        (
            base("").replace(
                &urlencode(ID_TOKEN),
                "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Asaml2",
            ),
            "subject_token_type must be urn:ietf:params:oauth:token-type:id_token or urn:ietf:params:oauth:token-type:jwt",
        ),
        (
            format!(
                "grant_type={}&subject_token={}&subject_token_type={}&audience=internal-api",
                urlencode(TOKEN_EXCHANGE),
                "a".repeat(16 * 1024 + 1),
                urlencode(ID_TOKEN)
            ),
            "subject_token exceeds 16384 bytes",
        ),
    ];
    for (body, description) in cases {
        let answer = app.request(form(&body)).await;
        assert_error(&answer, 400, "invalid_request", description);
    }
    let with_query = Request::post("/token?audience=internal-api")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(base("")))
        .expect("request");
    assert_error(
        &app.request(with_query).await,
        400,
        "invalid_request",
        "query parameters are not accepted; send every field in the body",
    );
    assert!(app.audit().await.is_empty(), "rows 2-5 are not audited");
}

#[tokio::test]
async fn row_5_json_bodies_need_unique_string_members() {
    let (_fake, app) = github_app().await;
    let json = |body: &str| {
        Request::post("/token")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    let grant = TOKEN_EXCHANGE;
    for (body, description) in [
        (
            format!(r#"{{"grant_type":"{grant}","audience":"a","audience":"b"}}"#),
            "audience is repeated",
        ),
        (
            format!(r#"{{"grant_type":"{grant}","scope":["a"]}}"#),
            "scope must be a string",
        ),
        ("[1]".to_owned(), "the body is not a JSON object"),
        ("{".to_owned(), "the body is not a JSON object"),
    ] {
        assert_error(
            &app.request(json(&body)).await,
            400,
            "invalid_request",
            description,
        );
    }
}

#[tokio::test]
async fn row_6_a_defective_token_is_invalid_grant_and_audited() {
    let (_fake, app) = github_app().await;
    let answer = app.exchange("not-a-jwt", "internal-api", &[]).await;
    assert_error(
        &answer,
        400,
        "invalid_grant",
        "the subject token is malformed: it is not a compact JWS (header.payload.signature)",
    );
    let record = app.last_audit().await;
    assert_eq!(record.outcome, tokenmint::trust::audit::Outcome::Deny);
    assert_eq!(record.reason, "malformed_token");
    assert_eq!(record.audience.as_deref(), Some("internal-api"));
}

#[tokio::test]
async fn row_8_unknown_targets_are_named_only_to_known_callers() {
    let (fake, app) = github_app().await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "no-such-target", &[])
        .await;
    assert_error(
        &answer,
        400,
        "invalid_target",
        "no target \"no-such-target\"",
    );

    let mut stranger = fake.claims("github-push-main");
    stranger.insert("repository_id".into(), serde_json::json!("555"));
    stranger.insert("repository_owner_id".into(), serde_json::json!("666"));
    let answer = app
        .exchange(&fake.sign(&stranger), "no-such-target", &[])
        .await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"no-such-target\" matches this workload",
    );
    assert_eq!(app.last_audit().await.reason, "unknown_target");
}

#[tokio::test]
async fn a_pinned_unknown_policy_is_named_only_to_bound_callers() {
    let (fake, app) = github_app().await;
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("policy", "nope")],
        )
        .await;
    assert_error(
        &answer,
        400,
        "invalid_request",
        "no policy \"nope\" for target \"internal-api\"",
    );

    let mut stranger = fake.claims("github-push-main");
    stranger.insert("repository_id".into(), serde_json::json!("555"));
    let answer = app
        .exchange(&fake.sign(&stranger), "internal-api", &[("policy", "nope")])
        .await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"internal-api\" matches this workload",
    );
}

#[tokio::test]
async fn bad_input_never_panics_or_answers_5xx() {
    let (fake, app) = github_app().await;
    let token = fake.token("github-push-main");
    let long_scope = "s".repeat(5000);
    let bodies = [
        "%".to_owned(),
        "%ff%fe=%c3".to_owned(),
        "&&&==&".to_owned(),
        format!(
            "grant_type={}&subject_token=a.b.c&subject_token_type={}&audience=x",
            urlencode(TOKEN_EXCHANGE),
            urlencode(ID_TOKEN)
        ),
        format!(
            "grant_type={}&subject_token=....&subject_token_type={}&audience=x",
            urlencode(TOKEN_EXCHANGE),
            urlencode(ID_TOKEN)
        ),
        format!(
            "grant_type={}&subject_token={token}&subject_token_type={}&audience=%00",
            urlencode(TOKEN_EXCHANGE),
            urlencode(ID_TOKEN)
        ),
        format!(
            "grant_type={}&subject_token={token}&subject_token_type={}&audience=internal-api&scope={long_scope}",
            urlencode(TOKEN_EXCHANGE),
            urlencode(ID_TOKEN)
        ),
        format!(
            "grant_type={}&subject_token={token}&subject_token_type={}&audience=internal-api&policy=%2e%2e%2f",
            urlencode(TOKEN_EXCHANGE),
            urlencode(ID_TOKEN)
        ),
    ];
    for body in bodies {
        let answer = app.request(form(&body)).await;
        assert!(
            answer.status.is_client_error(),
            "{body:?} -> {} {}",
            answer.status,
            answer.text
        );
    }
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn the_grant_type_is_checked_before_the_shape_of_other_fields() {
    let (_fake, app) = github_app().await;
    let json = |body: &str| {
        Request::post("/token")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    let unsupported = "grant_type must be urn:ietf:params:oauth:grant-type:token-exchange";
    for body in [
        r#"{"grant_type":"password","username":1}"#,
        r#"{"grant_type":"password","scope":"a","scope":"b"}"#,
    ] {
        assert_error(
            &app.request(json(body)).await,
            400,
            "unsupported_grant_type",
            unsupported,
        );
    }
    // A repeated grant_type is row 5 whatever its values, in JSON as in forms.
    let repeated = format!(r#"{{"grant_type":"{TOKEN_EXCHANGE}","grant_type":"password"}}"#);
    assert_error(
        &app.request(json(&repeated)).await,
        400,
        "invalid_request",
        "grant_type is repeated",
    );
    assert_error(
        &app.request(form("grant_type=password&grant_type=x")).await,
        400,
        "invalid_request",
        "grant_type is repeated",
    );
    assert_error(
        &app.request(form("grant_type=")).await,
        400,
        "invalid_request",
        "grant_type is missing",
    );
    assert_error(
        &app.request(form("grant_type=password&username=%ff")).await,
        400,
        "unsupported_grant_type",
        unsupported,
    );
    // Row 2 before row 3: an oversized body of the wrong type is 413.
    let big = Request::post("/token")
        .header("content-type", "text/plain")
        .body(Body::from("x".repeat(64 * 1024 + 1)))
        .expect("request");
    assert_eq!(app.request(big).await.status, 413);
}

#[tokio::test]
async fn a_body_that_cannot_be_read_is_invalid_request_not_413() {
    let (_fake, app) = github_app().await;
    let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![
        Ok(b"grant_type=".as_slice()),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let request = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    assert_error(
        &app.request(request).await,
        400,
        "invalid_request",
        "the request body could not be read",
    );
}

/// Security: scopes are parsed before the subject token is verified, so their parsing
/// must stay linear (it once compared every scope with every earlier one: 15,000 of
/// them cost 0.8 s of CPU per request). This pins what such a request gets: a 60 KiB
/// request of 15,000 distinct scopes is parsed, deduplicated in order, and refused as
/// exceeding every policy. Its speed is measured by the `scope/parse_15000_distinct`
/// benchmark, not here.
#[tokio::test]
async fn fifteen_thousand_distinct_scopes_are_parsed_in_one_pass() {
    let (fake, app) = github_app().await;
    let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').collect();
    let mut scopes: Vec<String> = Vec::new();
    'outer: for a in &alphabet {
        for b in &alphabet {
            for c in &alphabet {
                scopes.push(format!("{a}{b}{c}"));
                if scopes.len() == 15_000 {
                    break 'outer;
                }
            }
        }
    }
    let scope = format!("read {} read deploy", scopes.join(" "));
    assert!(scope.len() > 59_000, "{}", scope.len());
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", &scope)],
        )
        .await;
    assert_error(
        &answer,
        400,
        "invalid_scope",
        "the requested scope exceeds every matching policy (\"deploy-api\")",
    );
    let record = app.last_audit().await;
    let requested = record.requested_scope.expect("requested scope");
    assert!(
        requested.starts_with("read aaa aab aac"),
        "order kept, the repeated read dropped: {requested}"
    );
    assert!(
        requested.ends_with(" bytes)"),
        "cut to 512 bytes: {requested}"
    );
}
