//! Trust policies through the exchange: matching, binding claims, selection, disclosure, attacks.

use serde_json::{Value, json};

use crate::exchange::{DEPLOY_POLICY, LOCAL_TARGET};
use crate::helpers::*;

async fn app_with(policies: &[(&str, &str)]) -> (FakeIssuer, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let mut builder = AppBuilder::new()
        .github("github", &fake)
        .config(LOCAL_TARGET);
    for (file, yaml) in policies {
        builder = builder.policy(file, yaml);
    }
    (fake.clone(), builder.spawn().await)
}

/// The error of a service that refuses to start because of the policy `yaml` in `file`.
async fn load_error(file: &str, yaml: &str) -> String {
    let fake = FakeIssuer::start(Shape::Github).await;
    AppBuilder::new()
        .github("github", &fake)
        .config(LOCAL_TARGET)
        .policy(file, yaml)
        .try_spawn()
        .await
        .err()
        .expect("load error")
        .to_string()
}

fn token_with(fake: &FakeIssuer, fixture: &str, changes: &[(&str, Value)]) -> String {
    let mut claims = fake.claims(fixture);
    for (name, value) in changes {
        claims.insert((*name).to_owned(), value.clone());
    }
    fake.sign(&claims)
}

const READ_POLICY: &str = r#"
name: read-only
issuer: github
target: internal-api
scopes: [read]
claims:
  repository_id: "89012345"
"#;

#[tokio::test]
async fn the_narrowest_policy_wins_and_the_grant_is_the_requested_scope() {
    let (fake, app) = app_with(&[
        ("deploy-api.yaml", DEPLOY_POLICY),
        ("read-only.yaml", READ_POLICY),
    ])
    .await;
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "read")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["policy"], "read-only");
    assert_eq!(answer.body["scope"], "read");

    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "deploy")],
        )
        .await;
    assert_eq!(answer.body["policy"], "deploy-api");
    assert_eq!(answer.body["scope"], "deploy");

    // Without a scope, the candidate whose scopes are a subset of every other's wins.
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.body["policy"], "read-only");
    assert_eq!(answer.body["scope"], "read");

    // A pinned policy is the only candidate.
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("policy", "deploy-api")],
        )
        .await;
    assert_eq!(answer.body["policy"], "deploy-api");
    assert_eq!(answer.body["scope"], "deploy read");
}

#[tokio::test]
async fn several_policies_with_unrelated_scopes_are_ambiguous_without_a_scope() {
    let other = r#"
name: write-only
issuer: github
target: internal-api
scopes: [write]
claims:
  repository_id: "89012345"
"#;
    let (fake, app) =
        app_with(&[("read-only.yaml", READ_POLICY), ("write-only.yaml", other)]).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(
        &answer,
        400,
        "invalid_scope",
        "several policies match with different scopes; request a scope or pin a policy",
    );
    let record = app.last_audit().await;
    assert_eq!(record.reason, "ambiguous_policy");
    assert_eq!(
        record.detail.as_deref(),
        Some("candidates: \"read-only\", \"write-only\"")
    );
    assert_eq!(record.decisions.len(), 2, "both evaluations are kept");
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "write")],
        )
        .await;
    assert_eq!(answer.body["policy"], "write-only");
}

#[tokio::test]
async fn a_scope_beyond_every_matching_policy_is_invalid_scope() {
    let (fake, app) = app_with(&[("deploy-api.yaml", DEPLOY_POLICY)]).await;
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "read admin")],
        )
        .await;
    assert_error(
        &answer,
        400,
        "invalid_scope",
        "the requested scope exceeds every matching policy (\"deploy-api\")",
    );
}

#[tokio::test]
async fn a_bound_caller_is_told_which_conditions_failed() {
    let (fake, app) = app_with(&[("deploy-api.yaml", DEPLOY_POLICY)]).await;
    let token = token_with(
        &fake,
        "github-push-main",
        &[("ref", json!("refs/heads/feature"))],
    );
    let answer = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(answer.status, 403);
    let request_id = answer.body["request_id"].as_str().expect("id");
    assert_eq!(
        answer.body,
        json!({
            "error": "access_denied",
            "error_description": "no trust policy for target \"internal-api\" matches this workload; nearest policy \"deploy-api\": claim \"ref\" is \"refs/heads/feature\", expected \"refs/heads/main\"",
            "request_id": request_id,
            "policy": "deploy-api",
            "failed_conditions": [{"claim": "ref", "expected": "\"refs/heads/main\"", "actual": "\"refs/heads/feature\""}],
        })
    );
    let record = app.last_audit().await;
    assert_eq!(record.reason, "no_policy_matched");
    assert_eq!(record.outcome, tokenmint::trust::audit::Outcome::Deny);
}

