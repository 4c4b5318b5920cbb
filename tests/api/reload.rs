//! Policy hot reload: edits, deletions, broken files and their last good version.

use std::time::Duration;

use crate::exchange::{DEPLOY_POLICY, deploy_builder};
use crate::helpers::*;

async fn app(max_stale: &str) -> (FakeIssuer, TestApp) {
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = deploy_builder(&fake, "")
        .policies_config(&format!("max_stale = \"{max_stale}\""))
        .spawn()
        .await;
    (fake, app)
}

/// Runs one reload of `app`'s policy directory and switches.
pub fn reload(app: &TestApp) -> tokenmint::trust::policy::reload::ReloadReport {
    app.service.reloader.as_ref().expect("reloader").reload()
}

/// The `tokenmint_policy_files` gauge: ok, stale, dropped, never_loaded.
fn policy_file_states(app: &TestApp) -> [u64; 4] {
    let metrics = app.service.state.metrics.render();
    ["ok", "stale", "dropped", "never_loaded"].map(|state| {
        let prefix = format!("tokenmint_policy_files{{state=\"{state}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{metrics}"))
            .parse()
            .expect("a count")
    })
}

#[tokio::test]
async fn every_policy_file_state_is_counted_in_metrics() {
    let (_fake, app) = app("300ms").await;
    assert_eq!(policy_file_states(&app), [1, 0, 0, 0], "after start");

    std::fs::write(app.policies_dir.join("new.yaml"), "name: [broken").expect("write");
    std::fs::write(app.policies_dir.join("deploy-api.yaml"), "name: [broken").expect("write");
    reload(&app);
    assert_eq!(
        policy_file_states(&app),
        [0, 1, 0, 1],
        "stale and never loaded"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    reload(&app);
    assert_eq!(policy_file_states(&app), [0, 0, 1, 1], "past max_stale");
    assert_eq!(app.get("/readyz").await.status, 200);

    std::fs::write(app.policies_dir.join("deploy-api.yaml"), DEPLOY_POLICY).expect("fix");
    std::fs::remove_file(app.policies_dir.join("new.yaml")).expect("remove");
    reload(&app);
    assert_eq!(policy_file_states(&app), [1, 0, 0, 0], "fixed and removed");
}

#[tokio::test]
async fn an_edited_policy_applies_and_a_deleted_one_stops_matching() {
    let (fake, app) = app("15m").await;
    let narrowed = DEPLOY_POLICY.replace("scopes: [deploy, read]", "scopes: [read]");
    std::fs::write(app.policies_dir.join("deploy-api.yaml"), narrowed).expect("write");
    assert_eq!(reload(&app).policies, 1);
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.body["scope"], "read", "{}", answer.text);

    std::fs::remove_file(app.policies_dir.join("deploy-api.yaml")).expect("remove");
    assert_eq!(reload(&app).policies, 0);
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
}

#[tokio::test]
async fn a_broken_file_keeps_its_last_good_version_until_max_stale() {
    let (fake, app) = app("300ms").await;
    let file = app.policies_dir.join("deploy-api.yaml");
    std::fs::write(&file, "name: [broken").expect("write");
    let report = reload(&app);
    assert_eq!(report.kept_stale, vec![file.display().to_string()]);
    assert_eq!(app.get("/readyz").await.status, 200);
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(
        answer.status, 200,
        "the last good version still decides: {}",
        answer.text
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = reload(&app);
    assert_eq!(report.dropped, vec![file.display().to_string()]);
    assert_eq!(report.policies, 0);
    assert_eq!(
        app.get("/readyz").await.status,
        200,
        "a dropped file costs its own policies, not the replica's readiness"
    );
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 403);

    std::fs::write(&file, DEPLOY_POLICY).expect("fix");
    assert_eq!(reload(&app).policies, 1);
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn a_file_reusing_a_policy_name_fails_alone() {
    let (fake, app) = app("15m").await;
    let copy = app.policies_dir.join("zz-copy.yaml");
    std::fs::write(&copy, DEPLOY_POLICY).expect("write");
    let report = reload(&app);
    assert_eq!(report.refused, None);
    assert_eq!(report.dropped, vec![copy.display().to_string()]);
    assert_eq!(report.policies, 1);
    assert_eq!(
        app.get("/readyz").await.status,
        200,
        "a dropped file leaves the service ready"
    );
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(
        answer.status, 200,
        "the first owner of the name still decides: {}",
        answer.text
    );

    // A deletion applies at once even while another file clashes.
    std::fs::remove_file(app.policies_dir.join("deploy-api.yaml")).expect("remove");
    let report = reload(&app);
    assert_eq!(report.policies, 1, "the copy now owns the name");
    assert_eq!(report.dropped, Vec::<String>::new());
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn the_watcher_does_not_trigger_itself() {
    let (_fake, app) = app("15m").await;
    let reloader = app.service.reloader.as_ref().expect("reloader");
    // Let the start-up reload (and anything it might trigger) settle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let settled = reloader.reload_count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        reloader.reload_count(),
        settled,
        "reading policy files must not cause reloads"
    );
}

#[tokio::test]
async fn a_new_file_is_picked_up_without_a_signal() {
    let (fake, app) = app("15m").await;
    let read_only = "name: read-only\nissuer: github\ntarget: internal-api\nscopes: [audit]\nclaims:\n  repository_id: \"89012345\"\n";
    std::fs::write(app.policies_dir.join("read-only.yaml"), read_only).expect("write");
    // Bounded wait for the watcher (the contract promises within 2 s); not a timing assertion.
    let mut picked_up = false;
    for _ in 0..50 {
        if app
            .service
            .state
            .exchanger
            .policies
            .load()
            .get("read-only")
            .is_some()
        {
            picked_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(picked_up, "the watcher reloaded the new file");
    let answer = app
        .exchange(
            &fake.token("github-push-main"),
            "internal-api",
            &[("scope", "audit")],
        )
        .await;
    assert_eq!(answer.body["policy"], "read-only", "{}", answer.text);
}
