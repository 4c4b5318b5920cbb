//! Dev mode: the dev CI issuer, the built-in policy, and every refusal that keeps it a playground.

use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use tower::ServiceExt as _;

use crate::exchange::jwt_parts;
use crate::helpers::*;
use tokenmint::edges::dev::dev_config;
use tokenmint::edges::metrics::Metrics;
use tokenmint::edges::service::Service;

async fn post_json(
    router: &axum::Router,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = router
        .clone()
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn a_dev_ci_token_completes_an_exchange() {
    let config = dev_config(loopback(8080)).expect("dev config");
    assert_eq!(config.server.public_url, "http://127.0.0.1:8080");
    let service = Service::build(config, Arc::new(Metrics::new()))
        .await
        .expect("dev service");
    let router = tokenmint::edges::http::router(service.state.clone());

    let (status, body) = post_json(
        &router,
        "/dev/ci-token",
        json!({"repository": "acme/app", "ref": "refs/heads/main"}),
    )
    .await;
    assert_eq!(status, 200);
    let ci_token = body["token"].as_str().expect("token").to_owned();
    let (_, claims) = jwt_parts(&ci_token);
    assert_eq!(claims["iss"], "http://127.0.0.1:8080/dev");
    assert_eq!(claims["aud"], "http://127.0.0.1:8080");
    assert_eq!(claims["sub"], "repo:acme/app:ref:refs/heads/main");
    assert_eq!(claims["dev"], true);
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        600
    );

    let (status, body) = post_json(
        &router,
        "/token",
        json!({
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": ci_token,
            "subject_token_type": ID_TOKEN,
            "audience": "dev-api",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read write");
    assert_eq!(body["policy"], "dev-any-repository");
    let (_, access) = jwt_parts(body["access_token"].as_str().expect("access token"));
    assert_eq!(access["sub"], "dev:repo:acme/app:ref:refs/heads/main");
    assert_eq!(access["aud"], "http://127.0.0.1:8080/dev-api");
}

#[tokio::test]
async fn the_dev_issuer_cannot_be_overridden_and_needs_a_repository() {
    let config = dev_config(loopback(8080)).expect("dev config");
    let service = Service::build(config, Arc::new(Metrics::new()))
        .await
        .expect("dev service");
    let router = tokenmint::edges::http::router(service.state.clone());
    let (_, body) = post_json(
        &router,
        "/dev/ci-token",
        json!({"iss": "https://token.actions.githubusercontent.com", "dev": false}),
    )
    .await;
    let token = body["token"].as_str().expect("token").to_owned();
    let (_, claims) = jwt_parts(&token);
    assert_eq!(claims["iss"], "http://127.0.0.1:8080/dev");
    assert_eq!(claims["dev"], true);
    let (status, body) = post_json(
        &router,
        "/token",
        json!({"grant_type": TOKEN_EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN, "audience": "dev-api"}),
    )
    .await;
    assert_eq!(status, 403, "no repository claim, no token: {body}");
    let (status, _) = post_json(&router, "/dev/ci-token", json!([1])).await;
    assert_eq!(status, 400);
}

#[test]
fn dev_mode_refuses_config_files_variables_and_non_loopback_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tokenmint.toml");
    std::fs::write(&config, "").expect("write");
    let cases: Vec<(Command, &str)> = vec![
        (
            {
                let mut c = tokenmint();
                c.args(["serve", "--dev", "--config"]).arg(&config);
                c
            },
            "tokenmint: --dev cannot be combined with --config: dev mode never reads configuration\n",
        ),
        (
            {
                let mut c = tokenmint();
                c.args(["serve", "--dev"])
                    .env("TOKENMINT_SERVER__LISTEN", "127.0.0.1:1");
                c
            },
            "tokenmint: --dev refuses to start while configuration variables are set: TOKENMINT_SERVER__LISTEN\n",
        ),
        (
            {
                let mut c = tokenmint();
                c.args(["serve", "--dev", "--listen", "0.0.0.0:8080"]);
                c
            },
            "tokenmint: --dev binds loopback addresses only; 0.0.0.0:8080 is not one\n",
        ),
    ];
    for (mut command, expected) in cases {
        let output = command
            .current_dir(dir.path())
            .output()
            .expect("run tokenmint");
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
    }
}

#[test]
fn serve_with_a_bad_config_prints_one_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[server]\npublic_url = \"https://sts.example.com\"\nlisten_addr = \"x\"\n",
    )
    .expect("write");
    let output = tokenmint()
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("unknown key `server.listen_addr`"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

#[test]
fn help_lists_only_working_commands() {
    let output = tokenmint().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "policy", "keys", "audit", "exchange", "doctor"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{help}"
        );
    }
}