#[tokio::test]
async fn an_unbound_caller_learns_nothing_about_policies() {
    let (fake, app) = app_with(&[("deploy-api.yaml", DEPLOY_POLICY)]).await;
    let token = token_with(
        &fake,
        "github-push-main",
        &[
            ("repository_id", json!("1")),
            ("repository", json!("evil/identity-config")),
        ],
    );
    let answer = app.exchange(&token, "internal-api", &[]).await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"internal-api\" matches this workload",
    );
    // The operator is told everything the caller is not: the binding-claim values that
    // were looked up, and the nearest policy with its failing conditions.
    let record = app.last_audit().await;
    assert_eq!(record.reason, "no_policy_matched");
    assert_eq!(
        record.detail.as_deref(),
        Some(
            "no policy for this issuer and target matches; the token's binding claims: \
             repository_id \"1\", repository_owner_id \"1234567\"; nearest policy \"deploy-api\" \
             (not disclosed to the caller): claim \"repository_id\" is \"1\", expected \"89012345\""
        )
    );
    assert!(
        record.decisions.is_empty(),
        "no policy names this repository, so the index evaluated none: {:?}",
        record.decisions
    );
}

#[tokio::test]
async fn a_caller_matching_only_an_unbound_policy_learns_no_policy_names() {
    let open = r#"
name: secret-unbound-name
issuer: github
target: internal-api
scopes: [read]
unbound: true
claims:
  repository_owner: acme
"#;
    let (fake, app) = app_with(&[("open.yaml", open)]).await;
    let token = token_with(&fake, "github-push-main", &[("repository_id", json!("1"))]);
    let answer = app
        .exchange(&token, "internal-api", &[("scope", "admin")])
        .await;
    assert_error(
        &answer,
        400,
        "invalid_scope",
        "the requested scope exceeds every matching policy",
    );
    assert_eq!(
        app.last_audit().await.detail.as_deref(),
        Some("the requested scope exceeds every matching policy (\"secret-unbound-name\")")
    );
}

#[tokio::test]
async fn the_generic_denial_names_what_was_asked_not_which_target_it_maps_to() {
    let (fake, app) = app_with(&[("deploy-api.yaml", DEPLOY_POLICY)]).await;
    let token = token_with(
        &fake,
        "github-push-main",
        &[
            ("repository_id", json!("1")),
            ("repository_owner_id", json!("2")),
        ],
    );
    let answer = app
        .exchange(&token, "https://api.internal.example", &[])
        .await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"https://api.internal.example\" matches this workload",
    );
}

