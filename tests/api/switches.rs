//! Incident switches: a deny list of binding-claim values (`deny.yaml`, `[deny]`) and
//! `enabled = false` on a target, effective on reload without a restart.

use crate::exchange::{DEPLOY_POLICY, github_app};
use crate::helpers::*;
use crate::reload::reload;

const GENERIC: &str = "no trust policy for target \"internal-api\" matches this workload";

#[tokio::test]
async fn a_denylisted_repository_is_refused_before_any_policy_and_recorded() {
    let (fake, app) = github_app().await;
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );

    std::fs::write(
        app.policies_dir.join("deny.yaml"),
        "# compromised on 2026-12-02, INC-1234\nrepository_id: [\"89012345\"]\n",
    )
    .expect("deny list");
    let report = reload(&app);
    assert_eq!(
        (report.policies, report.switch_problems.len()),
        (1, 0),
        "deny.yaml is not a policy"
    );
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    // The generic denial, although the caller is bound: its holder learns nothing.
    assert_error(&answer, 403, "access_denied", GENERIC);
    let record = app.last_audit().await;
    assert_eq!(record.reason, "denylisted");
    assert_eq!(
        record.detail.as_deref(),
        Some("denylisted: repository_id \"89012345\" is on the deny list")
    );
    assert!(
        app.service
            .state
            .metrics
            .render()
            .contains("reason=\"denylisted\""),
        "the reason is counted in metrics"
    );
    // Another repository is not affected.
    let mut other = fake.claims("github-push-main");
    other.insert("repository_id".into(), serde_json::json!("89012346"));
    let answer = app.exchange(&fake.sign(&other), "internal-api", &[]).await;
    assert_eq!(
        app.last_audit().await.reason,
        "no_policy_matched",
        "{}",
        answer.text
    );

    // A broken deny list never shrinks the one in force.
    std::fs::write(app.policies_dir.join("deny.yaml"), "repository_id: [\n").expect("broken");
    let report = reload(&app);
    assert_eq!(report.switch_problems.len(), 1, "{report:?}");
    assert!(
        report.switch_problems[0]
            .starts_with("deny.yaml does not load, so the deny list stays as it was: ")
    );
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(&answer, 403, "access_denied", GENERIC);

    // Lifting the switch re-admits the workload.
    std::fs::remove_file(app.policies_dir.join("deny.yaml")).expect("remove");
    reload(&app);
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_disabled_target_is_named_only_to_known_callers_and_comes_back_on_reload() {
    let (fake, app) = github_app().await;
    let config = std::fs::read_to_string(&app.config_file).expect("config");
    assert!(config.contains("[targets.internal-api]"), "{config}");
    let disabled = config.replace(
        "[targets.internal-api]\n",
        "[targets.internal-api]\nenabled = false\n",
    );
    std::fs::write(&app.config_file, &disabled).expect("config");
    let report = reload(&app);
    assert!(report.switch_problems.is_empty(), "{report:?}");

    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(
        &answer,
        400,
        "invalid_target",
        "target \"internal-api\" is disabled",
    );
    let record = app.last_audit().await;
    assert_eq!(record.reason, "target_disabled");
    let mut stranger = fake.claims("github-push-main");
    stranger.insert("repository_id".into(), serde_json::json!("555"));
    stranger.insert("repository_owner_id".into(), serde_json::json!("666"));
    let answer = app
        .exchange(&fake.sign(&stranger), "internal-api", &[])
        .await;
    assert_error(&answer, 403, "access_denied", GENERIC);

    // A configuration that does not load keeps the switch as it was.
    std::fs::write(&app.config_file, "[server\n").expect("broken config");
    let report = reload(&app);
    assert_eq!(report.switch_problems.len(), 1, "{report:?}");
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text);

    std::fs::write(&app.config_file, &config).expect("config");
    reload(&app);
    assert_eq!(
        app.exchange(&fake.token("github-push-main"), "internal-api", &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_deny_section_of_the_configuration_denies_too() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = crate::exchange::deploy_builder(&fake, "")
        .config("[deny]\nrepository_owner_id = [\"1234567\"]\n")
        .spawn()
        .await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_error(&answer, 403, "access_denied", GENERIC);
    assert_eq!(
        app.last_audit().await.detail.as_deref(),
        Some("denylisted: repository_owner_id \"1234567\" is on the deny list")
    );
}

/// A directory for the offline commands: `tokenmint.toml`, the deploy policy, and
/// `policies/deny.yaml` holding `deny`.
fn offline_dir(deny: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("policies")).expect("dir");
    std::fs::write(dir.path().join("policies/deploy.yaml"), DEPLOY_POLICY).expect("policy");
    std::fs::write(dir.path().join("policies/deny.yaml"), deny).expect("deny");
    std::fs::write(
        dir.path().join("tokenmint.toml"),
        "[server]\npublic_url = \"https://sts.example.com\"\n[storage]\ndata_dir = \"./data\"\n\
         [issuers.github]\nissuer = \"https://token.actions.githubusercontent.com\"\n\
         [targets.internal-api]\nkind = \"local\"\naudience = \"https://api.internal.example\"\n",
    )
    .expect("config");
    dir
}

#[test]
fn serve_and_policy_check_refuse_a_deny_list_that_does_not_load() {
    let dir = offline_dir("repository: [acme/app]\n");
    let output = tokenmint()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("./policies/deny.yaml:1: repository: a deny list names binding-claim values; use one of repository_id, repository_owner_id, project_id, namespace_id, terraform_workspace_id, terraform_organization_id"),
        "{stderr}"
    );
    let output = tokenmint()
        .args(["policy", "check"])
        .current_dir(dir.path())
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("./policies/deny.yaml:1:1: error[TM000]: repository: a deny list names binding-claim values"),
        "{stdout}"
    );
}

#[test]
fn policy_explain_applies_the_switches_as_the_exchange_does() {
    let dir = offline_dir("repository_id: \"89012345\"\n");
    std::fs::write(
        dir.path().join("claims.json"),
        r#"{"iss": "https://token.actions.githubusercontent.com", "repository_id": "89012345", "ref": "refs/heads/main"}"#,
    )
    .expect("claims");
    let output = tokenmint()
        .args([
            "policy",
            "explain",
            "--claims",
            "claims.json",
            "--audience",
            "internal-api",
        ])
        .current_dir(dir.path())
        .output()
        .expect("explain");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "\nresult: deny (access_denied)\n  how: the deny list refuses repository_id \"89012345\" before any policy is evaluated\n"
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with(&format!("told: {GENERIC}\n")), "{stdout}");
}
