//! `audit correlate` end to end: exchanges through the fake Auth0 tenant, the tenant's own
//! view of each call written as the log events Auth0 would write (shaped like
//! `tests/data/auth0/`), and those events joined back to the audit trail.

use std::collections::HashMap;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use tokenmint::edges::correlate::{correlate, parse_events, render_json};

use crate::fake_auth0::IssuedToken;
use crate::remote::{CLIENT_ID, pkjwt, tenant_app};

/// Another application of the tenant (a deploy tool's), not tokenmint's.
const OTHER_CLIENT: &str = "Zq0wYrT1nXk7vB3cD5eF9gH2jK4mN6pQ";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/auth0/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("log fixture");
    serde_json::from_str(&text).expect("log fixture is JSON")
}

/// A date as Auth0 writes it: UTC, milliseconds, `Z`.
fn auth0_date(time: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time.format(&format).expect("a date")
}

fn set_log_id(event: &mut Value, log_id: &str) {
    for name in ["log_id", "_id", "id"] {
        event[name] = json!(log_id);
    }
}

/// The `seccft` event of a token the tenant issued to `client_id` at `date`, requested with
/// `user_agent`.
fn seccft(log_id: &str, date: &str, client_id: &str, user_agent: &str, jti: &str) -> Value {
    let mut event = fixture("log-seccft.json");
    event["date"] = json!(date);
    event["client_id"] = json!(client_id);
    event["user_agent"] = json!(user_agent);
    event["details"]["access_token_jti"] = json!(jti);
    set_log_id(&mut event, log_id);
    event
}

/// The `seccft` event the tenant would have logged for `issued`, as it saw the call.
fn seccft_of(log_id: &str, issued: &IssuedToken) -> Value {
    let user_agent = issued.user_agent.as_deref().expect("a user agent");
    let date = auth0_date(issued.issued_at);
    let mut event = seccft(
        log_id,
        &date,
        &issued.client_id,
        user_agent,
        &issued.access_token_jti,
    );
    event["scope"] = json!(issued.scope);
    event
}

/// A `sapi` event (a client updated) made by `client_id` with the token whose Auth0 id is `jti`.
fn sapi(log_id: &str, date: &str, client_id: &str, jti: &str) -> Value {
    let mut event = fixture("log-sapi.json");
    event["date"] = json!(date);
    event["client_id"] = json!(client_id);
    event["details"]["request"]["auth"]["credentials"]["jti"] = json!(jti);
    set_log_id(&mut event, log_id);
    event
}

#[tokio::test]
async fn tenant_log_events_name_the_ci_job_behind_each_token() {
    let (fake, tenant, app) = tenant_app(pkjwt(), "").await;
    let first = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    // A second job of the same workflow: a re-run of another run, by someone else.
    let mut claims = fake.claims("github-push-main");
    claims.insert("run_id".into(), json!("29223230077"));
    claims.insert("run_attempt".into(), json!("2"));
    claims.insert("actor".into(), json!("bob-acme"));
    claims.insert(
        "sha".into(),
        json!("9c4f1e07b2d84a35e6f0c1a29b7d3e58f4a6c2d1"),
    );
    let second = app.exchange(&fake.sign(&claims), "tenant-prod", &[]).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let request_id = |answer: &crate::helpers::Answer| {
        answer.body["request_id"]
            .as_str()
            .expect("request_id")
            .to_owned()
    };
    let (first_id, second_id) = (request_id(&first), request_id(&second));

    // The tenant's own view of the two calls.
    let issued = tenant.issued();
    assert_eq!(issued.len(), 2);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        issued[0].user_agent,
        Some(format!("tokenmint/{version} (request {first_id})"))
    );
    assert!(issued.iter().all(|token| token.client_id == CLIENT_ID));
    assert_ne!(issued[0].access_token_jti, issued[1].access_token_jti);

    // The export, as a log stream writes it (JSON lines). The second call's user agent was
    // rewritten on its way (a proxy), so only its client and time are left to join it by.
    // The other application gets a token in the same minute and uses it.
    let later = |token: &IssuedToken, secs: i64| {
        auth0_date(token.issued_at + time::Duration::seconds(secs))
    };
    let mut rewritten = seccft_of("9002", &issued[1]);
    rewritten["user_agent"] = json!("corp-egress-proxy/2.1");
    let events = [
        seccft_of("9001", &issued[0]),
        rewritten,
        seccft(
            "9003",
            &later(&issued[1], 1),
            OTHER_CLIENT,
            "deploy-cli/8.43.0 (node.js/22.19.0)",
            "5d0b7c1e9a2f4e3d8c6b5a4f3e2d1c0b",
        ),
        sapi(
            "9004",
            &later(&issued[0], 30),
            CLIENT_ID,
            &issued[0].access_token_jti,
        ),
        sapi(
            "9005",
            &later(&issued[1], 31),
            OTHER_CLIENT,
            "5d0b7c1e9a2f4e3d8c6b5a4f3e2d1c0b",
        ),
    ];
    let export: String = events.iter().map(|event| format!("{event}\n")).collect();
    let events = parse_events(&export).expect("the export");
    let dates: Vec<Value> = events.iter().map(|event| event["date"].clone()).collect();

    let targets = HashMap::from([("tenant-prod".to_owned(), CLIENT_ID.to_owned())]);
    let correlations = correlate(&events, &app.records().await, &targets);

    let job = |log_id: &str, kind: &str, date: &Value, request: &str, joined_by: Value| {
        let (run_id, run_attempt, sha, actor) = if request == first_id {
            (
                "29223225591",
                "1",
                "363a0c94e511346808fe5f3d96a84939e49450a3",
                "alice-acme",
            )
        } else {
            (
                "29223230077",
                "2",
                "9c4f1e07b2d84a35e6f0c1a29b7d3e58f4a6c2d1",
                "bob-acme",
            )
        };
        json!({"log_id": log_id, "type": kind, "date": date, "request_id": request,
            "repository": "acme/identity-config",
            "workflow_ref": "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main",
            "run_id": run_id, "run_attempt": run_attempt, "sha": sha, "actor": actor,
            "policy": "deploy-tenant", "target": "tenant-prod", "joined_by": joined_by})
    };
    let untraced = |log_id: &str, kind: &str, date: &Value| {
        json!({"log_id": log_id, "type": kind, "date": date, "request_id": null,
            "repository": null, "workflow_ref": null, "run_id": null, "run_attempt": null,
            "sha": null, "actor": null, "policy": null, "target": null, "joined_by": []})
    };
    let expected = json!([
        job(
            "9001",
            "seccft",
            &dates[0],
            &first_id,
            json!(["user_agent.request_id", "client_id", "date"])
        ),
        job(
            "9002",
            "seccft",
            &dates[1],
            &second_id,
            json!(["client_id+date"])
        ),
        untraced("9003", "seccft", &dates[2]),
        job(
            "9004",
            "sapi",
            &dates[3],
            &first_id,
            json!([
                "credentials.jti=seccft.access_token_jti",
                "user_agent.request_id",
                "client_id",
                "date"
            ])
        ),
        untraced("9005", "sapi", &dates[4]),
    ]);
    assert_eq!(serde_json::to_value(&correlations).expect("JSON"), expected);
    let printed: Value = serde_json::from_str(&render_json(&correlations)).expect("JSON");
    assert_eq!(printed, expected);
}