#[tokio::test]
async fn policies_without_a_binding_claim_do_not_load() {
    let unbound = r#"
issuer: github
target: internal-api
scopes: [read]
claims:
  repository: acme/identity-config
"#;
    let text = load_error("by-name.yaml", unbound).await;
    assert!(text.contains("by-name.yaml"), "{text}");
    assert!(text.contains("repository_id"), "{text}");
    assert!(text.contains("unbound: true"), "{text}");

    let escaped = format!("{unbound}unbound: true\n");
    let (fake, app) = app_with(&[("by-name.yaml", &escaped)]).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn dangerous_triggers_need_an_explicit_event_name() {
    let explicit = r#"
name: explicit-prt
issuer: github
target: internal-api
scopes: [read]
claims:
  repository_id: "89012345"
  event_name: [push, pull_request_target]
"#;
    let pattern = r#"
name: pattern-events
issuer: github
target: internal-api
scopes: [read]
claims:
  repository_id: "89012345"
  event_name: { glob: "*" }
"#;
    let (fake, app) = app_with(&[
        ("deploy-api.yaml", DEPLOY_POLICY),
        ("pattern.yaml", pattern),
    ])
    .await;
    // ref is refs/heads/main in pull_request_target runs: the ref-only policy must not admit it.
    let token = fake.token("github-pull-request-target");
    let answer = app.exchange(&token, "internal-api", &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    // The denial says what to do; the audit reason stays the closed list's.
    assert_eq!(
        answer.body["error_description"],
        "no trust policy for target \"internal-api\" matches this workload; nearest policy \
         \"deploy-api\": claim \"event_name\" is \"pull_request_target\", expected the policy to \
         name \"pull_request_target\" explicitly in event_name (a dangerous trigger: patterns and \
         not never admit it)"
    );
    assert_eq!(app.last_audit().await.reason, "no_policy_matched");

    let (fake, app) = app_with(&[("explicit.yaml", explicit)]).await;
    let answer = app
        .exchange(
            &fake.token("github-pull-request-target"),
            "internal-api",
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn regex_alternation_is_anchored_as_a_whole() {
    let policy = r#"
name: tags
issuer: github
target: internal-api
scopes: [read]
claims:
  repository_id: "89012345"
  ref: { regex: 'refs/tags/v1|refs/tags/v2' }
"#;
    let (fake, app) = app_with(&[("tags.yaml", policy)]).await;
    for (git_ref, status) in [
        ("refs/tags/v1", 200),
        ("refs/tags/v2", 200),
        ("refs/tags/v1-evil", 403),
        ("evil/refs/tags/v2", 403),
    ] {
        let token = token_with(&fake, "github-push-main", &[("ref", json!(git_ref))]);
        let answer = app.exchange(&token, "internal-api", &[]).await;
        assert_eq!(answer.status.as_u16(), status, "{git_ref}: {}", answer.text);
    }
}

#[tokio::test]
async fn a_regex_that_only_compiles_when_wrapped_is_a_load_error() {
    let policy = r#"
issuer: github
target: internal-api
scopes: [read]
claims:
  repository_id: "89012345"
  ref: { regex: 'refs/heads/main)|(.*' }
"#;
    let text = load_error("smuggled.yaml", policy).await;
    assert!(text.contains("smuggled.yaml:7"), "{text}");
    assert!(text.contains("claims.ref"), "{text}");
}

#[tokio::test]
async fn a_glob_star_does_not_cross_slashes() {
    let policy = r#"
name: workflows
issuer: github
target: internal-api
scopes: [read]
claims:
  repository_id: "89012345"
  workflow_ref: { glob: "acme/identity-config/.github/workflows/*.yml@refs/heads/main" }
"#;
    let (fake, app) = app_with(&[("workflows.yaml", policy)]).await;
    let ok = token_with(&fake, "github-push-main", &[]);
    assert_eq!(app.exchange(&ok, "internal-api", &[]).await.status, 200);
    let nested = token_with(
        &fake,
        "github-push-main",
        &[(
            "workflow_ref",
            json!("acme/identity-config/.github/workflows/evil/x.yml@refs/heads/main"),
        )],
    );
    assert_eq!(app.exchange(&nested, "internal-api", &[]).await.status, 403);
}

#[tokio::test]
async fn audit_mode_policies_record_would_allow_and_mint_nothing() {
    let audit_only = r#"
name: trial
issuer: github
target: internal-api
scopes: [read]
mode: audit
claims:
  repository_id: "89012345"
"#;
    let (fake, app) = app_with(&[("trial.yaml", audit_only)]).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"internal-api\" matches this workload",
    );
    let record = app.last_audit().await;
    assert_eq!(record.would_allow, vec!["trial".to_owned()]);
}

#[tokio::test]
async fn disabled_policies_never_match() {
    let disabled = format!("{DEPLOY_POLICY}enabled: false\n");
    let (fake, app) = app_with(&[("deploy-api.yaml", &disabled)]).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"internal-api\" matches this workload",
    );
    // A disabled policy names nobody: an unknown target is not disclosed either.
    let answer = app
        .exchange(&fake.token("github-push-main"), "nope", &[])
        .await;
    assert_error(
        &answer,
        403,
        "access_denied",
        "no trust policy for target \"nope\" matches this workload",
    );
}
