//! `tokenmint doctor` run as the binary against a fake issuer and a fake tenant.

use std::path::Path;

use crate::fake_auth0::*;
use crate::helpers::*;
use crate::remote::{CLIENT_ID, TENANT_POLICY, auth0_target};

struct Doctor {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Writes a configuration for `fake` and `tenant` into `dir` and runs `doctor` with `args`.
async fn run_doctor(dir: &Path, fake: &FakeIssuer, tenant: &FakeTenant, args: &[&str]) -> Doctor {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    std::fs::write(policies.join("deploy-tenant.yaml"), TENANT_POLICY).expect("policy");
    let config = dir.join("tokenmint.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_url = \"{PUBLIC_URL}\"\n[storage]\ndata_dir = \"{}\"\n[policies]\ndir = \"{}\"\n[issuers.github]\nissuer = \"{}\"\nkind = \"github\"\n{}",
            dir.join("data").display(),
            policies.display(),
            fake.issuer,
            auth0_target(tenant, "")
        ),
    )
    .expect("config");
    let mut command = tokenmint();
    command
        .args(["--log-format", "json", "doctor", "--config"])
        .arg(&config)
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run doctor");
    Doctor {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The lines of the `target tenant-prod` section, heading included.
fn target_section(stdout: &str) -> Vec<String> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with("target tenant-prod"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    lines.truncate(lines.len().saturating_sub(1)); // the summary line
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_healthy_tenant_and_records_its_requests() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(TenantSetup::private_key_jwt(
        CLIENT_ID,
        "auth0-client.pem",
        "RS256",
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let doctor = run_doctor(dir.path(), &fake, &tenant, &[]).await;

    assert_eq!(doctor.code, Some(0), "{}\n{}", doctor.stdout, doctor.stderr);
    let kid = client_key_thumbprint("auth0-client.pem");
    assert_eq!(
        target_section(&doctor.stdout),
        vec![
            format!("target tenant-prod (auth0, {}/oauth/token)", tenant.base_url),
            format!("  ok    credentials: client {CLIENT_ID} with private_key_jwt RS256, kid {kid} (register this public key with the client)"),
            "  ok    reachable and authenticated (1 attempt)".to_owned(),
            "  ok    the grant allows: read:clients update:clients read:resource_servers".to_owned(),
            "  ok    tokens live 600s (max_ttl 3600s)".to_owned(),
            "  WARN  the grant includes update:clients: a job holding such a token can take over or widen tokenmint's own client; remove it from the client grant".to_owned(),
            "  ok    narrows by scope: asked for \"read:clients\", got \"read:clients\"".to_owned(),
            "  ok    2 token requests recorded with outcome \"doctor\" (in the audit trail and the decision log); no token was printed or kept".to_owned(),
        ]
    );
    assert!(
        doctor.stdout.contains(&format!(
            "issuer github ({})\n  ok    1 key from",
            fake.issuer
        )),
        "{}",
        doctor.stdout
    );
    assert!(
        doctor.stdout.contains("  ok    1 policy loads\n"),
        "{}",
        doctor.stdout
    );
    assert!(
        doctor.stdout.ends_with("0 failures, 1 warning\n"),
        "{}",
        doctor.stdout
    );

    // Two requests, the first without narrowing; both on record as `doctor`, tokens unseen.
    let requests = tenant.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].field("scope"), None);
    assert_eq!(requests[1].field("scope"), Some("read:clients"));
    let doctor_lines: Vec<&str> = doctor
        .stderr
        .lines()
        .filter(|l| l.contains("\"outcome\":\"doctor\""))
        .collect();
    assert_eq!(doctor_lines.len(), 2, "{}", doctor.stderr);
    for issued in tenant.issued() {
        assert!(!doctor.stdout.contains(&issued.access_token));
        assert!(!doctor.stderr.contains(&issued.access_token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_a_wide_long_lived_grant_and_warns_on_takeover_scopes() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let mut setup = TenantSetup::private_key_jwt(CLIENT_ID, "auth0-client.pem", "RS256");
    setup.scope_handling = ScopeHandling::Ignore;
    setup.expires_in = 86_400;
    setup.grant_scopes = ["read:clients", "update:clients", "update:client_grants"]
        .map(str::to_owned)
        .to_vec();
    let tenant = FakeTenant::start(setup).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let doctor = run_doctor(dir.path(), &fake, &tenant, &[]).await;

    assert_eq!(doctor.code, Some(1), "{}\n{}", doctor.stdout, doctor.stderr);
    let section = target_section(&doctor.stdout);
    assert_eq!(
        section[2..],
        [
            "  ok    reachable and authenticated (1 attempt)".to_owned(),
            "  ok    the grant allows: read:clients update:clients update:client_grants".to_owned(),
            "  FAIL  tokens live 86400s, longer than max_ttl 3600s: every exchange fails with 502; shorten the API's Maximum Access Token Lifetime".to_owned(),
            "  WARN  the grant includes update:clients: a job holding such a token can take over or widen tokenmint's own client; remove it from the client grant".to_owned(),
            "  WARN  the grant includes update:client_grants: a job holding such a token can take over or widen tokenmint's own client; remove it from the client grant".to_owned(),
            "  ok    does not narrow by scope: asked for \"read:clients\", got \"read:clients update:clients update:client_grants\"".to_owned(),
            "  FAIL  policy \"deploy-tenant\" grants \"read:clients update:clients\" but the target ignores narrowing and issues \"read:clients update:clients update:client_grants\": its exchanges fail closed; give it a client whose grant equals the policy's scopes".to_owned(),
            "  ok    2 token requests recorded with outcome \"doctor\" (in the audit trail and the decision log); no token was printed or kept".to_owned(),
        ]
    );
    assert!(
        doctor.stdout.ends_with("2 failures, 2 warnings\n"),
        "{}",
        doctor.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_no_mint_loads_credentials_without_calling_the_tenant() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(TenantSetup::private_key_jwt(
        CLIENT_ID,
        "auth0-client.pem",
        "RS256",
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let doctor = run_doctor(dir.path(), &fake, &tenant, &["--no-mint"]).await;
    assert_eq!(doctor.code, Some(0), "{}\n{}", doctor.stdout, doctor.stderr);
    assert!(
        doctor
            .stdout
            .contains("  ok    --no-mint: the token endpoint was not called\n"),
        "{}",
        doctor.stdout
    );
    assert!(tenant.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_refused_credentials() {
    let fake = FakeIssuer::start(Shape::Github).await;
    // The tenant knows another key.
    let tenant = FakeTenant::start(TenantSetup::private_key_jwt(
        CLIENT_ID,
        "auth0-client-pkcs1.pem",
        "RS256",
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let doctor = run_doctor(dir.path(), &fake, &tenant, &[]).await;
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let section = target_section(&doctor.stdout);
    assert_eq!(section.len(), 4, "{section:?}");
    assert!(
        section[2].starts_with("  FAIL  target \"tenant-prod\" refused tokenmint's client authentication (HTTP 401, invalid_client)"),
        "{}",
        section[2]
    );
}

/// With the embedded store, `doctor` reads the local targets' keys in `data_dir/keys`
/// without creating them: none yet is a warning (`serve` makes them at its first start),
/// and once they exist it names the generation and the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reads_the_signing_keys_in_the_data_dir_without_creating_them() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    std::fs::write(
        policies.join("deploy-api.yaml"),
        crate::exchange::DEPLOY_POLICY,
    )
    .expect("policy");
    let data = dir.path().join("data");
    let config = dir.path().join("tokenmint.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_url = \"{PUBLIC_URL}\"\n[storage]\ndata_dir = \"{}\"\n[policies]\ndir = \"{}\"\n[issuers.github]\nissuer = \"{}\"\nkind = \"github\"\n{}",
            data.display(),
            policies.display(),
            fake.issuer,
            crate::exchange::LOCAL_TARGET
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        let output = tokenmint()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run tokenmint");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let section = crate::shared_keys::signing_keys_section;
    let keys = data.join("keys");
    let (code, stdout) = run(&["doctor", "--no-mint"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        section(&stdout),
        [
            format!("signing keys ({})", keys.display()),
            "  WARN  no signing keys yet: `tokenmint serve` generates them at its first start"
                .to_owned(),
        ]
    );
    assert!(!keys.exists(), "doctor created {}", keys.display());

    let (code, stdout) = run(&["keys", "rotate", "--force"]);
    assert_eq!(code, Some(0), "{stdout}");
    let (code, stdout) = run(&["doctor", "--no-mint"]);
    assert_eq!(code, Some(0), "{stdout}");
    let lines = section(&stdout);
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[1], "  ok    generation 2");
    assert!(
        lines[2].starts_with("  ok    ES256: current key ") && lines[2].contains(", next key "),
        "{}",
        lines[2]
    );
}