/// A dev token for `claims`, exchanged for `dev-api` with `extra` fields.
async fn dev_exchange(
    router: &axum::Router,
    claims: serde_json::Value,
    extra: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (_, body) = post_json(router, "/dev/ci-token", claims).await;
    let mut request = json!({
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": body["token"].as_str().expect("token"),
        "subject_token_type": ID_TOKEN,
        "audience": "dev-api",
    });
    for (key, value) in extra.as_object().expect("object") {
        request[key] = value.clone();
    }
    post_json(router, "/token", request).await
}

/// Dev mode is a policy playground: dev policies in `./policies` replace the built-in one,
/// and `repository` binds, so a denial to a named repository says which condition failed.
#[tokio::test]
async fn dev_policies_replace_the_built_in_one_and_denials_show_their_conditions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("dir");
    std::fs::write(
        policies.join("dev-main.yaml"),
        "name: dev-main\nissuer: dev\ntarget: dev-api\nscopes: [deploy]\nclaims:\n  repository: acme/app\n  ref: refs/heads/main\n",
    )
    .expect("write");
    std::fs::write(policies.join("prod.yaml"), crate::exchange::DEPLOY_POLICY).expect("write");
    std::fs::write(
        policies.join("unpinned.yaml"),
        "name: unpinned\nissuer: dev\ntarget: dev-api\nscopes: [x]\nclaims:\n  ref: x\n",
    )
    .expect("write");
    let mut config = dev_config(loopback(8080)).expect("dev config");
    config.policies.dir = policies;
    let service = Service::build(config, Arc::new(Metrics::new()))
        .await
        .expect("dev service");
    let loaded = service.state.exchanger.policies.load();
    let names: Vec<&str> = loaded.iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        ["dev-main"],
        "other issuers' and unpinned policies are skipped"
    );
    let router = tokenmint::edges::http::router(service.state.clone());

    // No built-in policy beside it: no scope needed, no ambiguity.
    let (status, body) = dev_exchange(
        &router,
        json!({"repository": "acme/app", "ref": "refs/heads/main"}),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, &body["policy"], &body["scope"]),
        (200, &json!("dev-main"), &json!("deploy")),
        "{body}"
    );
    // The named repository on another branch is told why.
    let (status, body) = dev_exchange(
        &router,
        json!({"repository": "acme/app", "ref": "refs/heads/dev"}),
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error_description"],
        "no trust policy for target \"dev-api\" matches this workload; nearest policy \"dev-main\": \
         claim \"ref\" is \"refs/heads/dev\", expected \"refs/heads/main\""
    );
    // Another repository is not named by any policy: it learns nothing.
    let (status, body) = dev_exchange(
        &router,
        json!({"repository": "acme/other", "ref": "refs/heads/main"}),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, &body["error_description"]),
        (
            403,
            &json!("no trust policy for target \"dev-api\" matches this workload")
        )
    );
}

/// Without dev policies the built-in one decides, and it binds no one.
#[tokio::test]
async fn the_built_in_dev_policy_is_used_when_policies_holds_no_dev_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = dev_config(loopback(8080)).expect("dev config");
    config.policies.dir = dir.path().join("missing");
    let service = Service::build(config, Arc::new(Metrics::new()))
        .await
        .expect("dev service");
    let loaded = service.state.exchanger.policies.load();
    let names: Vec<&str> = loaded.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["dev-any-repository"]);
}

/// The start-up banner's suggestion uses `tokenmint exchange`, which fails loudly on a
/// denial, not a hand-written curl call that puts the CI token on a command line.
#[test]
fn the_dev_banner_suggests_tokenmint_exchange() {
    let service = crate::operations::ServiceProcess::dev();
    let url = format!("http://{}", service.listen);
    let (_, lines) = service.terminate();
    let at = lines
        .iter()
        .position(|line| line.trim() == "Try:")
        .expect("the banner's Try: line");
    assert_eq!(
        lines[at + 1..at + 4],
        [
            format!(
                "    curl -sS --fail-with-body -X POST {url}/dev/ci-token -H 'content-type: application/json' \\"
            ),
            r#"      -d '{"repository":"acme/app","ref":"refs/heads/main"}' | sed 's/.*"token":"\([^"]*\)".*/\1/' \"#
                .to_owned(),
            format!("      | tokenmint exchange --url {url} --audience dev-api --token-file -"),
        ]
    );
}
